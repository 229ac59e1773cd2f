//! The connections to registered MCP servers, one per server and process, each kept by
//! a supervisor task: it reconnects with backoff when the server goes away, marks the
//! server's tools `unhealthy` while it is gone and `active` again once it is back.

use super::client::{McpClient, McpError};
use super::servers::{mark_unhealthy, sync_tools};
use crate::invoke::{Called, TOOL_TIMEOUT, tool_failed};
use crate::tools::ToolRegistry;
use axum::http::StatusCode;
use mesh_service::ApiError;
use mesh_types::{McpServer, McpServerStatus};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, watch};

const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long a call waits for a server still making its first connection (right after
/// start-up, say).
const CONNECT_WAIT: Duration = Duration::from_secs(10);

#[derive(Default)]
pub(crate) struct McpHub {
    links: Mutex<HashMap<String, Link>>,
    /// Woken whenever a link comes up or goes down.
    changed: Notify,
}

struct Link {
    client: Option<Arc<McpClient>>,
    last_error: Option<String>,
    /// Sending `true` (or dropping it) stops the supervisor.
    stop: watch::Sender<bool>,
}

/// What this process knows of a server's connection.
pub(crate) enum LinkState {
    /// Not supervised here (registered by another process, or retired).
    Unknown,
    /// Supervised, first connection not yet made.
    Connecting,
    Up(Arc<McpClient>),
    Down(String),
}

impl McpHub {
    pub fn state(&self, server: &str) -> LinkState {
        let Ok(links) = self.links.lock() else {
            return LinkState::Unknown;
        };
        match links.get(server) {
            None => LinkState::Unknown,
            Some(Link {
                client: Some(client),
                ..
            }) => LinkState::Up(client.clone()),
            Some(link) => match &link.last_error {
                Some(reason) => LinkState::Down(reason.clone()),
                None => LinkState::Connecting,
            },
        }
    }

    /// Takes charge of a server, already connected through `client` if given (so a
    /// caller that connected sees the link up at once); `None` when a supervisor
    /// already has it.
    fn claim(&self, server: &str, client: Option<Arc<McpClient>>) -> Option<watch::Receiver<bool>> {
        let mut links = self.links.lock().ok()?;
        if links.contains_key(server) {
            return None;
        }
        let (stop, stopped) = watch::channel(false);
        links.insert(
            server.to_string(),
            Link {
                client,
                last_error: None,
                stop,
            },
        );
        Some(stopped)
    }

    fn set(&self, server: &str, client: Option<Arc<McpClient>>, error: Option<String>) {
        if let Ok(mut links) = self.links.lock()
            && let Some(link) = links.get_mut(server)
        {
            link.client = client;
            link.last_error = error;
        }
        self.changed.notify_waiters();
    }

    /// The link's state once it is no longer connecting (or after `wait`).
    async fn settled(&self, server: &str, wait: Duration) -> LinkState {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before looking, so a change in between is not missed.
            let changed = self.changed.notified();
            match self.state(server) {
                LinkState::Connecting => {}
                settled => return settled,
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.state(server);
            }
        }
    }

    /// Stops the server's supervisor, which closes its connection.
    pub fn release(&self, server: &str) {
        if let Ok(mut links) = self.links.lock()
            && let Some(link) = links.remove(server)
        {
            let _ = link.stop.send(true);
        }
    }
}

