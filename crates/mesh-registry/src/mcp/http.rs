//! The Streamable HTTP transport: each message is a POST to the server's one URL; a
//! request is answered by `application/json` or by a `text/event-stream` whose events
//! carry JSON-RPC messages, among them the response. The session id the server issues
//! at initialization goes with every later request, and so does the negotiated
//! `MCP-Protocol-Version` (under 2026-07-28 also `Mcp-Method` and `Mcp-Name`).
//!
//! A refused connection, a 5xx without a JSON-RPC body, or a session the server has
//! ended closes the transport: the server is unreachable until reconnected.

use super::LATEST;
use super::client::{McpError, TOOLS_CHANGED};
use crate::invoke::MAX_TOOL_REPLY;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, watch};

const SESSION: &str = "mcp-session-id";

pub(crate) struct HttpTransport {
    url: reqwest::Url,
    http: reqwest::Client,
    /// The server's configured headers (credentials among them), on every request.
    headers: reqwest::header::HeaderMap,
    session: Mutex<Option<String>>,
    version: Mutex<Option<String>>,
    closed: watch::Sender<Option<String>>,
    /// Signalled when the server says its tools changed, in a response's event stream
    /// or on the standalone GET stream ([`HttpTransport::listen`]).
    pub(crate) tools_changed: Arc<Notify>,
}

