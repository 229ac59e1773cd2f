//! Extractors that turn every malformed request into a 4xx `ApiError` naming what is
//! wrong, instead of axum's plain-text rejections.

use crate::ApiError;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use uuid::Uuid;

/// Largest request body any service accepts.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// How much of an oversized body is read and dropped before answering 413, so a client
/// still writing it reads the answer instead of a broken pipe. Beyond this the
/// connection is closed mid-body.
const DRAIN_BYTES: usize = 4 << 20;

/// A JSON body parsed into `T`.
pub struct JsonBody<T>(pub T);

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("request body exceeds {MAX_BODY_BYTES} bytes"),
    )
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        // The Content-Type is not checked: every body is JSON here, and a client that
        // forgot the header (curl -d does) gets the same parse as one that sent it.
        // Read past the limit (up to DRAIN_BYTES) before refusing, so that a client
        // still writing an oversized body reads the 413 rather than a broken pipe.
        let bytes = axum::body::to_bytes(req.into_body(), DRAIN_BYTES)
            .await
            .map_err(|_| too_large())?;
        if bytes.len() > MAX_BODY_BYTES {
            return Err(too_large());
        }
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses a JSON document into `T`, naming the offending field on failure.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "request body is empty; expected a JSON object",
        ));
    }
    if has_nul_escape(bytes) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "strings must not contain NUL (\\u0000) characters",
        ));
    }
    // Most bodies are well formed: parse them without tracking the path, and only
    // parse a failing body again, tracked, to name the field at fault.
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("request body is not valid JSON: {inner}"),
            );
        }
        let message = inner.to_string();
        let field = named_field(&message)
            .map(|name| join_path(&path, name))
            .unwrap_or(path);
        let message = strip_position(&message);
        if field == "." || field.is_empty() {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
        } else {
            ApiError::invalid(field.clone(), format!("{field}: {message}"))
        }
    })?;
    de.end().map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("request body has trailing data: {e}"),
        )
    })?;
    Ok(value)
}

/// serde reports missing and unknown fields at their parent; pull the name out.
fn named_field(message: &str) -> Option<&str> {
    for prefix in ["missing field `", "unknown field `", "duplicate field `"] {
        if let Some(rest) = message.strip_prefix(prefix) {
            return rest.split('`').next();
        }
    }
    None
}

fn join_path(parent: &str, name: &str) -> String {
    // serde_path_to_error already ends the path with an unknown field's name.
    if parent == name || parent.ends_with(&format!(".{name}")) {
        parent.to_string()
    } else if parent.is_empty() || parent == "." {
        name.to_string()
    } else {
        format!("{parent}.{name}")
    }
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// Whether a JSON text contains the escape `\u0000` (PostgreSQL cannot store it, and no
/// legitimate request needs it). Escaped backslashes are skipped so `"\\u0000"` passes.
fn has_nul_escape(bytes: &[u8]) -> bool {
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if bytes.get(i + 1) == Some(&b'u') && bytes.get(i + 2..i + 6) == Some(b"0000") {
                return true;
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    false
}

/// A `{id}` path segment that must be a UUID.
pub struct IdPath(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::invalid("id", e.body_text()))?;
        Uuid::parse_str(&raw).map(IdPath).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_id",
                format!("`{raw}` is not a UUID"),
            )
            .with_field("id")
        })
    }
}

/// Query-string parameters parsed into `T`.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(q)| QueryParams(q))
            .map_err(|e| {
                let text = e.body_text();
                let text = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text)
                    .to_string();
                let field = text
                    .split_once(':')
                    .map(|(f, _)| f.trim().to_string())
                    .filter(|f| !f.contains(' '))
                    .unwrap_or_else(|| "query".to_string());
                ApiError::invalid(field, format!("invalid query parameter: {text}"))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[allow(dead_code)]
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Body {
        name: String,
        risk_tier: mesh_types::RiskTier,
        inner: Option<Inner>,
    }

    #[allow(dead_code)]
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        count: u32,
    }

    fn err(body: &str) -> ApiError {
        match parse_json::<Body>(body.as_bytes()) {
            Ok(b) => panic!("parsed {b:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn every_failure_names_its_field() {
        assert_eq!(err("{").code, "malformed_json");
        assert_eq!(err("").code, "malformed_json");
        assert_eq!(
            err("{\"name\":\"a\",\"riskTier\":\"low\"} x").code,
            "malformed_json"
        );
        assert_eq!(err("{\"riskTier\":\"low\"}").field.as_deref(), Some("name"));
        let e = err("{\"name\":\"a\",\"riskTier\":\"extreme\"}");
        assert_eq!(e.field.as_deref(), Some("riskTier"));
        assert!(e.message.contains("extreme"), "{}", e.message);
        let e = err("{\"name\":1,\"riskTier\":\"low\"}");
        assert_eq!(e.field.as_deref(), Some("name"));
        let e = err("{\"name\":\"a\",\"riskTier\":\"low\",\"inner\":{\"count\":-1}}");
        assert_eq!(e.field.as_deref(), Some("inner.count"));
        let e = err("{\"name\":\"a\",\"riskTier\":\"low\",\"inner\":{\"count\":1,\"x\":2}}");
        assert_eq!(e.field.as_deref(), Some("inner.x"));
        assert!(
            err("{\"name\":\"a\\u0000\",\"riskTier\":\"low\"}")
                .message
                .contains("NUL")
        );
        assert!(parse_json::<Body>(br#"{"name":"a\\u0000","riskTier":"low"}"#).is_ok());
    }
}
