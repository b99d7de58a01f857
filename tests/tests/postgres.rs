//! `testlake serve --pg-listen`: the lake through PostgreSQL's wire protocol, with outside
//! clients — Debian's `psql` and PyPI's psycopg 3 (`tests/scripts/pg_client.py`), both installed
//! by `deploy/scripts/setup.sh`; a missing one fails the test, naming the script.
//!
//! Over a lake of committed fleet events: answers equal `POST /api/v1/sql`'s for the same
//! statement and the events landed (counted here from the events themselves); parameters bound
//! by the client; what the HTTP endpoint refuses is refused, with PostgreSQL's SQLSTATE; the
//! catalog queries Grafana's PostgreSQL data source and Metabase send on connect answer and list
//! the lake's tables; the token is the password; TLS when a certificate is given.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use chrono::{TimeDelta, Utc};
use serde_json::{Value, json};
use testlake::fleet::{Fleet, FleetConfig};
use testlake_query::pg::PgConfig;
use testlake_query::{AppState, ServeConfig};
use testlake_schemas::{Lake, TestEvent};
use testlake_tests::s3::venv_tool;
use testlake_tests::secure::Certificates;
use testlake_tests::{free_port, land_committed};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "s3cret-token";

/// The service over `lake`, with the PostgreSQL protocol on a free port: (HTTP base, PG port).
async fn serve(lake: &Path, tls: Option<&Certificates>) -> (String, u16, CancellationToken) {
    let mut config = ServeConfig::new("127.0.0.1:0".parse().unwrap());
    config.auth_token = Some(TOKEN.into());
    let port = free_port();
    let listen: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    config.pg = Some(PgConfig { listen, tls: tls.map(|c| (c.cert.clone(), c.key.clone())) });
    let state = Arc::new(AppState::new(Lake::open(lake.to_str().unwrap()).unwrap(), &config));
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let shutdown = CancellationToken::new();
    tokio::spawn(testlake_query::serve(config, state, None, shutdown.clone(), Some(bound_tx)));
    (format!("http://{}", bound_rx.await.unwrap()), port, shutdown)
}

/// Two days of a two-repository fleet, committed into a new lake.
async fn lake_with_events() -> (tempfile::TempDir, Vec<TestEvent>) {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let mut fleet = Fleet::new(FleetConfig { seed: 18, repositories: 2, ..FleetConfig::default() });
    let start = Utc::now() - TimeDelta::hours(30);
    let events: Vec<TestEvent> = (0..12).flat_map(|i| fleet.run(start + TimeDelta::hours(i * 2))).collect();
    land_committed(&lake, "ci", 0, 0, &events).await;
    (dir, events)
}