impl HttpTransport {
    pub fn new(
        url: &str,
        http: &reqwest::Client,
        configured: Vec<(String, String)>,
    ) -> Result<Self, McpError> {
        let url = reqwest::Url::parse(url)
            .map_err(|e| McpError::Unreachable(format!("`{url}` is not a URL: {e}")))?;
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in configured {
            let bad = |what: &str| McpError::Unreachable(format!("header {name}: {what}"));
            let header = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| bad("not a header name"))?;
            let mut value = reqwest::header::HeaderValue::from_str(&value)
                .map_err(|_| bad("its value cannot be sent in a header"))?;
            // Kept out of debug output, and out of HTTP/2 header compression tables.
            value.set_sensitive(true);
            headers.insert(header, value);
        }
        Ok(HttpTransport {
            url,
            http: http.clone(),
            headers,
            session: Mutex::new(None),
            version: Mutex::new(None),
            closed: watch::channel(None).0,
            tools_changed: Arc::new(Notify::new()),
        })
    }

    pub fn url(&self) -> &reqwest::Url {
        &self.url
    }

    pub fn set_protocol_version(&self, version: &str) {
        if let Ok(mut v) = self.version.lock() {
            *v = Some(version.to_string());
        }
    }

    fn gone(&self) -> Option<String> {
        self.closed.borrow().clone()
    }

    /// Marks the transport closed (the first reason sticks) and returns the error.
    fn fail(&self, reason: String) -> McpError {
        self.closed.send_if_modified(|closed| {
            if closed.is_none() {
                *closed = Some(reason.clone());
                true
            } else {
                false
            }
        });
        McpError::Unreachable(reason)
    }

    fn post(&self, message: &Value) -> reqwest::RequestBuilder {
        let mut post = self
            .http
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json, text/event-stream")
            .body(serde_json::to_vec(message).unwrap_or_default());
        if let Ok(session) = self.session.lock()
            && let Some(session) = session.as_deref()
        {
            post = post.header(SESSION, session);
        }
        let version = self.version.lock().ok().and_then(|v| v.clone());
        if let Some(version) = version {
            if version == LATEST
                && let Some(method) = message["method"].as_str()
            {
                post = post.header("mcp-method", method);
                if let Some(name) = message["params"]["name"].as_str() {
                    post = post.header("mcp-name", name);
                }
            }
            post = post.header("mcp-protocol-version", version);
        }
        post
    }

    async fn send(&self, message: &Value) -> Result<reqwest::Response, McpError> {
        if let Some(reason) = self.gone() {
            return Err(McpError::Unreachable(reason));
        }
        let response = self
            .post(message)
            .send()
            .await
            .map_err(|e| self.fail(format!("{}: {e}", self.url)))?;
        if let Some(session) = response
            .headers()
            .get(SESSION)
            .and_then(|v| v.to_str().ok())
            && let Ok(mut kept) = self.session.lock()
        {
            *kept = Some(session.to_string());
        }
        let has_session = self.session.lock().map(|s| s.is_some()).unwrap_or(false);
        if response.status() == reqwest::StatusCode::NOT_FOUND && has_session {
            return Err(self.fail(format!("{} ended the session", self.url)));
        }
        Ok(response)
    }

    pub async fn request(
        &self,
        id: u64,
        message: &Value,
        timeout: Duration,
    ) -> Result<Value, McpError> {
        let exchange = async {
            let mut response = self.send(message).await?;
            let status = response.status();
            let is_stream = response
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/event-stream"));
            if is_stream && status.is_success() {
                return self.read_stream(&mut response, id).await;
            }
            let body = read_body(&mut response)
                .await
                .map_err(|e| self.fail(format!("{}: {e}", self.url)))?;
            match serde_json::from_slice::<Value>(&body) {
                Ok(reply) if reply.get("result").is_some() || reply.get("error").is_some() => {
                    Ok(reply)
                }
                _ if status.is_server_error() => {
                    Err(self.fail(format!("{} answered HTTP {status}", self.url)))
                }
                _ => Err(McpError::Protocol(format!(
                    "{} answered HTTP {status} without a JSON-RPC response",
                    self.url
                ))),
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(McpError::Timeout(format!(
                    "no answer within {} s",
                    timeout.as_secs()
                )))
            })
    }

    /// Reads server-sent events until the one carrying the response to `id`.
    async fn read_stream(
        &self,
        response: &mut reqwest::Response,
        id: u64,
    ) -> Result<Value, McpError> {
        let mut buffer: Vec<u8> = Vec::new();
        loop {
            while let Some(end) = event_end(&buffer) {
                let event: Vec<u8> = buffer.drain(..end).collect();
                let Some(message) = message_in(&event) else {
                    continue;
                };
                if answers(&message, id) {
                    return Ok(message);
                }
                if message["method"] == TOOLS_CHANGED {
                    self.tools_changed.notify_one();
                }
            }
            match response.chunk().await {
                Ok(Some(chunk)) if buffer.len() + chunk.len() <= MAX_TOOL_REPLY => {
                    buffer.extend_from_slice(&chunk);
                }
                Ok(Some(_)) => {
                    return Err(McpError::Protocol(format!(
                        "an event from {} exceeds {MAX_TOOL_REPLY} bytes",
                        self.url
                    )));
                }
                Ok(None) => {
                    // The stream ended; a last event may lack its blank line.
                    return message_in(&buffer)
                        .filter(|m| answers(m, id))
                        .ok_or_else(|| {
                            McpError::Protocol(format!(
                                "{}'s event stream ended without the response",
                                self.url
                            ))
                        });
                }
                Err(e) => return Err(self.fail(format!("{}: the stream broke off: {e}", self.url))),
            }
        }
    }

    /// Opens the standalone GET event stream, on which a server sends what answers no
    /// request (here, `notifications/tools/list_changed`), and keeps it open — opening
    /// it again with backoff when it ends — until the transport closes. A server
    /// without one (405, or no event stream) is left alone.
    pub fn listen(&self) {
        let mut get = self
            .http
            .get(self.url.clone())
            .headers(self.headers.clone())
            .header(ACCEPT, "text/event-stream");
        if let Some(session) = self.session.lock().ok().and_then(|s| s.clone()) {
            get = get.header(SESSION, session);
        }
        if let Some(version) = self.version.lock().ok().and_then(|v| v.clone()) {
            get = get.header("mcp-protocol-version", version);
        }
        let mut closed = self.closed.subscribe();
        let changed = self.tools_changed.clone();
        let url = self.url.clone();
        tokio::spawn(async move {
            let mut backoff = LISTEN_MIN_BACKOFF;
            loop {
                let Some(attempt) = get.try_clone() else {
                    return;
                };
                let heard = tokio::select! {
                    heard = listen_once(attempt, &changed) => heard,
                    _ = closed.wait_for(Option::is_some) => return,
                };
                match heard {
                    Heard::Unsupported => return,
                    Heard::Ended(opened) => {
                        if opened {
                            backoff = LISTEN_MIN_BACKOFF;
                        }
                        tracing::debug!(%url, "the MCP server's event stream ended; opening it again");
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = closed.wait_for(Option::is_some) => return,
                }
                backoff = (backoff * 2).min(LISTEN_MAX_BACKOFF);
            }
        });
    }

    pub async fn notify(&self, message: &Value) -> Result<(), McpError> {
        let response = self.send(message).await?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(McpError::Protocol(format!(
                "{} answered the notification with HTTP {status}",
                self.url
            )))
        }
    }

    pub async fn closed(&self) -> String {
        let mut closed = self.closed.subscribe();
        match closed.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            Err(_) => "the transport was dropped".into(),
        }
    }

    /// Ends the session (best effort) and closes the transport.
    pub fn close(&self) {
        let session = self.session.lock().ok().and_then(|s| s.clone());
        if let Some(session) = session {
            let delete = self
                .http
                .delete(self.url.clone())
                .headers(self.headers.clone())
                .header(SESSION, session);
            tokio::spawn(async move {
                let _ = delete.timeout(Duration::from_secs(5)).send().await;
            });
        }
        let _ = self.fail("closed by the mesh".into());
    }
}

