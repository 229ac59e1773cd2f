//! MCP servers registered with the tool registry: how to reach each one, and what its
//! tools inherit (risk tier, rate limit, cost model), since MCP says nothing of those.

use crate::enums::{McpServerStatus, RiskTier};
use crate::time::{Timestamp, rfc3339_micros};
use crate::tool::ToolCostModel;
use crate::validate::{FieldError, text};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Longest server name: its tools are named `<server>.<tool>` within 128 characters.
pub const MAX_SERVER_NAME: usize = 64;
const MAX_ARGS: usize = 64;
const MAX_ARG_LEN: usize = 4096;

/// How the registry talks to an MCP server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "transport", rename_all = "snake_case")]
pub enum McpTransport {
    /// A process the registry spawns, speaking newline-delimited JSON-RPC on stdio.
    Stdio { command: Vec<String> },
    /// A Streamable HTTP endpoint.
    Http { url: String },
}

/// Body of `POST /api/v1/mcp/servers`: a `command` or a `url`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewMcpServer {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The risk tier of every tool the server offers.
    #[serde(default = "default_tier")]
    pub risk_tier: RiskTier,
    /// Invocations per minute, per tool.
    #[serde(default)]
    pub rate_limit: Option<i32>,
    #[serde(default)]
    pub cost_model: Option<ToolCostModel>,
}

fn default_tier() -> RiskTier {
    RiskTier::Medium
}

impl NewMcpServer {
    /// Checks the fields and returns the transport they describe.
    pub fn validate(&self) -> Result<McpTransport, FieldError> {
        text("name", &self.name, MAX_SERVER_NAME)?;
        if !self
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(FieldError::new(
                "name",
                "may hold only letters, digits, `_` and `-` (tools are named `<server>.<tool>`)",
            ));
        }
        if let Some(limit) = self.rate_limit
            && limit <= 0
        {
            return Err(FieldError::new(
                "rateLimit",
                "must be a positive number of invocations per minute",
            ));
        }
        if let Some(cost) = &self.cost_model {
            cost.validate()?;
        }
        match (&self.command, &self.url) {
            (Some(command), None) => {
                if command.is_empty() || command.len() > MAX_ARGS {
                    return Err(FieldError::new(
                        "command",
                        format!("must hold the program and its arguments (1 to {MAX_ARGS})"),
                    ));
                }
                text("command[0]", &command[0], MAX_ARG_LEN)?;
                if let Some(i) = command
                    .iter()
                    .position(|a| a.len() > MAX_ARG_LEN || a.contains('\0'))
                {
                    return Err(FieldError::new(
                        format!("command[{i}]"),
                        format!("must be at most {MAX_ARG_LEN} bytes without NUL"),
                    ));
                }
                Ok(McpTransport::Stdio {
                    command: command.clone(),
                })
            }
            (None, Some(url)) => {
                text("url", url, 2048)?;
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(FieldError::new("url", "must be an http:// or https:// URL"));
                }
                Ok(McpTransport::Http { url: url.clone() })
            }
            _ => Err(FieldError::new(
                "command",
                "give exactly one of `command` (stdio) or `url` (Streamable HTTP)",
            )),
        }
    }

    pub fn into_server(self, transport: McpTransport, id: Uuid, now: Timestamp) -> McpServer {
        McpServer {
            id,
            name: self.name,
            transport,
            risk_tier: self.risk_tier,
            rate_limit: self.rate_limit,
            cost_model: self.cost_model,
            status: McpServerStatus::Active,
            registered_at: now,
        }
    }
}

/// A registered MCP server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct McpServer {
    pub id: Uuid,
    pub name: String,
    #[serde(flatten)]
    pub transport: McpTransport,
    pub risk_tier: RiskTier,
    pub rate_limit: Option<i32>,
    pub cost_model: Option<ToolCostModel>,
    pub status: McpServerStatus,
    #[serde(with = "rfc3339_micros")]
    pub registered_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn new(body: serde_json::Value) -> NewMcpServer {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn a_server_has_a_plain_name_and_exactly_one_transport() {
        let stdio = new(json!({"name": "files", "command": ["python3", "server.py"]}));
        assert_eq!(
            stdio.validate().unwrap(),
            McpTransport::Stdio {
                command: vec!["python3".into(), "server.py".into()]
            }
        );
        assert_eq!(stdio.risk_tier, RiskTier::Medium);
        let http = new(json!({"name": "remote", "url": "http://127.0.0.1:9/mcp"}));
        assert!(matches!(http.validate(), Ok(McpTransport::Http { .. })));
        let both = new(json!({"name": "x", "command": ["a"], "url": "http://h/"}));
        assert_eq!(both.validate().unwrap_err().field, "command");
        let neither = new(json!({"name": "x"}));
        assert_eq!(neither.validate().unwrap_err().field, "command");
        let dotted = new(json!({"name": "a.b", "command": ["a"]}));
        assert_eq!(dotted.validate().unwrap_err().field, "name");
        let empty = new(json!({"name": "a", "command": []}));
        assert_eq!(empty.validate().unwrap_err().field, "command");
        let ftp = new(json!({"name": "a", "url": "ftp://h/"}));
        assert_eq!(ftp.validate().unwrap_err().field, "url");
    }

    #[test]
    fn the_transport_is_flattened_into_the_server() {
        let server = new(json!({"name": "files", "command": ["srv"]}));
        let transport = server.validate().unwrap();
        let server = server.into_server(transport, Uuid::nil(), crate::time::now());
        let value = serde_json::to_value(&server).unwrap();
        assert_eq!(value["transport"], "stdio");
        assert_eq!(value["command"], json!(["srv"]));
        let back: McpServer = serde_json::from_value(value).unwrap();
        assert_eq!(back, server);
    }
}
