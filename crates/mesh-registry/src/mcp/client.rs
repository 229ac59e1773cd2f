//! The MCP client the registry keeps per registered server: the lifecycle handshake,
//! `tools/list` and `tools/call`, over either transport.
//!
//! The handshake offers the newest revision, `2026-07-28`, in `initialize` and accepts a
//! server that answers it or `2025-11-25`. A server of the stateless `2026-07-28`
//! revision that has no `initialize` at all (-32601) is asked `server/discover` instead.
//! Under `2026-07-28` every request also carries the version in its `_meta`.

use super::http::HttpTransport;
use super::stdio::StdioTransport;
use super::{LATEST, META_VERSION, SUPPORTED};
use mesh_service::SecretDir;
use mesh_types::McpTransport;
use serde_json::{Value, json};
use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How long a server has to answer the handshake and discovery.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A server paging its tools forever is refused after this many pages.
const MAX_LIST_PAGES: usize = 100;
const METHOD_NOT_FOUND: i64 = -32601;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum McpError {
    /// The server cannot be reached: it did not start, it exited, the connection was
    /// refused, or the session ended.
    Unreachable(String),
    /// No answer in time.
    Timeout(String),
    /// The server answered something that is not MCP.
    Protocol(String),
    /// The server answered the request with a JSON-RPC error.
    Rpc { code: i64, message: String },
}

impl fmt::Display for McpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            McpError::Unreachable(why) | McpError::Protocol(why) | McpError::Timeout(why) => {
                f.write_str(why)
            }
            McpError::Rpc { code, message } => write!(f, "{message} (JSON-RPC error {code})"),
        }
    }
}

/// One of the two transports; an enum rather than a trait object, as there are two.
/// The notification a server sends when its list of tools changed.
pub(crate) const TOOLS_CHANGED: &str = "notifications/tools/list_changed";

pub(crate) enum Transport {
    Stdio(StdioTransport),
    Http(Box<HttpTransport>),
}

impl Transport {
    async fn request(
        &self,
        id: u64,
        message: &Value,
        timeout: Duration,
    ) -> Result<Value, McpError> {
        match self {
            Transport::Stdio(t) => t.request(id, message, timeout).await,
            Transport::Http(t) => t.request(id, message, timeout).await,
        }
    }

    async fn notify(&self, message: &Value) -> Result<(), McpError> {
        match self {
            Transport::Stdio(t) => t.notify(message).await,
            Transport::Http(t) => t.notify(message).await,
        }
    }
}

pub(crate) struct McpClient {
    transport: Transport,
    next_id: AtomicU64,
    version: OnceLock<String>,
    server_info: OnceLock<Value>,
}

/// The server's `env` or `headers` with each `secret://NAME` read from the secret
/// store now, at connection: values never outlive the connection that needs them.
fn resolve_settings(
    transport: &McpTransport,
    secrets: Option<&SecretDir>,
) -> Result<Vec<(String, String)>, McpError> {
    transport
        .settings()
        .iter()
        .map(|(name, value)| {
            let value = if value.starts_with(mesh_types::mcp::SECRET_PREFIX) {
                SecretDir::resolve(secrets, value)
                    .map_err(|e| McpError::Unreachable(format!("{name}: {value}: {e}")))?
            } else {
                value.clone()
            };
            Ok((name.clone(), value))
        })
        .collect()
}

pub(crate) fn client_info() -> Value {
    json!({"name": "agentic-mesh", "version": env!("CARGO_PKG_VERSION")})
}

impl McpClient {
    /// Starts the transport and completes the handshake; a failure closes it again.
    pub async fn connect(
        transport: &McpTransport,
        http: &reqwest::Client,
        secrets: Option<&SecretDir>,
    ) -> Result<McpClient, McpError> {
        let settings = resolve_settings(transport, secrets)?;
        let transport = match transport {
            McpTransport::Stdio { command, .. } => {
                Transport::Stdio(StdioTransport::spawn(command, settings)?)
            }
            McpTransport::Http { url, .. } => {
                Transport::Http(Box::new(HttpTransport::new(url, http, settings)?))
            }
        };
        let client = McpClient {
            transport,
            next_id: AtomicU64::new(1),
            version: OnceLock::new(),
            server_info: OnceLock::new(),
        };
        match client.handshake().await {
            Ok(()) => Ok(client),
            Err(e) => {
                client.close();
                Err(e)
            }
        }
    }