async fn read_body(response: &mut reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > MAX_TOOL_REPLY {
            return Err(format!("reply larger than {MAX_TOOL_REPLY} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

const LISTEN_MIN_BACKOFF: Duration = Duration::from_secs(1);
const LISTEN_MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How one GET stream went: there is none to open (no such stream, or the session is
/// gone), or it ended (after opening or not).
enum Heard {
    Unsupported,
    Ended(bool),
}

async fn listen_once(get: reqwest::RequestBuilder, changed: &Notify) -> Heard {
    let Ok(mut response) = get.send().await else {
        return Heard::Ended(false);
    };
    let is_stream = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    // 404: the session ended (the server restarted, say). The next request finds that
    // out and the supervisor reconnects, opening a new stream; this one stops.
    if response.status() == reqwest::StatusCode::METHOD_NOT_ALLOWED
        || response.status() == reqwest::StatusCode::NOT_FOUND
        || (response.status().is_success() && !is_stream)
    {
        return Heard::Unsupported;
    }
    if !response.status().is_success() {
        return Heard::Ended(false);
    }
    let mut buffer: Vec<u8> = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        buffer.extend_from_slice(&chunk);
        while let Some(end) = event_end(&buffer) {
            let event: Vec<u8> = buffer.drain(..end).collect();
            if message_in(&event).is_some_and(|m| m["method"] == TOOLS_CHANGED) {
                changed.notify_one();
            }
        }
        if buffer.len() > MAX_TOOL_REPLY {
            break;
        }
    }
    Heard::Ended(true)
}

/// Where the first complete event in `buffer` ends (after its blank line).
fn event_end(buffer: &[u8]) -> Option<usize> {
    let lf = buffer.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = buffer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The JSON-RPC message in one event's `data:` lines, if it holds one.
fn message_in(event: &[u8]) -> Option<Value> {
    let text = String::from_utf8_lossy(event);
    let data: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(|d| d.strip_prefix(' ').unwrap_or(d))
        .collect();
    if data.is_empty() {
        return None;
    }
    serde_json::from_str(&data.join("\n")).ok()
}

/// Whether `message` is the response to request `id`.
fn answers(message: &Value, id: u64) -> bool {
    message["id"].as_u64() == Some(id)
        && (message.get("result").is_some() || message.get("error").is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_response_is_found_among_other_events() {
        let stream = b": keep-alive\n\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\nid: 7\r\ndata: {\"jsonrpc\":\"2.0\",\r\ndata: \"id\":3,\"result\":{\"ok\":true}}\r\n\r\n";
        let mut buffer = stream.to_vec();
        let mut found = None;
        while let Some(end) = event_end(&buffer) {
            let event: Vec<u8> = buffer.drain(..end).collect();
            if let Some(reply) = message_in(&event).filter(|m| answers(m, 3)) {
                found = Some(reply);
            }
        }
        assert_eq!(found.unwrap()["result"]["ok"], true);
        let other = message_in(b"data: {\"jsonrpc\":\"2.0\",\"id\":4,\"result\":{}}").unwrap();
        assert!(!answers(&other, 3));
    }
}
