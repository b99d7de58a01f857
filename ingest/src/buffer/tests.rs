use super::*;
use chrono::TimeZone;

fn event(id: u32, finished_at: &str) -> Vec<u8> {
    format!(
        r#"{{"schema_version":1,"event_id":"00000000-0000-4000-8000-{id:012}","repository":"r","branch":"b",
        "commit_sha":"c","run_id":"x","suite":"s","test_id":"t{id}","status":"passed","duration_ms":3,
        "finished_at":"{finished_at}"}}"#
    )
    .into_bytes()
}

#[test]
fn splits_rows_by_event_hour_and_names_files_by_offsets() {
    let now = Utc.with_ymd_and_hms(2026, 11, 27, 12, 30, 0).unwrap();
    let mut b = PartitionBuffer::new("ci".into(), 4);
    assert!(b.take(3).unwrap().is_none());
    assert_eq!(b.push(10, None, Some(&event(1, "2026-11-27T10:59:59Z")), now), Pushed::Accepted);
    assert_eq!(b.push(11, None, Some(&event(2, "2026-11-27T11:00:00Z")), now), Pushed::Accepted);
    assert!(matches!(b.push(13, Some(b"k"), Some(b"{oops"), now), Pushed::Rejected(_)));
    assert!(matches!(b.push(14, None, None, now), Pushed::Rejected(_)));
    assert_eq!(b.push(15, None, Some(&event(3, "2026-11-27T10:00:00Z")), now), Pushed::Accepted);
    assert_eq!(b.rows(), 5);

    let flush = b.take(3).unwrap().unwrap();
    assert_eq!((flush.first_offset, flush.last_offset, flush.next_offset()), (10, 15, 16));
    assert_eq!((flush.valid, flush.rejected), (3, 2));
    let paths: Vec<String> = flush.files.iter().map(|f| f.path.to_string()).collect();
    let suffix = "ci_p00004_o00000000000000000010-00000000000000000015_e0000000003.parquet";
    assert_eq!(
        paths,
        vec![
            format!("results/date=2026-11-27/hour=10/{suffix}"),
            format!("results/date=2026-11-27/hour=11/{suffix}"),
            format!("rejected/date=2026-11-27/hour=12/{suffix}"),
        ]
    );
    let rows: Vec<usize> = flush.files.iter().map(PendingFile::num_rows).collect();
    assert_eq!(rows, vec![2, 1, 2]);
    assert_eq!(flush.files[0].min_time, Some(Utc.with_ymd_and_hms(2026, 11, 27, 10, 0, 0).unwrap()));
    assert_eq!(flush.files[0].max_time, Some(Utc.with_ymd_and_hms(2026, 11, 27, 10, 59, 59).unwrap()));

    assert_eq!(b.rows(), 0);
    assert_eq!(b.bytes(), 0);
    assert!(b.take(3).unwrap().is_none());
}

/// With a retention of 30 days, an event on a date wholly older than 30 days is dead-lettered
/// with its reason; the oldest date still kept, and anything newer, is accepted.
#[test]
fn events_of_dates_past_the_retention_are_rejected() {
    let now = Utc.with_ymd_and_hms(2026, 11, 27, 12, 30, 0).unwrap();
    let mut b = PartitionBuffer::new("ci".into(), 0).with_retention(30);
    // 30 days before now is 2026-10-28 12:30: the 28th is kept whole, the 27th is gone.
    assert_eq!(b.push(1, None, Some(&event(1, "2026-10-28T00:00:00Z")), now), Pushed::Accepted);
    let Pushed::Rejected(why) = b.push(2, None, Some(&event(2, "2026-10-27T23:59:59Z")), now) else {
        panic!("an event of a date past the retention was accepted");
    };
    assert_eq!(why.code(), "past_retention");
    assert!(why.to_string().contains("retention of 30 days (dates before 2026-10-28)"), "{why}");
    assert_eq!(b.push(3, None, Some(&event(3, "2026-11-27T12:00:00Z")), now), Pushed::Accepted);
    let flush = b.take(0).unwrap().unwrap();
    assert_eq!((flush.valid, flush.rejected), (2, 1));
    // Without a retention the old event is an ordinary one.
    let mut unlimited = PartitionBuffer::new("ci".into(), 0);
    assert_eq!(unlimited.push(1, None, Some(&event(2, "2026-10-27T23:59:59Z")), now), Pushed::Accepted);
}

