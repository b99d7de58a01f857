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

/// A small deterministic generator, so the tests need no `rand`.
fn generator(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut state = seed;
    move |n: u64| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) % n
    }
}

/// Checks `sort_batch` by every column of `columns` against arrow's lexsort of the same
/// columns, the input position breaking ties.
fn assert_sorts_as_lexsort_does(columns: Vec<ArrayRef>) {
    use arrow::array::UInt32Array;
    use arrow::compute::{SortColumn, lexsort_to_indices};
    let rows = columns[0].len();
    let names: Vec<String> = (0..columns.len()).map(|i| format!("c{i}")).collect();
    let mut fields: Vec<Field> =
        names.iter().zip(&columns).map(|(n, c)| Field::new(n, c.data_type().clone(), true)).collect();
    fields.push(Field::new("input", DataType::UInt32, false));
    let mut all = columns.clone();
    all.push(Arc::new((0..rows as u32).map(Some).collect::<UInt32Array>()));
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), all.clone()).unwrap();

    let by: Vec<&str> = names.iter().map(String::as_str).collect();
    let sorted = sort_batch(&batch, &by).unwrap();
    let keys: Vec<SortColumn> = all.iter().map(|c| SortColumn { values: Arc::clone(c), options: None }).collect();
    let expected = take_record_batch(&batch, &lexsort_to_indices(&keys, None).unwrap()).unwrap();
    assert_eq!(sorted, expected);

    // A subset of the rows, given backwards (ties keep the order given): as if copied out first.
    let subset: UInt32Array = (0..rows as u32).rev().filter(|r| r % 3 != 0).collect();
    let copied = take_record_batch(&batch, &subset).unwrap();
    let given: ArrayRef = Arc::new((0..subset.len() as u32).collect::<UInt32Array>());
    let copied_keys: Vec<SortColumn> = copied.columns()[..columns.len()]
        .iter()
        .chain([&given])
        .map(|c| SortColumn { values: Arc::clone(c), options: None })
        .collect();
    let expected = take_record_batch(&copied, &lexsort_to_indices(&copied_keys, None).unwrap()).unwrap();
    assert_eq!(sort_rows(&batch, &subset, &by).unwrap(), expected);
}

#[test]
fn sorts_as_arrow_lexsort_does_with_ties_in_input_order() {
    use arrow::array::TimestampMicrosecondArray;
    let rows = 3000u32;
    let mut next = generator(7);
    let words = ["", "b", "a", "ab", "é", "B", "a\u{0}"];
    let s: StringArray = (0..rows).map(|_| (next(8) > 0).then(|| words[next(7) as usize])).collect();
    let t: TimestampMicrosecondArray = (0..rows)
        .map(|_| (next(5) > 0).then(|| next(20) as i64 - 10 + i64::from(next(2) == 0) * i64::MIN / 2))
        .collect();
    let n: Int32Array = (0..rows).map(|_| Some(next(6) as i32 - 3)).collect();
    // These keys and the row number fit in 128 bits: the packed sort.
    assert_sorts_as_lexsort_does(vec![Arc::new(s), Arc::new(t), Arc::new(n)]);
}

#[test]
fn sorts_integers_spanning_all_of_i64_with_nulls_first() {
    use arrow::array::Int64Array;
    let mut next = generator(11);
    let mut wide = || -> ArrayRef {
        let values = [i64::MIN, i64::MIN + 1, -1, 0, 1, i64::MAX - 1, i64::MAX];
        Arc::new((0..2000).map(|_| (next(6) > 0).then(|| values[next(7) as usize])).collect::<Int64Array>())
    };
    // One such column takes 65 bits, packed with the row number; two do not fit in 128 bits
    // and are compared column by column.
    assert_sorts_as_lexsort_does(vec![wide()]);
    assert_sorts_as_lexsort_does(vec![wide(), wide()]);
    let (a, b) = (wide(), wide());
    assert_sorts_as_lexsort_does(vec![Arc::clone(&a), b, a]);
    // Exactly 128 bits with the row number (11 bits): all-null (0 bits), full span (65),
    // and a 52-bit span.
    let nulls: ArrayRef = Arc::new(Int64Array::new_null(2000));
    let narrow: ArrayRef =
        Arc::new((0..2000).map(|i| Some(if i % 3 == 0 { (1 << 52) - 2 } else { i })).collect::<Int64Array>());
    assert_sorts_as_lexsort_does(vec![nulls, wide(), narrow]);
}

#[tokio::test]
async fn create_only_puts_report_an_existing_file() {
    let lake = Lake::in_memory();
    let bytes = encode_parquet(&batch(), "x").unwrap();
    assert_eq!(put_create(&lake, "results/f.parquet", bytes.clone()).await.unwrap(), Created::Written);
    assert_eq!(put_create(&lake, "results/f.parquet", bytes).await.unwrap(), Created::AlreadyExisted);
}
