use super::*;

/// A log with no store behind it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct StubLog {
    next_seq: u64,
    resume: Option<i64>,
}

impl Log for StubLog {
    fn next_seq(&self) -> u64 {
        self.next_seq
    }

    fn resume_offset(&self) -> Option<i64> {
        self.resume
    }
}

const EMPTY: StubLog = StubLog { next_seq: 0, resume: None };

fn policy() -> FlushPolicy {
    FlushPolicy { max_rows: 3, max_bytes: 1 << 20, max_age: Duration::from_secs(1), max_total_bytes: 1 << 20 }
}

fn ownership() -> Ownership<StubLog> {
    Ownership::new("t".into(), policy())
}

/// Owns `partition` from the log `log`, recovered for a message at `offset` of `bytes` bytes,
/// which it buffers (the log resumes there or has no committed entry).
fn own(o: &mut Ownership<StubLog>, partition: i32, log: StubLog, offset: i64, bytes: usize) -> u64 {
    let Admit::Recover { generation } = o.admit(partition, offset) else { panic!("not owned yet") };
    assert_eq!(o.recovered(partition, generation, log, offset), Admit::Buffer);
    buffer(o, partition, offset, bytes);
    generation
}

/// Admits and buffers a message of `bytes` bytes.
fn push(o: &mut Ownership<StubLog>, partition: i32, offset: i64, bytes: usize) {
    assert_eq!(o.admit(partition, offset), Admit::Buffer);
    buffer(o, partition, offset, bytes);
}

/// Buffers a message of `bytes` bytes (not an event: it is buffered as rejected).
fn buffer(o: &mut Ownership<StubLog>, partition: i32, offset: i64, bytes: usize) {
    let (payload, now) = (vec![b'x'; bytes], Utc::now());
    let decoded = testlake_schemas::EventView::decode(&payload, now);
    assert!(o.push(partition, offset, None, Some(&payload), decoded, now).is_some());
}

fn started(flushes: Vec<Flush<StubLog>>) -> Vec<FlushJob<StubLog>> {
    flushes
        .into_iter()
        .map(|f| match f {
            Flush::Start(job) => job,
            Flush::WaitForAFlush => panic!("expected only flushes to start"),
        })
        .collect()
}

/// Owns partition 0 (a log with no entry yet), with a full buffer of offsets 0..=2 flushing.
fn flushing_offsets_0_to_2() -> (Ownership<StubLog>, FlushJob<StubLog>) {
    let mut o = ownership();
    own(&mut o, 0, EMPTY, 0, 10);
    for offset in 1..3 {
        push(&mut o, 0, offset, 10);
    }
    let job = one(o.due(0, None).unwrap());
    (o, job)
}

/// The one flush to start.
fn one(flushes: Vec<Flush<StubLog>>) -> FlushJob<StubLog> {
    let mut jobs = started(flushes);
    assert_eq!(jobs.len(), 1, "one flush to start");
    jobs.pop().unwrap()
}

fn done(job: FlushJob<StubLog>, outcome: Result<Committed, Error>) -> FlushDone<StubLog> {
    let summary = FlushSummary::of(&job.flush);
    FlushDone {
        partition: job.partition,
        generation: job.generation,
        log: job.log,
        summary,
        outcome,
        started: Instant::now(),
    }
}

fn committed() -> Result<Committed, Error> {
    Ok(Committed { entries: Vec::new(), bytes: 0 })
}

fn fenced(partition: i32) -> Result<Committed, Error> {
    Err(CommitError::Fenced { partition, seq: 0 }.into())
}

#[test]
fn a_new_partition_is_recovered_then_admits_from_its_resume_offset() {
    let mut o = ownership();
    assert_eq!(o.admit(0, 5), Admit::Recover { generation: 1 });
    assert!(!o.owns(0), "owned only once recovered");
    assert_eq!(o.recovered(0, 1, StubLog { next_seq: 3, resume: Some(5) }, 5), Admit::Buffer);
    assert_eq!(o.admit(0, 5), Admit::Skip, "a duplicate delivery");
    assert_eq!(o.admit(0, 6), Admit::Buffer);
    assert_eq!(o.admit(1, 0), Admit::Recover { generation: 2 }, "each recovery is a new generation");
    assert_eq!(o.recovered(1, 2, EMPTY, 0), Admit::Buffer, "an empty log, at its beginning");
}