/// The smallest valid event, finished at `t`.
fn small(id: u64, t: DateTime<Utc>) -> Vec<u8> {
    format!(
        r#"{{"schema_version":1,"event_id":"00000000-0000-4000-8000-{id:012}","repository":"r","branch":"b","commit_sha":"c","run_id":"x","suite":"s","test_id":"t","status":"passed","duration_ms":1,"finished_at":"{}"}}"#,
        t.to_rfc3339()
    )
    .into_bytes()
}

/// An event like the synthetic fleet's (~600 bytes of JSON), finished at `t`.
fn ordinary(id: u64, t: DateTime<Utc>) -> Vec<u8> {
    format!(
        r#"{{"schema_version":1,"event_id":"00000000-0000-4000-8000-{id:012}","repository":"acme/billing-{r}","branch":"main","commit_sha":"3f2a9c1d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f","run_id":"run-{run}","job_id":"job-{job}","suite":"com.acme.billing.invoices.InvoiceServiceTest","test_id":"com.acme.billing.invoices.InvoiceServiceTest.computes_totals_{id}","status":"failed","attempt":1,"duration_ms":123.5,"started_at":"{}","finished_at":"{}","ci_provider":"github","host":"runner-{job}","failure_message":"expected 3 but was 4","tags":{{"os":"linux","jdk":"21"}}}}"#,
        (t - chrono::TimeDelta::milliseconds(123)).to_rfc3339(),
        t.to_rfc3339(),
        r = id % 3,
        run = id / 100,
        job = id % 8,
    )
    .into_bytes()
}

/// What the batches' Arrow buffers really allocated (their capacity, growth room included),
/// each buffer counted once however many batches slice it.
fn allocated(batches: &[&RecordBatch]) -> usize {
    fn walk(data: &arrow::array::ArrayData, seen: &mut std::collections::HashSet<usize>) -> usize {
        let buffers = data.buffers().iter().chain(data.nulls().map(|n| n.buffer()));
        let own: usize = buffers.filter(|b| seen.insert(b.data_ptr().as_ptr() as usize)).map(|b| b.capacity()).sum();
        own + data.child_data().iter().map(|c| walk(c, seen)).sum::<usize>()
    }
    let mut seen = std::collections::HashSet::new();
    batches.iter().flat_map(|b| b.columns()).map(|c| walk(&c.to_data(), &mut seen)).sum()
}

/// What a buffer counts against the flush thresholds and the memory budget, and what the rows
/// it hands to the flush really allocated.
fn counted_and_allocated(topic: &str, events: &[Vec<u8>]) -> (usize, usize) {
    let now = Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap();
    let mut b = PartitionBuffer::new(topic.into(), 0);
    for (offset, event) in events.iter().enumerate() {
        assert_eq!(b.push(offset as i64, None, Some(event), now), Pushed::Accepted);
    }
    let counted = b.bytes();
    let flush = b.take(0).unwrap().unwrap();
    // The hours of a flush share one batch: `allocated` counts each buffer once.
    (counted, allocated(&flush.files.iter().map(|f| &f.batch).collect::<Vec<_>>()))
}

/// Before, each hour had a set of builders of its own, made with room for 1,024 rows: ~130 KiB
/// an hour, while the buffer counted only input bytes — 2,000 small events in 2,000 hours held
/// ~250 MiB and counted ~450 KiB, so a few hundred thousand of them ran the ingest out of memory
/// under any budget. Now the rows of all hours share one set of builders, and what they allocate
/// (measured at several sizes, as the builders' room doubles) is what the buffer counts, within
/// a third either way (the growth room); the hours' stats (~180 B an hour) are counted on top.
#[test]
fn the_budget_counts_what_the_rows_really_allocate() {
    let now = Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap();
    let at = |hours: u64, seconds: u64| {
        now - chrono::TimeDelta::hours(hours as i64 + 1) + chrono::TimeDelta::seconds(seconds as i64 % 3600)
    };
    let long_topic = "ci-test-events-".repeat(8);
    for n in [700, 1100, 2000, 2100, 3000] {
        let spread: Vec<Vec<u8>> = (0..n).map(|i| small(i, at(i, 0))).collect();
        let one_hour: Vec<Vec<u8>> = (0..n).map(|i| small(i, at(0, i))).collect();
        let fleet: Vec<Vec<u8>> = (0..n).map(|i| ordinary(i, at(0, i))).collect();
        for (what, topic, events) in [
            ("small events, each in its own hour", "ci", &spread),
            ("small events in one hour", "ci", &one_hour),
            ("fleet-like events in one hour", "ci", &fleet),
            ("small events, a long topic name", long_topic.as_str(), &one_hour),
        ] {
            let (counted, allocated) = counted_and_allocated(topic, events);
            // Counted as half again what they hold, builders that have just doubled hold a third more.
            assert!(3 * allocated <= 4 * counted, "{n} {what}: {allocated} B allocated, only {counted} B counted");
            assert!(counted <= 3 * allocated, "{n} {what}: {counted} B counted for {allocated} B allocated");
        }
    }

    let before = |event: &[u8]| {
        let mut builder = ResultsBuilder::default();
        builder.append_view(
            &EventView::decode(event, now).unwrap(),
            Lineage { topic: "ci", partition: 0, offset: 0, ingested_at: now },
        );
        allocated(&[&builder.finish().unwrap()])
    };
    let per_hour = before(&small(0, at(0, 0)));
    // 135,888 B when measured (2026-12-01): 200,000 such hours would hold 27 GB.
    assert!(per_hour > 100 << 10, "an hour's builders held {per_hour} B before");
}

