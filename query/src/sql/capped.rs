//! The functions whose output can outgrow their input by any factor — `repeat`, `lpad`, `rpad`,
//! `range`, `generate_series`, `array_repeat`, `array_resize`, `replace` — replaced in a statement's session by
//! capped versions.
//!
//! The memory pool only sees operators' state: `SELECT repeat('x', 2147483647)` built a 2 GiB
//! string (6–7.5 GB of memory in all) and went on after its answer, since nothing yields inside a
//! function. A capped function works out, from its arguments, an upper bound of what it would
//! produce and refuses before producing it when that passes what the statement has left; what it
//! did produce is charged to the statement. The budget is cumulative over the statement (outputs are
//! not followed to where they are freed), and equals the statement's memory limit: a statement's
//! amplified values never hold more than its pool, however they are combined (`concat` of many
//! `repeat`s, `repeat` of `repeat`).

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, FieldRef, Int64Type, IntervalUnit, TimeUnit};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};
use datafusion::prelude::SessionContext;

/// The amplifying functions, and how each bounds its output.
const CAPPED: [(&str, Growth); 8] = [
    ("repeat", Growth::Repeat),
    ("lpad", Growth::Pad),
    ("rpad", Growth::Pad),
    ("range", Growth::Range),
    ("generate_series", Growth::Range),
    ("array_repeat", Growth::ArrayRepeat),
    ("array_resize", Growth::ArrayResize),
    ("replace", Growth::Replace),
];

/// Replaces the amplifying functions of `ctx` by versions sharing one budget of `bytes`.
pub fn register(ctx: &SessionContext, bytes: usize) {
    let budget = Arc::new(Budget { total: bytes, left: AtomicUsize::new(bytes) });
    for (name, growth) in CAPPED {
        let Ok(udf) = ctx.udf(name) else { continue };
        // A session that ran a statement already holds capped versions: cap the original.
        let inner = match udf.inner().downcast_ref::<Capped>() {
            Some(capped) => capped.inner.clone(),
            None => udf.as_ref().clone(),
        };
        ctx.register_udf(ScalarUDF::new_from_impl(Capped { inner, growth, budget: Arc::clone(&budget) }));
    }
}

/// What amplified values a statement may still produce, in bytes.
#[derive(Debug)]
struct Budget {
    total: usize,
    left: AtomicUsize,
}

impl Budget {
    /// Takes `bytes` from what is left, or says why not.
    fn take(&self, function: &str, bytes: u128) -> Result<()> {
        let taken = self.left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
            usize::try_from(bytes).ok().and_then(|b| left.checked_sub(b))
        });
        taken.map(|_| ()).map_err(|left| {
            DataFusionError::ResourcesExhausted(format!(
                "{function} would produce up to {bytes} bytes, more than the {left} left of the {} bytes a statement's \
                 repeat, lpad, rpad, range, generate_series, array_repeat, array_resize and replace may produce",
                self.total
            ))
        })
    }
}

/// How a function's output grows with its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Growth {
    /// `repeat(s, n)`: `len(s)·n`.
    Repeat,
    /// `lpad/rpad(s, n[, fill])`: `n` characters of at most 4 bytes.
    Pad,
    /// `range/generate_series([start,] stop[, step])`: `(stop − start)/step + 1` values of 8 bytes.
    Range,
    /// `array_repeat(x, n)`: `n` copies of `x`.
    ArrayRepeat,
    /// `array_resize(a, n[, fill])`: `n` values like `fill`.
    ArrayResize,
    /// `replace(s, from, to)`: `s` with each of at most `len(s)/len(from) + 1` matches becoming `to`.
    Replace,
}

impl Growth {
    /// An upper bound of the output's bytes over all rows.
    fn bound(self, args: &[ColumnarValue], rows: usize) -> Result<u128> {
        let rows = if args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) { 1 } else { rows };
        let per_row: Box<dyn Fn(usize) -> u128> = match (self, args) {
            (Self::Repeat, [s, n, ..]) => {
                let (s, n) = (Figures::bytes(s)?, Figures::values(n)?);
                Box::new(move |i| s.get(i) * n.get(i))
            }
            (Self::Pad, [_, n, ..]) => {
                let n = Figures::values(n)?;
                Box::new(move |i| 4 * n.get(i))
            }
            (Self::Range, [stop]) => {
                let stop = Figures::values(stop)?;
                Box::new(move |i| 8 * (stop.get(i) + 1))
            }
            (Self::Range, [start, stop, rest @ ..]) => {
                let (start, stop) = (Figures::instants(start)?, Figures::instants(stop)?);
                let step = match rest.first() {
                    Some(step) => Figures::instants(step)?,
                    None => Figures::One(1),
                };
                Box::new(move |i| 8 * (start.get(i).abs_diff(stop.get(i)) / step.get(i).max(1) + 1))
            }
            (Self::ArrayRepeat, [x, n, ..]) => {
                let (x, n) = (Figures::bytes(x)?, Figures::values(n)?);
                Box::new(move |i| (x.get(i) + 16) * n.get(i))
            }
            (Self::ArrayResize, [_, n, rest @ ..]) => {
                let n = Figures::values(n)?;
                let fill = rest.first().map(Figures::bytes).transpose()?.unwrap_or(Figures::One(0));
                Box::new(move |i| (fill.get(i) + 16) * n.get(i))
            }
            (Self::Replace, [s, from, to, ..]) => {
                let (s, from, to) = (Figures::bytes(s)?, Figures::bytes(from)?, Figures::bytes(to)?);
                Box::new(move |i| s.get(i) + (s.get(i) / from.get(i).max(1) + 1) * to.get(i))
            }
            _ => return Ok(0),
        };
        Ok((0..rows).map(per_row).fold(0u128, u128::saturating_add))
    }
}

