use arrow::array::AsArray;
use arrow::datatypes::Int64Type;

use std::sync::Arc;

use super::*;

async fn ctx(limits: &SqlLimits) -> (tempfile::TempDir, SessionContext) {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let ctx = session(&lake, &mut CommittedFiles::default(), limits).await.unwrap();
    (dir, ctx)
}

/// Runs one statement on an engine of its own.
async fn run(ctx: &SessionContext, sql: &str, limits: &SqlLimits) -> Result<SqlAnswer, ApiError> {
    SqlEngine::new(limits).run(ctx, sql, limits).await
}

/// The error of a refused statement, which must be a 400.
fn refused(result: Result<SqlAnswer, ApiError>) -> ApiError {
    match result {
        Err(e) if e.status() == axum::http::StatusCode::BAD_REQUEST => e,
        Err(other) => panic!("expected a bad request, got {} {other}", other.status()),
        Ok(a) => panic!("expected a refusal, got {} rows", a.batch.num_rows()),
    }
}

#[tokio::test]
async fn queries_run_over_the_lake_tables() {
    let limits = SqlLimits::default();
    let (_dir, ctx) = ctx(&limits).await;
    let a = run(&ctx, "SELECT count(*) AS n FROM results", &limits).await.unwrap();
    assert_eq!(a.batch.column(0).as_primitive::<Int64Type>().value(0), 0);
    for table in ["rejected", "trends_hourly", "trends_daily", "flaky_scores"] {
        run(&ctx, &format!("SELECT * FROM {table} LIMIT 1"), &limits).await.unwrap();
    }
    let a = run(&ctx, "SELECT date, hour, finished_at FROM results", &limits).await.unwrap();
    assert_eq!(a.batch.num_columns(), 3, "results has its partition columns");
}

#[tokio::test]
async fn anything_but_a_query_is_refused() {
    let limits = SqlLimits::default();
    let (dir, ctx) = ctx(&limits).await;
    let outside = dir.path().join("x.parquet");
    for (sql, why) in [
        ("DROP VIEW results", "DDL"),
        ("CREATE TABLE t AS SELECT 1", "DDL"),
        ("CREATE EXTERNAL TABLE p STORED AS CSV LOCATION '/etc/'", "DDL"),
        ("CREATE VIEW v AS SELECT 1", "DDL"),
        ("INSERT INTO trends_daily SELECT * FROM trends_daily", "DML"),
        (&format!("COPY (SELECT 1) TO '{}'", outside.display()), "DML"),
        ("SET datafusion.execution.batch_size = 1", "Statement"),
        ("SELECT * FROM '/etc/passwd'", "passwd"),
        ("SELECT * FROM read_parquet('/etc/x.parquet')", "read_parquet"),
        ("SELEC 1", "SELEC"),
    ] {
        let message = refused(run(&ctx, sql, &limits).await).to_string();
        assert!(message.contains(why), "{sql}: {message}");
    }
    assert!(!outside.exists(), "COPY wrote nothing");
    let a = run(&ctx, "SELECT count(*) FROM results", &limits).await.unwrap();
    assert_eq!(a.batch.num_rows(), 1, "the view survived the attempts");
}

#[tokio::test]
async fn rows_are_capped_and_the_cap_is_reported() {
    let limits = SqlLimits { max_rows: 2, ..SqlLimits::default() };
    let (_dir, ctx) = ctx(&limits).await;
    let a = run(&ctx, "SELECT * FROM (VALUES (1), (2), (3)) AS t(v)", &limits).await.unwrap();
    assert_eq!((a.batch.num_rows(), a.truncated), (2, true));
    let a = run(&ctx, "SELECT * FROM (VALUES (1), (2)) AS t(v)", &limits).await.unwrap();
    assert_eq!((a.batch.num_rows(), a.truncated), (2, false));
}

#[tokio::test]
async fn a_statement_over_its_time_is_stopped() {
    let limits = SqlLimits { timeout: Duration::from_millis(50), ..SqlLimits::default() };
    let (_dir, ctx) = ctx(&limits).await;
    // Many batches (a cross join), so the plan yields between them.
    let sql = "SELECT count(DISTINCT a.x * 100000 + b.y) FROM unnest(range(1, 100000)) AS a(x) CROSS JOIN unnest(range(1, 100000)) AS b(y)";
    let started = std::time::Instant::now();
    let error = refused(run(&ctx, sql, &limits).await);
    assert!(matches!(error, ApiError::StatementTimeout(_)), "{error}");
    assert!(error.to_string().contains("ran longer than"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5), "answered after {:?}", started.elapsed());
}