#[test]
fn a_log_that_resumes_elsewhere_seeks_and_a_failed_seek_recovers_again() {
    let mut o = ownership();
    assert_eq!(o.admit(0, 2), Admit::Recover { generation: 1 });
    assert_eq!(o.recovered(0, 1, StubLog { next_seq: 1, resume: Some(10) }, 2), Admit::Seek { resume: Some(10) });
    assert_eq!(o.admit(0, 3), Admit::Skip, "stale prefetch from before the seek");
    assert_eq!(o.admit(0, 10), Admit::Buffer);

    o.forget(0);
    assert_eq!(o.admit(0, 4), Admit::Recover { generation: 2 }, "a forgotten partition recovers again");
    assert_eq!(o.recovered(0, 2, StubLog { next_seq: 1, resume: Some(4) }, 4), Admit::Buffer, "already there");
}

#[test]
fn after_seeking_back_stale_prefetch_seeks_again_and_never_skips_the_resumed_messages() {
    let mut o = ownership();
    assert_eq!(o.admit(0, 500), Admit::Recover { generation: 1 });
    assert_eq!(o.recovered(0, 1, StubLog { next_seq: 2, resume: Some(400) }, 500), Admit::Seek { resume: Some(400) });
    assert_eq!(o.admit(0, 501), Admit::Seek { resume: Some(400) }, "prefetched before the seek");
    for offset in 400..=501 {
        assert_eq!(o.admit(0, offset), Admit::Buffer, "offset {offset}, delivered again after the seek");
    }
    assert_eq!(o.recovered(1, 2, EMPTY, 9), Admit::Seek { resume: None }, "an empty log seeks to the beginning");
}

#[test]
fn a_full_buffer_flushes_once_and_its_partition_waits_for_the_log_back() {
    let mut o = ownership();
    own(&mut o, 0, StubLog { next_seq: 7, resume: None }, 0, 10);
    assert!(o.due(0, None).unwrap().is_empty(), "not full yet");
    push(&mut o, 0, 1, 10);
    assert!(o.due(0, None).unwrap().is_empty());
    push(&mut o, 0, 2, 10);
    let job = one(o.due(0, None).unwrap());
    assert_eq!((job.partition, job.generation, job.flush.first_offset, job.flush.last_offset), (0, 1, 0, 2));
    assert!(job.flush.files.iter().all(|f| f.path.file.entry == 7), "files named by the log's next entry");
    assert!(o.flushing(0));

    for offset in 3..6 {
        push(&mut o, 0, offset, 10);
    }
    assert!(o.due(0, None).unwrap().is_empty(), "one flush per partition: entries stay in order");
    assert!(o.drain().unwrap().is_empty(), "nor at shutdown");
    assert_eq!(o.resume_offsets(), vec![], "the flush holds the log");

    let log = StubLog { next_seq: 8, resume: Some(3) }; // what the commit did to the log
    let finished = o.finished(FlushDone { log, ..done(job, committed()) });
    let Finished::Landed { partition: 0, summary, .. } = finished else { panic!("{finished:?}") };
    assert_eq!((summary.next_offset, summary.valid + summary.rejected), (3, 3));
    assert_eq!(o.resume_offsets(), vec![(0, 3)]);
    let next = one(o.due(0, None).unwrap());
    assert_eq!((next.flush.first_offset, next.flush.files[0].path.file.entry), (3, 8));
}

