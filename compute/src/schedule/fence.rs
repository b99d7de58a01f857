//! What a computed file was built from, and the fenced write that keeps an older lease holder
//! from replacing a newer holder's file.
//!
//! Every computed file (`trends_hourly`, `trends_daily`, `flaky_scores` of one date) records a
//! [`Stamp`] — the generation of the lease it was written under, and a fingerprint of the
//! committed `results` files it was computed from — in its name
//! (`testlake_schemas::paths::ComputedFilePath`) and in its Parquet footer (key [`STAMP_KEY`],
//! for readers of a single file). Compute reads stamps from the names its table's Delta log
//! shows, to reconcile (are the date's inputs still the ones the file was built from?).
//!
//! **Fencing.** Lease generations only grow (`crate::lease`), and a holder takes its generation
//! after every earlier one was created. [`write_fenced`] writes a new file and commits it to the
//! table's Delta log with the date's generation (`testlake_schemas::delta::computed`): the commit
//! is refused when the table holds the date under a higher generation, and two commits of one
//! date race in Delta's conflict check, the loser deciding again on the newer version. A holder
//! whose lease expired while it worked (a pause, clock skew) therefore never replaces its
//! successor's file, on every store. (Had the refused holder read the commit log after its
//! successor, its file lacks what landed in between; that data's notice, or reconciliation,
//! recomputes the date under a newer lease.) The files themselves are created create-only.

use arrow::array::RecordBatch;
use chrono::NaiveDate;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::file::metadata::KeyValue;
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};
use testlake_schemas::delta::computed::Replaced;
use testlake_schemas::files::{WriteError, put_create, writer_properties};
use testlake_schemas::paths::{ComputedFilePath, ComputedVersion};
use testlake_schemas::{Lake, Table};
use tracing::warn;

use crate::{Error, Result};

/// The footer key holding a computed file's [`Stamp`] (JSON).
pub const STAMP_KEY: &str = "testlake.computed_from";

/// A fingerprint of a set of committed `results` files: how many, and a 64-bit FNV-1a digest of
/// their sorted paths. Committed files never change (a compaction replaces them under new
/// names), so equal fingerprints mean equal inputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Inputs {
    pub files: u64,
    pub digest: String,
}

impl Inputs {
    pub fn of(files: &[String]) -> Self {
        let mut sorted: Vec<&str> = files.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        sorted.dedup();
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for path in &sorted {
            for byte in path.bytes().chain([b'\n']) {
                hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        Self { files: sorted.len() as u64, digest: format!("{hash:016x}") }
    }
}

/// What a computed file was built from, and under which lease generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub generation: u64,
    pub inputs: Inputs,
}

/// Encodes `batch` as Parquet (the lake's writer settings) with `stamp` in the footer.
pub fn encode_stamped(batch: &arrow::array::RecordBatch, path: &str, stamp: &Stamp) -> Result<Vec<u8>> {
    let parquet = |source| Error::Write(WriteError::Parquet { path: path.to_owned(), source });
    let mut out = Vec::with_capacity(batch.get_array_memory_size() / 4 + 1024);
    let mut writer = ArrowWriter::try_new(&mut out, batch.schema(), Some(writer_properties())).map_err(parquet)?;
    writer.write(batch).map_err(parquet)?;
    let json = serde_json::to_string(stamp).expect("a stamp serializes");
    writer.append_key_value_metadata(KeyValue::new(STAMP_KEY.to_owned(), json));
    writer.close().map_err(parquet)?;
    Ok(out)
}

/// How a fenced write ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Put {
    Written,
    /// The table holds the date under this later generation: left as it is.
    Fenced {
        by: u64,
    },
}

/// Writes `batch` as `table`'s file of `date`, stamped (footer and name), and commits it to the
/// table's Delta log unless the date is held there under a later generation than the stamp's
/// (see the module's documentation). A refused file is deleted again.
pub async fn write_fenced(
    lake: &Lake,
    table: Table,
    date: NaiveDate,
    batch: &RecordBatch,
    stamp: &Stamp,
) -> Result<Put> {
    let version = ComputedVersion::new(stamp.generation, stamp.inputs.files, &stamp.inputs.digest);
    let path = ComputedFilePath { table, date, version: Some(version) };
    let name = path.to_string();
    let bytes = encode_stamped(batch, &name, stamp)?;
    let size = bytes.len() as u64;
    put_create(lake, &name, bytes.into()).await?;
    match lake.delta().replace(lake, &path, size, batch.num_rows() as u64).await? {
        Replaced::Committed(_) => Ok(Put::Written),
        Replaced::Fenced { by } => {
            if let Err(e) = lake.store().delete(&lake.path(&name)).await {
                warn!(path = name, error = %e, "a refused file was not deleted; a later write of its date deletes it");
            }
            Ok(Put::Fenced { by })
        }
    }
}

