//! `duration_percentiles(d)`: the 0.5, 0.9, 0.95 and 0.99 continuous percentiles of a group's
//! values in one aggregate, as a struct `{p50, p90, p95, p99}`.
//!
//! Same definition as `percentile_cont` (PostgreSQL, DuckDB's `quantile_cont`): the order
//! statistic at rank `p·(n−1)`, linearly interpolated between the two nearest values — but exact
//! (DataFusion's `percentile_cont` truncates the interpolation weight to 1e-6) and computed from
//! one copy of the values. Four `percentile_cont`s keep four copies of every value and select
//! through each: a day's trends spent about a third of their time there.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array, ListArray, StructArray};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, FieldRef, Fields, Float64Type};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};

/// The percentiles computed, and the struct fields that carry them.
pub const PERCENTILES: [(&str, f64); 4] = [("p50", 0.5), ("p90", 0.9), ("p95", 0.95), ("p99", 0.99)];

/// The aggregate, to register with a session (`ctx.register_udaf(duration_percentiles())`).
pub fn duration_percentiles() -> AggregateUDF {
    AggregateUDF::from(DurationPercentiles {
        signature: Signature::exact(vec![DataType::Float64], Volatility::Immutable),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct DurationPercentiles {
    signature: Signature,
}

fn result_fields() -> Fields {
    PERCENTILES.iter().map(|(name, _)| Field::new(*name, DataType::Float64, true)).collect()
}

fn list_field() -> FieldRef {
    Arc::new(Field::new_list_field(DataType::Float64, true))
}

impl AggregateUDFImpl for DurationPercentiles {
    fn name(&self) -> &str {
        "duration_percentiles"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Struct(result_fields()))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(format!("{}[values]", args.name), DataType::List(list_field()), true))])
    }

    fn accumulator(&self, _: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(OneGroup(Vec::new())))
    }

    fn groups_accumulator_supported(&self, _: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(&self, _: AccumulatorArgs) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(Groups(Vec::new())))
    }
}

/// The four percentiles of `values` (reordered in place), `None` for no values.
pub fn percentiles(values: &mut [f64]) -> [Option<f64>; 4] {
    let n = values.len();
    if n == 0 {
        return [None; 4];
    }
    // Ranks ascend, so each selection only partitions what lies above the previous one.
    let mut done = 0;
    PERCENTILES.map(|(_, p)| {
        let rank = p * (n - 1) as f64;
        let lo = rank.floor() as usize;
        let rest = &mut values[done..];
        let (_, at, above) = rest.select_nth_unstable_by(lo - done, f64::total_cmp);
        let low = *at;
        let fraction = rank - lo as f64;
        let value = if fraction == 0.0 || above.is_empty() {
            low
        } else {
            let high = above.iter().copied().min_by(f64::total_cmp).expect("not empty");
            low + (high - low) * fraction
        };
        done = lo;
        Some(value)
    })
}

fn evaluate_groups(groups: Vec<Vec<f64>>) -> ArrayRef {
    let mut columns: [Vec<Option<f64>>; 4] = Default::default();
    for mut values in groups {
        for (column, value) in columns.iter_mut().zip(percentiles(&mut values)) {
            column.push(value);
        }
    }
    let arrays = columns.into_iter().map(|c| Arc::new(Float64Array::from(c)) as ArrayRef).collect();
    Arc::new(StructArray::new(result_fields(), arrays, None))
}

fn state_of(groups: Vec<Vec<f64>>) -> ArrayRef {
    let offsets = OffsetBuffer::from_lengths(groups.iter().map(Vec::len));
    let values: Vec<f64> = groups.into_iter().flatten().collect();
    Arc::new(ListArray::new(list_field(), offsets, Arc::new(Float64Array::from(values)), None))
}

/// Appends every value of each state list to its group.
fn merge_lists(groups: &mut [Vec<f64>], states: &ListArray, group_of: impl Fn(usize) -> usize) {
    for (row, list) in states.iter().enumerate() {
        if let Some(list) = list {
            let list = list.as_primitive::<Float64Type>();
            groups[group_of(row)].extend(list.iter().flatten());
        }
    }
}

/// Per-group values, by group index.
#[derive(Debug)]
struct Groups(Vec<Vec<f64>>);

