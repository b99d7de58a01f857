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
    let rows: Vec<usize> = flush.files.iter().map(|f| f.batch.num_rows()).collect();
    assert_eq!(rows, vec![2, 1, 2]);
    assert_eq!(flush.files[0].min_time, Some(Utc.with_ymd_and_hms(2026, 11, 27, 10, 0, 0).unwrap()));
    assert_eq!(flush.files[0].max_time, Some(Utc.with_ymd_and_hms(2026, 11, 27, 10, 59, 59).unwrap()));

    assert_eq!(b.rows(), 0);
    assert_eq!(b.bytes(), 0);
    assert!(b.take(3).unwrap().is_none());
}
