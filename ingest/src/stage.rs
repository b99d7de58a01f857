//! Staging a flush: each pending file sorted as readers expect, encoded as zstd Parquet, with
//! what its commit-log entry records about it. Pure CPU work (the flush runs it off the runtime);
//! the tests' lake builders, compute's tests and the decode bench call this very function.

use testlake_schemas::Table;
use testlake_schemas::files::{self, WriteError};
use testlake_schemas::log::EntryFile;

use crate::buffer::{PendingFile, PendingFlush};
use crate::log_writer::StagedFile;

/// Sorts and encodes every file of a flush.
pub fn stage(flush: &PendingFlush) -> Result<Vec<StagedFile>, WriteError> {
    flush.files.iter().map(stage_file).collect()
}

/// Sorts one file's rows (results by [`files::RESULTS_SORT`], rejected messages by Kafka offset)
/// and encodes them.
pub fn stage_file(file: &PendingFile) -> Result<StagedFile, WriteError> {
    let path = file.path.to_string();
    let sort_by: &[&str] = match file.path.table {
        Table::Results => files::RESULTS_SORT,
        _ => &["kafka_offset"],
    };
    let sorted = match &file.rows {
        None => files::sort_batch(&file.batch, sort_by),
        Some(rows) => files::sort_rows(&file.batch, rows, sort_by),
    }
    .map_err(|source| WriteError::Arrow { path: path.clone(), source })?;
    let bytes = files::encode_parquet(&sorted, &path)?;
    let entry = EntryFile {
        path,
        table: file.path.table,
        date: file.path.partition.date,
        hour: file.path.partition.hour,
        rows: file.num_rows() as u64,
        min_time: file.min_time,
        max_time: file.max_time,
        repositories: file.repositories.clone(),
        bytes: Some(bytes.len() as u64),
    };
    Ok(StagedFile { entry, bytes })
}
