//! How lake files are written, by every stage: zstd Parquet with dictionaries, page statistics
//! and the page index, uploaded create-only (ingest) or as an atomic whole-file replace (compute).

use std::cmp::Ordering;
use std::collections::HashMap;

use arrow::array::{ArrayRef, AsArray, RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::{DataType, Int64Type};
use arrow::error::ArrowError;
use bytes::Bytes;
use object_store::{PutMode, PutOptions, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::Lake;

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
///
/// zstd level 1, not 3: decode→Parquet 1.36 → 1.09 µs per event for its sort and encode, files
/// 10 % larger. No dictionary for the nearly unique columns: the writer would build one, find it
/// too large and fall back, which cost another 0.14 µs per event and made files larger (46.6 →
/// 37.7 bytes per event). `duration_ms` and `ingested_at` (nearly unique too) joined them on
/// 2026-11-27: 37.6 → 34.5 bytes per event; time the same within this machine's noise.
/// Measured by `benches/benches/decode_to_parquet.rs`.
pub fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("valid zstd level")))
        .set_dictionary_enabled(true)
        .set_column_dictionary_enabled(ColumnPath::from("event_id"), false)
        .set_column_dictionary_enabled(ColumnPath::from("kafka_offset"), false)
        .set_column_dictionary_enabled(ColumnPath::from("started_at"), false)
        .set_column_dictionary_enabled(ColumnPath::from("finished_at"), false)
        .set_column_dictionary_enabled(ColumnPath::from("duration_ms"), false)
        .set_column_dictionary_enabled(ColumnPath::from("ingested_at"), false)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(1 << 20))
        .build()
}

/// The order of rows in a `results` file: by repository, test and time, so a test's executions
/// sit together (compression, pruning by repository or test).
pub const RESULTS_SORT: &[&str] = &["repository", "test_id", "finished_at"];

/// Sorts rows by the named columns that exist in the batch, for compression and pruning: strings
/// and signed integers (timestamps included), ascending, nulls first, ties kept in input order so the
/// output is deterministic.
pub fn sort_batch(batch: &RecordBatch, by: &[&str]) -> Result<RecordBatch, ArrowError> {
    let keys: Vec<Vec<u128>> =
        by.iter().filter_map(|name| batch.column_by_name(name)).map(order_keys).collect::<Result<_, _>>()?;
    if keys.is_empty() || batch.num_rows() < 2 {
        return Ok(batch.clone());
    }
    // Rows compare by integer keys, never by their strings: sort 0.33 → 0.27 µs per event
    // against sorting `arrow::row` encodings (one memcmp of ~70 bytes per comparison), measured
    // by `benches/benches/decode_to_parquet.rs`.
    let mut order: Vec<u32> = (0..batch.num_rows() as u32).collect();
    order.sort_unstable_by(|&a, &b| {
        let (a, b) = (a as usize, b as usize);
        keys.iter().map(|k| k[a].cmp(&k[b])).find(|o| o.is_ne()).unwrap_or(Ordering::Equal).then(a.cmp(&b))
    });
    take_record_batch(batch, &UInt32Array::from(order))
}

/// One integer per row whose order is the column's: a string's rank among the column's distinct
/// values, an integer's value; nulls first.
fn order_keys(column: &ArrayRef) -> Result<Vec<u128>, ArrowError> {
    if let Some(strings) = column.as_string_opt::<i32>() {
        let mut ids: HashMap<&str, usize> = HashMap::new();
        let row_ids: Vec<Option<usize>> = strings
            .iter()
            .map(|s| {
                let next = ids.len();
                s.map(|s| *ids.entry(s).or_insert(next))
            })
            .collect();
        let mut distinct: Vec<(&str, usize)> = ids.into_iter().collect();
        distinct.sort_unstable();
        let mut rank = vec![0; distinct.len()];
        for (r, &(_, id)) in distinct.iter().enumerate() {
            rank[id] = r as u128 + 1;
        }
        return Ok(row_ids.into_iter().map(|id| id.map_or(0, |id| rank[id])).collect());
    }
    // Signed only: a cast of a `u64` past `i64::MAX` would be null, and sort first.
    if column.data_type().is_signed_integer() || matches!(column.data_type(), DataType::Timestamp(..)) {
        let ints = arrow::compute::cast(column, &DataType::Int64)?;
        // Offset into u64's order; 0 is left for nulls.
        let key = |v: i64| (1 << 64) | u128::from((v as u64) ^ (1 << 63));
        return Ok(ints.as_primitive::<Int64Type>().iter().map(|v| v.map_or(0, key)).collect());
    }
    Err(ArrowError::NotYetImplemented(format!("sorting lake files by a {} column", column.data_type())))
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
    use arrow::array::{Int32Array, StringArray};
    use arrow::datatypes::{DataType, Field, Int32Type, Schema};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use std::sync::Arc;

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

    #[test]
    fn sorts_as_arrow_lexsort_does_with_ties_in_input_order() {
        use arrow::array::{Array, TimestampMicrosecondArray, UInt32Array};
        use arrow::compute::{SortColumn, lexsort_to_indices};
        let rows = 3000u32;
        let mut state = 7u64;
        let mut next = move |n: u64| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) % n
        };
        let words = ["", "b", "a", "ab", "é", "B", "a\u{0}"];
        let s: StringArray = (0..rows).map(|_| (next(8) > 0).then(|| words[next(7) as usize])).collect();
        let t: TimestampMicrosecondArray = (0..rows)
            .map(|_| (next(5) > 0).then(|| next(20) as i64 - 10 + i64::from(next(2) == 0) * i64::MIN / 2))
            .collect();
        let n: Int32Array = (0..rows).map(|_| Some(next(6) as i32 - 3)).collect();
        let input: UInt32Array = (0..rows).map(Some).collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("s", DataType::Utf8, true),
            Field::new("t", t.data_type().clone(), true),
            Field::new("n", DataType::Int32, false),
            Field::new("input", DataType::UInt32, false),
        ]));
        let columns: Vec<ArrayRef> = vec![Arc::new(s), Arc::new(t), Arc::new(n), Arc::new(input)];
        let batch = RecordBatch::try_new(schema, columns.clone()).unwrap();

        let sorted = sort_batch(&batch, &["s", "t", "n"]).unwrap();
        // Independently: arrow's lexsort over the same columns, the input position breaking ties.
        let by: Vec<SortColumn> = columns.iter().map(|c| SortColumn { values: Arc::clone(c), options: None }).collect();
        let expected = take_record_batch(&batch, &lexsort_to_indices(&by, None).unwrap()).unwrap();
        assert_eq!(sorted, expected);
    }

    #[tokio::test]
    async fn create_only_puts_report_an_existing_file() {
        let lake = Lake::in_memory();
        let bytes = encode_parquet(&batch(), "x").unwrap();
        assert_eq!(put_create(&lake, "results/f.parquet", bytes.clone()).await.unwrap(), Created::Written);
        assert_eq!(put_create(&lake, "results/f.parquet", bytes).await.unwrap(), Created::AlreadyExisted);
    }
}