#[tokio::test]
async fn a_statement_over_its_memory_is_refused() {
    let limits = SqlLimits { memory_bytes: 1 << 20, ..SqlLimits::default() };
    let (_dir, ctx) = ctx(&limits).await;
    let sql = "SELECT v, count(*) FROM unnest(range(1, 3000000)) AS t(v) GROUP BY v";
    let error = refused(run(&ctx, sql, &limits).await);
    assert!(matches!(error, ApiError::StatementOverMemory(_)), "{error}");
    assert!(error.to_string().contains("memory"), "{error}");
}

/// EXPLAIN and EXPLAIN ANALYZE answer their plans (a row cap above them failed as a 500).
#[tokio::test]
async fn explain_and_explain_analyze_answer_their_plans() {
    let limits = SqlLimits::default();
    let (_dir, ctx) = ctx(&limits).await;
    for sql in ["EXPLAIN SELECT count(*) FROM results", "EXPLAIN ANALYZE SELECT count(*) FROM results"] {
        let a = run(&ctx, sql, &limits).await.unwrap_or_else(|e| panic!("{sql}: {} {e}", e.status()));
        assert!(a.batch.num_rows() > 0, "{sql}");
        assert!(a.batch.column_by_name("plan").is_some(), "{sql}: {:?}", a.batch.schema());
    }
}

/// `SELECT 1+1+…+1` of `terms` terms: a tree as deep as it is long.
fn chain(terms: usize) -> String {
    format!("SELECT {}", vec!["1"; terms].join("+"))
}

/// A flat chain of 1,000 terms overflowed the stack and aborted the process; statements past the
/// depth, relation and length limits are refused before planning, even one as long as allowed.
#[tokio::test]
async fn statements_too_deep_too_wide_or_too_long_are_refused() {
    let limits = SqlLimits::default();
    let (_dir, ctx) = ctx(&limits).await;
    let longest = chain(MAX_STATEMENT_BYTES / 2 - 8);
    assert!(longest.len() <= MAX_STATEMENT_BYTES);
    let union = vec!["SELECT 1"; MAX_RELATIONS + 1].join(" UNION ALL ");
    let joins: String = (1..=MAX_RELATIONS).map(|i| format!(" CROSS JOIN results r{i}")).collect();
    let too_long = format!("SELECT 1 {}", " ".repeat(MAX_STATEMENT_BYTES));
    for (sql, why) in [
        (chain(1_000), "deeper than 256"),
        (format!("SELECT count(*) FROM results WHERE {}", vec!["hour = '01'"; 300].join(" OR ")), "use IN"),
        (format!("EXPLAIN {}", chain(MAX_DEPTH + 1)), "deeper than"),
        (format!("SELECT * FROM ({}) AS t", chain(600)), "deeper than"),
        (longest, "deeper than"),
        (union, "more than 64 tables and SELECTs"),
        (format!("SELECT count(*) FROM results r0{joins}"), "more than 64"),
        (too_long, "bytes long"),
    ] {
        let error = refused(run(&ctx, &sql, &limits).await);
        assert!(matches!(error, ApiError::StatementTooComplex(_)), "{}…: {error}", &sql[..40]);
        assert!(error.to_string().contains(why), "{}…: {error}", &sql[..40]);
    }
}

/// Under the limits, the deepest statements plan and run (on the statement threads' stack: on a
/// test thread's 2 MiB they overflowed).
#[tokio::test]
async fn statements_within_the_limits_run() {
    let limits = SqlLimits::default();
    let (_dir, ctx) = ctx(&limits).await;
    let a = run(&ctx, &chain(MAX_DEPTH - 2), &limits).await.unwrap();
    assert_eq!(a.batch.column(0).as_primitive::<Int64Type>().value(0), (MAX_DEPTH - 2) as i64);
    let ors = vec!["test_id = 'x'"; MAX_DEPTH / 2 - 2].join(" OR ");
    let a = run(&ctx, &format!("SELECT count(*) FROM results WHERE {ors}"), &limits).await.unwrap();
    assert_eq!(a.batch.num_rows(), 1);
    let union = vec!["SELECT count(*) FROM results"; MAX_RELATIONS / 2].join(" UNION ALL ");
    let a = run(&ctx, &union, &limits).await.unwrap();
    assert_eq!(a.batch.num_rows(), MAX_RELATIONS / 2);
    // The most tables one statement may join plan within the statement's timeout (planning does
    // not yield: 100 tables took 14 s in a debug build, 60 took 2.3 s).
    let joins: String =
        (1..MAX_RELATIONS - 1).map(|i| format!(" JOIN results r{i} ON r{i}.test_id = r{}.test_id", i - 1)).collect();
    run(&ctx, &format!("SELECT count(*) FROM results r0{joins}"), &limits).await.unwrap();
}

