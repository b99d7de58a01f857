//! Which partitions this member owns and what becomes of each, decided without Kafka or a store.
//!
//! The run loop ([`crate::consumer`]) reports what happened — a message arrived, a log was
//! recovered, partitions were revoked, the ticker ticked, a flush finished — and executes what
//! [`Ownership`] answers with I/O:
//!
//! - a message of a partition not owned: [`Admit::Recover`] its commit log, then maybe
//!   [`Admit::Seek`] to where the log says the lake ends; of an owned one: [`Admit::Buffer`] it,
//!   [`Admit::Skip`] it (below the [`Cursor`]) or seek again (stale, right after a seek);
//! - a full or old buffer, or all buffers over the memory budget: [`Flush::Start`] a flush, at
//!   most one per partition (it holds the partition's log meanwhile), or [`Flush::WaitForAFlush`]
//!   when the largest buffer's flush — or, for a buffer at the hour cap, its own — is in flight;
//! - a finished flush ([`Finished`]): landed (commit the Kafka offset, announce), stale (the
//!   partition was revoked or recovered again meanwhile: only log it), fenced (another member
//!   writes the partition: drop its state), abandoned at shutdown, or failed for good.
//!
//! Each recovery of a partition is a new *generation*; a flush started by an earlier one never
//! touches the state of a later one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::error::ArrowError;
use chrono::{DateTime, Utc};
use testlake_schemas::log::EntryFile;
use testlake_schemas::{EventView, Rejection};
use tracing::{debug, info};

use crate::buffer::{MAX_HOURS_PER_FLUSH, PartitionBuffer, PendingFlush, Pushed};
use crate::cursor::{Cursor, Step};
use crate::error::Error;
use crate::flush::FlushPolicy;
use crate::log_writer::{CommitError, PartitionLog};

/// What the decisions need of a partition's commit log: a [`PartitionLog`], or a stub in tests.
pub trait Log {
    /// The sequence number of the log's next entry (the next flush's files are named with it).
    fn next_seq(&self) -> u64;
    /// The first offset not yet durable, if the log has a committed entry.
    fn resume_offset(&self) -> Option<i64>;
}

impl Log for PartitionLog {
    fn next_seq(&self) -> u64 {
        PartitionLog::next_seq(self)
    }

    fn resume_offset(&self) -> Option<i64> {
        PartitionLog::resume_offset(self)
    }
}

/// What to do with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Its partition is not owned (newly assigned, revoked or fenced before): recover the
    /// partition's log as recovery `generation`, then call [`Ownership::recovered`].
    Recover { generation: u64 },
    /// The log says consumption resumes at `resume` (`None`: the partition's beginning), and
    /// the consumer is not known to deliver from there: seek there (on failure,
    /// [`Ownership::forget`] the partition); the message is not buffered.
    Seek { resume: Option<i64> },
    /// A new message: [`Ownership::push`] it.
    Buffer,
    /// Already durable, a duplicate delivery or stale prefetch.
    Skip,
}

/// A flush to run: the buffered files of a partition, and its log, which the flush holds until
/// it hands it back through [`Ownership::finished`].
pub struct FlushJob<L> {
    pub partition: i32,
    pub generation: u64,
    pub log: L,
    pub flush: PendingFlush,
}

/// What to do about flushing.
pub enum Flush<L> {
    /// Run this flush (on another task).
    Start(FlushJob<L>),
    /// The buffers are over the memory budget and the largest one's flush is in flight, or this
    /// partition's buffer holds as many hours as a flush writes and its flush is in flight: stop
    /// consuming until some flush finishes, then ask again.
    WaitForAFlush,
}

/// The bookkeeping of a flush, without its batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushSummary {
    pub first_offset: i64,
    pub last_offset: i64,
    pub next_offset: i64,
    pub valid: usize,
    pub rejected: usize,
}

impl FlushSummary {
    pub fn of(flush: &PendingFlush) -> Self {
        Self {
            first_offset: flush.first_offset,
            last_offset: flush.last_offset,
            next_offset: flush.next_offset(),
            valid: flush.valid,
            rejected: flush.rejected,
        }
    }
}

/// What a flush made durable: its log entry's files, and their Parquet bytes.
#[derive(Debug)]
pub struct Committed {
    pub entries: Vec<EntryFile>,
    pub bytes: usize,
}

/// A flush handed back by its task.
pub struct FlushDone<L> {
    pub partition: i32,
    pub generation: u64,
    pub log: L,
    pub summary: FlushSummary,
    pub outcome: Result<Committed, Error>,
    /// When the flush started (for its duration).
    pub started: Instant,
}

