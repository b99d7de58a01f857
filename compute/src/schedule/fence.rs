//! What a computed file was built from, written into the file, and the fenced write that keeps an
//! older lease holder from replacing a newer holder's file.
//!
//! Every computed file (`trends_hourly`, `trends_daily`, `flaky_scores` of one date) carries a
//! [`Stamp`] in its Parquet footer (key [`STAMP_KEY`]): the generation of the lease it was written
//! under, and a fingerprint of the committed `results` files it was computed from. Outside
//! readers ignore the key; compute reads it to reconcile (are the date's inputs still the ones
//! the file was built from?) and to fence.
//!
//! **Fencing.** Lease generations only grow (`crate::lease`), and a holder takes its generation
//! after every earlier one was created. [`put_fenced`] reads the stamp of the file in place and
//! refuses to replace a file written under a higher generation; otherwise it replaces it with a
//! conditional put on the version it read (`PutMode::Update`, or `PutMode::Create` when there was
//! none), so a write by anyone in between sends it back to read again. A holder whose lease
//! expired while it worked (a pause, clock skew) therefore never overwrites its successor's file.
//! (Had the refused holder read the commit log after its successor, the file lacks what landed
//! in between; that data's notice, or reconciliation, recomputes the date under a newer lease.)
//! Stores without conditional updates (the local filesystem in `object_store` 0.13) read the
//! stamp again right before an unconditional replace: there a holder paused past its successor's
//! whole write *between that read and its put* can still replace the newer file; the file it
//! leaves records inputs older than the committed ones, so the next reconciliation
//! (`super::reconcile`) recomputes it. Creation stays create-only everywhere.

use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::file::metadata::{KeyValue, ParquetMetaDataReader};
use object_store::{GetOptions, GetRange, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};
use testlake_schemas::Lake;
use testlake_schemas::files::{WriteError, writer_properties};
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

/// A computed file as found: its version (for a conditional put) and its stamp (`None` when it
/// has none: written before stamps, or unreadable — either way built from unknown inputs).
#[derive(Debug, Clone)]
pub struct Found {
    pub version: UpdateVersion,
    pub stamp: Option<Stamp>,
}

/// Footers are read from the file's tail: this much covers a computed file's footer in one get.
const TAIL: u64 = 64 * 1024;

/// Reads the stamp of the computed file at `path`; `None` when there is no file.
///
/// The file's size comes first (a head), then a range of known bounds. A suffix range longer
/// than the object is the whole object (RFC 9110), but s3s-fs 0.14.1 answers it with a 500 (it
/// seeks before the file's start): bounded ranges work on every store, for one more request per
/// file read — the files read are the ones just written or whose listing changed. The range is
/// read on the version the head saw; a file replaced in between is read again.
pub async fn read_stamp(lake: &Lake, path: &str) -> Result<Option<Found>> {
    let store = |e| Error::Store(Box::new(e));
    let location = lake.path(path);
    let mut attempts = 0;
    let (meta, mut tail) = loop {
        let meta = match lake.store().head(&location).await {
            Ok(meta) => meta,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(store(e)),
        };
        if meta.size == 0 {
            let version = UpdateVersion { e_tag: meta.e_tag, version: meta.version };
            return Ok(Some(Found { version, stamp: None }));
        }
        let options = GetOptions {
            range: Some(GetRange::Bounded(meta.size.saturating_sub(TAIL)..meta.size)),
            if_match: meta.e_tag.clone(),
            ..Default::default()
        };
        let got = async { lake.store().get_opts(&location, options).await?.bytes().await };
        match got.await {
            Ok(tail) => break (meta, tail.to_vec()),
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(object_store::Error::Precondition { .. }) if attempts < 5 => attempts += 1,
            Err(e) => return Err(store(e)),
        }
    };
    let version = UpdateVersion { e_tag: meta.e_tag.clone(), version: meta.version.clone() };
    let size = meta.size;
    let stamp = match footer_length(&tail) {
        Some(length) if length + 8 > tail.len() as u64 && length + 8 <= size => {
            let range = (size - length - 8)..size;
            tail = lake.store().get_range(&location, range).await.map_err(store)?.to_vec();
            stamp_in(&tail, path)
        }
        _ => stamp_in(&tail, path),
    };
    Ok(Some(Found { version, stamp }))
}

fn footer_length(tail: &[u8]) -> Option<u64> {
    let end = tail.len().checked_sub(8)?;
    (&tail[end + 4..] == b"PAR1")
        .then(|| u64::from(u32::from_le_bytes(tail[end..end + 4].try_into().expect("4 bytes"))))
}

/// The stamp in `tail` (the end of a Parquet file holding at least its whole footer).
fn stamp_in(tail: &[u8], path: &str) -> Option<Stamp> {
    let length = usize::try_from(footer_length(tail)?).ok()?;
    let end = tail.len() - 8;
    let metadata = match ParquetMetaDataReader::decode_metadata(&tail[end.checked_sub(length)?..end]) {
        Ok(metadata) => metadata,
        Err(e) => {
            warn!(path, error = %e, "unreadable footer of a computed file: taken as built from unknown inputs");
            return None;
        }
    };
    let value = metadata.file_metadata().key_value_metadata()?.iter().find(|kv| kv.key == STAMP_KEY)?.value.clone()?;
    serde_json::from_str(&value).ok()
}

