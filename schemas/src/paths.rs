//! Lake paths: hive-style partitions under one root, zero-padded so listings sort by time.
//!
//! ```text
//! results/date=2026-11-27/hour=04/ci-events_p00003_o00000000000000001000-00000000000000001999_e0000000042.parquet
//! rejected/date=2026-11-27/hour=04/ci-events_p00003_o...parquet     (ingest time, not event time)
//! trends_hourly/date=2026-11-27/data.parquet
//! trends_daily/date=2026-11-27/data.parquet
//! flaky_scores/date=2026-11-27/data.parquet      (scores as of that date)
//! results/date=2026-11-27/hour=04/compacted_00000000000000000007_0000.parquet   (a compaction's output)
//! _log/ci-events/p00003/00000000000000000042.intent.json          (a partition's commit log)
//! _compaction/results/00000000000000000007.outcome.json           (a table's compaction log)
//! _leases/compute/trends/2026-11-27/0000000003.json               (a compute lease)
//! ```
//! Every type here prints and parses, and the two are inverse.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Timelike, Utc};

/// The tables of the lake, each a folder under the lake root. In notices and log entries a table
/// is written as its name (`"results"`, `"trends_hourly"`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
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
        let (table, partition, file) = split_hour_file(s, "data file path")?;
        Ok(Self { table, partition, file: file.parse()? })
    }
}

/// `<table>/date=…/hour=…/<file name>` split into its table, hour partition and file name.
fn split_hour_file<'a>(s: &'a str, what: &'static str) -> Result<(Table, HourPartition, &'a str), PathError> {
    let mut parts = s.splitn(4, '/');
    let (Some(table), Some(date), Some(hour), Some(file)) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(PathError::new(what, s));
    };
    Ok((table.parse()?, format!("{date}/{hour}").parse()?, file))
}

/// `compacted_<seq:020>_<n:04>.parquet`: output `n` of compaction `seq` of a table's compaction
/// log (`n` takes more digits past 9999). Named by the log entry that writes it, so a retried
/// compaction lands on the same names and two compactions never share one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CompactedFileName {
    pub seq: u64,
    pub n: u32,
}

impl fmt::Display for CompactedFileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "compacted_{:020}_{:04}.parquet", self.seq, self.n)
    }
}

impl FromStr for CompactedFileName {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || PathError::new("compacted file name", s);
        let stem = s.strip_prefix("compacted_").and_then(|s| s.strip_suffix(".parquet")).ok_or_else(err)?;
        let (seq, n) = stem.split_once('_').ok_or_else(err)?;
        if seq.len() != 20 || n.len() < 4 || (n.len() > 4 && n.starts_with('0')) {
            return Err(err());
        }
        Ok(Self { seq: digits(seq).ok_or_else(err)?, n: digits(n).ok_or_else(err)? })
    }
}

/// A zero-padded decimal number: ASCII digits only (no sign, unlike `str::parse`).
fn digits<T: FromStr>(s: &str) -> Option<T> {
    s.bytes().all(|b| b.is_ascii_digit()).then(|| s.parse().ok()).flatten()
}

/// Any file of an hour partition of `results` or `rejected`: written by the ingest, or by a
/// compaction of that hour.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HourFilePath {
    Ingest(DataFilePath),
    Compacted { table: Table, partition: HourPartition, file: CompactedFileName },
}

impl HourFilePath {
    pub fn table(&self) -> Table {
        match self {
            Self::Ingest(path) => path.table,
            Self::Compacted { table, .. } => *table,
        }
    }

    pub fn partition(&self) -> HourPartition {
        match self {
            Self::Ingest(path) => path.partition,
            Self::Compacted { partition, .. } => *partition,
        }
    }
}

impl fmt::Display for HourFilePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ingest(path) => path.fmt(f),
            Self::Compacted { table, partition, file } => write!(f, "{table}/{partition}/{file}"),
        }
    }
}

impl FromStr for HourFilePath {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(path) = s.parse::<DataFilePath>() {
            return Ok(Self::Ingest(path));
        }
        let (table, partition, file) = split_hour_file(s, "hour partition file path")?;
        let file = file.parse().map_err(|_| PathError::new("hour partition file path", s))?;
        Ok(Self::Compacted { table, partition, file })
    }
}

/// A file of a computed table's date partition. Each write makes a new file, named by what it was
/// built from — `trends_hourly/date=…/g<generation>_f<files>_<digest>_<nonce>.parquet`: the lease
/// generation it was written under, how many committed `results` files it was computed from and
/// a digest of their paths (compute's `Inputs`), and a random nonce — and the table's Delta log
/// says which file of a date is current (`crate::delta::computed`). Lakes from before the Delta
/// tables hold one `data.parquet` per date, replaced in place: `version` is `None` for those.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ComputedFilePath {
    pub table: Table,
    pub date: NaiveDate,
    pub version: Option<ComputedVersion>,
}

/// What a computed file was built from, as its name records it (see [`ComputedFilePath`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ComputedVersion {
    pub generation: u64,
    pub files: u64,
    /// 16 lowercase hex digits.
    pub digest: String,
    /// Tells apart two writes of the same inputs under one generation; lowercase hex.
    pub nonce: String,
}

impl ComputedVersion {
    /// A new file's version, with a random nonce.
    pub fn new(generation: u64, files: u64, digest: &str) -> Self {
        let nonce = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        Self { generation, files, digest: digest.to_owned(), nonce }
    }
}