/// What to do about a finished flush.
#[derive(Debug)]
pub enum Finished {
    /// Committed by the partition's current owner: commit the Kafka offset `summary.next_offset`
    /// (a hint) and announce the files.
    Landed { partition: i32, summary: FlushSummary, committed: Committed },
    /// Committed, but the partition was revoked or recovered again meanwhile: the log holds what
    /// it did; only log it.
    Stale { partition: i32, summary: FlushSummary },
    /// Another writer owns the partition's log: its state here is dropped (if it was still this
    /// flush's generation), so its next message recovers again.
    Fenced { partition: i32, error: Error },
    /// The flush stopped retrying because the process is shutting down: nothing is committed to
    /// Kafka and the partition's state is dropped; its next owner consumes it again.
    Abandoned { partition: i32, summary: FlushSummary },
    /// An error that no retry fixes: stop the ingest.
    Failed(Error),
}

/// A partition this member owns: its recovered log, its buffer, and the next offset it accepts.
struct Owned<L> {
    /// `None` while a flush of this partition is in flight (it holds the log meanwhile).
    log: Option<L>,
    /// Which recovery of the partition this is; a flush started by an earlier one is stale.
    generation: u64,
    buffer: PartitionBuffer,
    cursor: Cursor,
}

/// The partitions this member owns, and the decisions about them.
pub struct Ownership<L> {
    topic: Arc<str>,
    policy: FlushPolicy,
    owned: BTreeMap<i32, Owned<L>>,
    recoveries: u64,
    /// Given to each partition's buffer ([`PartitionBuffer::with_retention`]).
    retention_days: u32,
}

impl<L: Log> Ownership<L> {
    pub fn new(topic: Arc<str>, policy: FlushPolicy) -> Self {
        Self { topic, policy, owned: BTreeMap::new(), recoveries: 0, retention_days: 0 }
    }

    /// Buffers reject events of dates past a retention of `days` (0: none).
    pub fn with_retention(mut self, days: u32) -> Self {
        self.retention_days = days;
        self
    }

    pub fn owns(&self, partition: i32) -> bool {
        self.owned.contains_key(&partition)
    }

    /// The partitions owned, in ascending order.
    pub fn partitions(&self) -> Vec<i32> {
        self.owned.keys().copied().collect()
    }

    /// Whether a flush of `partition` is in flight.
    pub fn flushing(&self, partition: i32) -> bool {
        self.owned.get(&partition).is_some_and(|o| o.log.is_none())
    }

    /// A message of `partition` at `offset` arrived.
    pub fn admit(&mut self, partition: i32, offset: i64) -> Admit {
        let Some(owned) = self.owned.get_mut(&partition) else {
            self.recoveries += 1;
            return Admit::Recover { generation: self.recoveries };
        };
        Self::decide(owned.cursor.step(offset))
    }

    fn decide(step: Step) -> Admit {
        match step {
            Step::Admit => Admit::Buffer,
            Step::Skip => Admit::Skip,
            Step::Seek(resume) => Admit::Seek { resume },
        }
    }

    /// The partition's log was recovered (as `generation`, from [`Admit::Recover`]) for the
    /// message at `offset`: the partition is owned from now on. Never answers `Recover`.
    pub fn recovered(&mut self, partition: i32, generation: u64, log: L, offset: i64) -> Admit {
        let (cursor, step) = Cursor::recovered(log.resume_offset(), offset);
        let buffer = PartitionBuffer::new(Arc::clone(&self.topic), partition).with_retention(self.retention_days);
        self.owned.insert(partition, Owned { log: Some(log), generation, buffer, cursor });
        Self::decide(step)
    }

    /// Bytes buffered over every owned partition (as the memory budget counts them).
    pub fn buffered_bytes(&self) -> usize {
        self.owned.values().map(|o| o.buffer.bytes()).sum()
    }

    /// Forgets a partition (its seek failed): its next message recovers it again.
    pub fn forget(&mut self, partition: i32) {
        self.owned.remove(&partition);
    }

    /// The group took these partitions away: drop their state. Nothing buffered is lost — the
    /// next owner recovers from the partition's log; a flush in flight finishes as stale.
    pub fn revoke(&mut self, partitions: impl IntoIterator<Item = i32>) {
        for partition in partitions {
            if let Some(owned) = self.owned.remove(&partition) {
                info!(partition, rows = owned.buffer.rows(), "dropped the state of a revoked partition");
            }
        }
    }