#[test]
fn age_is_looked_at_only_on_ticks() {
    let mut o = ownership();
    own(&mut o, 0, EMPTY, 0, 10);
    assert!(o.due(0, None).unwrap().is_empty());
    assert!(o.due(0, Some(Instant::now())).unwrap().is_empty(), "young");
    let later = Instant::now() + Duration::from_secs(2);
    assert_eq!(started(o.due(0, Some(later)).unwrap()).len(), 1);
    assert!(o.due(0, Some(later)).unwrap().is_empty(), "nothing left to flush");
}

#[test]
fn over_the_budget_the_largest_buffer_flushes_early() {
    // A rejected message of n bytes counts about 1.5 (n + 100): its row and the growth room.
    let mut o = Ownership::new("t".into(), FlushPolicy { max_rows: 100, max_total_bytes: 3000, ..policy() });
    own(&mut o, 0, EMPTY, 0, 1800);
    assert!(o.due(0, None).unwrap().is_empty(), "under the budget");
    own(&mut o, 1, EMPTY, 0, 900);
    push(&mut o, 1, 1, 700);
    let job = one(o.due(1, None).unwrap());
    assert_eq!(job.partition, 0, "the largest buffer, not the one that grew");
    assert!(o.flushing(0) && !o.flushing(1));
}

#[test]
fn over_the_budget_while_the_largest_buffers_flush_is_in_flight_waits_for_a_flush() {
    let mut o = Ownership::new("t".into(), FlushPolicy { max_rows: 2, max_total_bytes: 1000, ..policy() });
    own(&mut o, 0, EMPTY, 0, 10);
    push(&mut o, 0, 1, 10);
    let job = one(o.due(0, None).unwrap());
    push(&mut o, 0, 2, 700); // buffered while partition 0's flush is in flight
    own(&mut o, 1, EMPTY, 0, 600);
    let flushes = o.due(1, None).unwrap();
    assert!(matches!(flushes[..], [Flush::WaitForAFlush]), "stop consuming until a flush finishes");

    assert!(matches!(o.finished(done(job, committed())), Finished::Landed { partition: 0, .. }));
    let job = one(o.due(1, None).unwrap());
    assert_eq!((job.partition, job.flush.first_offset), (0, 2), "now the largest buffer flushes");
}

/// Admits (past offset 0, which the recovery admitted) and buffers a valid event finished
/// `hours_ago` hours ago.
fn buffer_event(o: &mut Ownership<StubLog>, partition: i32, offset: i64, hours_ago: i64) {
    let finished_at = (Utc::now() - Duration::from_secs(3600 * hours_ago as u64)).to_rfc3339();
    let event = format!(
        r#"{{"schema_version":1,"event_id":"00000000-0000-4000-8000-{offset:012}","repository":"r","branch":"b","commit_sha":"c","run_id":"x","suite":"s","test_id":"t","status":"passed","duration_ms":1,"finished_at":"{finished_at}"}}"#
    );
    if offset > 0 {
        assert_eq!(o.admit(partition, offset), Admit::Buffer);
    }
    let now = Utc::now();
    let decoded = testlake_schemas::EventView::decode(event.as_bytes(), now);
    assert_eq!(o.push(partition, offset, None, Some(event.as_bytes()), decoded, now), Some(Pushed::Accepted));
}

#[test]
fn a_buffer_flushes_at_the_hour_cap_and_waits_while_its_flush_is_in_flight() {
    let hours = MAX_HOURS_PER_FLUSH as i64;
    let mut o = Ownership::new("t".into(), FlushPolicy { max_rows: 1 << 20, ..policy() });
    let Admit::Recover { generation } = o.admit(0, 0) else { panic!("not owned yet") };
    assert_eq!(o.recovered(0, generation, EMPTY, 0), Admit::Buffer);
    for offset in 0..hours - 1 {
        buffer_event(&mut o, 0, offset, 2 * offset + 1);
        assert!(o.due(0, None).unwrap().is_empty(), "{} hours", offset + 1);
    }
    buffer_event(&mut o, 0, hours - 1, 2 * hours);
    let job = one(o.due(0, None).unwrap());
    assert_eq!(job.flush.files.len(), MAX_HOURS_PER_FLUSH, "one file per hour, no more");

    for offset in hours..2 * hours {
        buffer_event(&mut o, 0, offset, 2 * offset + 1);
    }
    let flushes = o.due(0, None).unwrap();
    assert!(matches!(flushes[..], [Flush::WaitForAFlush]), "at the cap again: wait for the flush in flight");
    assert!(matches!(o.finished(done(job, committed())), Finished::Landed { partition: 0, .. }));
    let job = one(o.due(0, None).unwrap());
    assert_eq!((job.flush.first_offset, job.flush.files.len()), (hours, MAX_HOURS_PER_FLUSH));
}

