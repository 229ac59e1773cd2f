//! Built-in tools, run in the registry's own process and registered at start-up when
//! missing: `file_read` and `file_write` within the allowlisted directories
//! (`[tools] allowed_paths`), and `http_fetch`, whose URL goes through the `egress`
//! point like every other outbound call. They have no endpoint; invocation dispatches
//! them here after the same checks as any tool.

mod fetch;
mod files;

use crate::tools::{ToolRegistry, registered_event};
use mesh_service::ApiError;
use mesh_store::StoreError;
use mesh_types::{RiskTier, Tool, ToolBackend, ToolStatus};
use serde_json::{Value, json};
use uuid::Uuid;

/// Largest file or page a built-in tool reads or writes.
const MAX_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Builtin {
    FileRead,
    FileWrite,
    HttpFetch,
}

impl Builtin {
    pub const ALL: [Builtin; 3] = [Builtin::FileRead, Builtin::FileWrite, Builtin::HttpFetch];

    pub fn named(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Builtin::FileRead => "file_read",
            Builtin::FileWrite => "file_write",
            Builtin::HttpFetch => "http_fetch",
        }
    }

    /// The URL the call will reach, for the egress point (only `http_fetch` has one).
    pub fn destination(self, arguments: &Value) -> Result<Option<reqwest::Url>, ApiError> {
        match self {
            Builtin::HttpFetch => fetch::url_of(arguments).map(Some),
            Builtin::FileRead | Builtin::FileWrite => Ok(None),
        }
    }

    pub async fn run(self, registry: &ToolRegistry, arguments: &Value) -> Result<Value, ApiError> {
        match self {
            Builtin::FileRead => files::read(&registry.config, arguments).await,
            Builtin::FileWrite => files::write(&registry.config, arguments).await,
            Builtin::HttpFetch => fetch::fetch(registry.http(), arguments).await,
        }
    }

    fn definition(self) -> Tool {
        let (description, risk_tier, input, output) = match self {
            Builtin::FileRead => (
                "Read a UTF-8 text file inside the mesh's allowed directories. A relative \
                 path is taken from the first allowed directory.",
                RiskTier::Low,
                object(
                    &["path"],
                    json!({"path": path_schema(), "maxBytes": max_bytes_schema()}),
                ),
                object(
                    &["path", "content", "bytes", "truncated"],
                    json!({
                        "path": {"type": "string"},
                        "content": {"type": "string"},
                        "bytes": {"type": "integer", "minimum": 0},
                        "truncated": {"type": "boolean"},
                    }),
                ),
            ),
            Builtin::FileWrite => (
                "Write (or append) a UTF-8 text file inside the mesh's allowed directories.",
                RiskTier::Medium,
                object(
                    &["path", "content"],
                    json!({
                        "path": path_schema(),
                        "content": {"type": "string", "maxLength": MAX_BYTES},
                        "append": {"type": "boolean", "default": false},
                        "createDirs": {"type": "boolean", "default": false,
                                       "description": "Create missing parent directories"},
                    }),
                ),
                object(
                    &["path", "bytes"],
                    json!({"path": {"type": "string"}, "bytes": {"type": "integer", "minimum": 0}}),
                ),
            ),
            Builtin::HttpFetch => (
                "GET a URL (http or https) whose host the egress policy allows; redirects \
                 are returned, not followed.",
                RiskTier::Medium,
                object(
                    &["url"],
                    json!({
                        "url": {"type": "string", "minLength": 1, "maxLength": 2048},
                        "maxBytes": max_bytes_schema(),
                    }),
                ),
                object(
                    &["status", "body", "truncated"],
                    json!({
                        "status": {"type": "integer"},
                        "contentType": {"type": ["string", "null"]},
                        "location": {"type": ["string", "null"]},
                        "body": {"type": "string"},
                        "truncated": {"type": "boolean"},
                    }),
                ),
            ),
        };
        Tool {
            id: Uuid::now_v7(),
            name: self.name().to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            description: Some(description.to_string()),
            input_schema: input,
            output_schema: output,
            risk_tier,
            rate_limit: None,
            cost_model: None,
            endpoint: None,
            backend: ToolBackend::Builtin,
            status: ToolStatus::Active,
            registered_at: mesh_types::time::now(),
        }
    }
}

fn object(required: &[&str], properties: Value) -> Value {
    json!({"type": "object", "additionalProperties": false, "required": required,
           "properties": properties})
}

fn path_schema() -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": 4096})
}

fn max_bytes_schema() -> Value {
    json!({"type": "integer", "minimum": 1, "maximum": MAX_BYTES})
}

/// Registers each built-in tool that is missing and brings an older definition up to
/// date. Safe to run from several processes at once: a name another process inserted
/// first is a conflict, and the tool is there.
pub(crate) async fn register_all(registry: &ToolRegistry) -> Result<(), ApiError> {
    let tools = &registry.context().store.tools;
    for builtin in Builtin::ALL {
        let wanted = builtin.definition();
        match registry.find_by_name(builtin.name()).await? {
            None => {
                let event = registered_event(&wanted, "system").payload(json!({
                    "toolId": wanted.id, "toolName": wanted.name, "version": wanted.version,
                    "riskTier": wanted.risk_tier, "builtin": true,
                }));
                match tools.insert_tool(&wanted, vec![event]).await {
                    Ok(()) | Err(StoreError::Conflict(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Some(existing) if existing.backend != ToolBackend::Builtin => {
                tracing::warn!(
                    tool = builtin.name(),
                    "a registered tool has a built-in tool's name; the built-in is not available"
                );
            }
            Some(existing) => {
                let current = Tool {
                    id: existing.id,
                    registered_at: existing.registered_at,
                    status: existing.status,
                    // Operators may tune these; the registry leaves them alone.
                    risk_tier: existing.risk_tier,
                    rate_limit: existing.rate_limit,
                    cost_model: existing.cost_model.clone(),
                    ..wanted
                };
                if current != existing && existing.status != ToolStatus::Retired {
                    let event = mesh_types::EventDraft::new(
                        "tool_updated",
                        "system",
                        "tool",
                        Some(existing.id.to_string()),
                    )
                    .payload(json!({"toolId": existing.id, "toolName": existing.name, "version": current.version}));
                    match tools.update_tool(&current, vec![event]).await {
                        Ok(_) | Err(StoreError::Conflict(_)) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_definition_has_valid_schemas() {
        for builtin in Builtin::ALL {
            let tool = builtin.definition();
            crate::tools::check_schema("inputSchema", &tool.input_schema).unwrap();
            crate::tools::check_schema("outputSchema", &tool.output_schema).unwrap();
            assert_eq!(Builtin::named(&tool.name), Some(builtin));
        }
        assert_eq!(Builtin::named("file_delete"), None);
    }
}
