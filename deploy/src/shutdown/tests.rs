use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;

use super::*;

type Log = Arc<Mutex<Vec<String>>>;

/// A fake stage task: waits for its token, takes `drain` to finish (recording both), then
/// returns `outcome`.
fn fake(
    log: &Log,
    name: &'static str,
    drain: Duration,
) -> impl FnOnce(CancellationToken) -> BoxFuture<'static, Result<()>> {
    let log = Arc::clone(log);
    move |token| {
        Box::pin(async move {
            token.cancelled().await;
            log.lock().unwrap().push(format!("stop {name}"));
            tokio::time::sleep(drain).await;
            log.lock().unwrap().push(format!("done {name}"));
            Ok(())
        })
    }
}

fn entries(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

/// The log with entries 2 and 3 sorted: two tasks of one stage are told together, in either order.
fn entries_with_stage_pair_sorted(log: &Log) -> Vec<String> {
    let mut log = entries(log);
    log[2..4].sort();
    log
}

#[tokio::test]
async fn stages_stop_one_after_another_in_order() {
    let log = Log::default();
    let mut stages = Stages::new(&[INPUT, INGEST, COMPUTE, SERVE]);
    // Draining the ingest takes longest: compute must not be told before it is done.
    stages.spawn(SERVE, fake(&log, "serve", Duration::ZERO));
    stages.spawn(COMPUTE, fake(&log, "compute", Duration::from_millis(20)));
    stages.spawn(INGEST, fake(&log, "ingest", Duration::from_millis(80)));
    stages.spawn(INGEST, fake(&log, "compactor", Duration::from_millis(10)));
    stages.spawn(INPUT, fake(&log, "fleet", Duration::from_millis(10)));
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(stages.run(shutdown.clone(), Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(entries(&log).is_empty(), "nothing stops before shutdown: {:?}", entries(&log));
    shutdown.cancel();
    run.await.unwrap().unwrap();
    assert_eq!(
        entries_with_stage_pair_sorted(&log),
        [
            "stop fleet",
            "done fleet",
            "stop compactor",
            "stop ingest",
            "done compactor",
            "done ingest",
            "stop compute",
            "done compute",
            "stop serve",
            "done serve"
        ]
    );
}

#[tokio::test]
async fn a_failing_stage_stops_the_others_in_order_and_is_reported() {
    let log = Log::default();
    let mut stages = Stages::new(&[INGEST, COMPUTE, SERVE]);
    stages.spawn(SERVE, fake(&log, "serve", Duration::ZERO));
    stages.spawn(INGEST, fake(&log, "ingest", Duration::from_millis(30)));
    stages.spawn(COMPUTE, |_| async { anyhow::bail!("lake unreachable") });
    let err = stages.run(CancellationToken::new(), Duration::from_secs(10)).await.unwrap_err();
    assert_eq!(format!("{err:#}"), "compute: lake unreachable");
    assert_eq!(entries(&log), ["stop ingest", "done ingest", "stop serve", "done serve"]);
}

#[tokio::test]
async fn a_panicking_task_is_an_error_of_its_stage() {
    let mut stages = Stages::new(&[INGEST, SERVE]);
    stages.spawn(SERVE, |token| async move {
        token.cancelled().await;
        Ok(())
    });
    stages.spawn(INGEST, |_| async { panic!("boom") });
    let err = stages.run(CancellationToken::new(), Duration::from_secs(10)).await.unwrap_err();
    assert!(format!("{err:#}").starts_with("ingest panicked"), "{err:#}");
}

#[tokio::test]
async fn past_the_grace_the_stages_still_running_are_named_and_all_are_told_to_stop() {
    let log = Log::default();
    let mut stages = Stages::new(&[INGEST, COMPUTE, SERVE]);
    let serve = stages.token(SERVE);
    stages.spawn(SERVE, fake(&log, "serve", Duration::ZERO));
    stages.spawn(COMPUTE, fake(&log, "compute", Duration::from_secs(3600)));
    stages.spawn(INGEST, fake(&log, "ingest", Duration::ZERO));
    let shutdown = CancellationToken::new();
    shutdown.cancel();
    let started = Instant::now();
    let err = stages.run(shutdown, Duration::from_millis(100)).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    let expired = err.downcast_ref::<GraceExpired>().expect("GraceExpired");
    assert_eq!(expired.pending, [COMPUTE, SERVE]);
    assert!(serve.is_cancelled(), "the grace ran out: every stage is told to stop");
    assert_eq!(entries(&log)[..3], ["stop ingest", "done ingest", "stop compute"]);
}

#[tokio::test]
async fn tasks_that_end_by_themselves_end_the_run() {
    let mut stages = Stages::new(&[INPUT, SERVE]);
    let serve = stages.token(SERVE);
    stages.spawn(INPUT, |_| async { Ok(()) });
    stages.run(CancellationToken::new(), Duration::from_secs(10)).await.unwrap();
    assert!(serve.is_cancelled(), "every stage's token is cancelled once the run ends");
}

#[test]
fn a_later_stage_s_token_stops_the_earlier_ones_only() {
    let stages = Stages::new(&[INPUT, INGEST, COMPUTE, SERVE]);
    stages.token(INGEST).cancel();
    let cancelled: Vec<bool> = [INPUT, INGEST, COMPUTE, SERVE].iter().map(|s| stages.token(s).is_cancelled()).collect();
    assert_eq!(cancelled, [true, true, false, false]);
}

/// A task run on the calling task (the ingest's loop) stops in its stage's turn like a spawned
/// one, its failure stops the others, and past the grace it is named with the rest.
#[tokio::test]
async fn a_foreground_task_stops_in_its_stages_turn() {
    let log = Log::default();
    let mut stages = Stages::new(&[INPUT, INGEST, SERVE]);
    stages.spawn(SERVE, fake(&log, "serve", Duration::ZERO));
    stages.spawn(INGEST, fake(&log, "compactor", Duration::ZERO));
    stages.spawn(INPUT, fake(&log, "fleet", Duration::from_millis(10)));
    let shutdown = CancellationToken::new();
    let cancel = shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        cancel.cancel();
    });
    let ingest = fake(&log, "ingest", Duration::from_millis(50));
    stages.run_with_foreground(INGEST, ingest, shutdown, Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        entries_with_stage_pair_sorted(&log),
        [
            "stop fleet",
            "done fleet",
            "stop compactor",
            "stop ingest",
            "done compactor",
            "done ingest",
            "stop serve",
            "done serve"
        ]
    );

    let log = Log::default();
    let mut stages = Stages::new(&[INGEST, SERVE]);
    stages.spawn(SERVE, fake(&log, "serve", Duration::ZERO));
    let failing = |_| async { anyhow::bail!("broker unreachable") };
    let err = stages.run_with_foreground(INGEST, failing, CancellationToken::new(), Duration::from_secs(10)).await;
    assert_eq!(format!("{:#}", err.unwrap_err()), "ingest: broker unreachable");
    assert_eq!(entries(&log), ["stop serve", "done serve"]);

    let stages = Stages::new(&[INGEST]);
    let shutdown = CancellationToken::new();
    shutdown.cancel();
    let stuck = |_| std::future::pending::<Result<()>>();
    let err = stages.run_with_foreground(INGEST, stuck, shutdown, Duration::from_millis(20)).await.unwrap_err();
    assert_eq!(err.downcast_ref::<GraceExpired>().unwrap().pending, ["ingest"]);
}