    async fn handshake(&self) -> Result<(), McpError> {
        let offer =
            json!({"protocolVersion": LATEST, "capabilities": {}, "clientInfo": client_info()});
        match self.send("initialize", offer, HANDSHAKE_TIMEOUT).await {
            Ok(result) => {
                let version = result["protocolVersion"].as_str().unwrap_or_default();
                if !SUPPORTED.contains(&version) {
                    return Err(McpError::Protocol(format!(
                        "the server answered protocol version `{version}`; the mesh speaks {}",
                        SUPPORTED.join(" and ")
                    )));
                }
                self.adopt(version, result["serverInfo"].clone());
                self.notify("notifications/initialized").await?;
                // A server that says its tools may change is heard between requests too.
                if result["capabilities"]["tools"]["listChanged"] == true
                    && let Transport::Http(http) = &self.transport
                {
                    http.listen();
                }
                Ok(())
            }
            Err(McpError::Rpc {
                code: METHOD_NOT_FOUND,
                ..
            }) => {
                // A stateless server: no handshake, its versions come from discovery.
                let _ = self.version.set(LATEST.to_string());
                let found = self
                    .request("server/discover", json!({}), HANDSHAKE_TIMEOUT)
                    .await?;
                let speaks_latest = found["supportedVersions"]
                    .as_array()
                    .is_some_and(|v| v.iter().any(|v| v == LATEST));
                if !speaks_latest {
                    return Err(McpError::Protocol(format!(
                        "the server has no initialize and does not list {LATEST} in server/discover"
                    )));
                }
                let info = found["_meta"]["io.modelcontextprotocol/serverInfo"].clone();
                self.adopt(LATEST, info);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn adopt(&self, version: &str, server_info: Value) {
        let _ = self.version.set(version.to_string());
        let _ = self.server_info.set(server_info);
        if let Transport::Http(http) = &self.transport {
            http.set_protocol_version(version);
        }
    }

    /// The negotiated protocol version (empty before the handshake).
    pub fn protocol_version(&self) -> &str {
        self.version.get().map(String::as_str).unwrap_or_default()
    }

    /// What the server said it is (`serverInfo`).
    pub fn server_info(&self) -> &Value {
        static NONE: Value = Value::Null;
        self.server_info.get().unwrap_or(&NONE)
    }

    /// Every tool the server lists, following `nextCursor`.
    pub async fn list_tools(&self) -> Result<Vec<Value>, McpError> {
        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_LIST_PAGES {
            let params = match &cursor {
                Some(c) => json!({"cursor": c}),
                None => json!({}),
            };
            let page = self
                .request("tools/list", params, HANDSHAKE_TIMEOUT)
                .await?;
            let listed = page["tools"].as_array().ok_or_else(|| {
                McpError::Protocol("tools/list answered without a `tools` array".into())
            })?;
            tools.extend(listed.iter().cloned());
            match page["nextCursor"].as_str() {
                Some(next) if !next.is_empty() => cursor = Some(next.to_string()),
                _ => return Ok(tools),
            }
        }
        Err(McpError::Protocol(format!(
            "tools/list kept paging past {MAX_LIST_PAGES} pages"
        )))
    }

    /// `tools/call`: the raw result (`content`, `structuredContent`, `isError`).
    pub async fn call_tool(
        &self,
        name: &str,
        arguments: &Value,
        timeout: Duration,
    ) -> Result<Value, McpError> {
        let params = json!({"name": name, "arguments": arguments});
        self.request("tools/call", params, timeout).await
    }

    /// The server's URL when it is reached over HTTP (the egress point judges it).
    pub fn url(&self) -> Option<reqwest::Url> {
        match &self.transport {
            Transport::Http(http) => Some(http.url().clone()),
            Transport::Stdio(_) => None,
        }
    }

    /// Resolves once the connection is gone, with the reason.
    pub async fn closed(&self) -> String {
        match &self.transport {
            Transport::Stdio(t) => t.closed().await,
            Transport::Http(t) => t.closed().await,
        }
    }

    /// Resolves when the server has said its tools changed since the last time this
    /// resolved (`notifications/tools/list_changed`).
    pub async fn tools_changed(&self) {
        match &self.transport {
            Transport::Stdio(t) => t.tools_changed.notified().await,
            Transport::Http(t) => t.tools_changed.notified().await,
        }
    }

    pub fn close(&self) {
        match &self.transport {
            Transport::Stdio(t) => t.close(),
            Transport::Http(t) => t.close(),
        }
    }

    /// A request of the negotiated revision: under 2026-07-28 it declares its version.
    async fn request(
        &self,
        method: &str,
        mut params: Value,
        timeout: Duration,
    ) -> Result<Value, McpError> {
        if self.protocol_version() == LATEST {
            params["_meta"] = json!({
                META_VERSION: LATEST,
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": client_info(),
            });
        }
        self.send(method, params, timeout).await
    }

    async fn send(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, McpError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let message = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let reply = match self.transport.request(id, &message, timeout).await {
            Err(McpError::Timeout(_)) => {
                return Err(McpError::Timeout(format!(
                    "no answer to {method} within {} s",
                    timeout.as_secs()
                )));
            }
            other => other?,
        };
        if let Some(error) = reply.get("error") {
            return Err(McpError::Rpc {
                code: error["code"].as_i64().unwrap_or(0),
                message: error["message"]
                    .as_str()
                    .unwrap_or("no message")
                    .to_string(),
            });
        }
        reply
            .get("result")
            .cloned()
            .ok_or_else(|| McpError::Protocol(format!("the answer to {method} has no result")))
    }

    async fn notify(&self, method: &str) -> Result<(), McpError> {
        let note = json!({"jsonrpc": "2.0", "method": method});
        tokio::time::timeout(HANDSHAKE_TIMEOUT, self.transport.notify(&note))
            .await
            .unwrap_or_else(|_| Err(McpError::Timeout(format!("{method} was not taken"))))
    }
}
