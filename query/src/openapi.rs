//! The OpenAPI document of an endpoint table, served at `/api/v1/openapi.json`.
//!
//! The document is rendered from `routes::ENDPOINTS`, the table the router is built from, so a
//! route cannot exist undocumented, nor a documented one be missing. Tests check every documented
//! parameter with a closed set of values is actually validated by its handler.

use serde_json::{Map, Value, json};

use crate::endpoint::{Endpoint, Method};

/// The media type of an endpoint's answers (without parameters): JSON but for the page and the
/// metrics, whose handlers declare theirs.
fn media_type(e: &Endpoint) -> &'static str {
    use crate::handlers::{page, probes};
    let served = if e.path == page::PAGE.path {
        page::HTML
    } else if e.path == probes::METRICS.path {
        probes::METRICS_TYPE
    } else {
        "application/json"
    };
    served.split(';').next().unwrap_or(served)
}

/// The OpenAPI 3.1 document.
pub fn document(endpoints: &[Endpoint]) -> Value {
    let mut paths = Map::new();
    for e in endpoints {
        let params: Vec<Value> = e
            .params
            .iter()
            .map(|p| {
                let mut schema = json!({ "type": p.kind });
                if !p.values.is_empty() {
                    schema["enum"] = json!(p.values);
                }
                if let Some((min, max)) = p.range {
                    (schema["minimum"], schema["maximum"]) = (json!(min), json!(max));
                }
                json!({ "name": p.name, "in": "query", "required": p.required, "description": p.description, "schema": schema })
            })
            .collect();
        let mut content = Map::new();
        match media_type(e) {
            "application/json" => content.insert("application/json".into(), json!({ "schema": { "type": "object" } })),
            other => content.insert(other.into(), json!({ "schema": { "type": "string" } })),
        };
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
            responses["403"] = json!({ "description": "A Host that is not allowed, or a cross-origin request." });
        }
        responses["503"] = json!({
            "description": "Unready or unhealthy (probes), or at a limit: an answer that took too long to load, \
                            or every event-stream place taken."
        });
        if e.formats {
            responses["304"] = json!({ "description": "Not modified (If-None-Match matched the ETag)." });
        }
        let mut operation = json!({ "summary": e.summary, "parameters": params, "responses": responses });
        if e.method == Method::Post {
            operation["requestBody"] = json!({
                "content": {
                    "application/json": { "schema": { "type": "object", "required": ["sql"],
                        "properties": { "sql": { "type": "string", "pattern": "\\S" },
                                        "max_rows": { "type": "integer", "minimum": 0 } } } },
                }
            });
            operation["responses"]["415"] = json!({ "description": "The body is not sent as application/json." });
        }
        paths.insert(e.path.into(), json!({ e.method.name(): operation }));
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
