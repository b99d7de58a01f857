//! A k-way merge of Parquet files that are each sorted by the same keys into one sorted Parquet
//! file, streaming: memory holds one decoded batch per input and the output's encoded pages,
//! never all the rows (measured by `benches/benches/compaction.rs`).
//!
//! Every ingest file is sorted by [`testlake_schemas::files::RESULTS_SORT`], and so is every
//! compacted file, so an hour's files merge without a sort. The merge checks the order as it
//! goes and answers [`Merged::Unsorted`] at the first input row out of order; the caller then
//! falls back to concatenating and sorting.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use arrow::array::RecordBatch;
use arrow::compute::interleave_record_batch;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::row::{RowConverter, Rows, SortField};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::errors::ParquetError;

/// Rows decoded from an input at a time, and written to the output at a time.
const BATCH_ROWS: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("parquet: {0}")]
    Parquet(#[from] ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] ArrowError),
    #[error("input {input} does not have the schema of the first input")]
    Schema { input: usize },
}

#[derive(Debug)]
pub enum Merged {
    /// The merged file and its row count.
    Written { bytes: Bytes, rows: u64 },
    /// Input `input` (by position) is not sorted by the keys: nothing was produced.
    Unsorted { input: usize },
}

/// One input: its reader, the batch being merged and that batch's sort keys.
struct Cursor {
    reader: ParquetRecordBatchReader,
    batch: RecordBatch,
    keys: Rows,
    /// Index of `batch` in the merge's list of batches that output rows point into.
    slot: usize,
}

/// Merges `inputs` (Parquet files, each sorted by the columns `by`, ascending, nulls first)
/// into one Parquet file written with `props`. Ties keep the inputs' order, then each input's.
pub fn merge_sorted(
    inputs: &[Bytes],
    by: &[&str],
    props: parquet::file::properties::WriterProperties,
) -> Result<Merged, MergeError> {
    let mut schema: Option<SchemaRef> = None;
    let mut converter: Option<RowConverter> = None;
    let mut cursors: Vec<Option<Cursor>> = Vec::with_capacity(inputs.len());
    let mut live: Vec<RecordBatch> = Vec::new();
    let mut heap = BinaryHeap::new();
    for (input, bytes) in inputs.iter().enumerate() {
        let mut reader =
            ParquetRecordBatchReaderBuilder::try_new(bytes.clone())?.with_batch_size(BATCH_ROWS).build()?;
        let Some(batch) = next_batch(&mut reader)? else {
            cursors.push(None);
            continue;
        };
        let schema = schema.get_or_insert_with(|| batch.schema());
        if batch.schema() != *schema {
            return Err(MergeError::Schema { input });
        }
        let converter = match &mut converter {
            Some(c) => c,
            None => converter.insert(RowConverter::new(
                by.iter()
                    .map(|name| Ok(SortField::new(schema.field_with_name(name)?.data_type().clone())))
                    .collect::<Result<_, ArrowError>>()?,
            )?),
        };
        let keys = converter.convert_columns(&sort_columns(&batch, by)?)?;
        heap.push(Reverse((keys.row(0).as_ref().to_vec(), input, 0usize)));
        cursors.push(Some(Cursor { reader, batch: batch.clone(), keys, slot: live.len() }));
        live.push(batch);
    }
    let (Some(schema), Some(converter)) = (schema, converter) else {
        return Ok(Merged::Written { bytes: Bytes::new(), rows: 0 });
    };

    let mut writer = ArrowWriter::try_new(Vec::new(), schema, Some(props))?;
    let mut out: Vec<(usize, usize)> = Vec::with_capacity(BATCH_ROWS);
    let mut rows = 0u64;
    while let Some(Reverse((key, input, row))) = heap.pop() {
        let cursor = cursors[input].as_mut().expect("a cursor in the heap is open");
        out.push((cursor.slot, row));
        // The input's next row: in this batch, or the first of its next batch.
        let next = if row + 1 < cursor.batch.num_rows() {
            Some(row + 1)
        } else if let Some(batch) = next_batch(&mut cursor.reader)? {
            cursor.keys = converter.convert_columns(&sort_columns(&batch, by)?)?;
            cursor.slot = live.len();
            cursor.batch = batch.clone();
            live.push(batch);
            Some(0)
        } else {
            None
        };
        match next {
            Some(next) => {
                let next_key = cursor.keys.row(next).as_ref().to_vec();
                if next_key < key {
                    return Ok(Merged::Unsorted { input });
                }
                heap.push(Reverse((next_key, input, next)));
            }
            None => cursors[input] = None,
        }
        if out.len() == BATCH_ROWS {
            rows += write(&mut writer, &mut live, &mut out, &mut cursors)?;
        }
    }
    rows += write(&mut writer, &mut live, &mut out, &mut cursors)?;
    Ok(Merged::Written { bytes: Bytes::from(writer.into_inner()?), rows })
}