impl GroupsAccumulator for Groups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.0.resize_with(total_num_groups, Vec::new);
        let values = values[0].as_primitive::<Float64Type>();
        for (row, &group) in group_indices.iter().enumerate() {
            let kept = opt_filter.is_none_or(|f| f.is_valid(row) && f.value(row));
            if kept && values.is_valid(row) {
                self.0[group].push(values.value(row));
            }
        }
        Ok(())
    }

    fn merge_batch(&mut self, values: &[ArrayRef], group_indices: &[usize], total_num_groups: usize) -> Result<()> {
        self.0.resize_with(total_num_groups, Vec::new);
        merge_lists(&mut self.0, values[0].as_list::<i32>(), |row| group_indices[row]);
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        Ok(evaluate_groups(emit_to.take_needed(&mut self.0)))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        Ok(vec![state_of(emit_to.take_needed(&mut self.0))])
    }

    /// Each row as its own group's state: a list of its value, empty when null or filtered out.
    fn convert_to_state(&self, values: &[ArrayRef], opt_filter: Option<&BooleanArray>) -> Result<Vec<ArrayRef>> {
        let values = values[0].as_primitive::<Float64Type>();
        let rows = (0..values.len())
            .map(|row| {
                let kept = opt_filter.is_none_or(|f| f.is_valid(row) && f.value(row));
                if kept && values.is_valid(row) { vec![values.value(row)] } else { Vec::new() }
            })
            .collect();
        Ok(vec![state_of(rows)])
    }

    fn size(&self) -> usize {
        self.0.iter().map(|v| v.capacity() * 8).sum::<usize>() + self.0.capacity() * size_of::<Vec<f64>>()
    }
}

/// One group's values, for plans without grouping.
#[derive(Debug)]
struct OneGroup(Vec<f64>);

impl Accumulator for OneGroup {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.0.extend(values[0].as_primitive::<Float64Type>().iter().flatten());
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        merge_lists(std::slice::from_mut(&mut self.0), states[0].as_list::<i32>(), |_| 0);
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let list = state_of(vec![std::mem::take(&mut self.0)]);
        Ok(vec![ScalarValue::List(Arc::new(list.as_list::<i32>().clone()))])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let result = evaluate_groups(vec![std::mem::take(&mut self.0)]);
        ScalarValue::try_from_array(&result, 0)
    }

    fn size(&self) -> usize {
        size_of::<Self>() + self.0.capacity() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, on a sorted copy: rank p·(n−1), linear interpolation.
    fn by_sorting(values: &[f64], p: f64) -> f64 {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let rank = p * (sorted.len() - 1) as f64;
        let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
        sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
    }

    #[test]
    fn percentiles_equal_the_definition() {
        assert_eq!(percentiles(&mut []), [None; 4]);
        assert_eq!(percentiles(&mut [7.0]), [Some(7.0); 4]);
        assert_eq!(percentiles(&mut [4.0, 1.0, 3.0, 2.0])[0], Some(2.5));
        // Pseudo-random values with ties, of many lengths.
        let mut seed = 42u64;
        for n in [2usize, 3, 10, 11, 100, 101, 1000, 4097] {
            let values: Vec<f64> = (0..n)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((seed >> 33) % 500) as f64 / 4.0
                })
                .collect();
            let got = percentiles(&mut values.clone());
            for ((_, p), got) in PERCENTILES.iter().zip(got) {
                assert_eq!(got, Some(by_sorting(&values, *p)), "n = {n}, p = {p}");
            }
        }
    }

    #[tokio::test]
    async fn the_aggregate_equals_the_definition_per_group_and_skips_nulls() {
        let ctx = datafusion::prelude::SessionContext::new();
        ctx.register_udaf(duration_percentiles());
        let sql = "SELECT g, get_field(duration_percentiles(d), 'p90') AS p90 FROM (VALUES
            (1, 1.0), (1, 2.0), (1, 3.0), (1, 4.0), (1, NULL), (2, 10.0), (3, NULL)) AS t(g, d)
            GROUP BY g ORDER BY g";
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let p90 = batches[0].column(1).as_primitive::<Float64Type>();
        assert_eq!(p90.value(0), by_sorting(&[1.0, 2.0, 3.0, 4.0], 0.9));
        assert_eq!(p90.value(1), 10.0);
        assert!(p90.is_null(2), "a group of nulls has no percentile");
    }
}