/// Keeps a connection to `server` for as long as this process serves, starting from
/// `first` when the caller already connected.
pub(crate) fn supervise(
    registry: Arc<ToolRegistry>,
    server: McpServer,
    first: Option<Arc<McpClient>>,
) {
    let Some(mut stop) = registry.mcp.claim(&server.name, first.clone()) else {
        return;
    };
    let mut shutdown = registry.shutdown.get().cloned();
    tokio::spawn(async move {
        let name = server.name.clone();
        let mut next = first;
        let mut backoff = MIN_BACKOFF;
        loop {
            let client = match next.take() {
                Some(client) => client,
                None => match McpClient::connect(
                    &server.transport,
                    registry.http(),
                    registry.secrets().as_ref(),
                )
                .await
                {
                    Ok(client) => {
                        let client = Arc::new(client);
                        // Usable before its tools are marked active again.
                        registry.mcp.set(&name, Some(client.clone()), None);
                        if let Err(e) = sync_tools(&registry, &server, &client).await {
                            tracing::warn!(server = %name, error = %e, "could not bring the MCP server's tools up to date");
                        }
                        tracing::info!(server = %name, "connected to the MCP server");
                        client
                    }
                    Err(e) => {
                        registry.mcp.set(&name, None, Some(e.to_string()));
                        mark_unhealthy(&registry, &server, &e.to_string()).await;
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = stopped(&mut stop, &mut shutdown) => return,
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                },
            };
            backoff = MIN_BACKOFF;
            registry.mcp.set(&name, Some(client.clone()), None);
            loop {
                tokio::select! {
                    reason = client.closed() => {
                        tracing::warn!(server = %name, %reason, "lost the MCP server; its tools are unhealthy until it is back");
                        registry.mcp.set(&name, None, Some(reason.clone()));
                        mark_unhealthy(&registry, &server, &reason).await;
                        break;
                    }
                    () = client.tools_changed() => {
                        tracing::info!(server = %name, "the MCP server's tools changed; listing them again");
                        if let Err(e) = sync_tools(&registry, &server, &client).await {
                            tracing::warn!(server = %name, error = %e, "could not bring the MCP server's tools up to date");
                        }
                    }
                    _ = stopped(&mut stop, &mut shutdown) => {
                        client.close();
                        return;
                    }
                }
            }
        }
    });
}

/// Resolves when the supervisor is told to stop or the process drains.
async fn stopped(stop: &mut watch::Receiver<bool>, shutdown: &mut Option<watch::Receiver<bool>>) {
    let draining = async {
        match shutdown {
            Some(s) => {
                let _ = s.wait_for(|s| *s).await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = stop.wait_for(|s| *s) => {}
        _ = draining => {}
    }
}

fn unavailable(server: &str, reason: &str) -> ApiError {
    ApiError::unavailable(
        "mcp_unavailable",
        format!(
            "MCP server {server} is unreachable ({reason}); its tools are unhealthy until it is back"
        ),
    )
}

/// The live connection to `server` in this process. A server this process does not yet
/// supervise (another process registered it) is connected to now.
pub(crate) async fn client_for(
    registry: &ToolRegistry,
    server: &str,
) -> Result<Arc<McpClient>, ApiError> {
    match registry.mcp.settled(server, CONNECT_WAIT).await {
        LinkState::Up(client) => Ok(client),
        LinkState::Connecting => Err(unavailable(server, "still connecting")),
        LinkState::Down(reason) => Err(unavailable(server, &reason)),
        LinkState::Unknown => {
            let registered = registry
                .context()
                .store
                .mcp_servers
                .get_mcp_server(server)
                .await?
                .filter(|s| s.status == McpServerStatus::Active)
                .ok_or_else(|| unavailable(server, "it is retired or not registered"))?;
            let secrets = registry.secrets();
            let client =
                McpClient::connect(&registered.transport, registry.http(), secrets.as_ref())
                    .await
                    .map(Arc::new)
                    .map_err(|e| unavailable(server, &e.to_string()))?;
            if let Some(me) = registry.me() {
                supervise(me, registered, Some(client.clone()));
            }
            Ok(client)
        }
    }
}

/// `tools/call` on `server`: `structuredContent` is the output when present, else the
/// `content` array; `isError` makes the call a failure.
pub(crate) async fn call(
    client: &McpClient,
    server: &str,
    tool: &str,
    arguments: &Value,
) -> Called {
    let result = match client.call_tool(tool, arguments, TOOL_TIMEOUT).await {
        Ok(result) => result,
        Err(McpError::Unreachable(reason)) => return Called::failed(unavailable(server, &reason)),
        Err(McpError::Timeout(why)) => {
            return Called::failed(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "tool_timeout",
                format!("MCP server {server}, tool {tool}: {why}"),
            ));
        }
        Err(e) => {
            return Called::failed(tool_failed(format!(
                "MCP server {server} refused tools/call {tool}: {e}"
            )));
        }
    };
    let output = match result.get("structuredContent") {
        Some(structured) => structured.clone(),
        None => result.get("content").cloned().unwrap_or(Value::Null),
    };
    if result["isError"] == true {
        let text: String = result["content"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|c| c["text"].as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
            .chars()
            .take(1000)
            .collect();
        return Called {
            output,
            failure: Some(tool_failed(format!(
                "MCP server {server}: tool {tool} reported an error: {text}"
            ))),
            http_status: None,
        };
    }
    Called::ok(output)
}