impl Stamp {
    /// The stamp a computed file's name records (`None` for a `data.parquet` of a lake from before).
    pub fn of(path: &ComputedFilePath) -> Option<Self> {
        let v = path.version.as_ref()?;
        Some(Self { generation: v.generation, inputs: Inputs { files: v.files, digest: v.digest.clone() } })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(runs: i64) -> RecordBatch {
        let column: arrow::array::ArrayRef = std::sync::Arc::new(arrow::array::Int64Array::from(vec![runs]));
        RecordBatch::try_from_iter([("runs", column)]).unwrap()
    }

    async fn read_runs(lake: &Lake, path: &str) -> i64 {
        use arrow::array::AsArray;
        let bytes = lake.store().get(&lake.path(path)).await.unwrap().bytes().await.unwrap();
        let mut reader = datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap();
        reader.next().unwrap().unwrap().column(0).as_primitive::<arrow::datatypes::Int64Type>().value(0)
    }

    /// The runs in the date's file the Delta table shows, and every file in the date's folder.
    async fn shown(lake: &Lake, date: NaiveDate) -> (i64, Vec<String>) {
        use futures::TryStreamExt;
        let files = lake.delta().computed_files(lake, Table::TrendsDaily).await.unwrap().unwrap();
        let of_date: Vec<_> = files.iter().filter(|f| f.path.date == date).collect();
        assert_eq!(of_date.len(), 1, "{files:?}");
        let folder = lake.path(&format!("trends_daily/{}", testlake_schemas::DatePartition(date)));
        let listed: Vec<_> = lake.store().list(Some(&folder)).try_collect().await.unwrap();
        let listed = listed.iter().filter_map(|m| lake.relative(&m.location)).collect();
        (read_runs(lake, &of_date[0].path.to_string()).await, listed)
    }

    fn stamp(generation: u64, files: &[&str]) -> Stamp {
        Stamp { generation, inputs: Inputs::of(&files.iter().map(|f| (*f).to_owned()).collect::<Vec<_>>()) }
    }

    #[test]
    fn inputs_are_equal_exactly_when_the_sets_of_files_are() {
        let of = |files: &[&str]| Inputs::of(&files.iter().map(|f| (*f).to_owned()).collect::<Vec<_>>());
        assert_eq!(of(&["a", "b"]), of(&["b", "a"]));
        assert_ne!(of(&["a", "b"]), of(&["a"]));
        assert_ne!(of(&["ab"]), of(&["a", "b"]), "paths are separated");
        assert_ne!(of(&["a", "c"]), of(&["a", "b"]));
        assert_eq!(of(&[]).files, 0);
    }

    #[test]
    fn the_stamp_is_in_the_footer_and_comes_back_from_the_name() {
        let written = stamp(7, &["results/date=2026-11-27/hour=03/x.parquet"]);
        let bytes = encode_stamped(&batch(3), "t/x.parquet", &written).unwrap();
        let metadata = datafusion::parquet::file::metadata::ParquetMetaDataReader::new()
            .parse_and_finish(&bytes::Bytes::from(bytes))
            .unwrap();
        let kv = metadata.file_metadata().key_value_metadata().unwrap();
        let json = kv.iter().find(|kv| kv.key == STAMP_KEY).unwrap().value.clone().unwrap();
        assert_eq!(serde_json::from_str::<Stamp>(&json).unwrap(), written);

        let date = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
        let version = ComputedVersion::new(7, written.inputs.files, &written.inputs.digest);
        let path = ComputedFilePath { table: Table::TrendsDaily, date, version: Some(version) };
        let parsed: ComputedFilePath = path.to_string().parse().unwrap();
        assert_eq!(Stamp::of(&parsed), Some(written));
        assert_eq!(Stamp::of(&ComputedFilePath { version: None, ..path }), None);
    }

    /// On a store with conditional updates (in memory) and on one without (the local filesystem):
    /// the fence is the Delta commit on both.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_later_generation_is_never_replaced_by_an_earlier_one() {
        let dir = tempfile::tempdir().unwrap();
        let date = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
        for lake in [Lake::in_memory(), Lake::open(dir.path().to_str().unwrap()).unwrap()] {
            // A lake from before the Delta tables: its data.parquet becomes the table's first file.
            let legacy = "trends_daily/date=2026-11-27/data.parquet";
            let bytes = testlake_schemas::files::encode_parquet(&batch(9), legacy).unwrap();
            lake.store().put(&lake.path(legacy), bytes.into()).await.unwrap();
            let table = lake.delta().computed_files(&lake, Table::TrendsDaily).await.unwrap();
            assert!(table.is_none(), "no table before the first write");

            let put = |runs: i64, generation: u64| {
                let lake = lake.clone();
                async move { write_fenced(&lake, Table::TrendsDaily, date, &batch(runs), &stamp(generation, &["a"])).await }
            };
            assert_eq!(put(1, 3).await.unwrap(), Put::Written, "the legacy file has no generation");
            let (runs, listed) = shown(&lake, date).await;
            assert_eq!(runs, 1);
            assert_eq!(listed.len(), 1, "the legacy file was deleted: {listed:?}");
            assert_eq!(put(2, 3).await.unwrap(), Put::Written, "the same generation replaces");
            assert_eq!(put(3, 5).await.unwrap(), Put::Written, "a later one too");
            assert_eq!(put(4, 4).await.unwrap(), Put::Fenced { by: 5 });
            let (runs, listed) = shown(&lake, date).await;
            assert_eq!(runs, 3);
            assert_eq!(listed.len(), 1, "replaced and refused files are deleted: {listed:?}");
            assert!(listed[0].contains("/g5_f1_"), "{listed:?}");
        }
    }
}
