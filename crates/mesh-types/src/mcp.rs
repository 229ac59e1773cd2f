//! MCP servers registered with the tool registry: how to reach each one, and what its
//! tools inherit (risk tier, rate limit, cost model), since MCP says nothing of those.

use crate::enums::{McpServerStatus, RiskTier};
use crate::time::{Timestamp, rfc3339_micros};
use crate::tool::ToolCostModel;
use crate::validate::{FieldError, text};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

/// Longest server name: its tools are named `<server>.<tool>` within 128 characters.
pub const MAX_SERVER_NAME: usize = 64;
const MAX_ARGS: usize = 64;
const MAX_ARG_LEN: usize = 4096;

/// How the registry talks to an MCP server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "transport", rename_all = "snake_case")]
pub enum McpTransport {
    /// A process the registry spawns, speaking newline-delimited JSON-RPC on stdio,
    /// with `env` added to a minimal environment.
    Stdio {
        command: Vec<String>,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        env: BTreeMap<String, String>,
    },
    /// A Streamable HTTP endpoint, sent `headers` on every request.
    Http {
        url: String,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        headers: BTreeMap<String, String>,
    },
}

/// How a value in `env` or `headers` names a secret of the mounted-secrets store,
/// resolved only when the registry connects (never stored or shown resolved).
pub const SECRET_PREFIX: &str = "secret://";
const MAX_SETTINGS: usize = 32;

impl McpTransport {
    /// The `env` or `headers` of the connection.
    pub fn settings(&self) -> &BTreeMap<String, String> {
        match self {
            McpTransport::Stdio { env, .. } => env,
            McpTransport::Http { headers, .. } => headers,
        }
    }

    /// The transport as responses and logs show it: secret references as written,
    /// literal values hidden (a literal may still be a credential someone should have
    /// stored as a secret).
    pub fn shown(&self) -> McpTransport {
        match self {
            McpTransport::Stdio { command, env } => McpTransport::Stdio {
                command: command.clone(),
                env: hide_literals(env),
            },
            McpTransport::Http { url, headers } => McpTransport::Http {
                url: url.clone(),
                headers: hide_literals(headers),
            },
        }
    }

    /// The secrets the connection needs, by name.
    pub fn secret_names(&self) -> Vec<&str> {
        self.settings()
            .values()
            .filter_map(|v| v.strip_prefix(SECRET_PREFIX))
            .collect()
    }
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
    /// For a `command`: environment variables for the process (values literal or
    /// `secret://NAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    /// For a `url`: headers sent on every request, such as `Authorization` (values
    /// literal or `secret://NAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
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
        let (field, transport) = match (&self.command, &self.url) {
            (Some(_), None) if self.headers.is_some() => {
                return Err(FieldError::new(
                    "headers",
                    "headers are for a `url` server; a `command` takes `env`",
                ));
            }
            (None, Some(_)) if self.env.is_some() => {
                return Err(FieldError::new(
                    "env",
                    "env is for a `command` server; a `url` takes `headers`",
                ));
            }
            (Some(command), None) => ("env", self.transport_of_command(command)?),
            (None, Some(url)) => ("headers", self.transport_of_url(url)?),
            _ => {
                return Err(FieldError::new(
                    "command",
                    "give exactly one of `command` (stdio) or `url` (Streamable HTTP)",
                ));
            }
        };
        check_settings(field, transport.settings())?;
        Ok(transport)
    }

    fn transport_of_command(&self, command: &[String]) -> Result<McpTransport, FieldError> {
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
            command: command.to_vec(),
            env: self.env.clone().unwrap_or_default(),
        })
    }

    fn transport_of_url(&self, url: &str) -> Result<McpTransport, FieldError> {
        text("url", url, 2048)?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(FieldError::new("url", "must be an http:// or https:// URL"));
        }
        Ok(McpTransport::Http {
            url: url.to_string(),
            headers: self.headers.clone().unwrap_or_default(),
        })
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

/// Literal values replaced by `(literal)`.
pub fn hide_literals(settings: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    settings
        .iter()
        .map(|(k, v)| {
            let shown = if v.starts_with(SECRET_PREFIX) {
                v.clone()
            } else {
                "(literal)".to_string()
            };
            (k.clone(), shown)
        })
        .collect()
}

/// `env` names are shell variable names, `headers` names HTTP tokens; values are
/// bounded text, and a `secret://` reference names a secret.
fn check_settings(field: &str, settings: &BTreeMap<String, String>) -> Result<(), FieldError> {
    if settings.len() > MAX_SETTINGS {
        return Err(FieldError::new(
            field,
            format!("at most {MAX_SETTINGS} entries"),
        ));
    }
    for (name, value) in settings {
        let at = format!("{field}.{name}");
        let valid_name = if field == "env" {
            name.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        } else {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
        };
        if !valid_name || name.len() > 128 {
            return Err(FieldError::new(at, "is not a valid name"));
        }
        if value.len() > MAX_ARG_LEN || value.chars().any(|c| c.is_control()) {
            return Err(FieldError::new(
                at,
                format!("must be at most {MAX_ARG_LEN} bytes without control characters"),
            ));
        }
        if let Some(secret) = value.strip_prefix(SECRET_PREFIX)
            && (secret.is_empty() || secret.starts_with('.') || secret.contains('/'))
        {
            return Err(FieldError::new(at, "names no valid secret (secret://NAME)"));
        }
    }
    Ok(())
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
                command: vec!["python3".into(), "server.py".into()],
                env: Default::default(),
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

    /// `env` goes with a command and `headers` with a URL; names and secret
    /// references are checked.
    #[test]
    fn connection_settings_fit_their_transport() {
        let stdio = new(json!({"name": "gh", "command": ["srv"],
            "env": {"GITHUB_TOKEN": "secret://github", "LOG_LEVEL": "debug"}}));
        let transport = stdio.validate().unwrap();
        assert_eq!(transport.secret_names(), ["github"]);
        let http = new(json!({"name": "gh", "url": "https://h/mcp",
            "headers": {"Authorization": "secret://gh_bearer"}}));
        assert_eq!(http.validate().unwrap().secret_names(), ["gh_bearer"]);
        for (body, field) in [
            (
                json!({"name": "a", "url": "https://h/", "env": {"A": "b"}}),
                "env",
            ),
            (
                json!({"name": "a", "command": ["s"], "headers": {"A": "b"}}),
                "headers",
            ),
            (
                json!({"name": "a", "command": ["s"], "env": {"1X": "b"}}),
                "env.1X",
            ),
            (
                json!({"name": "a", "url": "https://h/", "headers": {"Bad Name": "b"}}),
                "headers.Bad Name",
            ),
            (
                json!({"name": "a", "url": "https://h/", "headers": {"X": "a\nb"}}),
                "headers.X",
            ),
            (
                json!({"name": "a", "command": ["s"], "env": {"T": "secret://../etc"}}),
                "env.T",
            ),
        ] {
            assert_eq!(
                new(body.clone()).validate().unwrap_err().field,
                field,
                "{body}"
            );
        }
        let value = serde_json::to_value(http.validate().unwrap()).unwrap();
        assert_eq!(value["headers"]["Authorization"], "secret://gh_bearer");
        let shown = serde_json::to_value(stdio.validate().unwrap().shown()).unwrap();
        assert_eq!(
            shown["env"],
            json!({"GITHUB_TOKEN": "secret://github", "LOG_LEVEL": "(literal)"})
        );
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
