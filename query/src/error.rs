//! The one place where errors become HTTP statuses.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use datafusion::error::DataFusionError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is wrong: a bad parameter, a bad range.
    #[error("{0}")]
    BadRequest(String),
    #[error("query failed: {0}")]
    DataFusion(#[from] DataFusionError),
    #[error("encoding the answer failed: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// A failure of a load that several requests waited for.
    #[error("{0}")]
    Shared(std::sync::Arc<ApiError>),
    #[error("reading the commit log: {0}")]
    Log(#[from] testlake_schemas::commits::LogReadError),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::DataFusion(e) => datafusion_status(e),
            Self::Arrow(_) | Self::Log(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Shared(e) => e.status(),
        }
    }
}

/// Planning and SQL errors are the caller's; execution and I/O faults are ours.
fn datafusion_status(e: &DataFusionError) -> StatusCode {
    match e.find_root() {
        DataFusionError::SQL(..) | DataFusionError::Plan(_) | DataFusionError::SchemaError(..) => {
            StatusCode::BAD_REQUEST
        }
        DataFusionError::ResourcesExhausted(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "request failed");
        }
        (status, axum::Json(serde_json::json!({ "error": self.to_string() }))).into_response()
    }
}