    /// Buffers an admitted message, `decoded` from its payload at `now` (`None` if the partition
    /// is not owned).
    pub fn push(
        &mut self,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        decoded: Result<EventView<'_>, Rejection>,
        now: DateTime<Utc>,
    ) -> Option<Pushed> {
        Some(self.owned.get_mut(&partition)?.buffer.push_decoded(offset, key, payload, decoded, now))
    }

    /// What to flush after `partition` changed: the partition itself if its buffer is full — or,
    /// given the time `now`, old enough — and the largest buffer if all of them together are over
    /// the memory budget. Per message the age is not looked at (reading the clock per message
    /// cost ~3 % of the ingest's CPU): each tick looks at every buffer's age.
    pub fn due(&mut self, partition: i32, now: Option<Instant>) -> Result<Vec<Flush<L>>, ArrowError> {
        let mut flushes = Vec::new();
        let Some(owned) = self.owned.get(&partition) else { return Ok(flushes) };
        let b = &owned.buffer;
        let age = now.map_or(Duration::ZERO, |now| b.age(now));
        if self.policy.should_flush(b.rows(), b.bytes(), b.hours(), age) {
            let at_hour_cap = b.hours() >= MAX_HOURS_PER_FLUSH;
            match self.start(partition)? {
                Some(job) => flushes.push(Flush::Start(job)),
                // A flush writes at most that many hours: stop consuming until the partition's
                // flush in flight is done, rather than gather more.
                None if at_hour_cap && self.flushing(partition) => return Ok(vec![Flush::WaitForAFlush]),
                None => {}
            }
        }
        // Cheap per message: the budget is looked at only when this one buffer could matter.
        let bytes = self.owned.get(&partition).map_or(0, |o| o.buffer.bytes());
        if bytes.saturating_mul(self.owned.len()) < self.policy.max_total_bytes {
            return Ok(flushes);
        }
        let sizes = self.owned.iter().map(|(&p, o)| (p, o.buffer.bytes()));
        if let Some(largest) = self.policy.over_budget(sizes) {
            debug!(partition = largest, "buffers over the memory budget: flushing the largest early");
            match self.start(largest)? {
                Some(job) => flushes.push(Flush::Start(job)),
                None if self.flushing(largest) => flushes.push(Flush::WaitForAFlush),
                None => {}
            }
        }
        Ok(flushes)
    }

    /// At shutdown: a flush of every non-empty buffer whose partition has no flush in flight.
    pub fn drain(&mut self) -> Result<Vec<FlushJob<L>>, ArrowError> {
        let mut jobs = Vec::new();
        for partition in self.partitions() {
            jobs.extend(self.start(partition)?);
        }
        Ok(jobs)
    }

    /// Takes the partition's buffer and log for a flush, unless one is in flight or the buffer is empty.
    fn start(&mut self, partition: i32) -> Result<Option<FlushJob<L>>, ArrowError> {
        let Some(owned) = self.owned.get_mut(&partition) else { return Ok(None) };
        let Some(next_seq) = owned.log.as_ref().map(L::next_seq) else { return Ok(None) };
        let Some(flush) = owned.buffer.take(next_seq)? else { return Ok(None) };
        let log = owned.log.take().expect("checked above");
        Ok(Some(FlushJob { partition, generation: owned.generation, log, flush }))
    }

    /// A flush came back: gives the log back to the partition if it is still the flush's
    /// generation, and says what to do.
    pub fn finished(&mut self, done: FlushDone<L>) -> Finished {
        let FlushDone { partition, generation, log, summary, outcome, .. } = done;
        let current = self.owned.get_mut(&partition).filter(|o| o.generation == generation && o.log.is_none());
        match outcome {
            Ok(committed) => match current {
                Some(owned) => {
                    owned.log = Some(log);
                    Finished::Landed { partition, summary, committed }
                }
                None => Finished::Stale { partition, summary },
            },
            Err(error @ Error::Commit(CommitError::Fenced { .. })) => {
                if current.is_some() {
                    self.owned.remove(&partition);
                }
                Finished::Fenced { partition, error }
            }
            Err(Error::ShuttingDown) => {
                if current.is_some() {
                    self.owned.remove(&partition);
                }
                Finished::Abandoned { partition, summary }
            }
            Err(error) => Finished::Failed(error),
        }
    }

    /// Where each owned partition's log says the lake ends (partitions with a flush in flight or
    /// no committed entry are left out): the Kafka offsets to leave as hints when stopping.
    pub fn resume_offsets(&self) -> Vec<(i32, i64)> {
        self.owned.iter().filter_map(|(&p, o)| Some((p, o.log.as_ref()?.resume_offset()?))).collect()
    }
}

#[cfg(test)]
mod tests;
