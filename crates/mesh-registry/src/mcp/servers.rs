//! Registering MCP servers (`/api/v1/mcp/servers`) and keeping their tools in step:
//! discovered tools are stored as mesh tools, and their status follows the connection.

use super::catalog::{server_version, tool_from_mcp};
use super::client::McpClient;
use super::hub::{LinkState, supervise};
use crate::tools::{ToolRegistry, registered_event};
use axum::http::StatusCode;
use mesh_policy::Point;
use mesh_service::ApiError;
use mesh_store::StoreError;
use mesh_types::mcp::hide_literals;
use mesh_types::tool::ToolFilter;
use mesh_types::{EventDraft, McpServer, NewMcpServer, PageRequest, Principal, Tool, ToolStatus};
use serde::Serialize;
use serde_json::{Value, json};
use std::sync::Arc;
use uuid::Uuid;

/// A server with what this process knows of its connection.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct McpServerView {
    #[serde(flatten)]
    pub server: McpServer,
    /// Whether this process holds a live connection to it.
    pub connected: bool,
    pub protocol_version: Option<String>,
    pub last_error: Option<String>,
}

/// A discovered tool that could not become a mesh tool, and why.
#[derive(Debug, Clone, Serialize)]
pub struct SkippedTool {
    pub name: String,
    pub reason: String,
}

/// The answer to a registration: the server, its tools, and the tools left out.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisteredServer {
    pub server: McpServerView,
    pub tools: Vec<Tool>,
    pub skipped: Vec<SkippedTool>,
}

/// The server as answers show it: literal settings hidden (see `McpTransport::shown`).
fn shown(mut server: McpServer) -> McpServer {
    server.transport = server.transport.shown();
    server
}

fn unreachable(name: &str, why: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "mcp_unreachable",
        format!("MCP server {name} is unreachable: {why}"),
    )
}

/// The server's tools as mesh tools, and the ones that cannot be.
fn discovered(
    server: &McpServer,
    client: &McpClient,
    listed: &[Value],
) -> (Vec<Tool>, Vec<SkippedTool>) {
    let version = server_version(client.server_info());
    let mut tools = Vec::new();
    let mut skipped = Vec::new();
    for entry in listed {
        match tool_from_mcp(server, &version, entry) {
            Ok(tool) if tools.iter().any(|t: &Tool| t.name == tool.name) => {
                skipped.push(SkippedTool {
                    name: tool.name,
                    reason: "listed twice".into(),
                })
            }
            Ok(tool) => tools.push(tool),
            Err(reason) => skipped.push(SkippedTool {
                name: entry["name"].as_str().unwrap_or("?").to_string(),
                reason,
            }),
        }
    }
    (tools, skipped)
}

impl ToolRegistry {
    /// `secret.read` for the caller registering `server` with a reference to `secret`:
    /// naming a secret sends it to the server on every connection, so only a caller
    /// the policy lets read it may. Returns the decision's event.
    async fn admit_secret_use(
        &self,
        caller: &Principal,
        server: &str,
        secret: &str,
    ) -> Result<EventDraft, ApiError> {
        let used_by = json!({"mcpServer": server});
        crate::secret_use::admit(self.policy(), &self.context().name, caller, secret, used_by).await
    }

