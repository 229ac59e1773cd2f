use crate::agent_client::AgentRegistryClient;
use crate::mcp::McpHub;
use mesh_policy::{Enforcer, Point};
use mesh_service::buckets::{Bucket, BucketStore};
use mesh_service::{ApiError, ServiceContext};
use mesh_types::tool::ToolFilter;
use mesh_types::{EventDraft, NewTool, Page, PageRequest, Principal, Tool, ToolStatus};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use tokio::sync::watch;
use uuid::Uuid;

/// `[tools]`: what the built-in tools may touch.
#[derive(Debug, Clone, Default)]
pub struct ToolsConfig {
    /// Directories `file_read` and `file_write` may use (and nothing outside them).
    pub allowed_paths: Vec<PathBuf>,
    /// `redis://HOST:PORT[/DB][?prefix=NAME]`: where tools' `rateLimit` buckets live,
    /// shared by every tool-registry process using it; default this process's memory.
    pub limits_store: Option<String>,
    /// The mounted-secrets directory MCP servers' `secret://` settings are read from.
    pub secrets_dir: Option<PathBuf>,
}

/// The tool registry's core.
pub struct ToolRegistry {
    ctx: ServiceContext,
    policy: Arc<Enforcer>,
    /// Calls tools' endpoints and `http_fetch` URLs. It never follows redirects: a
    /// redirect would reach a host the egress decision never saw.
    http: reqwest::Client,
    /// Each tool's `rateLimit` (invocations per minute): in this process, or in Redis
    /// shared with other tool-registry processes (`[tools] limits_store`).
    limits: BucketStore,
    pub(crate) config: ToolsConfig,
    /// Registers the agent an MCP client acts as when it names none.
    pub(crate) agents: AgentRegistryClient,
    /// The agent each API key acts as over `/mcp`, once found or created.
    pub(crate) mcp_agents: Mutex<HashMap<Uuid, Uuid>>,
    /// Connections to registered MCP servers.
    pub(crate) mcp: McpHub,
    /// Set by [`ToolRegistry::start`]; background connections stop when it flips.
    pub(crate) shutdown: OnceLock<watch::Receiver<bool>>,
    /// Itself, for the background tasks a request starts (an MCP connection's keeper).
    me: Weak<ToolRegistry>,
    /// Where tool arguments and outputs are archived; unset keeps only their hashes.
    pub(crate) archive: OnceLock<Arc<mesh_archive::Archive>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToolListQuery {
    pub status: Option<ToolStatus>,
    pub name: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

impl ToolRegistry {
    /// `limits` is opened from `config.limits_store` by the caller (it connects, so
    /// building the registry itself stays synchronous).
    pub fn new(
        ctx: ServiceContext,
        policy: Arc<Enforcer>,
        config: ToolsConfig,
        agents: AgentRegistryClient,
        limits: BucketStore,
    ) -> Arc<Self> {
        // Building fails only when the TLS backend (rustls) cannot initialise, and then
        // no client could be built at all.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Arc::new_cyclic(|me| Self {
            ctx,
            policy,
            http,
            limits,
            config,
            agents,
            mcp_agents: Mutex::new(HashMap::new()),
            mcp: McpHub::default(),
            shutdown: OnceLock::new(),
            me: me.clone(),
            archive: OnceLock::new(),
        })
    }

    /// Archives every call's arguments and output from now on (`[archive]`).
    pub fn set_archive(&self, archive: Arc<mesh_archive::Archive>) {
        self.ctx
            .metrics
            .add_collector(archive.collector(self.ctx.name.as_str()));
        let _ = self.archive.set(archive);
    }

    pub(crate) fn me(&self) -> Option<Arc<ToolRegistry>> {
        self.me.upgrade()
    }