/// Rows arriving in any hour order come out as one file per hour, each holding exactly its rows.
#[test]
fn rows_in_many_hours_split_into_one_file_per_hour() {
    let now = Utc.with_ymd_and_hms(2026, 11, 27, 12, 59, 59).unwrap();
    let mut b = PartitionBuffer::new("ci".into(), 0);
    // Hours interleaved, newest first, so rows arrive out of hour order.
    let hours = 300;
    for i in 0..3 * hours {
        let hour = (i * 7) % hours;
        let t = now - chrono::TimeDelta::hours(hour as i64) - chrono::TimeDelta::minutes(i as i64 % 60);
        assert_eq!(b.push(i as i64, None, Some(&small(i as u64, t)), now), Pushed::Accepted);
    }
    assert_eq!((b.hours(), b.rows()), (hours, 3 * hours));
    let flush = b.take(1).unwrap().unwrap();
    assert_eq!(flush.files.len(), hours);
    assert_eq!(flush.valid, 3 * hours);
    for file in &flush.files {
        let rows = file.own_rows();
        let finished = rows.column_by_name("finished_at").unwrap();
        let finished = finished.as_any().downcast_ref::<arrow::array::TimestampMicrosecondArray>().unwrap();
        let partition = file.path.partition;
        assert_eq!(rows.num_rows(), 3, "{partition}");
        for t in finished.iter() {
            let t = DateTime::from_timestamp_micros(t.unwrap()).unwrap();
            assert_eq!(HourPartition::of(t), partition);
            assert!(file.min_time.unwrap() <= t && t <= file.max_time.unwrap());
        }
    }
    let partitions: Vec<HourPartition> = flush.files.iter().map(|f| f.path.partition).collect();
    assert!(partitions.windows(2).all(|w| w[0] < w[1]), "one file per hour, in order");
    assert_eq!((b.hours(), b.rows(), b.bytes()), (0, 0, 0));

    // Staged as a flush stages them: each file sorted and encoded, its entry saying its hour.
    let staged = crate::stage::stage(&flush).unwrap();
    let entries: Vec<(HourPartition, u64)> =
        staged.iter().map(|f| (HourPartition { date: f.entry.date, hour: f.entry.hour }, f.entry.rows)).collect();
    assert_eq!(entries, partitions.iter().map(|&p| (p, 3)).collect::<Vec<_>>());
}

/// A batch large enough to be decoded on two threads comes back in order, each message as it
/// decodes alone (valid and invalid ones mixed, so a swapped half would show).
#[test]
fn a_batch_decodes_in_order_on_two_threads() {
    let now = Utc.with_ymd_and_hms(2026, 11, 27, 12, 30, 0).unwrap();
    let messages: Vec<Vec<u8>> = (0..(DECODE_SPLIT_AT as u32 * 3))
        .map(|i| if i % 7 == 3 { format!("{{\"bad\":{i}").into_bytes() } else { event(i, "2026-11-27T10:59:59Z") })
        .collect();
    let payloads: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    let decoded = decode_all(&payloads, now);
    assert_eq!(decoded.len(), payloads.len());
    for (payload, decoded) in payloads.iter().zip(&decoded) {
        assert_eq!(decoded, &EventView::decode(payload, now));
    }
    let test_ids: Vec<String> = decoded.iter().filter_map(|d| d.as_ref().ok()).map(|e| e.test_id.to_string()).collect();
    let want: Vec<String> = (0..DECODE_SPLIT_AT as u32 * 3).filter(|i| i % 7 != 3).map(|i| format!("t{i}")).collect();
    assert_eq!(test_ids, want);
}
