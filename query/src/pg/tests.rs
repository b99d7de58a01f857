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
