//! Errors of the non-GraphQL endpoints: a JSON body shaped like a GraphQL error, with the
//! same stable codes, and an HTTP status to match.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::sync::Error;

/// The HTTP status for an error code.
fn status_of(error: &Error) -> StatusCode {
    match error {
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::Forbidden(_) => StatusCode::FORBIDDEN,
        Error::BadInput(_)
        | Error::UploadIncomplete(_)
        | Error::PartsMissing { .. }
        | Error::ChecksumMismatch => StatusCode::BAD_REQUEST,
        Error::Verifying { .. } => StatusCode::SERVICE_UNAVAILABLE,
        Error::Conflict { .. } => StatusCode::CONFLICT,
        Error::UploadExpired(_) | Error::CursorExpired => StatusCode::GONE,
        Error::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        Error::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
        Error::SlowSubscriber(_) | Error::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        Error::StorageFull => StatusCode::INSUFFICIENT_STORAGE,
        Error::ContentUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// `{"errors": [{"message", "extensions": {"code"}}]}` with a matching status.
pub(super) fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({ "errors": [{ "message": message, "extensions": { "code": code } }] });
    (status, Json(body)).into_response()
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        if let Error::Internal(cause) = &self {
            tracing::error!(error = ?cause, "internal error");
        }
        let message = self.to_string();
        error_response(status_of(&self), self.code(), &message)
    }
}
