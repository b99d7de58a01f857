use arrow::array::AsArray;
use arrow::datatypes::Int64Type;

use super::*;

async fn ctx(limits: &SqlLimits) -> (tempfile::TempDir, SessionContext) {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let ctx = session(&lake, &mut CommittedFiles::default(), limits).await.unwrap();
    (dir, ctx)
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