#[test]
fn a_flush_finishing_after_its_partition_was_revoked_is_stale() {
    let (mut o, job) = flushing_offsets_0_to_2();
    o.revoke([0, 5]);
    assert!(!o.owns(0));
    assert!(matches!(o.finished(done(job, committed())), Finished::Stale { partition: 0, .. }));
    assert!(!o.owns(0), "a stale flush does not bring the partition back");
    assert_eq!(o.admit(0, 3), Admit::Recover { generation: 2 });
}

#[test]
fn a_flush_of_an_earlier_generation_never_touches_the_state_of_a_later_one() {
    let (mut o, first) = flushing_offsets_0_to_2();
    let (generation, summary) = (first.generation, FlushSummary::of(&first.flush));
    o.revoke([0]);
    // Assigned back and recovered again; its own flush is in flight when the first one ends.
    assert_eq!(own(&mut o, 0, StubLog { next_seq: 1, resume: Some(3) }, 3, 10), 2);
    for offset in 4..6 {
        push(&mut o, 0, offset, 10);
    }
    let second = one(o.due(0, None).unwrap());

    let finished = o.finished(done(first, committed()));
    assert!(matches!(finished, Finished::Stale { partition: 0, .. }), "{finished:?}");
    assert!(o.flushing(0), "the later generation's flush still holds its log");
    let late_fence =
        FlushDone { partition: 0, generation, log: EMPTY, summary, outcome: fenced(0), started: Instant::now() };
    assert!(matches!(o.finished(late_fence), Finished::Fenced { partition: 0, .. }));
    assert!(o.owns(0), "an earlier generation's fence does not drop the later one");

    assert!(matches!(o.finished(done(second, committed())), Finished::Landed { partition: 0, .. }));
    assert!(!o.flushing(0));
}

#[test]
fn a_fenced_flush_drops_the_partition_so_its_next_message_recovers() {
    let (mut o, job) = flushing_offsets_0_to_2();
    push(&mut o, 0, 3, 10);
    assert!(matches!(o.finished(done(job, fenced(0))), Finished::Fenced { partition: 0, .. }));
    assert!(!o.owns(0), "what it buffered meanwhile is the new owner's to write");
    assert_eq!(o.admit(0, 4), Admit::Recover { generation: 2 });
}

#[test]
fn shutting_down_abandons_a_flush_and_other_errors_fail_the_ingest() {
    let mut o = ownership();
    own(&mut o, 0, EMPTY, 0, 10);
    own(&mut o, 1, StubLog { next_seq: 4, resume: Some(0) }, 0, 10);
    let mut jobs = o.drain().unwrap();
    assert_eq!(jobs.len(), 2, "at shutdown every buffer flushes");
    jobs.sort_by_key(|j| j.partition);
    let (p1, p0) = (jobs.pop().unwrap(), jobs.pop().unwrap());

    let finished = o.finished(done(p0, Err(Error::ShuttingDown)));
    assert!(matches!(finished, Finished::Abandoned { partition: 0, .. }), "{finished:?}");
    assert!(!o.owns(0), "no hint is left for an abandoned partition");

    let corrupt = serde_json::from_slice::<serde_json::Value>(b"{").unwrap_err();
    let error = CommitError::Corrupt { path: "_log/x".into(), source: corrupt };
    assert!(matches!(o.finished(done(p1, Err(error.into()))), Finished::Failed(Error::Commit(_))));
}
