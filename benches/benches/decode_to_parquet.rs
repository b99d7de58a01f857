//! decode → Arrow → sorted zstd Parquet, on one core, without the broker: the per-event cost of
//! the ingest's own work — its buffer, then the very function that stages a flush
//! (`testlake_ingest::stage`). Baseline measured in the same run: parsing the same JSON into a
//! `serde_json::Value` (the least any JSON ingest must do).
//!
//! `cargo bench -p testlake-benches --bench decode_to_parquet [-- EVENTS]`

use chrono::{Duration, Utc};
use testlake::fleet::{Fleet, FleetConfig};
use testlake_benches::{best_of, report};
use testlake_ingest::buffer::PartitionBuffer;
use testlake_ingest::stage::stage;
use testlake_schemas::EventView;

fn main() {
    let events: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(200_000);
    let mut fleet = Fleet::new(FleetConfig {
        repositories: 8,
        suites_per_repository: 10,
        tests_per_suite: 50,
        ..Default::default()
    });
    let start = Utc::now() - Duration::hours(6);
    let mut messages: Vec<Vec<u8>> = Vec::with_capacity(events);
    let mut run = 0;
    while messages.len() < events {
        for e in fleet.run(start + Duration::seconds(run * 30)) {
            messages.push(e.to_json().into_bytes());
        }
        run += 1;
    }
    messages.truncate(events);
    let json_bytes: usize = messages.iter().map(Vec::len).sum();
    let now = Utc::now();

    let baseline = best_of(3, || {
        messages.iter().map(|m| serde_json::from_slice::<serde_json::Value>(m).map(|_| 1).unwrap_or(0)).sum::<usize>()
    });
    let mut parquet_bytes = 0;
    let ours = best_of(3, || {
        let mut buffer = PartitionBuffer::new("bench".into(), 0);
        for (offset, m) in messages.iter().enumerate() {
            buffer.push(offset as i64, None, Some(m), now);
        }
        let flush = buffer.take(0).expect("arrow").expect("rows");
        parquet_bytes = stage(&flush).expect("stage").iter().map(|f| f.bytes.len()).sum();
    });
    // Where the time goes: decoding alone, and the sort and encode of what was buffered.
    let decode = best_of(3, || messages.iter().filter(|m| EventView::decode(m, now).is_ok()).count());
    let mut buffer = PartitionBuffer::new("bench".into(), 0);
    for (offset, m) in messages.iter().enumerate() {
        buffer.push(offset as i64, None, Some(m), now);
    }
    let flush = buffer.take(0).expect("arrow").expect("rows");
    let encode = best_of(3, || stage(&flush).expect("stage").iter().map(|f| f.bytes.len()).sum::<usize>());
    let per_event = |d: std::time::Duration| d.as_secs_f64() * 1e6 / events as f64;
    println!("decode_to_parquet: {events} events, {json_bytes} JSON bytes, one core");
    report("testlake decode→Arrow→Parquet per event", per_event(ours), "µs");
    report("  of which decode and validate", per_event(decode), "µs");
    report("  of which sort and encode to Parquet", per_event(encode), "µs");
    report("baseline serde_json::Value parse per event", per_event(baseline), "µs");
    report("ratio (testlake / baseline)", ours.as_secs_f64() / baseline.as_secs_f64(), "×");
    report("JSON bytes per event", json_bytes as f64 / events as f64, "B");
    report("Parquet bytes per event", parquet_bytes as f64 / events as f64, "B");
    report("target: decode→Parquet per event", 2.0, "µs");
}