/// The functions whose output can outgrow their input by any factor refuse, before producing
/// it, an output past what the statement has left of its memory limit — over all their calls.
#[tokio::test]
async fn amplifying_functions_are_capped_by_the_statements_memory() {
    let limits = SqlLimits { memory_bytes: 4 << 20, ..SqlLimits::default() };
    let (_dir, ctx) = ctx(&limits).await;
    for sql in [
        "SELECT repeat('x', 10000000)",
        "SELECT length(repeat(v, 1000000)) FROM (VALUES ('abc'), ('de')) AS t(v)",
        "SELECT lpad('x', 2000000)",
        "SELECT rpad('x', 2000000, 'yz')",
        "SELECT range(1, 1000000)",
        "SELECT generate_series(-5000000, 5000000, 10)",
        "SELECT range(TIMESTAMP '2000-01-01', TIMESTAMP '2001-01-01', INTERVAL '1 minute')",
        "SELECT range(DATE '0001-01-01', DATE '9999-12-31', INTERVAL '1 day')",
        "SELECT array_repeat('abcdefgh', 1000000)",
        "SELECT array_resize([1], 1000000, 0)",
        "SELECT replace(repeat('x', 1000), 'x', repeat('y', 5000))",
        // Each under the limit, together over it.
        "SELECT concat(repeat('x', 1500000), repeat('x', 1500000), repeat('x', 1500000))",
        "SELECT repeat(repeat('x', 1000), 5000)",
    ] {
        let started = std::time::Instant::now();
        let error = refused(run(&ctx, sql, &limits).await);
        assert!(matches!(error, ApiError::StatementOverMemory(_)), "{sql}: {error}");
        assert!(error.to_string().contains("would produce"), "{sql}: {error}");
        assert!(started.elapsed() < Duration::from_secs(5), "{sql}: {:?}", started.elapsed());
    }
    let sql = "SELECT repeat('ab', 3) AS r, lpad('x', 3, '-') AS l, rpad('x', 3) AS p, \
               cardinality(range(1, 4)) AS n, cardinality(generate_series(1, 3)) AS g, \
               cardinality(array_repeat(7, 2)) AS a, cardinality(array_resize([1], 4, 0)) AS z, replace('aXa', 'X', 'yy') AS e, \
               length(repeat('x', 1000000)) AS big";
    let a = run(&ctx, sql, &limits).await.unwrap();
    let row = arrow::util::pretty::pretty_format_batches(&[a.batch]).unwrap().to_string();
    assert!(row.contains("| ababab | --x | x   | 3 | 3 | 2 | 4 | ayya | 1000000 |"), "{row}");
    // The service's default limit refuses the 30-byte statement that grew a 2 GiB string.
    let limits = SqlLimits::default();
    let error = refused(run(&ctx, "SELECT repeat('x', 2147483647)", &limits).await);
    assert!(matches!(error, ApiError::StatementOverMemory(_)), "{error}");
}

/// The collected answer counts in the statement's memory pool: past it, the statement fails.
#[tokio::test]
async fn an_answer_larger_than_the_memory_limit_is_refused() {
    let limits = SqlLimits { memory_bytes: 4 << 20, max_rows: 1_000_000, ..SqlLimits::default() };
    let (_dir, ctx) = ctx(&limits).await;
    let wide = format!("'{}'", "y".repeat(200));
    let sql = format!("SELECT v, concat(CAST(v AS VARCHAR), {wide}) FROM unnest(range(1, 100000)) AS t(v)");
    let error = refused(run(&ctx, &sql, &limits).await);
    assert!(matches!(error, ApiError::StatementOverMemory(_)), "{error}");
    let a = run(&ctx, &sql.replace("100000", "1000"), &limits).await.unwrap();
    assert_eq!(a.batch.num_rows(), 999);
}

/// A session with `name()`, a volatile function that runs `body` (on whatever thread runs it).
async fn ctx_with(
    limits: &SqlLimits,
    name: &str,
    body: impl Fn() -> String + Send + Sync + 'static,
) -> (tempfile::TempDir, SessionContext) {
    use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
    let (dir, ctx) = ctx(limits).await;
    let f = move |_: &[ColumnarValue]| Ok(ColumnarValue::Scalar(datafusion::common::ScalarValue::Utf8(Some(body()))));
    ctx.register_udf(create_udf(name, vec![], arrow::datatypes::DataType::Utf8, Volatility::Volatile, Arc::new(f)));
    (dir, ctx)
}

