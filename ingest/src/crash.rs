//! Fault injection for the exactly-once tests: abort the process (no destructors, no flushes,
//! like `kill -9`) the n-th time a point of the commit protocol is reached.
//!
//! Armed only by `TESTLAKE_CRASH_AT=<point>:<n>` in the environment of `testlake ingest` (and
//! `testlake compact`, for the `compact_*` points).

use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// The intent is durable, no data file is.
    AfterIntent,
    /// The first data file of the flush is durable, the others are not.
    MidFlush,
    /// Every data file is durable, the outcome is not.
    AfterData,
    /// The entry is committed; the Kafka offset is not.
    AfterOutcome,
    /// The Kafka offset commit was requested.
    AfterKafkaCommit,
    /// Compaction: the intent is durable, no output is.
    CompactAfterIntent,
    /// Compaction: the first output is durable, the outcome is not.
    CompactMidOutput,
    /// Compaction: committed; the inputs are not deleted yet.
    CompactAfterOutcome,
}

impl FromStr for CrashPoint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "after_intent" => Self::AfterIntent,
            "mid_flush" => Self::MidFlush,
            "after_data" => Self::AfterData,
            "after_outcome" => Self::AfterOutcome,
            "after_kafka_commit" => Self::AfterKafkaCommit,
            "compact_after_intent" => Self::CompactAfterIntent,
            "compact_mid_output" => Self::CompactMidOutput,
            "compact_after_outcome" => Self::CompactAfterOutcome,
            other => return Err(format!("unknown crash point {other:?}")),
        })
    }
}

/// Aborts the process at an armed point; does nothing when unarmed.
#[derive(Debug, Default)]
pub struct Crasher {
    armed: Option<(CrashPoint, AtomicU32)>,
}

impl Crasher {
    /// Parses `<point>:<n>` (n ≥ 1: crash the n-th time the point is reached).
    pub fn parse(spec: &str) -> Result<Self, String> {
        let (point, n) = spec.split_once(':').unwrap_or((spec, "1"));
        let n: u32 = n.parse().map_err(|_| format!("bad crash count in {spec:?}"))?;
        Ok(Self { armed: Some((point.parse()?, AtomicU32::new(n.max(1)))) })
    }

    pub fn reached(&self, point: CrashPoint) {
        if let Some((armed, left)) = &self.armed
            && *armed == point
            && left.fetch_sub(1, Ordering::SeqCst) == 1
        {
            eprintln!("testlake: injected crash at {point:?}");
            std::process::abort();
        }
    }
}
