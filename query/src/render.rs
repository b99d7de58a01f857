//! From a cached [`Answer`] to an HTTP response: format (JSON, CSV, Arrow IPC stream) by `format=`
//! or `Accept`, a page of rows, `ETag` / `If-None-Match` → 304, `Cache-Control`.

use arrow::array::RecordBatch;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;

use crate::cache::Answer;
use crate::error::ApiError;
use crate::frame::{arrow_ipc, csv, first_row, json_rows};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
    Arrow,
}

pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

impl Format {
    fn name(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Csv => "csv",
            Self::Arrow => "arrow",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Csv => "text/csv; charset=utf-8",
            Self::Arrow => ARROW_STREAM,
        }
    }
}

/// `format`, `page`, `size`: how an answer is shown, separate from what it is.
#[derive(Debug, Default, Deserialize)]
pub struct View {
    pub format: Option<String>,
    pub page: Option<String>,
    pub size: Option<String>,
}

/// Rows per page unless `size` says otherwise, and the most `size` may say.
pub const DEFAULT_PAGE_SIZE: usize = 1000;
pub const MAX_PAGE_SIZE: usize = 100_000;

/// A validated view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub format: Format,
    pub page: usize,
    pub size: usize,
}

impl View {
    /// `format=` wins over `Accept`; JSON when neither asks for anything else.
    pub fn shape(&self, headers: &HeaderMap) -> Result<Shape, ApiError> {
        let format = match self.format.as_deref() {
            Some("json") => Format::Json,
            Some("csv") => Format::Csv,
            Some("arrow") => Format::Arrow,
            Some(other) => {
                return Err(ApiError::BadRequest(format!("`format` must be json, csv or arrow, got {other:?}")));
            }
            None => {
                let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
                if accept.contains("text/csv") {
                    Format::Csv
                } else if accept.contains(ARROW_STREAM) {
                    Format::Arrow
                } else {
                    Format::Json
                }
            }
        };
        let number =
            |name: &str, value: &Option<String>, default: usize, max: usize| match value {
                None => Ok(default),
                Some(v) => v.parse::<usize>().ok().filter(|n| (1..=max).contains(n)).ok_or_else(|| {
                    ApiError::BadRequest(format!("`{name}` must be an integer in 1..={max}, got {v:?}"))
                }),
            };
        Ok(Shape {
            format,
            page: number("page", &self.page, 1, usize::MAX)?,
            size: number("size", &self.size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?,
        })
    }
}

/// The JSON body: the head's fields, then either the one row's fields (an object answer) or the
/// page: `total`, `page`, `size`, `next_page` and `rows`.
fn json(answer: &Answer, shape: Shape, rows: &RecordBatch) -> Result<Vec<u8>, ApiError> {
    let mut body = answer.head.clone();
    if answer.object {
        body.extend(first_row(rows)?);
        return Ok(serde_json::to_vec(&body).expect("json"));
    }
    let total = answer.batch.num_rows();
    body.insert("total".into(), total.into());
    body.insert("page".into(), shape.page.into());
    body.insert("size".into(), shape.size.into());
    // `then`, not `then_some`: the last page's number may be usize::MAX.
    let next = (shape.page.saturating_mul(shape.size) < total).then(|| shape.page + 1);
    body.insert("next_page".into(), next.into());
    let mut out = serde_json::to_vec(&body).expect("json");
    out.pop(); // reopen the object to append the rows without re-parsing them
    out.extend_from_slice(b",\"rows\":");
    out.extend_from_slice(&json_rows(rows)?);
    out.push(b'}');
    Ok(out)
}

fn page(answer: &Answer, shape: Shape) -> RecordBatch {
    if answer.object {
        return answer.batch.clone();
    }
    let total = answer.batch.num_rows();
    let offset = (shape.page - 1).saturating_mul(shape.size).min(total);
    answer.batch.slice(offset, shape.size.min(total - offset))
}

/// What most requests ask for: the first page in JSON. A cached answer keeps it rendered.
const DEFAULT_SHAPE: Shape = Shape { format: Format::Json, page: 1, size: DEFAULT_PAGE_SIZE };

/// The body of [`DEFAULT_SHAPE`].
pub fn default_body(answer: &Answer) -> Result<Bytes, ApiError> {
    Ok(json(answer, DEFAULT_SHAPE, &page(answer, DEFAULT_SHAPE))?.into())
}

/// The response for `answer` in `shape`, or 304 when the client's `If-None-Match` matches.
pub fn respond(answer: &Answer, shape: Shape, headers: &HeaderMap, hit: bool) -> Result<Response, ApiError> {
    let etag = format!("\"{:016x}-{}-{}-{}\"", answer.version, shape.format.name(), shape.page, shape.size);
    let mut out_headers = HeaderMap::new();
    out_headers.insert(header::ETAG, HeaderValue::from_str(&etag).expect("ascii"));
    // Always revalidate: the ETag makes that cheap, and the data changes the moment a partition lands.
    out_headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    out_headers.insert("x-cache", HeaderValue::from_static(if hit { "hit" } else { "miss" }));
    let matches = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == etag || t.trim() == "*" || t.trim().strip_prefix("W/") == Some(&etag));
    if matches {
        return Ok((StatusCode::NOT_MODIFIED, out_headers).into_response());
    }
    out_headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(shape.format.content_type()));
    let body: Bytes = if shape == DEFAULT_SHAPE {
        if let Some(body) = answer.default_json.get() {
            body.clone()
        } else {
            let body = default_body(answer)?;
            answer.default_json.get_or_init(|| body).clone()
        }
    } else {
        let rows = page(answer, shape);
        match shape.format {
            Format::Json => json(answer, shape, &rows)?,
            Format::Csv => csv(&rows)?,
            Format::Arrow => arrow_ipc(&rows)?,
        }
        .into()
    };
    Ok((out_headers, body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The largest page number a request may name is answered (an empty page), not a panic.
    #[test]
    fn the_largest_page_number_is_an_empty_page() {
        let batch = RecordBatch::try_from_iter([(
            "n",
            std::sync::Arc::new(arrow::array::Int64Array::from(vec![1, 2, 3])) as arrow::array::ArrayRef,
        )])
        .unwrap();
        let answer =
            crate::cache::Answer::uncached(crate::cache::Loaded { head: Default::default(), batch, object: false })
                .unwrap();
        let view = View { format: None, page: Some(usize::MAX.to_string()), size: Some("2".into()) };
        let shape = view.shape(&HeaderMap::new()).unwrap();
        let body = json(&answer, shape, &page(&answer, shape)).unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["rows"], serde_json::json!([]));
        assert_eq!(body["next_page"], Value::Null);
        assert_eq!(body["total"], 3);
    }
}
