//! What a connection answers itself, never asking the lake: transactions, `SET` and `SHOW`.
//!
//! - `BEGIN`/`START TRANSACTION`, `COMMIT`/`END`, `ROLLBACK`, savepoints: accepted, so clients
//!   that wrap every query in a transaction (psycopg's default, JDBC with autocommit off) work.
//!   The lake is read-only: there is nothing to commit or undo, and every statement reads the
//!   snapshot committed when it starts.
//! - `SET name = value` (and `SET SESSION CHARACTERISTICS …`, `SET TIME ZONE …`): accepted and
//!   remembered for `SHOW`; they change nothing else (the service's limits are its terms, so
//!   `SET statement_timeout` does not lift them).
//! - `SHOW name`: what was `SET`, else the server's value ([`server_setting`]); an unknown name is
//!   refused, as PostgreSQL does.
//! - `DISCARD`, `DEALLOCATE`: accepted (there is no state to discard).

use datafusion::sql::sqlparser::ast::{Set, Statement};

/// A statement the connection answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Local {
    Begin,
    /// `COMMIT`, `END`, `ROLLBACK`: the transaction ends (its command tag).
    End(&'static str),
    /// A statement that only gets its command tag (`SET`, `SAVEPOINT`, `DISCARD ALL`, …).
    Done(&'static str),
    /// `SET name = value`: remembered for `SHOW`.
    Remember {
        name: String,
        value: String,
    },
    /// `SHOW name`: answered with the column `column`.
    Show {
        name: String,
        column: String,
    },
}

/// The connection's answer to `statement`, if it is one of the connection's own.
pub fn local(statement: &Statement) -> Option<Local> {
    Some(match statement {
        Statement::StartTransaction { .. } => Local::Begin,
        Statement::Commit { .. } => Local::End("COMMIT"),
        Statement::Rollback { savepoint: None, .. } => Local::End("ROLLBACK"),
        Statement::Rollback { savepoint: Some(_), .. } => Local::Done("ROLLBACK"),
        Statement::Savepoint { .. } => Local::Done("SAVEPOINT"),
        Statement::ReleaseSavepoint { .. } => Local::Done("RELEASE"),
        Statement::Discard { .. } => Local::Done("DISCARD ALL"),
        Statement::Deallocate { .. } => Local::Done("DEALLOCATE"),
        Statement::Set(Set::SingleAssignment { variable, values, .. }) => Local::Remember {
            name: setting_name(&variable.to_string()),
            value: values.iter().map(|v| v.to_string().trim_matches('\'').to_owned()).collect::<Vec<_>>().join(", "),
        },
        Statement::Set(Set::SetTimeZone { value, .. }) => {
            Local::Remember { name: "timezone".into(), value: value.to_string().trim_matches('\'').to_owned() }
        }
        Statement::Set(_) => Local::Done("SET"),
        Statement::ShowVariable { variable } => {
            let said = variable.iter().map(|i| i.value.to_lowercase()).collect::<Vec<_>>().join(" ");
            let name = setting_name(&said);
            // PostgreSQL names the column after the setting, as it spells it.
            let column = match name.as_str() {
                "timezone" => "TimeZone".to_owned(),
                "datestyle" => "DateStyle".to_owned(),
                "intervalstyle" => "IntervalStyle".to_owned(),
                _ => name.clone(),
            };
            Local::Show { name, column }
        }
        _ => return None,
    })
}

/// A setting's one name: lower case, and the SQL-standard spellings (`TIME ZONE`,
/// `TRANSACTION ISOLATION LEVEL`) as PostgreSQL names them.
fn setting_name(said: &str) -> String {
    let said = said.trim().to_lowercase();
    match said.as_str() {
        "time zone" => "timezone".into(),
        "transaction isolation level" => "transaction_isolation".into(),
        _ => said,
    }
}

/// The server's value of a setting clients ask for on connect, or `None` for a name PostgreSQL
/// would not know either. `statement_timeout` is the service's SQL timeout.
pub fn server_setting(name: &str, statement_timeout_ms: u128) -> Option<String> {
    Some(
        match name {
            "server_version" => SERVER_VERSION,
            "server_version_num" => "160006",
            "server_encoding" | "client_encoding" => "UTF8",
            "transaction_isolation" | "default_transaction_isolation" => "read committed",
            "transaction_read_only" | "default_transaction_read_only" => "on",
            "timezone" | "log_timezone" => "UTC",
            "datestyle" => "ISO, MDY",
            "intervalstyle" => "postgres",
            "standard_conforming_strings" | "integer_datetimes" => "on",
            "is_superuser" => "off",
            "search_path" => "public",
            "extra_float_digits" => "1",
            "bytea_output" => "hex",
            "max_identifier_length" => "63",
            "lc_collate" | "lc_ctype" => "C",
            "application_name" => "",
            "statement_timeout" => return Some(format!("{statement_timeout_ms}ms")),
            _ => return None,
        }
        .to_owned(),
    )
}

/// The PostgreSQL version testlake says it speaks like (clients pick their catalog queries by it).
pub const SERVER_VERSION: &str = "16.6";
