//! How lake files are written, by every stage: zstd Parquet with dictionaries, page statistics
//! and the page index, uploaded create-only (ingest) or as an atomic whole-file replace (compute).

use std::cmp::Ordering;
use std::collections::HashMap;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use arrow::buffer::NullBuffer;
use arrow::compute::take_record_batch;
use arrow::datatypes::{DataType, Int64Type};
use arrow::error::ArrowError;
use bytes::Bytes;
use object_store::{PutMode, PutOptions, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
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
///
/// Those columns are then written with the delta encodings, which DuckDB reads (checked with
/// 2.0.1), as do parquet-mr, Trino and Arrow C++: `event_id` as DELTA_LENGTH_BYTE_ARRAY (its lengths,
/// all 36, cost nearly nothing instead of 4 bytes a row before zstd), the 64-bit integers and
/// timestamps as DELTA_BINARY_PACKED (offsets count up by one, `ingested_at` barely moves).
/// Encoding 0.58 → 0.49 µs per event and 34.5 → 32.5 bytes per event, in 5 interleaved rounds on
/// 2026-11-27. `duration_ms` stays plain: BYTE_STREAM_SPLIT made files larger (37.3 bytes).
/// Measured by `benches/benches/decode_to_parquet.rs`.
pub fn writer_properties() -> WriterProperties {
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("valid zstd level")))
        .set_dictionary_enabled(true)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(1 << 20));
    for (column, encoding) in [
        ("event_id", Encoding::DELTA_LENGTH_BYTE_ARRAY),
        ("kafka_offset", Encoding::DELTA_BINARY_PACKED),
        ("started_at", Encoding::DELTA_BINARY_PACKED),
        ("finished_at", Encoding::DELTA_BINARY_PACKED),
        ("ingested_at", Encoding::DELTA_BINARY_PACKED),
        ("duration_ms", Encoding::PLAIN),
    ] {
        builder = builder
            .set_column_dictionary_enabled(ColumnPath::from(column), false)
            .set_column_encoding(ColumnPath::from(column), encoding);
    }
    builder.build()
}

/// The order of rows in a `results` file: by repository, test and time, so a test's executions
/// sit together (compression, pruning by repository or test).
pub const RESULTS_SORT: &[&str] = &["repository", "test_id", "finished_at"];

/// Sorts rows by the named columns that exist in the batch, for compression and pruning: strings
/// and signed integers (timestamps included), ascending, nulls first, ties kept in input order so the
/// output is deterministic.
pub fn sort_batch(batch: &RecordBatch, by: &[&str]) -> Result<RecordBatch, ArrowError> {
    let keys: Vec<OrderKey> =
        by.iter().filter_map(|name| batch.column_by_name(name)).map(order_key).collect::<Result<_, _>>()?;
    if keys.is_empty() || batch.num_rows() < 2 {
        return Ok(batch.clone());
    }
    take_record_batch(batch, &UInt32Array::from(sort_order(&keys, batch.num_rows())))
}

/// As [`sort_batch`], over the rows `rows` of `batch` only (ties in the order given): the key
/// columns of those rows are copied to find their order, then every column once. A flush whose
/// rows span several hours stages each hour's file from the one batch this way, instead of
/// copying the rows into hours and then again into order.
pub fn sort_rows(batch: &RecordBatch, rows: &UInt32Array, by: &[&str]) -> Result<RecordBatch, ArrowError> {
    let columns: Vec<ArrayRef> = by
        .iter()
        .filter_map(|name| batch.column_by_name(name))
        .map(|column| arrow::compute::take(column, rows, None))
        .collect::<Result<_, _>>()?;
    let keys: Vec<OrderKey> = columns.iter().map(order_key).collect::<Result<_, _>>()?;
    if keys.is_empty() || rows.len() < 2 {
        return take_record_batch(batch, rows);
    }
    let order = sort_order(&keys, rows.len());
    take_record_batch(batch, &UInt32Array::from_iter_values(order.into_iter().map(|i| rows.value(i as usize))))
}

