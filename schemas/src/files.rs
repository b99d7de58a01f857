//! How lake files are written, by every stage: zstd Parquet with dictionaries, page statistics
//! and the page index, uploaded create-only (ingest) or as an atomic whole-file replace (compute).

use std::sync::Arc;

use crate::Lake;
use arrow::array::RecordBatch;
use arrow::compute::{SortColumn, lexsort_to_indices, take_record_batch};
use arrow::error::ArrowError;
use bytes::Bytes;
use object_store::{PutMode, PutOptions, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::{EnabledStatistics, WriterProperties};

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("arrow error while preparing {path}: {source}")]
    Arrow { path: String, source: ArrowError },
    #[error("parquet error while encoding {path}: {source}")]
    Parquet { path: String, source: ParquetError },
    #[error("object store error writing {path}: {source}")]
    Store { path: String, source: Box<object_store::Error> },
}

/// Writer settings for lake files: zstd, dictionaries, page statistics and the page index.
pub fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).expect("valid zstd level")))
        .set_dictionary_enabled(true)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(1 << 20))
        .build()
}

/// Sorts rows by the named columns that exist in the batch, for compression and pruning.
pub fn sort_batch(batch: &RecordBatch, by: &[&str]) -> Result<RecordBatch, ArrowError> {
    let columns: Vec<SortColumn> = by
        .iter()
        .filter_map(|name| batch.column_by_name(name))
        .map(|values| SortColumn { values: Arc::clone(values), options: None })
        .collect();
    if columns.is_empty() || batch.num_rows() < 2 {
        return Ok(batch.clone());
    }
    let indices = lexsort_to_indices(&columns, None)?;
    take_record_batch(batch, &indices)
}

/// Encodes a batch as a Parquet file in memory.
pub fn encode_parquet(batch: &RecordBatch, path: &str) -> Result<Bytes, WriteError> {
    let parquet = |source| WriteError::Parquet { path: path.to_owned(), source };
    let mut out = Vec::with_capacity(batch.get_array_memory_size() / 4 + 1024);
    let mut writer = ArrowWriter::try_new(&mut out, batch.schema(), Some(writer_properties())).map_err(parquet)?;
    writer.write(batch).map_err(parquet)?;
    writer.close().map_err(parquet)?;
    Ok(Bytes::from(out))
}

/// What a create-only put found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// This call wrote the file.
    Written,
    /// A file of that name was already there: the same Kafka coordinates were written before.
    AlreadyExisted,
}

/// Writes `bytes` at `relative` only if no file of that name exists. The object store makes the
/// file visible atomically (the local store renames a finished temporary file into place).
pub async fn put_create(lake: &Lake, relative: &str, bytes: Bytes) -> Result<Created, WriteError> {
    let options = PutOptions { mode: PutMode::Create, ..Default::default() };
    match lake.store().put_opts(&lake.path(relative), PutPayload::from(bytes), options).await {
        Ok(_) => Ok(Created::Written),
        Err(object_store::Error::AlreadyExists { .. }) => Ok(Created::AlreadyExisted),
        Err(e) => Err(WriteError::Store { path: relative.to_owned(), source: Box::new(e) }),
    }
}

/// Writes `bytes` at `relative`, replacing any previous file in one atomic put.
pub async fn put_overwrite(lake: &Lake, relative: &str, bytes: Bytes) -> Result<(), WriteError> {
    lake.store()
        .put_opts(&lake.path(relative), PutPayload::from(bytes), PutOptions::default())
        .await
        .map(|_| ())
        .map_err(|e| WriteError::Store { path: relative.to_owned(), source: Box::new(e) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int32Array, StringArray};
    use arrow::datatypes::{DataType, Field, Int32Type, Schema};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("repository", DataType::Utf8, false),
            Field::new("n", DataType::Int32, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![Arc::new(StringArray::from(vec!["b", "a", "b", "a"])), Arc::new(Int32Array::from(vec![4, 2, 3, 1]))],
        )
        .unwrap()
    }

    #[test]
    fn sorts_and_round_trips_through_parquet() {
        let sorted = sort_batch(&batch(), &["repository", "n", "missing"]).unwrap();
        let bytes = encode_parquet(&sorted, "x").unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap().build().unwrap();
        let back: Vec<RecordBatch> = reader.collect::<Result<_, _>>().unwrap();
        let n = back[0].column(1).as_primitive::<Int32Type>();
        assert_eq!(n.values().to_vec(), vec![1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn create_only_puts_report_an_existing_file() {
        let lake = Lake::in_memory();
        let bytes = encode_parquet(&batch(), "x").unwrap();
        assert_eq!(put_create(&lake, "results/f.parquet", bytes.clone()).await.unwrap(), Created::Written);
        assert_eq!(put_create(&lake, "results/f.parquet", bytes).await.unwrap(), Created::AlreadyExisted);
    }
}
