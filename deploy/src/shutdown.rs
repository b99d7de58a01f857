//! Named shutdown in order: a process's stages stop one after another — what takes input first,
//! then what drains it, what serves last — each told by its own token once the stage before it
//! has finished, all within a bounded grace.
//!
//! Each stage's token is a child of the next stage's, so cancelling a later stage stops every
//! earlier one as well: when the grace runs out, the last stage's token stops them all at once.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// How long a process may take to stop once asked, before it exits with stages still running.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// What feeds the process: the synthetic fleet, a producer, a notice subscription.
pub const INPUT: &str = "input";
/// The ingest: stops consuming, flushes and commits what it buffered (and the compactor).
pub const INGEST: &str = "ingest";
/// A standalone compactor: stops between hours.
pub const COMPACT: &str = "compact";
/// Compute: finishes the cycle it is running.
pub const COMPUTE: &str = "compute";
/// The query service (or compute's probes): answers until everything before it has stopped.
pub const SERVE: &str = "serve";

/// The grace ran out with these stages still running.
#[derive(Debug)]
pub struct GraceExpired {
    pub grace: Duration,
    pub pending: Vec<&'static str>,
}

impl std::fmt::Display for GraceExpired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stopping took longer than {:?}; still running: {}", self.grace, self.pending.join(", "))
    }
}

impl std::error::Error for GraceExpired {}

struct Stage {
    name: &'static str,
    token: CancellationToken,
    /// Tasks of the stage not finished yet.
    running: usize,
}

/// The stages of a process, in the order they stop, and their tasks.
pub struct Stages {
    stages: Vec<Stage>,
    tasks: JoinSet<Result<()>>,
    /// The stage of each task.
    stage_of: HashMap<tokio::task::Id, usize>,
}

impl Stages {
    /// Stages named in the order they stop, e.g. `[INPUT, INGEST, COMPUTE, SERVE]`.
    pub fn new(names: &[&'static str]) -> Self {
        let mut stages: Vec<Stage> = Vec::with_capacity(names.len());
        for &name in names.iter().rev() {
            let token = stages.last().map_or_else(CancellationToken::new, |next| next.token.child_token());
            stages.push(Stage { name, token, running: 0 });
        }
        stages.reverse();
        Self { stages, tasks: JoinSet::new(), stage_of: HashMap::new() }
    }

    fn index(&self, name: &str) -> usize {
        self.stages.iter().position(|s| s.name == name).unwrap_or_else(|| panic!("no stage {name:?}"))
    }

    /// The token that stops `stage` (also cancelled when any later stage is).
    pub fn token(&self, stage: &str) -> CancellationToken {
        self.stages[self.index(stage)].token.clone()
    }

    /// Runs a task of `stage`, handing it the stage's token.
    pub fn spawn<F, Fut>(&mut self, stage: &str, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        let index = self.index(stage);
        let stage = &mut self.stages[index];
        stage.running += 1;
        let task = self.tasks.spawn(task(stage.token.clone()));
        self.stage_of.insert(task.id(), index);
    }

    /// Runs until `shutdown` is cancelled or a task fails, then stops the stages in order, each
    /// once the one before it has finished. Past `grace` it gives up and returns
    /// [`GraceExpired`], naming the stages still running. Otherwise returns the first failure.
    pub async fn run(self, shutdown: CancellationToken, grace: Duration) -> Result<()> {
        self.run_with(None, std::future::pending(), shutdown, grace).await
    }

    /// [`Self::run`], with one more task of `stage` — made from the stage's token — run on the
    /// calling task instead of a spawned one: the ingest's consume loop. On a runtime worker
    /// thread, beside the flush tasks, that loop made the ingest's peak RSS 751–785 MiB instead
    /// of 555–573 MiB in `benches/benches/ingest_throughput.rs` (5M events, same machine and
    /// run), at the same throughput.
    pub async fn run_with_foreground<F, Fut>(
        self,
        stage: &str,
        task: F,
        shutdown: CancellationToken,
        grace: Duration,
    ) -> Result<()>
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let index = self.index(stage);
        let foreground = task(self.stages[index].token.clone());
        self.run_with(Some(index), foreground, shutdown, grace).await
    }

    async fn run_with(
        mut self,
        foreground_stage: Option<usize>,
        foreground: impl Future<Output = Result<()>>,
        shutdown: CancellationToken,
        grace: Duration,
    ) -> Result<()> {
        let mut foreground = std::pin::pin!(foreground);
        let mut in_foreground = foreground_stage;
        if let Some(index) = in_foreground {
            self.stages[index].running += 1;
        }
        let mut first_error = None;
        while first_error.is_none() && (!self.tasks.is_empty() || in_foreground.is_some()) {
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(done) = self.tasks.join_next_with_id() => {
                    if let Err(e) = self.finished(done) {
                        error!(error = format!("{e:#}"), "a stage failed; stopping");
                        first_error = Some(e);
                    }
                }
                result = &mut foreground, if in_foreground.is_some() => {
                    let index = in_foreground.take().expect("guarded");
                    if let Err(e) = self.finished_at(index, result) {
                        error!(error = format!("{e:#}"), "a stage failed; stopping");
                        first_error = Some(e);
                    }
                }
            }
        }
        let deadline = Instant::now() + grace;
        for index in 0..self.stages.len() {
            let stage = &self.stages[index];
            if stage.running > 0 {
                info!(stage = stage.name, "stopping");
            }
            stage.token.cancel();
            while self.stages[index].running > 0 {
                let outcome = tokio::time::timeout_at(deadline, async {
                    tokio::select! {
                        Some(done) = self.tasks.join_next_with_id() => Ok(done),
                        result = &mut foreground, if in_foreground.is_some() => Err(result),
                    }
                })
                .await;
                let result = match outcome {
                    Err(_) => return Err(self.give_up(grace).into()),
                    Ok(Ok(done)) => self.finished(done),
                    Ok(Err(result)) => {
                        let index = in_foreground.take().expect("guarded");
                        self.finished_at(index, result)
                    }
                };
                if let Err(e) = result {
                    error!(error = format!("{e:#}"), "a stage failed while stopping");
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Books a finished task against its stage; its outcome.
    fn finished(&mut self, done: Result<(tokio::task::Id, Result<()>), JoinError>) -> Result<()> {
        let id = done.as_ref().map_or_else(JoinError::id, |(id, _)| *id);
        let index = self.stage_of.remove(&id).expect("every task has a stage");
        match done {
            Ok((_, result)) => self.finished_at(index, result),
            Err(e) => Err(anyhow::Error::new(e).context(format!("{} panicked", self.book(index)))),
        }
    }

    /// Books a finished task of stage `index`; its outcome.
    fn finished_at(&mut self, index: usize, result: Result<()>) -> Result<()> {
        let name = self.book(index);
        result.with_context(|| name)
    }

    /// One task fewer running in stage `index`; the stage's name.
    fn book(&mut self, index: usize) -> &'static str {
        let stage = &mut self.stages[index];
        stage.running -= 1;
        if stage.running == 0 && stage.token.is_cancelled() {
            info!(stage = stage.name, "stopped");
        }
        stage.name
    }

    /// Tells every stage to stop at once and names those still running.
    fn give_up(&self, grace: Duration) -> GraceExpired {
        let pending: Vec<&'static str> = self.stages.iter().filter(|s| s.running > 0).map(|s| s.name).collect();
        warn!(?grace, ?pending, "shutdown grace ran out; exiting with stages still running");
        if let Some(last) = self.stages.last() {
            last.token.cancel();
        }
        GraceExpired { grace, pending }
    }
}

#[cfg(test)]
mod tests;
