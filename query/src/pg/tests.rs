//! What the connection answers itself, and how failures are coded. Clients over the wire
//! (psql, psycopg) are in `tests/tests/postgres.rs`.

use datafusion::error::DataFusionError;

use super::handlers::{Parser, sqlstate};
use super::local::{Local, local, server_setting};
use crate::error::ApiError;

fn one(sql: &str) -> Option<Local> {
    let statements = Parser::default().statements(sql).expect("parses");
    assert_eq!(statements.len(), 1, "{sql}");
    local(&statements[0])
}

#[test]
fn transactions_are_answered_by_the_connection() {
    for begin in ["BEGIN", "begin transaction", "START TRANSACTION ISOLATION LEVEL READ COMMITTED"] {
        assert_eq!(one(begin), Some(Local::Begin), "{begin}");
    }
    assert_eq!(one("COMMIT"), Some(Local::End("COMMIT")));
    assert_eq!(one("END"), Some(Local::End("COMMIT")));
    assert_eq!(one("ROLLBACK"), Some(Local::End("ROLLBACK")));
    assert_eq!(one("SAVEPOINT a"), Some(Local::Done("SAVEPOINT")));
    assert_eq!(one("ROLLBACK TO SAVEPOINT a"), Some(Local::Done("ROLLBACK")));
    assert_eq!(one("DISCARD ALL"), Some(Local::Done("DISCARD ALL")));
}

#[test]
fn set_is_remembered_and_show_names_postgres_columns() {
    assert_eq!(
        one("SET extra_float_digits = 3"),
        Some(Local::Remember { name: "extra_float_digits".into(), value: "3".into() })
    );
    assert_eq!(
        one("SET application_name = 'Metabase v0.55'"),
        Some(Local::Remember { name: "application_name".into(), value: "Metabase v0.55".into() })
    );
    assert_eq!(one("SET TIME ZONE 'UTC'"), Some(Local::Remember { name: "timezone".into(), value: "UTC".into() }));
    assert_eq!(
        one("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ UNCOMMITTED"),
        Some(Local::Done("SET"))
    );
    assert_eq!(
        one("SHOW TRANSACTION ISOLATION LEVEL"),
        Some(Local::Show { name: "transaction_isolation".into(), column: "transaction_isolation".into() })
    );
    assert_eq!(one("show timezone"), Some(Local::Show { name: "timezone".into(), column: "TimeZone".into() }));
    assert_eq!(server_setting("transaction_isolation", 30_000).as_deref(), Some("read committed"));
    assert_eq!(server_setting("statement_timeout", 30_000).as_deref(), Some("30000ms"));
    assert_eq!(server_setting("no_such_setting", 30_000), None);
}

#[test]
fn queries_and_refused_statements_go_to_the_engine() {
    for sql in ["SELECT 1", "SELECT * FROM results", "DROP TABLE results", "INSERT INTO t VALUES (1)", "COPY t TO 'x'"]
    {
        assert_eq!(one(sql), None, "{sql}");
    }
}

#[test]
fn failures_carry_the_sqlstate_a_client_acts_on() {
    let plan = |m: &str| ApiError::StatementRefused(DataFusionError::Plan(m.into()));
    assert_eq!(sqlstate(&plan("DDL not supported: CreateMemoryTable")), "25006");
    assert_eq!(sqlstate(&plan("DML not supported: Insert Into")), "25006");
    assert_eq!(sqlstate(&plan("table 'datafusion.public.nope' not found")), "42P01");
    assert_eq!(sqlstate(&ApiError::StatementTimeout(std::time::Duration::from_secs(1))), "57014");
    assert_eq!(sqlstate(&ApiError::SqlBusy(4)), "53000");
    assert_eq!(sqlstate(&ApiError::StatementTooComplex("deep".into())), "54001");
    let over = DataFusionError::ResourcesExhausted("pool".into());
    assert_eq!(sqlstate(&ApiError::StatementOverMemory(over)), "53200");
}

/// Rows of `sql` on `ctx`, as text.
async fn texts(ctx: &datafusion::prelude::SessionContext, sql: &str) -> Vec<String> {
    let batches = ctx.sql(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}")).collect().await.unwrap();
    let mut rows = Vec::new();
    for batch in batches {
        let column = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
        let column = arrow::array::AsArray::as_string::<i32>(&column);
        rows.extend(column.iter().map(|v| v.unwrap_or("NULL").to_owned()));
    }
    rows
}

#[tokio::test]
async fn each_session_gets_the_catalog_set_up_once_over_its_own_tables() {
    use datafusion::prelude::SessionContext;
    let catalog = super::catalog::PgCatalog::new().unwrap();
    let session = |table: &'static str| {
        let ctx = SessionContext::new();
        ctx.register_batch(
            table,
            arrow::array::RecordBatch::new_empty(std::sync::Arc::new(arrow::datatypes::Schema::empty())),
        )
        .unwrap();
        catalog.on(ctx).unwrap()
    };
    let (a, b) = (session("only_in_a"), session("only_in_b"));
    let listed = "SELECT relname FROM pg_catalog.pg_class WHERE relname LIKE 'only_in_%'";
    assert_eq!(texts(&a, listed).await, ["only_in_a"], "a's catalog lists a's table, not b's");
    assert_eq!(texts(&b, listed).await, ["only_in_b"]);
    // What the set-up adds besides the schema: functions, table functions, the oid types.
    assert_eq!(texts(&a, "SELECT current_schema()").await, ["public"]);
    assert_eq!(texts(&a, "SELECT has_table_privilege('only_in_a', 'SELECT')").await, ["true"]);
    assert!(!texts(&a, "SELECT word FROM pg_get_keywords()").await.is_empty(), "pg_get_keywords()");
    assert_eq!(texts(&a, "SELECT CAST(1 AS regclass)").await, ["1"], "regclass parses as a type");
}