/// The row order of `rows` rows by `keys`, ties in input order.
///
/// Rows compare by integers, never by their strings. When every key and the row number fit in 128
/// bits together (a flush's ranks and an hour's timestamps take ~50), each row becomes one `u128`
/// and a plain integer sort orders them; otherwise rows are compared key by key. `sort_batch` went
/// 0.27 → 0.23 µs per event with the packing, measured on 2026-11-27 in the decode_to_parquet
/// workload; most of what is left is the `take` of every column into the new order.
fn sort_order(keys: &[OrderKey], rows: usize) -> Vec<u32> {
    let row_bits = bits(rows as u64);
    let key_bits: u32 = keys.iter().map(|k| k.bits).sum();
    if key_bits + row_bits <= 128 {
        let mut packed: Vec<u128> = (0..rows as u128).collect();
        let mut shift = row_bits;
        // A key of 0 bits (all nulls, or one value) orders nothing, and its shift could be 128.
        for key in keys.iter().rev().filter(|key| key.bits > 0) {
            for (row, p) in packed.iter_mut().enumerate() {
                *p |= key.at(row) << shift;
            }
            shift += key.bits;
        }
        packed.sort_unstable();
        let mask = (1u128 << row_bits) - 1;
        return packed.into_iter().map(|p| (p & mask) as u32).collect();
    }
    let mut order: Vec<u32> = (0..rows as u32).collect();
    order.sort_unstable_by(|&a, &b| {
        let (a, b) = (a as usize, b as usize);
        keys.iter().map(|k| k.at(a).cmp(&k.at(b))).find(|o| o.is_ne()).unwrap_or(Ordering::Equal).then(a.cmp(&b))
    });
    order
}

/// One unsigned integer per row whose order is the column's, at most `bits` bits wide.
struct OrderKey {
    values: Vec<u64>,
    bits: u32,
    /// Only for an integer column spanning all of `i64`: its values then use every `u64`, so
    /// nulls are told apart by a 65th bit.
    nulls: Option<NullBuffer>,
}

impl OrderKey {
    fn at(&self, row: usize) -> u128 {
        let value = u128::from(self.values[row]);
        match &self.nulls {
            None => value,
            Some(nulls) => (u128::from(nulls.is_valid(row)) << 64) | value,
        }
    }
}

/// Bits needed to write `n`.
fn bits(n: u64) -> u32 {
    u64::BITS - n.leading_zeros()
}

/// A column's [`OrderKey`]: a string's rank among the column's distinct values, an integer's
/// distance from the column's least value; both plus one, and 0 for nulls, which sort first.
fn order_key(column: &ArrayRef) -> Result<OrderKey, ArrowError> {
    if let Some(strings) = column.as_string_opt::<i32>() {
        let mut ids: HashMap<&str, u32> = HashMap::new();
        let row_ids: Vec<Option<u32>> = strings
            .iter()
            .map(|s| {
                let next = ids.len() as u32;
                s.map(|s| *ids.entry(s).or_insert(next))
            })
            .collect();
        let mut distinct: Vec<(&str, u32)> = ids.into_iter().collect();
        distinct.sort_unstable();
        let mut rank = vec![0; distinct.len()];
        for (r, &(_, id)) in distinct.iter().enumerate() {
            rank[id as usize] = r as u64 + 1;
        }
        let values = row_ids.into_iter().map(|id| id.map_or(0, |id| rank[id as usize])).collect();
        return Ok(OrderKey { values, bits: bits(distinct.len() as u64), nulls: None });
    }
    // Signed only: a cast of a `u64` past `i64::MAX` would be null, and sort first.
    if column.data_type().is_signed_integer() || matches!(column.data_type(), DataType::Timestamp(..)) {
        let ints = arrow::compute::cast(column, &DataType::Int64)?;
        let ints = ints.as_primitive::<Int64Type>();
        let (Some(min), Some(max)) = (arrow::compute::min(ints), arrow::compute::max(ints)) else {
            return Ok(OrderKey { values: vec![0; ints.len()], bits: 0, nulls: None });
        };
        let span = max.abs_diff(min);
        if span == u64::MAX {
            let values = ints.iter().map(|v| v.map_or(0, |v| (v as u64) ^ (1 << 63))).collect();
            let nulls = ints.logical_nulls().unwrap_or_else(|| NullBuffer::new_valid(ints.len()));
            return Ok(OrderKey { values, bits: 65, nulls: Some(nulls) });
        }
        let values = ints.iter().map(|v| v.map_or(0, |v| v.abs_diff(min) + 1)).collect();
        return Ok(OrderKey { values, bits: bits(span + 1), nulls: None });
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
mod tests;
