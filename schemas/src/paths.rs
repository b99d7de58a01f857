//! Lake paths: hive-style partitions under one root, zero-padded so listings sort by time.
//!
//! ```text
//! results/date=2026-11-27/hour=04/ci-events_p00003_o00000000000000001000-00000000000000001999_e0000000042.parquet
//! rejected/date=2026-11-27/hour=04/ci-events_p00003_o...parquet     (ingest time, not event time)
//! trends_hourly/date=2026-11-27/data.parquet
//! trends_daily/date=2026-11-27/data.parquet
//! flaky_scores/date=2026-11-27/data.parquet      (scores as of that date)
//! ```
//! Every type here prints and parses, and the two are inverse.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Timelike, Utc};

/// The tables of the lake, each a folder under the lake root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// One row per valid test execution, partitioned by `finished_at` hour.
    Results,
    /// One row per rejected message, partitioned by ingest hour.
    Rejected,
    /// Hourly trend buckets, partitioned by date.
    TrendsHourly,
    /// Daily trend buckets, partitioned by date.
    TrendsDaily,
    /// Flaky scores per (repository, test_id), one snapshot per `as_of` date.
    FlakyScores,
}

impl Table {
    pub const ALL: [Table; 5] =
        [Table::Results, Table::Rejected, Table::TrendsHourly, Table::TrendsDaily, Table::FlakyScores];

    pub fn name(self) -> &'static str {
        match self {
            Self::Results => "results",
            Self::Rejected => "rejected",
            Self::TrendsHourly => "trends_hourly",
            Self::TrendsDaily => "trends_daily",
            Self::FlakyScores => "flaky_scores",
        }
    }

    /// The hive partition columns of the table, outermost first.
    pub fn partition_columns(self) -> &'static [&'static str] {
        match self {
            Self::Results | Self::Rejected => &["date", "hour"],
            Self::TrendsHourly | Self::TrendsDaily | Self::FlakyScores => &["date"],
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Table {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Table::ALL.into_iter().find(|t| t.name() == s).ok_or_else(|| PathError::new("table", s))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid {what}: {input:?}")]
pub struct PathError {
    what: &'static str,
    input: String,
}

impl PathError {
    fn new(what: &'static str, input: &str) -> Self {
        Self { what, input: input.to_owned() }
    }
}

/// A UTC date partition: `date=YYYY-MM-DD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DatePartition(pub NaiveDate);

impl fmt::Display for DatePartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "date={}", self.0.format("%Y-%m-%d"))
    }
}

impl FromStr for DatePartition {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || PathError::new("date partition", s);
        let date = s.strip_prefix("date=").ok_or_else(err)?;
        if date.len() != 10 {
            return Err(err());
        }
        NaiveDate::parse_from_str(date, "%Y-%m-%d").map(DatePartition).map_err(|_| err())
    }
}

/// A UTC hour partition: `date=YYYY-MM-DD/hour=HH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HourPartition {
    pub date: NaiveDate,
    pub hour: u8,
}

impl HourPartition {
    /// The partition an instant falls in.
    pub fn of(t: DateTime<Utc>) -> Self {
        Self { date: t.date_naive(), hour: t.hour() as u8 }
    }

    pub fn date_partition(self) -> DatePartition {
        DatePartition(self.date)
    }

    /// The first instant of the hour.
    pub fn start(self) -> DateTime<Utc> {
        self.date.and_hms_opt(u32::from(self.hour), 0, 0).expect("hour < 24").and_utc()
    }
}

impl fmt::Display for HourPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/hour={:02}", DatePartition(self.date), self.hour)
    }
}

impl FromStr for HourPartition {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || PathError::new("hour partition", s);
        let (date, hour) = s.split_once('/').ok_or_else(err)?;
        let DatePartition(date) = date.parse().map_err(|_| err())?;
        let hour = hour.strip_prefix("hour=").filter(|h| h.len() == 2).ok_or_else(err)?;
        let hour: u8 = hour.parse().ok().filter(|h| *h < 24).ok_or_else(err)?;
        Ok(Self { date, hour })
    }
}

/// The name of a file written by ingest, derived only from the Kafka coordinates it holds and
/// the commit-log entry that writes it: a retried write of the same entry lands on the same
/// name, and no two entries (two writers) ever share a name, so cleaning up an aborted entry
/// can never delete another entry's file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DataFileName {
    pub topic: String,
    pub partition: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    /// Sequence number of the commit-log entry of the partition that writes the file.
    pub entry: u64,
}

impl fmt::Display for DataFileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}_p{:05}_o{:020}-{:020}_e{:010}.parquet",
            self.topic, self.partition, self.first_offset, self.last_offset, self.entry
        )
    }
}

impl FromStr for DataFileName {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || PathError::new("data file name", s);
        let stem = s.strip_suffix(".parquet").ok_or_else(err)?;
        let (rest, entry) = stem.rsplit_once("_e").ok_or_else(err)?;
        let (rest, offsets) = rest.rsplit_once("_o").ok_or_else(err)?;
        let (topic, partition) = rest.rsplit_once("_p").ok_or_else(err)?;
        let (first, last) = offsets.split_once('-').ok_or_else(err)?;
        if topic.is_empty() || partition.len() != 5 || first.len() != 20 || last.len() != 20 || entry.len() != 10 {
            return Err(err());
        }
        Ok(Self {
            topic: topic.to_owned(),
            partition: partition.parse().map_err(|_| err())?,
            first_offset: first.parse().map_err(|_| err())?,
            last_offset: last.parse().map_err(|_| err())?,
            entry: entry.parse().map_err(|_| err())?,
        })
    }
}

/// `results/date=…/hour=…/<file>` (or `rejected/…`): where one ingest file lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DataFilePath {
    pub table: Table,
    pub partition: HourPartition,
    pub file: DataFileName,
}

impl fmt::Display for DataFilePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.table, self.partition, self.file)
    }
}

impl FromStr for DataFilePath {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || PathError::new("data file path", s);
        let mut parts = s.splitn(4, '/');
        let (Some(table), Some(date), Some(hour), Some(file)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(err());
        };
        Ok(Self { table: table.parse()?, partition: format!("{date}/{hour}").parse()?, file: file.parse()? })
    }
}

/// `trends_hourly/date=…/data.parquet`: the single file of a date partition of a computed table,
/// replaced whole by one atomic put.
pub fn computed_file_path(table: Table, date: NaiveDate) -> String {
    format!("{table}/{}/data.parquet", DatePartition(date))
}

#[cfg(test)]
mod tests;