/// As [`merge_sorted`], with at most `fan_in` inputs open at once: more are merged in rounds,
/// `fan_in` at a time, into sorted files in memory that the next round merges. An hour of
/// sub-second flushes has tens of thousands of tiny files; opening them all at once would hold a
/// reader, its metadata and a batch for every one. Ties still keep the inputs' order. Only the
/// first round can find an input out of order (later rounds read this function's own output).
pub fn merge_sorted_bounded(
    inputs: &[Bytes],
    by: &[&str],
    props: parquet::file::properties::WriterProperties,
    fan_in: usize,
) -> Result<Merged, MergeError> {
    let fan_in = fan_in.max(2);
    let mut round = inputs.to_vec();
    while round.len() > fan_in {
        let mut next = Vec::with_capacity(round.len().div_ceil(fan_in));
        for (chunk, files) in round.chunks(fan_in).enumerate() {
            match merge_sorted(files, by, props.clone())? {
                Merged::Written { rows: 0, .. } => {}
                Merged::Written { bytes, .. } => next.push(bytes),
                Merged::Unsorted { input } => return Ok(Merged::Unsorted { input: chunk * fan_in + input }),
            }
        }
        round = next;
    }
    merge_sorted(&round, by, props)
}

/// Writes the rows `out` points at, then forgets every batch no open input still reads.
fn write(
    writer: &mut ArrowWriter<Vec<u8>>,
    live: &mut Vec<RecordBatch>,
    out: &mut Vec<(usize, usize)>,
    cursors: &mut [Option<Cursor>],
) -> Result<u64, MergeError> {
    if out.is_empty() {
        return Ok(0);
    }
    let batches: Vec<&RecordBatch> = live.iter().collect();
    let merged = interleave_record_batch(&batches, out)?;
    writer.write(&merged)?;
    let written = out.len() as u64;
    out.clear();
    live.clear();
    for cursor in cursors.iter_mut().flatten() {
        cursor.slot = live.len();
        live.push(cursor.batch.clone());
    }
    Ok(written)
}

fn next_batch(reader: &mut ParquetRecordBatchReader) -> Result<Option<RecordBatch>, ArrowError> {
    for batch in reader.by_ref() {
        let batch = batch?;
        if batch.num_rows() > 0 {
            return Ok(Some(batch));
        }
    }
    Ok(None)
}