impl fmt::Display for ComputedFilePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/", self.table, DatePartition(self.date))?;
        match &self.version {
            None => f.write_str("data.parquet"),
            Some(v) => write!(f, "g{}_f{}_{}_{}.parquet", v.generation, v.files, v.digest, v.nonce),
        }
    }
}

impl FromStr for ComputedFilePath {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || PathError::new("computed file path", s);
        let mut parts = s.split('/');
        let (Some(table), Some(date), Some(name), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(err());
        };
        let table: Table = table.parse()?;
        if table.partition_columns() != ["date"] {
            return Err(err());
        }
        let date = date.parse::<DatePartition>()?.0;
        if name == "data.parquet" {
            return Ok(Self { table, date, version: None });
        }
        let hex = |v: &str| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let version = (|| {
            let mut fields = name.strip_suffix(".parquet")?.split('_');
            let generation = fields.next()?.strip_prefix('g')?.parse().ok()?;
            let files = fields.next()?.strip_prefix('f')?.parse().ok()?;
            let digest = fields.next().filter(|d| d.len() == 16 && hex(d))?.to_owned();
            let nonce = fields.next().filter(|n| hex(n))?.to_owned();
            fields.next().is_none().then_some(ComputedVersion { generation, files, digest, nonce })
        })()
        .ok_or_else(err)?;
        Ok(Self { table, date, version: Some(version) })
    }
}

/// A commit log folder: one Kafka partition's ingest log, or one table's compaction log (one
/// sequence of entries for all its hour partitions, so readers follow it like a partition's).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LogDir {
    /// `_log/<topic>/p<partition:05>`
    Partition { topic: String, partition: i32 },
    /// `_compaction/<table>`
    Compaction(Table),
}

impl fmt::Display for LogDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Partition { topic, partition } => write!(f, "_log/{topic}/p{partition:05}"),
            Self::Compaction(table) => write!(f, "_compaction/{table}"),
        }
    }
}

impl FromStr for LogDir {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || PathError::new("log folder", s);
        if let Some(table) = s.strip_prefix("_compaction/") {
            return Ok(Self::Compaction(table.parse()?));
        }
        let (topic, partition) = s.strip_prefix("_log/").and_then(|s| s.split_once('/')).ok_or_else(err)?;
        let partition = partition.strip_prefix('p').filter(|p| p.len() == 5).ok_or_else(err)?;
        if topic.is_empty() || topic.contains('/') {
            return Err(err());
        }
        Ok(Self::Partition { topic: topic.to_owned(), partition: digits(partition).ok_or_else(err)? })
    }
}

/// Which object of a log entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntryObject {
    /// What the entry will write (created first, create-only).
    Intent,
    /// `committed` or `aborted`: whoever creates it first decides the entry.
    Outcome,
    /// Compaction logs only: the entry's superseded files (committed) or outputs (aborted) are
    /// deleted.
    Cleaned,
}

impl EntryObject {
    pub const ALL: [Self; 3] = [Self::Intent, Self::Outcome, Self::Cleaned];

    fn suffix(self) -> &'static str {
        match self {
            Self::Intent => ".intent.json",
            Self::Outcome => ".outcome.json",
            Self::Cleaned => ".cleaned.json",
        }
    }
}

/// The file name of one object of a log entry, `<seq:020>.<intent|outcome|cleaned>.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryName {
    pub seq: u64,
    pub object: EntryObject,
}

impl fmt::Display for EntryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:020}{}", self.seq, self.object.suffix())
    }
}

impl FromStr for EntryName {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EntryObject::ALL
            .into_iter()
            .find_map(|object| {
                let seq = s.strip_suffix(object.suffix()).filter(|seq| seq.len() == 20)?;
                Some(Self { seq: digits(seq)?, object })
            })
            .ok_or_else(|| PathError::new("log entry name", s))
    }
}

/// `<log folder>/<entry name>`: one object of a commit log or a compaction log.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LogEntryPath {
    pub dir: LogDir,
    pub name: EntryName,
}

impl fmt::Display for LogEntryPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.dir, self.name)
    }
}

impl FromStr for LogEntryPath {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (dir, name) = s.rsplit_once('/').ok_or_else(|| PathError::new("log entry path", s))?;
        Ok(Self { dir: dir.parse()?, name: name.parse()? })
    }
}

/// `_leases/compute/<key>/<generation:010>.json`: one generation of a compute lease (see
/// `compute/src/lease.rs`). The key names the partition leased, e.g. `trends/2026-11-27`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeasePath {
    pub key: String,
    pub generation: u64,
}

impl LeasePath {
    /// The folder of every generation of the lease on `key`.
    pub fn dir(key: &str) -> String {
        format!("_leases/compute/{key}")
    }
}

impl fmt::Display for LeasePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{:010}.json", Self::dir(&self.key), self.generation)
    }
}

impl FromStr for LeasePath {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || PathError::new("lease path", s);
        let rest = s.strip_prefix("_leases/compute/").ok_or_else(err)?;
        let (key, file) = rest.rsplit_once('/').ok_or_else(err)?;
        let generation = file.strip_suffix(".json").filter(|g| g.len() == 10).and_then(digits).ok_or_else(err)?;
        if key.is_empty() {
            return Err(err());
        }
        Ok(Self { key: key.to_owned(), generation })
    }
}

#[cfg(test)]
mod tests;