/// Statements run on the engine's threads, not the caller's: a statement stuck in a function that
/// never yields is answered at its timeout all the same.
#[tokio::test]
async fn statements_run_on_their_own_threads_and_time_out_even_when_stuck() {
    let limits = SqlLimits { timeout: Duration::from_millis(300), ..SqlLimits::default() };
    let (_dir, ctx) = ctx_with(&limits, "whereami", || std::thread::current().name().unwrap_or("").to_owned()).await;
    let a = run(&ctx, "SELECT whereami()", &limits).await.unwrap();
    assert_eq!(a.batch.column(0).as_string::<i32>().value(0), "testlake-sql");
    let (_dir, ctx) = ctx_with(&limits, "stuck", || {
        std::thread::sleep(Duration::from_secs(3));
        String::new()
    })
    .await;
    let started = std::time::Instant::now();
    let error = refused(run(&ctx, "SELECT stuck()", &limits).await);
    assert!(matches!(error, ApiError::StatementTimeout(_)), "{error}");
    assert!(started.elapsed() < Duration::from_secs(2), "answered after {:?}", started.elapsed());
}

/// A statement that panics is the service's fault: a 500.
#[tokio::test]
async fn a_panicking_statement_is_a_server_error() {
    let limits = SqlLimits::default();
    let (_dir, ctx) = ctx_with(&limits, "boom", || panic!("boom")).await;
    let error = run(&ctx, "SELECT boom()", &limits).await.err().expect("an error");
    assert!(matches!(error, ApiError::StatementPanicked(_)), "{error}");
    assert_eq!(error.status(), axum::http::StatusCode::INTERNAL_SERVER_ERROR);
}

/// Many batches (a cross join): runs until stopped, yielding between batches.
const ENDLESS: &str = "SELECT count(DISTINCT a.x * 100000 + b.y) FROM unnest(range(1, 100000)) AS a(x) \
                       CROSS JOIN unnest(range(1, 100000)) AS b(y)";

/// Past the concurrency limit a statement is refused at once with a 429 and `Retry-After`; a
/// statement whose caller goes away (a client disconnecting) is stopped and frees its slot.
#[tokio::test]
async fn statements_past_the_concurrency_limit_are_refused_and_abandoned_ones_stopped() {
    use axum::response::IntoResponse;
    let limits = SqlLimits { concurrency: 1, timeout: Duration::from_secs(60), ..SqlLimits::default() };
    let (_dir, ctx) = ctx(&limits).await;
    let engine = Arc::new(SqlEngine::new(&limits));
    let first = tokio::spawn({
        let (engine, ctx, limits) = (Arc::clone(&engine), ctx.clone(), limits.clone());
        async move { engine.run(&ctx, ENDLESS, &limits).await.map(|_| ()) }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let error = engine.run(&ctx, "SELECT 1", &limits).await.err().expect("refused");
    assert!(matches!(error, ApiError::SqlBusy(1)), "{error}");
    let response = error.into_response();
    assert_eq!(response.status(), axum::http::StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()[axum::http::header::RETRY_AFTER], "1");
    // The caller goes away: its statement stops, and the slot is free within moments.
    first.abort();
    let started = std::time::Instant::now();
    loop {
        match engine.run(&ctx, "SELECT 1", &limits).await {
            Ok(_) => break,
            Err(ApiError::SqlBusy(_)) if started.elapsed() < Duration::from_secs(5) => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("the abandoned statement kept its slot: {e}"),
        }
    }
}

/// PostgreSQL's extended protocol: a statement is described before it runs (its columns and its
/// parameters' types, from its plan), then run with its parameters bound as values.
#[tokio::test]
async fn statements_are_described_and_run_with_bound_parameters() {
    use datafusion::common::{ParamValues, ScalarValue};

    let limits = SqlLimits::default();
    let (_dir, ctx) = ctx(&limits).await;
    let engine = SqlEngine::new(&limits);
    let sql = "SELECT count(*) AS n, min(repository) AS first FROM results WHERE repository IN ($1, $2)";
    let described = engine.describe(&ctx, sql, &limits).await.unwrap();
    let names: Vec<&str> = described.schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["n", "first"]);
    let utf8 = Some(arrow::datatypes::DataType::Utf8);
    assert_eq!(described.params, [utf8.clone(), utf8], "inferred from the column");

    let params = ParamValues::List(vec![ScalarValue::from("x' OR 1=1 --").into(), ScalarValue::from("l").into()]);
    let a = engine.run_with(&ctx, sql, Some(params), &limits).await.unwrap();
    assert_eq!(a.batch.column(0).as_primitive::<Int64Type>().value(0), 0, "a parameter is a value, not SQL");
    let refused = engine.describe(&ctx, "DROP VIEW results", &limits).await.err().expect("refused");
    assert!(refused.to_string().contains("DDL"), "{refused}");
}