    /// Connects to the server (a failure is a 502 and stores nothing), discovers its
    /// tools, and stores the server with them; the connection is then kept.
    pub async fn register_mcp_server(
        &self,
        caller: &Principal,
        new: NewMcpServer,
    ) -> Result<RegisteredServer, ApiError> {
        new.validate()?;
        let service = self.context().name.as_str();
        // The policy (and its decision log) sees the settings' names and secret
        // references, not their literal values.
        let (env, headers) = (new.env.clone(), new.headers.clone());
        let for_policy = NewMcpServer {
            env: env.as_ref().map(hide_literals),
            headers: headers.as_ref().map(hide_literals),
            ..new
        };
        let (admitted, mut decisions) = self
            .policy()
            .admit_new(
                Point::ToolRegister,
                "mcp_server",
                caller,
                service,
                for_policy,
            )
            .await
            .map(|(admitted, decision)| (admitted, vec![decision]))?;
        let new = NewMcpServer {
            env,
            headers,
            ..admitted
        };
        let transport = new.validate()?;
        for secret in transport.secret_names() {
            decisions.push(self.admit_secret_use(caller, &new.name, secret).await?);
        }
        let store = &self.context().store;
        if store.mcp_servers.get_mcp_server(&new.name).await?.is_some() {
            return Err(ApiError::conflict(format!(
                "an MCP server named `{}` is already registered",
                new.name
            )));
        }
        let server = new.into_server(transport, Uuid::now_v7(), mesh_types::time::now());
        let client = McpClient::connect(&server.transport, self.http(), self.secrets().as_ref())
            .await
            .map_err(|e| unreachable(&server.name, e))?;
        let listed = match client.list_tools().await {
            Ok(listed) => listed,
            Err(e) => {
                client.close();
                return Err(unreachable(&server.name, format!("tools/list failed: {e}")));
            }
        };
        let (tools, skipped) = discovered(&server, &client, &listed);
        let mut events = vec![
            EventDraft::new(
                "mcp_server_registered",
                &caller.name,
                "mcp_server",
                Some(server.id.to_string()),
            )
            .payload(json!({
                "serverId": server.id, "serverName": server.name,
                "transport": server.transport.shown(),
                "protocolVersion": client.protocol_version(), "serverInfo": client.server_info(),
                "tools": tools.iter().map(|t| &t.name).collect::<Vec<_>>(),
                "skipped": skipped, "keyId": caller.key_id,
            })),
        ];
        events.extend(decisions);
        events.extend(tools.iter().map(|t| {
            registered_event(t, &caller.name).payload(json!({
                "toolId": t.id, "toolName": t.name, "version": t.version,
                "riskTier": t.risk_tier, "mcpServer": server.name,
            }))
        }));
        if let Err(e) = store
            .mcp_servers
            .insert_mcp_server(&server, &tools, events)
            .await
        {
            client.close();
            return Err(e.into());
        }
        let client = Arc::new(client);
        let view = McpServerView {
            server: shown(server.clone()),
            connected: true,
            protocol_version: Some(client.protocol_version().to_string()),
            last_error: None,
        };
        if let Some(me) = self.me() {
            supervise(me, server, Some(client));
        }
        Ok(RegisteredServer {
            server: view,
            tools,
            skipped,
        })
    }

    pub async fn list_mcp_servers(&self) -> Result<Vec<McpServerView>, ApiError> {
        let servers = self.context().store.mcp_servers.list_mcp_servers().await?;
        Ok(servers.into_iter().map(|s| self.view(s)).collect())
    }

    fn view(&self, server: McpServer) -> McpServerView {
        let server = shown(server);
        let (connected, protocol_version, last_error) = match self.mcp.state(&server.name) {
            LinkState::Up(client) => (true, Some(client.protocol_version().to_string()), None),
            LinkState::Down(reason) => (false, None, Some(reason)),
            LinkState::Connecting | LinkState::Unknown => (false, None, None),
        };
        McpServerView {
            server,
            connected,
            protocol_version,
            last_error,
        }
    }

    /// Retires the server and its tools, and drops the connection.
    pub async fn retire_mcp_server(
        &self,
        caller: &Principal,
        name: &str,
    ) -> Result<McpServerView, ApiError> {
        let actor = caller.name.clone();
        let tool_event: mesh_store::EventFor<Tool> = Arc::new(move |t: &Tool| {
            EventDraft::new("tool_retired", &actor, "tool", Some(t.id.to_string()))
                .payload(json!({"toolId": t.id, "toolName": t.name}))
        });
        let event = EventDraft::new(
            "mcp_server_retired",
            &caller.name,
            "mcp_server",
            Some(name.to_string()),
        )
        .payload(json!({"serverName": name}));
        let server = self
            .context()
            .store
            .mcp_servers
            .retire_mcp_server(name, tool_event, vec![event])
            .await?;
        self.mcp.release(name);
        Ok(self.view(server))
    }
}

