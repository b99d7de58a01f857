//! Ingest counters, exported in Prometheus text format by the query service's `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

pub const MESSAGES: &str = "testlake_ingest_messages_total";
pub const EVENTS: &str = "testlake_ingest_events_total";
pub const REJECTED: &str = "testlake_ingest_rejected_total";
pub const FILES: &str = "testlake_ingest_files_written_total";
pub const BYTES: &str = "testlake_ingest_parquet_bytes_total";
pub const FLUSHES: &str = "testlake_ingest_flushes_total";
pub const FLUSH_ERRORS: &str = "testlake_ingest_flush_errors_total";
pub const PAUSED: &str = "testlake_ingest_paused_seconds_total";

#[derive(Debug, Default)]
pub struct IngestMetrics {
    messages: AtomicU64,
    events: AtomicU64,
    rejected: AtomicU64,
    files: AtomicU64,
    bytes: AtomicU64,
    flushes: AtomicU64,
    flush_errors: AtomicU64,
    paused_micros: AtomicU64,
}

impl IngestMetrics {
    pub fn message_accepted(&self) {
        self.messages.fetch_add(1, Relaxed);
        self.events.fetch_add(1, Relaxed);
    }

    pub fn message_rejected(&self) {
        self.messages.fetch_add(1, Relaxed);
        self.rejected.fetch_add(1, Relaxed);
    }

    pub fn files_written(&self, files: usize, bytes: usize) {
        self.files.fetch_add(files as u64, Relaxed);
        self.bytes.fetch_add(bytes as u64, Relaxed);
    }

    pub fn flushed(&self) {
        self.flushes.fetch_add(1, Relaxed);
    }

    pub fn flush_failed(&self) {
        self.flush_errors.fetch_add(1, Relaxed);
    }

    /// The consume loop waited `paused` for a flush, not consuming (the buffers at their bound).
    pub fn consumption_paused(&self, paused: std::time::Duration) {
        self.paused_micros.fetch_add(paused.as_micros() as u64, Relaxed);
    }

    /// Time the consume loop spent waiting for flushes, not consuming.
    pub fn paused(&self) -> std::time::Duration {
        std::time::Duration::from_micros(self.paused_micros.load(Relaxed))
    }

    pub fn events(&self) -> u64 {
        self.events.load(Relaxed)
    }

    pub fn rejected(&self) -> u64 {
        self.rejected.load(Relaxed)
    }

    pub fn flush_errors(&self) -> u64 {
        self.flush_errors.load(Relaxed)
    }

    /// Appends the counters in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        for (name, help, value) in [
            (MESSAGES, "Kafka messages consumed.", &self.messages),
            (EVENTS, "Valid events buffered for the lake.", &self.events),
            (REJECTED, "Messages rejected to the dead-letter table.", &self.rejected),
            (FILES, "Parquet files written.", &self.files),
            (BYTES, "Bytes of Parquet written.", &self.bytes),
            (FLUSHES, "Buffers flushed and committed.", &self.flushes),
            (FLUSH_ERRORS, "Flush attempts that failed and were retried.", &self.flush_errors),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", value.load(Relaxed));
        }
        let help = "Time the consume loop waited for a flush, not consuming: the buffers at their memory bound \
                    while the object store is slow or down.";
        let _ =
            writeln!(out, "# HELP {PAUSED} {help}\n# TYPE {PAUSED} counter\n{PAUSED} {}", self.paused().as_secs_f64());
    }
}
