use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringViewArray};
use arrow::datatypes::{DataType, Field, Schema};

use super::conform_to;

fn schema() -> arrow::datatypes::SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("repository", DataType::Utf8, false),
        Field::new("runs", DataType::Int64, false),
        Field::new("pass_rate", DataType::Float64, true),
    ]))
}

fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    RecordBatch::try_from_iter(columns).unwrap()
}

#[test]
fn columns_are_matched_by_name_and_views_become_strings() {
    let got = conform_to(
        &schema(),
        &batch(vec![
            ("pass_rate", Arc::new(Float64Array::from(vec![Some(0.5)]))),
            ("repository", Arc::new(StringViewArray::from(vec!["acme/a"]))),
            ("runs", Arc::new(Int64Array::from(vec![4]))),
            ("extra", Arc::new(Int64Array::from(vec![1]))),
        ]),
    )
    .unwrap();
    assert_eq!(got.schema(), schema());
    let expected = batch(vec![
        ("repository", Arc::new(arrow::array::StringArray::from(vec!["acme/a"]))),
        ("runs", Arc::new(Int64Array::from(vec![4]))),
        ("pass_rate", Arc::new(Float64Array::from(vec![Some(0.5)]))),
    ]);
    assert_eq!(got.columns(), expected.columns());
}

#[test]
fn a_missing_or_mistyped_column_is_an_error_not_a_cast() {
    let repository: ArrayRef = Arc::new(StringViewArray::from(vec!["acme/a"]));
    let missing = conform_to(
        &schema(),
        &batch(vec![("repository", Arc::clone(&repository)), ("runs", Arc::new(Int64Array::from(vec![4])))]),
    )
    .unwrap_err()
    .to_string();
    assert!(missing.contains("no column `pass_rate`"), "{missing}");
    // An integer where the schema says Float64 would cast without complaint; it must not.
    let mistyped = conform_to(
        &schema(),
        &batch(vec![
            ("repository", repository),
            ("runs", Arc::new(Int64Array::from(vec![4]))),
            ("pass_rate", Arc::new(Int64Array::from(vec![1]))),
        ]),
    )
    .unwrap_err()
    .to_string();
    assert!(mistyped.contains("`pass_rate` as Int64") && mistyped.contains("Float64"), "{mistyped}");
}

#[test]
fn timestamps_change_unit_only_within_their_time_zone() {
    use arrow::array::TimestampNanosecondArray;
    use arrow::datatypes::TimeUnit;
    let schema = Arc::new(Schema::new(vec![Field::new(
        "bucket_start",
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        false,
    )]));
    let hour = 3_600_000_000_000i64;
    let utc: ArrayRef = Arc::new(TimestampNanosecondArray::from(vec![hour]).with_timezone("UTC"));
    let got = conform_to(&schema, &batch(vec![("bucket_start", utc)])).unwrap();
    let micros = got.column(0).as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
    assert_eq!(micros.value(0), 3_600_000_000);
    let naive: ArrayRef = Arc::new(TimestampNanosecondArray::from(vec![hour]));
    assert!(conform_to(&schema, &batch(vec![("bucket_start", naive)])).is_err(), "no time zone is not UTC");
}
