//! The one place where errors become HTTP statuses and bodies. Handlers, the SQL engine and the
//! auth middleware say *what* went wrong by constructing an [`ApiError`]; [`ApiError::status`]
//! decides the status, and [`IntoResponse`] writes `{"error": "…"}` (with `WWW-Authenticate` on
//! a 401).

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use datafusion::error::DataFusionError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is wrong: a bad parameter, a bad range.
    #[error("{0}")]
    BadRequest(String),
    /// A SQL statement refused while planning: bad SQL, DDL, DML, a statement, an unknown table.
    /// The message is DataFusion's.
    #[error("{0}")]
    StatementRefused(DataFusionError),
    /// A SQL statement that needed more memory than its own pool (`SqlLimits::memory_bytes`).
    #[error("the statement exceeded its memory limit: {0}")]
    StatementOverMemory(DataFusionError),
    /// A SQL statement that ran past its time limit, and was stopped.
    #[error("the statement ran longer than {0:?} and was stopped")]
    StatementTimeout(Duration),
    /// The task running a SQL statement ended without an answer: it panicked.
    #[error("the statement failed: {0}")]
    StatementPanicked(tokio::task::JoinError),
    /// A SQL statement too long or too deeply nested to plan safely (`sql::shape`).
    #[error("{0}")]
    StatementTooComplex(String),
    /// The statement threads could not be started.
    #[error("starting the SQL statement threads: {0}")]
    SqlThreads(std::io::Error),
    /// Every statement slot is taken (`SqlLimits::concurrency`).
    #[error("{0} SQL statements are running, the most the service runs at once: retry in a moment")]
    SqlBusy(usize),
    /// `/api/*` without a bearer token, when one is configured.
    #[error("a bearer token is required")]
    TokenMissing,
    /// `/api/*` with a bearer token other than the configured one.
    #[error("invalid bearer token")]
    TokenInvalid,
    #[error("query failed: {0}")]
    DataFusion(#[from] DataFusionError),
    #[error("encoding the answer failed: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// A failure of a load that several requests waited for.
    #[error("{0}")]
    Shared(std::sync::Arc<ApiError>),
    #[error("reading the commit log: {0}")]
    Log(#[from] testlake_schemas::log_reader::LogReadError),

    // The service's own bounds and the browser-facing checks (`guard`).
    /// A dashboard answer over `AnswerLimits::max_rows` rows.
    #[error("the answer has more than {0} rows: narrow the range or add filters")]
    AnswerTooLarge(usize),
    /// A dashboard answer that took longer than `AnswerLimits::timeout` to load.
    #[error("the answer took longer than {0:?} to load and was abandoned: narrow the range, or try again later")]
    AnswerTimeout(Duration),
    /// A `Host` that is neither loopback, an IP address nor an allowed name (DNS rebinding).
    #[error("host {0:?} is not allowed (see --allowed-host)")]
    HostRefused(String),
    /// A browser request from another origin.
    #[error("cross-origin requests are refused (origin {0:?})")]
    OriginRefused(String),
    /// A POST whose body is not declared `application/json`.
    #[error("the body must be sent as application/json, got {0:?}")]
    NotJson(String),
    /// Every event-stream place is taken.
    #[error("too many event-stream subscribers (at most {0}): try again later")]
    TooManySubscribers(usize),
}

impl ApiError {
    /// A failure while running a user's SQL statement that planned fine. Running out of memory
    /// there means the statement outgrew its own pool: see [`ApiError::status`].
    pub fn statement_failed(e: DataFusionError) -> Self {
        match e.find_root() {
            DataFusionError::ResourcesExhausted(_) => Self::StatementOverMemory(e),
            _ => Self::DataFusion(e),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::StatementRefused(_) | Self::StatementTooComplex(_) => StatusCode::BAD_REQUEST,
            // A statement over its own limits is the caller's doing: the limits are the
            // service's stated terms, and the same statement would fail the same way again. A
            // load of a dashboard answer exhausting the service's resources is not (see
            // `datafusion_status`).
            Self::StatementOverMemory(_) | Self::StatementTimeout(_) => StatusCode::BAD_REQUEST,
            // A panic is a bug, ours or DataFusion's, whatever the statement.
            Self::StatementPanicked(_) => StatusCode::INTERNAL_SERVER_ERROR,
            // The service's capacity, not the statement: the same one succeeds once a slot frees.
            Self::SqlBusy(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::TokenMissing | Self::TokenInvalid => StatusCode::UNAUTHORIZED,
            Self::DataFusion(e) => datafusion_status(e),
            Self::Arrow(_) | Self::Log(_) | Self::SqlThreads(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Shared(e) => e.status(),
            Self::AnswerTooLarge(_) => StatusCode::BAD_REQUEST,
            Self::AnswerTimeout(_) | Self::TooManySubscribers(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::HostRefused(_) | Self::OriginRefused(_) => StatusCode::FORBIDDEN,
            Self::NotJson(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        }
    }
}

/// Planning and SQL errors are the caller's; execution and I/O faults are ours. Resources
/// exhausted while loading an answer (a dashboard, a trend) are the service's load: 503, try
/// again later. A user's statement over its memory limit never gets here: it is a
/// [`ApiError::StatementOverMemory`].
fn datafusion_status(e: &DataFusionError) -> StatusCode {
    match e.find_root() {
        DataFusionError::SQL(..) | DataFusionError::Plan(_) | DataFusionError::SchemaError(..) => {
            StatusCode::BAD_REQUEST
        }
        DataFusionError::ResourcesExhausted(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// When a client refused a statement slot may try again: statements mostly take well under a
/// second.
const SQL_RETRY_AFTER_SECONDS: &str = "1";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "request failed");
        }
        let mut response = (status, axum::Json(serde_json::json!({ "error": self.to_string() }))).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(SQL_RETRY_AFTER_SECONDS));
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"testlake\""));
        }
        response
    }
}