    /// What a serving tool registry does once: makes the default workspace, registers
    /// the built-in tools if they are missing, and reconnects to the registered MCP
    /// servers (in the background: a server that is down must not hold up start-up).
    pub async fn start(self: &Arc<Self>, shutdown: watch::Receiver<bool>) {
        let _ = self.shutdown.set(shutdown);
        for dir in &self.config.allowed_paths {
            if let Err(e) = std::fs::create_dir_all(dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot create an allowed directory for the file tools");
            }
        }
        if let Err(e) = crate::builtin::register_all(self).await {
            tracing::error!(error = %e, "cannot register the built-in tools");
        }
        match self.ctx.store.mcp_servers.list_mcp_servers().await {
            Ok(servers) => {
                for server in servers {
                    if server.status == mesh_types::McpServerStatus::Active {
                        crate::mcp::supervise(self.clone(), server, None);
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read the registered MCP servers"),
        }
    }

    pub(crate) fn policy(&self) -> &Enforcer {
        &self.policy
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The secret store MCP servers' credentials come from, if one is configured.
    pub(crate) fn secrets(&self) -> Option<mesh_service::SecretDir> {
        self.config
            .secrets_dir
            .clone()
            .map(mesh_service::SecretDir::new)
    }

    /// A token for one invocation of `tool`, or 429 with when to try again.
    pub(crate) async fn take_invocation(&self, tool: &Tool) -> Result<(), ApiError> {
        let Some(per_minute) = tool.rate_limit.filter(|n| *n > 0) else {
            return Ok(());
        };
        let bucket = Bucket {
            // Named apart from the gateway's buckets, should they share a prefix.
            key: format!("tool:{}", tool.id),
            rate: f64::from(per_minute) / 60.0,
            burst: f64::from(per_minute),
        };
        let wait = self.limits.take(std::slice::from_ref(&bucket)).await?;
        if wait.is_zero() {
            return Ok(());
        }
        let secs = wait.as_secs_f64().ceil() as u64;
        Err(ApiError::rate_limited(
            format!(
                "tool {} allows {per_minute} invocations a minute; try again in {secs} s",
                tool.name
            ),
            secs,
        ))
    }

    pub fn context(&self) -> &ServiceContext {
        &self.ctx
    }

    pub async fn register(&self, caller: &Principal, new: NewTool) -> Result<Tool, ApiError> {
        new.validate()?;
        check_schema("inputSchema", &new.input_schema)?;
        check_schema("outputSchema", &new.output_schema)?;
        let service = self.ctx.name.as_str();
        let (new, decision) = self
            .policy
            .admit_new(Point::ToolRegister, "tool", caller, service, new)
            .await?;
        new.validate()?;
        let tool = new.into_tool(Uuid::now_v7(), mesh_types::time::now());
        let event = registered_event(&tool, &caller.name).payload(json!({
            "toolId": tool.id,
            "toolName": tool.name,
            "version": tool.version,
            "riskTier": tool.risk_tier,
            "rateLimit": tool.rate_limit,
            "costModel": tool.cost_model,
            "keyId": caller.key_id,
        }));
        self.ctx
            .store
            .tools
            .insert_tool(&tool, vec![event, decision])
            .await?;
        Ok(tool)
    }

    pub async fn get(&self, id: Uuid) -> Result<Tool, ApiError> {
        self.ctx
            .store
            .tools
            .get_tool(id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("tool {id} not found")))
    }

    /// A tool by id or, failing that, by name.
    pub async fn resolve(&self, id_or_name: &str) -> Result<Tool, ApiError> {
        if let Ok(id) = Uuid::parse_str(id_or_name) {
            return self.get(id).await;
        }
        self.find_by_name(id_or_name)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no tool named `{id_or_name}`")))
    }

    pub(crate) async fn find_by_name(&self, name: &str) -> Result<Option<Tool>, ApiError> {
        let filter = ToolFilter {
            name: Some(name.to_string()),
            ..ToolFilter::default()
        };
        let page = self
            .ctx
            .store
            .tools
            .list_tools(&filter, &PageRequest::new(Some(1), None))
            .await?;
        Ok(page.items.into_iter().next())
    }

    pub async fn list(&self, query: ToolListQuery) -> Result<Page<Tool>, ApiError> {
        let filter = ToolFilter {
            status: query.status,
            name: query.name,
            mcp_server: None,
        };
        let page = PageRequest::new(query.limit, query.cursor);
        Ok(self.ctx.store.tools.list_tools(&filter, &page).await?)
    }

    pub async fn retire(&self, caller: &Principal, id: Uuid) -> Result<Tool, ApiError> {
        let event = EventDraft::new("tool_retired", &caller.name, "tool", Some(id.to_string()))
            .payload(json!({"toolId": id}));
        Ok(self.ctx.store.tools.retire_tool(id, vec![event]).await?)
    }
}

/// The `tool_registered` event of `tool`, before its payload.
pub(crate) fn registered_event(tool: &Tool, actor: &str) -> EventDraft {
    EventDraft::new("tool_registered", actor, "tool", Some(tool.id.to_string()))
}

/// A schema must be a JSON Schema document: an object or boolean that validates
/// against the metaschema of its `$schema` (2020-12 when absent).
pub(crate) fn check_schema(field: &str, schema: &Value) -> Result<(), ApiError> {
    if !(schema.is_object() || schema.is_boolean()) {
        return Err(ApiError::invalid(
            field,
            format!("{field}: a JSON Schema must be an object or a boolean"),
        ));
    }
    jsonschema::meta::validate(schema).map_err(|err| {
        let at = err.instance_path().to_string();
        let location = if at.is_empty() {
            String::new()
        } else {
            format!(" at {at}")
        };
        ApiError::invalid(
            field,
            format!("{field}: not a valid JSON Schema{location}: {err}"),
        )
    })?;
    // Refuse schemas the validator cannot compile (bad regex patterns, dangling $refs).
    jsonschema::validator_for(schema).map_err(|err| {
        ApiError::invalid(field, format!("{field}: schema cannot be compiled: {err}"))
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_schema;
    use serde_json::json;

    #[test]
    fn schemas_are_checked_against_the_metaschema() {
        assert!(check_schema("inputSchema", &json!({"type": "object"})).is_ok());
        assert!(check_schema("inputSchema", &json!(true)).is_ok());
        let bad_type = check_schema("inputSchema", &json!({"type": "objekt"})).unwrap_err();
        assert_eq!(bad_type.field.as_deref(), Some("inputSchema"));
        assert!(
            bad_type.message.contains("not a valid JSON Schema"),
            "{}",
            bad_type.message
        );
        assert!(check_schema("outputSchema", &json!({"minLength": -1})).is_err());
        assert!(check_schema("outputSchema", &json!("string")).is_err());
        assert!(check_schema("outputSchema", &json!({"$ref": "#/$defs/missing"})).is_err());
    }
}
