//! `http_fetch`: one GET. The URL is the call's destination, so the egress point has
//! judged its host before this runs; redirects are handed back rather than followed
//! (the registry's client never follows them), since the next host was never judged.

use super::MAX_BYTES;
use crate::invoke::{TOOL_TIMEOUT, tool_failed};
use axum::http::StatusCode;
use mesh_service::ApiError;
use serde_json::{Value, json};

pub(super) fn url_of(arguments: &Value) -> Result<reqwest::Url, ApiError> {
    let bad = |why: String| ApiError::invalid("arguments.url", format!("arguments.url: {why}"));
    let text = arguments["url"]
        .as_str()
        .ok_or_else(|| bad("must be a string".into()))?;
    let url = reqwest::Url::parse(text).map_err(|e| bad(format!("`{text}` is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad(format!(
            "`{text}` must be an http:// or https:// URL with a host"
        )));
    }
    Ok(url)
}

pub(super) async fn fetch(http: &reqwest::Client, arguments: &Value) -> Result<Value, ApiError> {
    let url = url_of(arguments)?;
    let limit = arguments["maxBytes"]
        .as_u64()
        .unwrap_or(MAX_BYTES)
        .min(MAX_BYTES) as usize;
    let mut response = http
        .get(url.clone())
        .timeout(TOOL_TIMEOUT)
        .send()
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "tool_unreachable",
                format!("http_fetch {url}: {e}"),
            )
        })?;
    let header = |name: reqwest::header::HeaderName| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let content_type = header(reqwest::header::CONTENT_TYPE);
    let location = header(reqwest::header::LOCATION);
    let status = response.status().as_u16();
    let mut body = Vec::new();
    let mut truncated = false;
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| tool_failed(format!("http_fetch {url}: the reply broke off: {e}")))?
    {
        let room = limit - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            truncated = true;
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(json!({
        "status": status, "contentType": content_type, "location": location,
        "body": String::from_utf8_lossy(&body), "truncated": truncated,
    }))
}