async fn tools_of(registry: &ToolRegistry, server: &str) -> Result<Vec<Tool>, StoreError> {
    let filter = ToolFilter {
        mcp_server: Some(server.to_string()),
        ..ToolFilter::default()
    };
    let mut tools = Vec::new();
    let mut cursor = None;
    loop {
        let page = registry
            .context()
            .store
            .tools
            .list_tools(&filter, &PageRequest::new(Some(500), cursor))
            .await?;
        tools.extend(page.items);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(tools),
        }
    }
}

fn status_event(tool: &Tool, action: &str, reason: &str) -> EventDraft {
    EventDraft::new(action, "system", "tool", Some(tool.id.to_string())).payload(json!({
        "toolId": tool.id, "toolName": tool.name, "mcpServer": tool.backend.mcp_server(),
        "status": tool.status, "reason": reason,
    }))
}

/// After a (re)connection: tools the server lists are stored or updated and active;
/// tools it no longer lists are unhealthy. Retired tools stay retired. A tool another
/// process stored first (a name conflict) is left to it.
pub(crate) async fn sync_tools(
    registry: &ToolRegistry,
    server: &McpServer,
    client: &McpClient,
) -> Result<(), ApiError> {
    let listed = client
        .list_tools()
        .await
        .map_err(|e| unreachable(&server.name, e))?;
    let (wanted, skipped) = discovered(server, client, &listed);
    for s in &skipped {
        tracing::warn!(server = %server.name, tool = %s.name, reason = %s.reason, "MCP tool left out");
    }
    let known = tools_of(registry, &server.name).await?;
    let store = &registry.context().store.tools;
    for tool in &wanted {
        let result = match known.iter().find(|k| k.name == tool.name) {
            None => {
                let event = registered_event(tool, "system").payload(json!({
                    "toolId": tool.id, "toolName": tool.name, "version": tool.version,
                    "riskTier": tool.risk_tier, "mcpServer": server.name,
                }));
                store.insert_tool(tool, vec![event]).await
            }
            Some(k) if k.status == ToolStatus::Retired => Ok(()),
            Some(k) => {
                let updated = Tool {
                    id: k.id,
                    registered_at: k.registered_at,
                    ..tool.clone()
                };
                if &updated == k {
                    Ok(())
                } else {
                    let action = if k.status == ToolStatus::Active {
                        "tool_updated"
                    } else {
                        "tool_recovered"
                    };
                    let event = status_event(&updated, action, "the MCP server lists it");
                    store.update_tool(&updated, vec![event]).await.map(|_| ())
                }
            }
        };
        match result {
            Ok(()) | Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let gone: Vec<&Tool> = known
        .iter()
        .filter(|k| k.status == ToolStatus::Active && !wanted.iter().any(|w| w.name == k.name))
        .collect();
    set_unhealthy(registry, gone, "the MCP server no longer lists it").await;
    Ok(())
}

/// The server's active tools become unhealthy (once per outage: already unhealthy
/// tools are left alone, so a server that stays down does not fill the log).
pub(crate) async fn mark_unhealthy(registry: &ToolRegistry, server: &McpServer, reason: &str) {
    match tools_of(registry, &server.name).await {
        Ok(tools) => {
            let active = tools
                .iter()
                .filter(|t| t.status == ToolStatus::Active)
                .collect();
            set_unhealthy(registry, active, reason).await;
        }
        Err(e) => {
            tracing::error!(server = %server.name, error = %e, "cannot read the MCP server's tools")
        }
    }
}

async fn set_unhealthy(registry: &ToolRegistry, tools: Vec<&Tool>, reason: &str) {
    for tool in tools {
        let unhealthy = Tool {
            status: ToolStatus::Unhealthy,
            ..tool.clone()
        };
        let event = status_event(&unhealthy, "tool_unhealthy", reason);
        match registry
            .context()
            .store
            .tools
            .update_tool(&unhealthy, vec![event])
            .await
        {
            Ok(_) | Err(StoreError::Conflict(_)) => {}
            Err(e) => {
                tracing::error!(tool = %tool.name, error = %e, "cannot mark the tool unhealthy")
            }
        }
    }
}
