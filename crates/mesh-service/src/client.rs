//! The HTTP half of a service client: calls another service's API with the caller's key
//! and turns its error bodies back into `ApiError`s, so a failure reads the same
//! in-process and across the wire.

use crate::error::ErrorBody;
use crate::{ApiError, ServiceName};
use axum::http::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct HttpClient {
    service: ServiceName,
    base: String,
    http: reqwest::Client,
}

pub use reqwest::Method;

impl HttpClient {
    pub fn new(service: ServiceName, base_url: &str) -> Result<Self, ApiError> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| ApiError::internal(format!("HTTP client: {e}")))?;
        Ok(Self {
            service,
            base: base_url.trim_end_matches('/').to_string(),
            http,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path_and_query: &str,
        token: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T, ApiError> {
        let url = format!("{}{}", self.base, path_and_query);
        let mut request = self.http.request(method, &url).bearer_auth(token);
        // Calls made inside a span carry it, so the callee's spans join the trace.
        if let Some(parent) = mesh_telemetry::traceparent() {
            request = request.header(mesh_telemetry::TRACEPARENT, parent);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| {
            ApiError::unavailable(
                "dependency_unavailable",
                format!("{} at {} is unreachable: {e}", self.service, self.base),
            )
        })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| {
            ApiError::unavailable(
                "dependency_unavailable",
                format!("{} at {} broke off its reply: {e}", self.service, self.base),
            )
        })?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "bad_gateway",
                    format!(
                        "{} sent a reply this version cannot read: {e}",
                        self.service
                    ),
                )
            });
        }
        let status = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => Err(ApiError {
                status,
                code: body.error.code,
                message: body.error.message,
                field: body.error.field,
                retry_after_secs: None,
            }),
            Err(_) => Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                format!("{} answered {status} without an error body", self.service),
            )),
        }
    }
}

/// `?k=v&…` from a struct (null fields dropped) or a list of pairs; empty when nothing is set.
pub fn query_string<T: serde::Serialize + ?Sized>(query: &T) -> Result<String, ApiError> {
    let value = serde_json::to_value(query).map_err(|e| ApiError::internal(e.to_string()))?;
    let pairs: Vec<(String, String)> = match value {
        serde_json::Value::Object(map) => map
            .into_iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| {
                (
                    k,
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string()),
                )
            })
            .collect(),
        serde_json::Value::Array(items) => items
            .into_iter()
            .filter_map(|pair| {
                let k = pair.get(0)?.as_str()?.to_string();
                let v = pair.get(1)?.as_str()?.to_string();
                Some((k, v))
            })
            .collect(),
        _ => Vec::new(),
    };
    if pairs.is_empty() {
        return Ok(String::new());
    }
    let encoded: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    Ok(format!("?{}", encoded.join("&")))
}

fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