/// `POST /api/v1/sql`'s rows for `sql`, as the values of `columns` in order.
async fn http_rows(base: &str, sql: &str, columns: &[&str]) -> Vec<Vec<Value>> {
    let response = reqwest::Client::new()
        .post(format!("{base}/api/v1/sql"))
        .bearer_auth(TOKEN)
        .json(&json!({ "sql": sql }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{sql}");
    let body: Value = response.json().await.unwrap();
    body["rows"].as_array().unwrap().iter().map(|row| columns.iter().map(|c| row[*c].clone()).collect()).collect()
}

/// psycopg's answers to `statements` (`(sql, params)`), one JSON object each.
fn psycopg(conninfo: &str, statements: &[(&str, Option<Value>)]) -> Vec<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pg_client.py");
    let statements: Vec<Value> =
        statements.iter().map(|(sql, params)| json!({ "sql": sql, "params": params })).collect();
    let mut child = Command::new(venv_tool("python"))
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pg_client.py");
    let spec = json!({ "conninfo": conninfo, "statements": statements });
    child.stdin.take().unwrap().write_all(spec.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "pg_client.py failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// `psql -At` with `args`: (success, stdout, stderr).
fn psql(conninfo: &str, password: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("psql")
        .arg(conninfo)
        .args(["-X", "-A", "-t", "-F", "|"])
        .args(args)
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .unwrap_or_else(|e| panic!("cannot run psql ({e}): run deploy/scripts/setup.sh"));
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

fn rows(answer: &Value) -> &Vec<Value> {
    answer["rows"].as_array().unwrap_or_else(|| panic!("no rows: {answer}"))
}

// The clients run as blocking child processes: the service needs threads of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_and_psycopg_read_the_lake_as_the_sql_endpoint_does() {
    let (dir, events) = lake_with_events().await;
    let (base, port, shutdown) = serve(dir.path(), None).await;
    let conninfo = format!("host=127.0.0.1 port={port} user=analyst dbname=testlake password={TOKEN}");

    // The events, counted here: all of them, and per repository with their failures.
    let mut per_repo: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for e in &events {
        let counts = per_repo.entry(e.repository.clone()).or_default();
        counts.0 += 1;
        counts.1 += i64::from(e.status.as_str() == "failed");
    }
    let by_repo = "SELECT repository, count(*) AS runs, \
                   CAST(sum(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) AS BIGINT) AS failed \
                   FROM results GROUP BY repository ORDER BY repository";
    let expected: Vec<Vec<Value>> = per_repo.iter().map(|(r, (n, f))| vec![json!(r), json!(n), json!(f)]).collect();
    assert_eq!(
        http_rows(&base, by_repo, &["repository", "runs", "failed"]).await,
        expected,
        "the HTTP endpoint against the events"
    );
    let (first_repo, (first_count, _)) = per_repo.iter().next().unwrap();

    let answers = psycopg(
        &conninfo,
        &[
            ("SELECT count(*) AS n FROM results", None),
            (by_repo, None),
            ("SELECT count(*) AS n FROM results WHERE repository = %s", Some(json!([first_repo]))),
            ("SELECT count(*) AS n FROM duplicates", None),
            ("DROP TABLE results", None),
            ("INSERT INTO results (event_id) VALUES ('x')", None),
            ("SELECT * FROM no_such_table", None),
            ("SELECT 1 AS still_usable", None),
        ],
    );
    assert_eq!(rows(&answers[0]), &vec![json!([events.len()])], "count over psycopg");
    assert_eq!(answers[1]["columns"], json!(["repository", "runs", "failed"]));
    let over_pg: Vec<Vec<Value>> = rows(&answers[1]).iter().map(|r| r.as_array().unwrap().clone()).collect();
    assert_eq!(over_pg, expected, "per repository over psycopg");
    assert_eq!(rows(&answers[2]), &vec![json!([first_count])], "a bound parameter");
    assert_eq!(rows(&answers[3]), &vec![json!([0])], "no copies were landed");
    for (i, sqlstate) in [(4, "25006"), (5, "25006"), (6, "42P01")] {
        assert_eq!(answers[i]["sqlstate"], sqlstate, "{}", answers[i]);
    }
    assert_eq!(rows(&answers[7]), &vec![json!([1])], "the connection survives refusals");

    // psql: the same count as the endpoint, its own `\dt`, a refusal, a wrong password.
    let (ok, out, err) = psql(&conninfo, TOKEN, &["-c", "SELECT count(*) AS n FROM results"]);
    assert!(ok, "{err}");
    assert_eq!(out, http_rows(&base, "SELECT count(*) AS n FROM results", &["n"]).await[0][0].to_string());
    let (ok, out, err) = psql(&conninfo, TOKEN, &["-c", "\\d"]);
    assert!(ok && out.lines().any(|l| l.starts_with("public|results|view|")), "psql \\d: {out} {err}");
    assert!(out.lines().any(|l| l.starts_with("public|trends_daily|table|")), "psql \\d: {out}");
    let (ok, _, err) = psql(&conninfo, TOKEN, &["-c", "CREATE TABLE t (x INT)"]);
    assert!(!ok && err.contains("not supported"), "{err}");
    // Inside a transaction, a failed statement aborts it until ROLLBACK, as in PostgreSQL.
    let steps = ["BEGIN", "SELECT * FROM no_such_table", "SELECT 1", "ROLLBACK", "SELECT 2 AS after"];
    let args: Vec<&str> = steps.iter().flat_map(|s| ["-c", *s]).collect();
    let (_, out, err) = psql(&conninfo, TOKEN, &args);
    assert!(err.contains("current transaction is aborted"), "{err}");
    assert_eq!(out, "BEGIN\nROLLBACK\n2", "SELECT 1 in the aborted transaction answered nothing: {out}");
    // Counted on /metrics by the SQLSTATE sent: DROP and INSERT (psycopg), CREATE (psql) refused
    // as read-only; two unknown tables; one statement in an aborted transaction.
    let metrics = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    for (sqlstate, n) in [("25006", 3), ("42P01", 2), ("25P02", 1)] {
        let line = format!("testlake_pg_statements_total{{sqlstate=\"{sqlstate}\"}} {n}");
        assert!(metrics.lines().any(|l| l == line), "no {line} in /metrics");
    }
    let wrong = format!("host=127.0.0.1 port={port} user=analyst dbname=testlake");
    let (ok, _, err) = psql(&wrong, "not-the-token", &["-c", "SELECT 1"]);
    assert!(!ok && err.to_lowercase().contains("password authentication failed"), "{err}");

    shutdown.cancel();
}

/// What Grafana's PostgreSQL data source and Metabase send when they connect and list tables
/// and columns (their statements as they send them, the table name filled in).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_and_metabase_connect_and_list_the_tables() {
    let (dir, events) = lake_with_events().await;
    let (_base, port, shutdown) = serve(dir.path(), None).await;
    let conninfo = format!("host=127.0.0.1 port={port} user=grafana dbname=testlake password={TOKEN}");
    // A time-series panel's query, `$__timeFilter(finished_at)` expanded as Grafana does.
    let (from, to) = (Utc::now() - TimeDelta::days(3), Utc::now() + TimeDelta::hours(1));
    let panel = format!(
        "SELECT date_trunc('hour', finished_at) AS time, count(*) AS runs FROM results \
         WHERE finished_at BETWEEN '{}' AND '{}' GROUP BY 1 ORDER BY 1",
        from.format("%Y-%m-%dT%H:%M:%SZ"),
        to.format("%Y-%m-%dT%H:%M:%SZ")
    );
    // Grafana's query editor (postgresMetaQuery.ts): its search-path subquery reads a scalar
    // function as a table, which DataFusion cannot; datafusion-pg-catalog matches it and reads
    // no schema as on the search path, so tables are listed schema-qualified (`public.results`).
    let search_path = "quote_ident(table_schema) IN (
          SELECT
            CASE WHEN trim(s[i]) = '\"$user\"' THEN user ELSE trim(s[i]) END
          FROM
            generate_series(
              array_lower(string_to_array(current_setting('search_path'),','),1),
              array_upper(string_to_array(current_setting('search_path'),','),1)
            ) as i,
            string_to_array(current_setting('search_path'),',') s
          )";
    let grafana_tables = format!(
        "SELECT
    CASE WHEN {search_path}
      THEN quote_ident(table_name)
      ELSE quote_ident(table_schema) || '.' || quote_ident(table_name)
    END AS \"table\"
    FROM information_schema.tables
    WHERE quote_ident(table_schema) NOT IN ('information_schema',
                             'pg_catalog',
                             '_timescaledb_cache',
                             '_timescaledb_catalog',
                             '_timescaledb_internal',
                             '_timescaledb_config',
                             'timescaledb_information',
                             'timescaledb_experimental')
    ORDER BY CASE WHEN {search_path} THEN 0 ELSE 1 END, 1"
    );
    // A schema-qualified table's columns, as the editor asks for them.
    let grafana_columns = "SELECT quote_ident(column_name) AS \"column\", data_type AS \"type\"
    FROM information_schema.columns
    WHERE table_schema = 'public' AND table_name = 'results'";
    let metabase_schemas = "SELECT nspname AS \"TABLE_SCHEM\", current_database() AS \"TABLE_CATALOG\" \
         FROM pg_catalog.pg_namespace WHERE nspname <> 'pg_toast' \
         AND (nspname !~ '^pg_temp_' OR nspname = (pg_catalog.current_schemas(true))[1]) \
         AND (nspname !~ '^pg_toast_temp_' OR nspname = replace((pg_catalog.current_schemas(true))[1], 'pg_temp_', 'pg_toast_temp_')) \
         ORDER BY \"TABLE_SCHEM\"";
    let metabase_tables = "SELECT n.nspname AS schema, c.relname AS name, \
           CASE c.relkind WHEN 'r' THEN 'TABLE' WHEN 'v' THEN 'VIEW' ELSE NULL END AS type, \
           d.description AS description \
         FROM pg_catalog.pg_class AS c INNER JOIN pg_catalog.pg_namespace AS n ON c.relnamespace = n.oid \
         LEFT JOIN pg_catalog.pg_description AS d ON (c.oid = d.objoid AND d.objsubid = 0 AND d.classoid = 'pg_class'::regclass) \
         WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema' AND c.relkind IN ('r', 'p', 'v', 'f', 'm') \
           AND n.nspname IN ('public') ORDER BY type, schema, name";
    let answers = psycopg(
        &conninfo,
        &[
            ("SELECT 1", None),
            ("SET extra_float_digits = 2", None),
            ("SET application_name = 'Metabase v0.55.1'", None),
            ("SHOW TRANSACTION ISOLATION LEVEL", None),
            ("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ UNCOMMITTED", None),
            ("SHOW application_name", None),
            ("show timezone", None),
            ("SELECT version()", None),
            ("SELECT current_setting('server_version_num')::int/100 as version", None),
            ("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'", None),
            (&grafana_tables, None),
            (grafana_columns, None),
            (metabase_schemas, None),
            (metabase_tables, None),
            (&panel, None),
        ],
    );
    for (i, answer) in answers.iter().enumerate() {
        assert!(answer.get("error").is_none(), "statement {i}: {answer}");
    }
    assert_eq!(rows(&answers[3]), &vec![json!(["read committed"])]);
    assert_eq!(rows(&answers[5]), &vec![json!(["Metabase v0.55.1"])], "SET is remembered");
    assert_eq!(rows(&answers[8]), &vec![json!([1600])], "Grafana's version check: 160006 / 100");
    assert_eq!(rows(&answers[9]), &Vec::<Value>::new(), "no TimescaleDB");
    let tables: Vec<&str> = rows(&answers[10]).iter().map(|r| r[0].as_str().unwrap()).collect();
    for table in ["results", "duplicates", "rejected", "trends_hourly", "trends_daily", "flaky_scores"] {
        let table = format!("public.{table}");
        let table = table.as_str();
        assert!(tables.contains(&table), "Grafana's table list lacks {table}: {tables:?}");
    }
    let columns: Vec<&str> = rows(&answers[11]).iter().map(|r| r[0].as_str().unwrap()).collect();
    for column in ["event_id", "repository", "status", "duration_ms", "finished_at"] {
        assert!(columns.contains(&column), "Grafana's columns of results lack {column}: {columns:?}");
    }
    assert!(rows(&answers[12]).iter().any(|r| r[0] == "public"), "{}", answers[12]);
    assert!(rows(&answers[13]).iter().any(|r| r[1] == "results"), "{}", answers[13]);
    let panel_runs: i64 = rows(&answers[14]).iter().map(|r| r[1].as_i64().unwrap()).sum();
    assert_eq!(panel_runs, events.len() as i64, "the panel's hours hold every event");
    shutdown.cancel();
}

/// With a certificate, clients may verify the server and talk over TLS; without one, a client
/// that requires TLS is told the server does not offer it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_offered_with_a_certificate() {
    let (dir, events) = lake_with_events().await;
    let certs = Certificates::generate(dir.path());
    let (_base, port, shutdown) = serve(dir.path(), Some(&certs)).await;
    let verified = format!(
        "host=127.0.0.1 port={port} user=analyst dbname=testlake sslmode=verify-full sslrootcert={}",
        certs.ca.display()
    );
    let (ok, out, err) = psql(&verified, TOKEN, &["-c", "SELECT count(*) FROM results"]);
    assert!(ok, "{err}");
    assert_eq!(out, events.len().to_string());
    let other_ca = format!(
        "host=127.0.0.1 port={port} user=analyst dbname=testlake sslmode=verify-full sslrootcert={}",
        certs.other_ca.display()
    );
    let (ok, _, err) = psql(&other_ca, TOKEN, &["-c", "SELECT 1"]);
    assert!(!ok && err.contains("certificate verify failed"), "{err}");
    shutdown.cancel();

    let (_base, port, shutdown) = serve(dir.path(), None).await;
    let required = format!("host=127.0.0.1 port={port} user=analyst dbname=testlake sslmode=require");
    let (ok, _, err) = psql(&required, TOKEN, &["-c", "SELECT 1"]);
    assert!(!ok && err.contains("does not support SSL"), "{err}");
    shutdown.cancel();
}
