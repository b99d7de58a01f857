//! The OpenAPI document, served at `/api/v1/openapi.json`.
//!
//! [`ENDPOINTS`] is the single list of what the service serves: the router is built from it
//! (`crate::router` asks [`crate::handler`] for each path's handler), so a route cannot exist
//! undocumented, nor a documented one be missing. Tests check every documented parameter with a
//! closed set of values is actually validated by its handler.

use serde_json::{Map, Value, json};

/// One query parameter.
pub struct Param {
    pub name: &'static str,
    pub description: &'static str,
    pub required: bool,
    /// The accepted values, when they are a closed set.
    pub values: &'static [&'static str],
    /// `string` or `integer`.
    pub kind: &'static str,
}

const fn p(name: &'static str, description: &'static str) -> Param {
    Param { name, description, required: false, values: &[], kind: "string" }
}

const fn int(name: &'static str, description: &'static str) -> Param {
    Param { name, description, required: false, values: &[], kind: "integer" }
}

const fn one_of(name: &'static str, description: &'static str, values: &'static [&'static str]) -> Param {
    Param { name, description, required: false, values, kind: "string" }
}

const fn required(name: &'static str, description: &'static str) -> Param {
    Param { name, description, required: true, values: &[], kind: "string" }
}

pub struct Endpoint {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub params: &'static [Param],
    /// Answers in JSON, CSV and Arrow, paged when a list.
    pub formats: bool,
}

const FROM: Param = p("from", "Start of the range, RFC 3339 or YYYY-MM-DD (UTC), inclusive.");
const TO: Param = p("to", "End of the range, exclusive. Default: the end of the current UTC hour.");
const REPOSITORY: Param = p("repository", "Only this repository, e.g. acme/billing.");
const BRANCH: Param = p("branch", "Only this branch.");
const SUITE: Param = p("suite", "Only this suite.");
const FORMAT: Param = one_of("format", "Answer format; overrides Accept.", &["json", "csv", "arrow"]);
const PAGE: Param = int("page", "Page number, from 1.");
const SIZE: Param = int("size", "Rows per page, 1..=100000 (default 1000).");

pub const ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        method: "get",
        path: "/api/v1/dashboard",
        summary: "Totals over a range: runs, passed, failed, skipped, pass_rate, duration_avg_ms, duration_max_ms, repositories, active_hours.",
        params: &[FROM, TO, REPOSITORY, BRANCH, SUITE, FORMAT],
        formats: true,
    },
    Endpoint {
        method: "get",
        path: "/api/v1/trends",
        summary: "Hourly or daily trend buckets per repository, branch and suite.",
        params: &[
            one_of("interval", "Bucket width (default hourly).", &["hourly", "daily"]),
            FROM,
            TO,
            REPOSITORY,
            BRANCH,
            SUITE,
            FORMAT,
            PAGE,
            SIZE,
        ],
        formats: true,
    },
    Endpoint {
        method: "get",
        path: "/api/v1/flaky",
        summary: "The latest flaky-scores snapshot, ranked.",
        params: &[
            one_of("state", "Tests in this state (default flaky).", &crate::api::FLAKY_STATES),
            int("min_executions", "Only tests with at least this many counted executions."),
            REPOSITORY,
            SUITE,
            p("test_id", "Only this test."),
            one_of("sort", "Descending order (default score).", &crate::api::FLAKY_SORTS),
            FORMAT,
            PAGE,
            SIZE,
        ],
        formats: true,
    },
    Endpoint {
        method: "get",
        path: "/api/v1/tests/history",
        summary: "Every execution of one test, newest first, with its Kafka lineage.",
        params: &[
            required("repository", "The test's repository."),
            required("test_id", "The test."),
            FROM,
            TO,
            BRANCH,
            FORMAT,
            PAGE,
            SIZE,
        ],
        formats: true,
    },
    Endpoint {
        method: "get",
        path: "/api/v1/health",
        summary: "Health score (0-100) per repository over a range.",
        params: &[FROM, TO, REPOSITORY, BRANCH, SUITE, FORMAT, PAGE, SIZE],
        formats: true,
    },
    Endpoint {
        method: "get",
        path: "/api/v1/compare",
        summary: "This period against the previous one: pass rate, durations, new failures, newly flaky, recovered.",
        params: &[
            int("days", "Length of each period in days, 1..=366 (default 7)."),
            p("to", "End of the current period (default: the end of today, UTC)."),
            REPOSITORY,
            BRANCH,
            SUITE,
            FORMAT,
        ],
        formats: true,
    },
    Endpoint {
        method: "post",
        path: "/api/v1/sql",
        summary: "One read-only SQL statement over the lake's tables. Body: {\"sql\": \"...\", \"max_rows\": n} or the statement as text/plain.",
        params: &[FORMAT],
        formats: true,
    },
    Endpoint {
        method: "get",
        path: "/api/v1/events",
        summary: "Server-Sent Events: ready, update (a landed notice), alert (pass rate below threshold), resync.",
        params: &[p("tables", "Comma-separated tables whose updates to send (default all)."), REPOSITORY],
        formats: false,
    },
    Endpoint { method: "get", path: "/api/v1/openapi.json", summary: "This document.", params: &[], formats: false },
    Endpoint { method: "get", path: "/healthz", summary: "Liveness.", params: &[], formats: false },
    Endpoint {
        method: "get",
        path: "/readyz",
        summary: "Readiness: 200 when the lake answers, else 503.",
        params: &[],
        formats: false,
    },
    Endpoint { method: "get", path: "/metrics", summary: "Prometheus metrics.", params: &[], formats: false },
    Endpoint { method: "get", path: "/", summary: "The dashboard web page.", params: &[], formats: false },
];

/// The OpenAPI 3.1 document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for e in ENDPOINTS {
        let params: Vec<Value> = e
            .params
            .iter()
            .map(|p| {
                let mut schema = json!({ "type": p.kind });
                if !p.values.is_empty() {
                    schema["enum"] = json!(p.values);
                }
                json!({ "name": p.name, "in": "query", "required": p.required, "description": p.description, "schema": schema })
            })
            .collect();
        let mut content = Map::new();
        content.insert("application/json".into(), json!({ "schema": { "type": "object" } }));
        if e.formats {
            content.insert("text/csv".into(), json!({ "schema": { "type": "string" } }));
            content.insert(
                crate::render::ARROW_STREAM.into(),
                json!({ "schema": { "type": "string", "format": "binary" } }),
            );
        }
        let mut responses = json!({
            "200": { "description": "OK", "content": content },
            "400": { "description": "A bad parameter or statement: {\"error\": \"...\"}" },
        });
        if e.path.starts_with("/api/") {
            responses["401"] = json!({ "description": "A bearer token is configured and was not presented." });
        }
        if e.formats {
            responses["304"] = json!({ "description": "Not modified (If-None-Match matched the ETag)." });
        }
        let mut operation = json!({ "summary": e.summary, "parameters": params, "responses": responses });
        if e.method == "post" {
            operation["requestBody"] = json!({
                "content": {
                    "application/json": { "schema": { "type": "object", "required": ["sql"],
                        "properties": { "sql": { "type": "string" }, "max_rows": { "type": "integer" } } } },
                    "text/plain": { "schema": { "type": "string" } },
                }
            });
        }
        paths.insert(e.path.into(), json!({ e.method: operation }));
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "testlake", "version": env!("CARGO_PKG_VERSION"),
                  "description": "CI test analytics: trends, flaky scores and live dashboards over a Parquet lake." },
        "components": { "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } } },
        "security": [ {}, { "bearer": [] } ],
        "paths": paths,
    })
}
