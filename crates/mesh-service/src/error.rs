//! The one error body every service returns: `{"type":"error","error":{"code","message","field"}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mesh_store::StoreError;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub field: Option<String>,
    /// For 429/503: when to try again, sent as `Retry-After` (seconds).
    pub retry_after_secs: Option<u64>,
}

/// `type: "error"` beside `error` is the envelope Anthropic's clients expect; OpenAI's
/// ignore it.
#[derive(Serialize, Deserialize)]
pub struct ErrorBody {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub envelope: Option<String>,
    pub error: ErrorDetail,
}

/// `code`, `message` and `field` are the mesh's; `type` and `param` repeat them the way
/// OpenAI's clients read errors, so an OpenAI SDK reports a mesh error as it would its own.
#[derive(Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[serde(default)]
    pub field: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
}

/// OpenAI's error `type` for a status.
fn openai_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        402 => "insufficient_quota",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_string(),
            message: message.into(),
            field: None,
            retry_after_secs: None,
        }
    }

    /// 429: a rate limit was hit; try again after `secs`.
    pub fn rate_limited(message: impl Into<String>, secs: u64) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message);
        e.retry_after_secs = Some(secs.max(1));
        e
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// 400 for a body or parameter that fails to parse or validate.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message).with_field(field)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn unavailable(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )?;
        if let Some(field) = &self.field {
            write!(f, " (field `{field}`)")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            envelope: Some("error".into()),
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                param: self.field.clone(),
                field: self.field,
                kind: Some(openai_type(self.status).to_string()),
            },
        };
        let status = self.status;
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(secs),
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            // HTTP requires a 401 to name the scheme it wants (RFC 9110 §11.6.1).
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"agentic-mesh\""),
            );
        }
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            // The unread body is still on the wire: this connection cannot carry another
            // request, so tell the client not to reuse it.
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            StoreError::Conflict(why) => ApiError::conflict(why),
            StoreError::Invalid { field, message } => {
                ApiError::invalid(field.clone(), format!("{field}: {message}"))
            }
            StoreError::Unavailable(why) => {
                tracing::error!(error = %why, "store unavailable");
                ApiError::unavailable("store_unavailable", "the store is unavailable; try again")
            }
            other => {
                tracing::error!(error = %other, "store failure");
                ApiError::internal("internal error; the server log has the details")
            }
        }
    }
}

impl From<mesh_types::validate::FieldError> for ApiError {
    fn from(err: mesh_types::validate::FieldError) -> Self {
        ApiError::invalid(err.field.clone(), err.to_string())
    }
}