fn sort_columns(batch: &RecordBatch, by: &[&str]) -> Result<Vec<arrow::array::ArrayRef>, ArrowError> {
    by.iter()
        .map(|name| {
            batch
                .column_by_name(name)
                .cloned()
                .ok_or_else(|| ArrowError::SchemaError(format!("no column {name} to merge by")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{AsArray, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use testlake_schemas::files::{encode_parquet, sort_batch, writer_properties};

    use super::*;

    /// Rows (s, n, id) with `s` from a few values (some null), `n` from a small range: many ties.
    fn batch(seed: u64, rows: usize) -> RecordBatch {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let s: StringArray = (0..rows).map(|_| ["b", "a", "ä", ""].get((next() % 5) as usize).copied()).collect();
        let n: Int64Array = (0..rows).map(|_| (next() % 4 == 0).then(|| next() as i64 % 50 - 25)).collect();
        let id: Int64Array = (0..rows).map(|i| Some(seed as i64 * 1_000_000 + i as i64)).collect();
        let schema = Schema::new(vec![
            Field::new("s", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
            Field::new("id", DataType::Int64, false),
        ]);
        RecordBatch::try_new(Arc::new(schema), vec![Arc::new(s), Arc::new(n), Arc::new(id)]).unwrap()
    }

    fn read(bytes: Bytes) -> RecordBatch {
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap().build().unwrap();
        let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
        arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
    }

    /// Merging sorted files equals sorting all their rows at once (the stable sort of the
    /// concatenation, which keeps the inputs' order on ties) — over batch boundaries, with
    /// nulls, ties, an empty input and inputs of very different sizes.
    #[test]
    fn merging_sorted_files_equals_sorting_their_rows() {
        let by = ["s", "n"];
        let sizes = [10_000, 1, 0, 4_097, 300, 9_000];
        let sorted: Vec<RecordBatch> =
            sizes.iter().enumerate().map(|(i, &rows)| sort_batch(&batch(i as u64 + 1, rows), &by).unwrap()).collect();
        let files: Vec<Bytes> = sorted.iter().map(|b| encode_parquet(b, "t").unwrap()).collect();
        let Merged::Written { bytes, rows } = merge_sorted(&files, &by, writer_properties()).unwrap() else {
            panic!("sorted inputs")
        };
        let all = arrow::compute::concat_batches(&sorted[0].schema(), &sorted).unwrap();
        let want = sort_batch(&all, &by).unwrap();
        assert_eq!(rows, want.num_rows() as u64);
        let got = read(bytes);
        let ids = |b: &RecordBatch| b.column(2).as_primitive::<Int64Type>().values().to_vec();
        assert_eq!(ids(&got), ids(&want), "same rows in the same order");
        assert_eq!(got, want);
    }

    /// Many small files merged four at a time, over several rounds: the same as sorting them all.
    #[test]
    fn merging_in_rounds_equals_sorting_their_rows() {
        let by = ["s", "n"];
        let sorted: Vec<RecordBatch> =
            (0..50).map(|i| sort_batch(&batch(i + 100, (i as usize * 37) % 90), &by).unwrap()).collect();
        let files: Vec<Bytes> = sorted.iter().map(|b| encode_parquet(b, "t").unwrap()).collect();
        let Merged::Written { bytes, rows } = merge_sorted_bounded(&files, &by, writer_properties(), 4).unwrap() else {
            panic!("sorted inputs")
        };
        let all = arrow::compute::concat_batches(&sorted[0].schema(), &sorted).unwrap();
        let want = sort_batch(&all, &by).unwrap();
        assert_eq!(rows, want.num_rows() as u64);
        assert_eq!(read(bytes), want);
        let unsorted = encode_parquet(&batch(7, 500), "t").unwrap();
        let mut files = files;
        files.insert(9, unsorted);
        let merged = merge_sorted_bounded(&files, &by, writer_properties(), 4).unwrap();
        assert!(matches!(merged, Merged::Unsorted { input: 9 }), "{merged:?}");
    }

    #[test]
    fn an_unsorted_input_is_reported_not_merged() {
        let by = ["s", "n"];
        let sorted = encode_parquet(&sort_batch(&batch(1, 5_000), &by).unwrap(), "t").unwrap();
        let unsorted = encode_parquet(&batch(2, 5_000), "t").unwrap();
        let merged = merge_sorted(&[sorted, unsorted], &by, writer_properties()).unwrap();
        assert!(matches!(merged, Merged::Unsorted { input: 1 }), "{merged:?}");
    }
}
