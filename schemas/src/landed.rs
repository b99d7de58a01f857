//! Landed-partition notifications: after a commit, what landed where. Compute recomputes exactly
//! the affected buckets; the query service invalidates exactly the cached answers that cover them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::paths::{HourPartition, Table};

/// One table partition that received new files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Landed {
    pub table: Table,
    /// The hour partition (for date-partitioned tables, hour 00 of the date).
    pub date: chrono::NaiveDate,
    pub hour: u8,
    /// Paths of the new files, relative to the lake root.
    pub files: Vec<String>,
    pub rows: u64,
    /// Event-time range of the rows (`finished_at` for results), when the table has one.
    pub min_time: Option<DateTime<Utc>>,
    pub max_time: Option<DateTime<Utc>>,
    /// The repositories whose rows changed, when known and at most [`MAX_LISTED_REPOSITORIES`];
    /// `None` means any. Lets the query service keep cached answers of other repositories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repositories: Option<Vec<String>>,
}

/// Above this many repositories a notice says "any" instead of listing them.
pub const MAX_LISTED_REPOSITORIES: usize = 64;

impl Landed {
    pub fn new(table: Table, partition: HourPartition, files: Vec<String>, rows: u64) -> Self {
        Self {
            table,
            date: partition.date,
            hour: partition.hour,
            files,
            rows,
            min_time: None,
            max_time: None,
            repositories: None,
        }
    }

    /// Whether the notice may concern `repository`.
    pub fn concerns(&self, repository: &str) -> bool {
        self.repositories.as_ref().is_none_or(|r| r.iter().any(|x| x == repository))
    }

    pub fn partition(&self) -> HourPartition {
        HourPartition { date: self.date, hour: self.hour }
    }
}
