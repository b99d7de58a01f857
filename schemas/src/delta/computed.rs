//! The computed tables — `trends_hourly`, `trends_daily`, `flaky_scores` — as Delta Lake tables
//! (`<table>/_delta_log/`), partitioned by `date` (DATE), one file per date.
//!
//! Compute writes a date's rows as a new file, named by what it was built from
//! ([`ComputedFilePath`]: lease generation, input files' count and digest, a nonce), and then
//! commits one version that removes the date's current file and adds the new one. The commit is
//! the write: a reader of the table — testlake's own ([`DeltaTables::computed_files`] and the
//! listing view of [`super::view`]) or any Delta reader — sees a date's old rows or its new ones,
//! never both and never neither, and each version is one consistent set of dates.
//!
//! **Fencing.** A commit also sets the Delta application transaction `date=YYYY-MM-DD` to the lease
//! generation its file was written under, and a write whose generation is below the one the table
//! holds for the date is refused ([`Replaced::Fenced`]). Two writers committing the same date at
//! once conflict in deltalake's own check (each commit carries that transaction id, which counts as
//! read), so the loser reads the table again and decides again: the fence holds on every store
//! whose commits are create-only (local folders included, unlike the in-place replace before).
//!
//! **Deleting what was replaced.** A replaced file is deleted right after the commit that removed
//! it, so a folder lister (DuckDB over `trends_daily/**/*.parquet`) sees two files of a date only
//! for the moments between a new file's put and that delete — as before, when a date's file was
//! replaced in place, a reader in the middle of reading the old file gets an error and reads again.
//! Time travel therefore reaches the current files only. A write of a date also deletes files of
//! that date which no version shows and which are older than [`ORPHAN_AGE`]: left by a writer that
//! crashed between its file and its commit, or before its delete.
//!
//! Lakes from before these tables hold one `data.parquet` per date: the first commit creates the
//! table with those files, and each is replaced like any other by the next write of its date.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use chrono::{NaiveDate, TimeDelta, Utc};
use deltalake_core::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake_core::kernel::{Action, Add, DataType, StructField, StructType};
use deltalake_core::operations::create::CreateBuilder;
use deltalake_core::protocol::{DeltaOperation, SaveMode};
use deltalake_core::table::state::DeltaTableState;
use deltalake_core::{DeltaTableError, TableProperty};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use tracing::{debug, info, warn};

use super::{
    ATTEMPTS, CHECKPOINT_INTERVAL, DeltaError, DeltaTables, Handle, LOG_RETENTION, TOMBSTONE_RETENTION,
    commit_properties, existing_state, log_store_of, on_delta_runtime, table_url_of, txn,
};
use crate::log_reader::LogReadError;
use crate::paths::ComputedFilePath;
use crate::{DatePartition, Lake, Table};

/// Files in a computed table's date folder that no version shows are deleted once this old.
pub const ORPHAN_AGE: TimeDelta = TimeDelta::hours(1);

/// How a [`DeltaTables::replace`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replaced {
    /// Committed as this table version.
    Committed(u64),
    /// The table holds the date under this later generation: nothing committed.
    Fenced { by: u64 },
}

/// A computed table's file as the table's newest version shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComputedFile {
    pub path: ComputedFilePath,
    pub bytes: u64,
}

impl DeltaError {
    fn of(lake: &Lake, table: Table, source: DeltaTableError) -> Self {
        Self::Delta { table: table_url_of(lake, table).to_string(), source: Box::new(source) }
    }
}

impl DeltaTables {
    /// Makes `file` — written already, `bytes` long, `rows` rows — the file of its date in its
    /// table, unless the table holds the date under a later generation than the file's (creating
    /// the table first if the lake has none).
    pub async fn replace(
        &self,
        lake: &Lake,
        file: &ComputedFilePath,
        bytes: u64,
        rows: u64,
    ) -> Result<Replaced, DeltaError> {
        let (lake, file) = (lake.clone(), file.clone());
        on_delta_runtime(async move { lake.delta().replace_here(&lake, &file, bytes, rows).await }).await
    }