/// One argument's figure per row (nulls and negatives count 0, or the smallest step).
enum Figures {
    One(u128),
    Rows(Vec<u128>),
}

impl Figures {
    fn get(&self, row: usize) -> u128 {
        match self {
            Self::One(v) => *v,
            Self::Rows(v) => v.get(row).copied().unwrap_or(0),
        }
    }

    /// Strings and binaries: their bytes; anything else: its memory per row.
    fn bytes(arg: &ColumnarValue) -> Result<Self> {
        Ok(match arg {
            ColumnarValue::Scalar(s) => Self::One(match s {
                ScalarValue::Utf8(Some(v)) | ScalarValue::LargeUtf8(Some(v)) | ScalarValue::Utf8View(Some(v)) => {
                    v.len() as u128
                }
                other => other.size() as u128,
            }),
            ColumnarValue::Array(a) => match arrow::compute::kernels::length::length(a) {
                Ok(lengths) => Self::of_integers(&lengths)?,
                Err(_) => Self::One((a.get_array_memory_size() / a.len().max(1)) as u128),
            },
        })
    }

    /// Integers: their values.
    fn values(arg: &ColumnarValue) -> Result<Self> {
        Ok(match arg {
            ColumnarValue::Scalar(s) => Self::One(match s.cast_to(&DataType::Int64)? {
                ScalarValue::Int64(Some(v)) => v.max(0) as u128,
                _ => 0,
            }),
            ColumnarValue::Array(a) => Self::of_integers(a)?,
        })
    }

    fn of_integers(array: &ArrayRef) -> Result<Self> {
        let array = arrow::compute::cast(array, &DataType::Int64)?;
        let values = array.as_primitive::<Int64Type>();
        Ok(Self::Rows(
            (0..values.len()).map(|i| if values.is_null(i) { 0 } else { values.value(i).max(0) as u128 }).collect(),
        ))
    }

    /// Range bounds and steps on one scale: integers as they are, dates, timestamps and intervals
    /// in nanoseconds (an interval at its shortest: a month of 28 days), shifted to be unsigned.
    fn instants(arg: &ColumnarValue) -> Result<Self> {
        let array = arg.to_array(1)?;
        let (nanos, interval) = match array.data_type() {
            DataType::Date32 => (86_400_000_000_000, false),
            DataType::Date64 => (1_000_000, false),
            DataType::Timestamp(unit, _) => (unit_nanos(*unit), false),
            DataType::Interval(_) => (1, true),
            _ => (1, false),
        };
        let integers = if interval { None } else { Some(arrow::compute::cast(&array, &DataType::Int64)?) };
        let value = |i: usize| -> i128 {
            match &integers {
                _ if array.is_null(i) => 0,
                Some(integers) => i128::from(integers.as_primitive::<Int64Type>().value(i)) * nanos,
                None => interval_nanos(&array, i),
            }
        };
        let shifted = |i| (value(i) - i128::from(i64::MIN) * 86_400_000_000_000) as u128;
        Ok(match arg {
            ColumnarValue::Scalar(_) if interval => Self::One(value(0).max(1) as u128),
            ColumnarValue::Scalar(_) => Self::One(shifted(0)),
            ColumnarValue::Array(_) if interval => {
                Self::Rows((0..array.len()).map(|i| value(i).max(1) as u128).collect())
            }
            ColumnarValue::Array(_) => Self::Rows((0..array.len()).map(shifted).collect()),
        })
    }
}

fn unit_nanos(unit: TimeUnit) -> i128 {
    match unit {
        TimeUnit::Second => 1_000_000_000,
        TimeUnit::Millisecond => 1_000_000,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1,
    }
}

/// An interval's shortest length in nanoseconds (its absolute value: a step's sign says only the
/// direction).
fn interval_nanos(array: &ArrayRef, i: usize) -> i128 {
    const DAY: i128 = 86_400_000_000_000;
    let nanos = match array.data_type() {
        DataType::Interval(IntervalUnit::YearMonth) => {
            i128::from(array.as_primitive::<arrow::datatypes::IntervalYearMonthType>().value(i)) * 28 * DAY
        }
        DataType::Interval(IntervalUnit::DayTime) => {
            let v = array.as_primitive::<arrow::datatypes::IntervalDayTimeType>().value(i);
            i128::from(v.days) * DAY + i128::from(v.milliseconds) * 1_000_000
        }
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            let v = array.as_primitive::<arrow::datatypes::IntervalMonthDayNanoType>().value(i);
            i128::from(v.months) * 28 * DAY + i128::from(v.days) * DAY + i128::from(v.nanoseconds)
        }
        _ => 1,
    };
    nanos.abs()
}

/// A function that refuses an output past the statement's budget, and charges what it produced.
#[derive(Debug)]
struct Capped {
    inner: ScalarUDF,
    growth: Growth,
    budget: Arc<Budget>,
}

impl PartialEq for Capped {
    fn eq(&self, other: &Self) -> bool {
        self.inner == other.inner && Arc::ptr_eq(&self.budget, &other.budget)
    }
}

impl Eq for Capped {}

impl Hash for Capped {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.hash(state);
    }
}

impl ScalarUDFImpl for Capped {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        self.inner.simplify(args, info)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let bound = self.growth.bound(&args.args, args.number_rows)?;
        if bound > self.budget.left.load(Ordering::Relaxed) as u128 {
            self.budget.take(self.name(), bound)?;
        }
        let out = self.inner.invoke_with_args(args)?;
        let produced = match &out {
            ColumnarValue::Array(a) => a.get_array_memory_size(),
            ColumnarValue::Scalar(s) => s.size(),
        };
        self.budget.take(self.name(), produced as u128)?;
        Ok(out)
    }
}
