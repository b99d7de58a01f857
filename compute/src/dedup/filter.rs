//! `results` without the later copies: a filter on each row's Kafka coordinates, not a join. The
//! copies are few; every row costs one lookup of two integers, and the topic is compared only
//! for the rows that match them.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray};
use arrow::datatypes::{DataType, Int32Type, Int64Type};
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, col,
};

use super::LaterCopy;

/// `name(kafka_topic, kafka_partition, kafka_offset)`: whether the row is a later copy.
#[derive(Debug)]
struct IsLaterCopy {
    name: String,
    signature: Signature,
    /// (partition, offset) of every copy, then with the topic.
    coordinates: HashSet<(i32, i64)>,
    copies: HashSet<(String, i32, i64)>,
}

impl PartialEq for IsLaterCopy {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.copies == other.copies
    }
}

impl Eq for IsLaterCopy {}

impl Hash for IsLaterCopy {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (&self.name, self.copies.len()).hash(state);
    }
}

impl ScalarUDFImpl for IsLaterCopy {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let [topics, partitions, offsets] = &arrays[..] else {
            return Err(datafusion::error::DataFusionError::Internal(format!("{} takes three arguments", self.name)));
        };
        let (partitions, offsets) = (partitions.as_primitive::<Int32Type>(), offsets.as_primitive::<Int64Type>());
        let copy = |row: usize| {
            let at = (partitions.value(row), offsets.value(row));
            self.coordinates.contains(&at) && self.copies.contains(&(topic(topics, row), at.0, at.1))
        };
        Ok(ColumnarValue::Array(std::sync::Arc::new(
            (0..partitions.len()).map(|row| Some(copy(row))).collect::<BooleanArray>(),
        )))
    }
}

/// Row `row` of a `kafka_topic` column read as `Utf8` or `Utf8View`.
fn topic(topics: &ArrayRef, row: usize) -> String {
    match topics.data_type() {
        DataType::Utf8View => topics.as_string_view().value(row).to_owned(),
        _ => topics.as_string::<i32>().value(row).to_owned(),
    }
}

/// The filter that keeps every row but the later `copies`, as a function named `name` (to
/// register) and the predicate calling it.
pub fn keep_firsts(name: &str, copies: &[LaterCopy]) -> (ScalarUDF, Expr) {
    let udf = ScalarUDF::from(IsLaterCopy {
        name: name.to_owned(),
        signature: Signature::any(3, Volatility::Immutable),
        coordinates: copies.iter().map(|c| (c.landing.kafka_partition, c.landing.kafka_offset)).collect(),
        copies: copies
            .iter()
            .map(|c| (c.landing.kafka_topic.clone(), c.landing.kafka_partition, c.landing.kafka_offset))
            .collect(),
    });
    let predicate = !udf.call(vec![col("kafka_topic"), col("kafka_partition"), col("kafka_offset")]);
    (udf, predicate)
}