    async fn replace_here(
        &self,
        lake: &Lake,
        file: &ComputedFilePath,
        bytes: u64,
        rows: u64,
    ) -> Result<Replaced, DeltaError> {
        let table = file.table;
        let generation = file.version.as_ref().map_or(0, |v| v.generation);
        let app_id = DatePartition(file.date).to_string();
        let mut guard = self.computed.lock().await;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let handle = match guard.entry(table) {
                Entry::Occupied(open) => {
                    let handle = open.into_mut();
                    handle.update().await.map_err(|e| DeltaError::of(lake, table, e))?;
                    handle
                }
                Entry::Vacant(slot) => slot.insert(open_or_create(lake, table).await?),
            };
            let holds = handle
                .state
                .transaction_version(handle.log_store.as_ref(), &app_id)
                .await
                .map_err(|e| DeltaError::of(lake, table, e))?;
            if let Some(by) = holds.and_then(|v| u64::try_from(v).ok()).filter(|held| *held > generation) {
                return Ok(Replaced::Fenced { by });
            }
            let now = Utc::now().timestamp_millis();
            let mut replaced = Vec::new();
            let mut actions = Vec::new();
            for current in handle.state.log_data().iter().filter(|f| date_in(&f.path()) == Some(file.date)) {
                replaced.push(format!("{}/{}", table.name(), current.path()));
                actions.push(Action::Remove(current.remove_action(true)));
            }
            actions.push(Action::Add(Add {
                path: in_table(file),
                partition_values: HashMap::from([("date".to_owned(), Some(file.date.to_string()))]),
                size: bytes as i64,
                modification_time: now,
                data_change: true,
                stats: Some(serde_json::json!({ "numRecords": rows }).to_string()),
                ..Default::default()
            }));
            actions.push(Action::Txn(txn(&app_id, generation)));
            let operation = DeltaOperation::Write {
                mode: SaveMode::Overwrite,
                partition_by: Some(vec!["date".into()]),
                predicate: Some(format!("date = '{}'", file.date)),
            };
            match handle.commit(actions, operation).await {
                Ok(version) => {
                    for path in &replaced {
                        delete(lake, path).await;
                    }
                    sweep(lake, handle, file).await;
                    return Ok(Replaced::Committed(version));
                }
                Err(e) if attempt < ATTEMPTS => {
                    debug!(table = table.name(), error = %e, attempt, "Delta commit lost a race or failed; reading the table again");
                }
                Err(e) => {
                    guard.remove(&table);
                    return Err(DeltaError::of(lake, table, e));
                }
            }
        }
    }

    /// The files of `table`'s newest version (brought up to date with the commits since this
    /// process last looked), or `None` when the lake has no such Delta table yet.
    pub async fn computed_files(&self, lake: &Lake, table: Table) -> Result<Option<Vec<ComputedFile>>, DeltaError> {
        let lake = lake.clone();
        on_delta_runtime(async move { lake.delta().computed_files_here(&lake, table).await }).await
    }

    async fn computed_files_here(&self, lake: &Lake, table: Table) -> Result<Option<Vec<ComputedFile>>, DeltaError> {
        let mut guard = self.computed.lock().await;
        let handle = match guard.entry(table) {
            Entry::Occupied(open) => {
                let handle = open.into_mut();
                handle.update().await.map_err(|e| DeltaError::of(lake, table, e))?;
                handle
            }
            Entry::Vacant(slot) => {
                let log_store = log_store_of(lake, table);
                match existing_state(&log_store).await.map_err(|e| DeltaError::of(lake, table, e))? {
                    Some(state) => slot.insert(Handle::new(log_store, state)),
                    None => return Ok(None),
                }
            }
        };
        let mut files = Vec::new();
        for file in handle.state.log_data().iter() {
            let relative = format!("{}/{}", table.name(), file.path());
            match relative.parse::<ComputedFilePath>() {
                Ok(path) => files.push(ComputedFile { path, bytes: u64::try_from(file.size()).unwrap_or_default() }),
                Err(e) => warn!(%relative, error = %e, "a computed table shows a file testlake did not name; skipped"),
            }
        }
        Ok(Some(files))
    }
}

/// The `date=` folder of a path relative to a computed table's root.
fn date_in(path: &str) -> Option<NaiveDate> {
    path.split('/').next()?.strip_prefix("date=")?.parse().ok()
}

/// A file's path relative to its table's folder.
fn in_table(file: &ComputedFilePath) -> String {
    let path = file.to_string();
    path.strip_prefix(file.table.name()).and_then(|p| p.strip_prefix('/')).unwrap_or(&path).to_owned()
}

