//! Landed-partition notifications: after a commit, what landed where. Compute recomputes exactly
//! the affected buckets; the query service invalidates exactly the cached answers that cover them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::paths::{HourPartition, Table};

/// One table partition that received new files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Landed {
    /// `results`, `rejected`, `trends_hourly`, …
    pub table: String,
    /// The hour partition (for date-partitioned tables, hour 00 of the date).
    pub date: chrono::NaiveDate,
    pub hour: u8,
    /// Paths of the new files, relative to the lake root.
    pub files: Vec<String>,
    pub rows: u64,
    /// Event-time range of the rows (`finished_at` for results), when the table has one.
    pub min_time: Option<DateTime<Utc>>,
    pub max_time: Option<DateTime<Utc>>,
}

impl Landed {
    pub fn new(table: Table, partition: HourPartition, files: Vec<String>, rows: u64) -> Self {
        Self {
            table: table.name().to_owned(),
            date: partition.date,
            hour: partition.hour,
            files,
            rows,
            min_time: None,
            max_time: None,
        }
    }

    pub fn partition(&self) -> HourPartition {
        HourPartition { date: self.date, hour: self.hour }
    }
}