/// How a fenced write ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Put {
    Written,
    /// The file in place was written under this later generation: left as it is.
    Fenced {
        by: u64,
    },
}

/// Writes `bytes` (stamped with `generation`) at `path` unless the file there was written under a
/// later generation (see the module's documentation).
pub async fn put_fenced(lake: &Lake, path: &str, bytes: Vec<u8>, generation: u64) -> Result<Put> {
    let payload = PutPayload::from(bytes);
    // Set once the store turned a conditional update down: then the check right before the put
    // is the fence.
    let mut unconditional = false;
    loop {
        let found = read_stamp(lake, path).await?;
        if let Some(by) =
            found.as_ref().and_then(|f| f.stamp.as_ref()).map(|s| s.generation).filter(|g| *g > generation)
        {
            return Ok(Put::Fenced { by });
        }
        let mode = match found {
            None => PutMode::Create,
            Some(_) if unconditional => PutMode::Overwrite,
            Some(found) => PutMode::Update(found.version),
        };
        let options = PutOptions { mode, ..Default::default() };
        match lake.store().put_opts(&lake.path(path), payload.clone(), options).await {
            Ok(_) => return Ok(Put::Written),
            // Someone wrote in between: look at what they wrote.
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {}
            Err(object_store::Error::NotImplemented { .. }) if !unconditional => unconditional = true,
            Err(e) => return Err(Error::Store(Box::new(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(runs: i64) -> arrow::array::RecordBatch {
        let column: arrow::array::ArrayRef = std::sync::Arc::new(arrow::array::Int64Array::from(vec![runs]));
        arrow::array::RecordBatch::try_from_iter([("runs", column)]).unwrap()
    }

    async fn runs_at(lake: &Lake, path: &str) -> i64 {
        use arrow::array::AsArray;
        let bytes = lake.store().get(&lake.path(path)).await.unwrap().bytes().await.unwrap();
        let mut reader = datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap();
        reader.next().unwrap().unwrap().column(0).as_primitive::<arrow::datatypes::Int64Type>().value(0)
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

    #[tokio::test]
    async fn the_stamp_round_trips_through_the_footer_also_past_the_first_read() {
        let lake = Lake::in_memory();
        let written = stamp(7, &["results/date=2026-11-27/hour=03/x.parquet"]);
        let bytes = encode_stamped(&batch(3), "t/x.parquet", &written).unwrap();
        lake.store().put(&lake.path("t/x.parquet"), bytes.into()).await.unwrap();
        assert_eq!(read_stamp(&lake, "t/x.parquet").await.unwrap().unwrap().stamp, Some(written));
        assert!(read_stamp(&lake, "t/none.parquet").await.unwrap().is_none());

        // A footer larger than the first read of the tail (many columns).
        let columns: Vec<(String, arrow::array::ArrayRef)> = (0..3000)
            .map(|i| (format!("column_{i}"), std::sync::Arc::new(arrow::array::Int64Array::from(vec![i])) as _))
            .collect();
        let wide = arrow::array::RecordBatch::try_from_iter(columns).unwrap();
        let big = stamp(8, &["a"]);
        let bytes = encode_stamped(&wide, "t/wide.parquet", &big).unwrap();
        let footer = u64::from(u32::from_le_bytes(bytes[bytes.len() - 8..bytes.len() - 4].try_into().unwrap()));
        assert!(footer > TAIL, "the footer ({footer} bytes) is past the first read");
        lake.store().put(&lake.path("t/wide.parquet"), bytes.into()).await.unwrap();
        assert_eq!(read_stamp(&lake, "t/wide.parquet").await.unwrap().unwrap().stamp, Some(big));
    }

    /// On a store with conditional updates (in memory) and on one without (the local filesystem).
    #[tokio::test]
    async fn a_later_generation_is_never_replaced_by_an_earlier_one() {
        let dir = tempfile::tempdir().unwrap();
        for lake in [Lake::in_memory(), Lake::open(dir.path().to_str().unwrap()).unwrap()] {
            let path = "trends_daily/date=2026-11-27/data.parquet";
            let put = |runs: i64, generation: u64| {
                let bytes = encode_stamped(&batch(runs), path, &stamp(generation, &["a"])).unwrap();
                put_fenced(&lake, path, bytes, generation)
            };
            assert_eq!(put(1, 3).await.unwrap(), Put::Written, "no file yet");
            assert_eq!(put(2, 3).await.unwrap(), Put::Written, "the same generation replaces");
            assert_eq!(put(3, 5).await.unwrap(), Put::Written, "a later one too");
            assert_eq!(put(4, 4).await.unwrap(), Put::Fenced { by: 5 });
            assert_eq!(runs_at(&lake, path).await, 3);
            // A file without a stamp (written before stamps) is replaced by any generation.
            let plain = testlake_schemas::files::encode_parquet(&batch(9), path).unwrap();
            lake.store().put(&lake.path(path), plain.into()).await.unwrap();
            assert_eq!(put(5, 0).await.unwrap(), Put::Written);
            assert_eq!(runs_at(&lake, path).await, 5);
        }
    }
}