async fn delete(lake: &Lake, relative: &str) {
    match lake.store().delete(&lake.path(relative)).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => debug!(path = relative, error = %e, "not deleted; the next write of its date deletes it once old"),
    }
}

/// Deletes the files of `file`'s date folder that the table at `handle` does not show and that are
/// older than [`ORPHAN_AGE`]. Failing leaves them for the next write of the date.
async fn sweep(lake: &Lake, handle: &Handle, file: &ComputedFilePath) {
    let folder = lake.path(&format!("{}/{}", file.table.name(), DatePartition(file.date)));
    let listed: Vec<_> = match lake.store().list(Some(&folder)).try_collect().await {
        Ok(listed) => listed,
        Err(e) => return debug!(error = %e, "date folder not listed; swept on a later write"),
    };
    let shown: std::collections::HashSet<String> =
        handle.state.log_data().iter().map(|f| format!("{}/{}", file.table.name(), f.path())).collect();
    let old = Utc::now() - ORPHAN_AGE;
    for object in listed.into_iter().filter(|o| o.last_modified < old) {
        let Some(relative) = lake.relative(&object.location) else { continue };
        if relative.parse::<ComputedFilePath>().is_ok() && !shown.contains(&relative) {
            info!(path = relative, "deleting a computed file no version shows");
            delete(lake, &relative).await;
        }
    }
}

/// The Delta schema of a computed table: its files' columns, then `date`.
fn columns(table: Table) -> Result<Vec<StructField>, DeltaTableError> {
    let schema = match table {
        Table::FlakyScores => crate::tables::flaky_scores_schema(),
        _ => crate::tables::trends_schema(),
    };
    let files: StructType = schema.as_ref().try_into_kernel()?;
    let mut columns: Vec<StructField> = files.fields().cloned().collect();
    columns.push(StructField::new("date", DataType::DATE, false));
    Ok(columns)
}

/// Opens `table`, or creates it with the `data.parquet` files a lake from before holds.
async fn open_or_create(lake: &Lake, table: Table) -> Result<Handle, DeltaError> {
    let log_store = log_store_of(lake, table);
    if let Ok(Some(state)) = existing_state(&log_store).await {
        return Ok(Handle::new(log_store, state));
    }
    let folder = lake.path(table.name());
    let listed: Vec<_> = lake
        .store()
        .list(Some(&folder))
        .try_collect()
        .await
        .map_err(|e| LogReadError::Store { path: table.name().to_owned(), source: Box::new(e) })?;
    let now = Utc::now().timestamp_millis();
    let mut actions = Vec::new();
    for object in listed {
        let Some(path) = lake.relative(&object.location).and_then(|r| r.parse::<ComputedFilePath>().ok()) else {
            continue;
        };
        if path.version.is_none() {
            actions.push(Action::Add(Add {
                path: in_table(&path),
                partition_values: HashMap::from([("date".to_owned(), Some(path.date.to_string()))]),
                size: object.size as i64,
                modification_time: now,
                data_change: true,
                ..Default::default()
            }));
        }
    }
    let files = actions.len();
    let interval = |d: TimeDelta| Some(format!("interval {} minutes", d.num_minutes()));
    let created = CreateBuilder::new()
        .with_log_store(Arc::clone(&log_store))
        .with_table_name(table.name())
        .with_columns(columns(table).map_err(|e| DeltaError::of(lake, table, e))?)
        .with_partition_columns(["date"])
        .with_configuration_property(TableProperty::CheckpointInterval, Some(CHECKPOINT_INTERVAL.to_string()))
        .with_configuration_property(TableProperty::LogRetentionDuration, interval(LOG_RETENTION))
        .with_configuration_property(TableProperty::DeletedFileRetentionDuration, interval(TOMBSTONE_RETENTION))
        .with_save_mode(SaveMode::ErrorIfExists)
        .with_commit_properties(commit_properties())
        .with_actions(actions)
        .await;
    match created {
        Ok(_) => info!(table = %table_url_of(lake, table), files, "created the computed Delta table"),
        Err(e) => debug!(error = %e, "the computed Delta table exists"),
    }
    let state = DeltaTableState::try_new(log_store.as_ref(), None).await.map_err(|e| DeltaError::of(lake, table, e))?;
    Ok(Handle::new(log_store, state))
}

#[cfg(test)]
mod tests;
