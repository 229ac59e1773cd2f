//! Tools, as in the seed's `tools` table.

use crate::agent::{default_currency, validate_currency};
use crate::enums::{RiskTier, ToolStatus};
use crate::time::{Timestamp, rfc3339_micros};
use crate::validate::{FieldError, non_negative, text};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// What one invocation of a tool costs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToolCostModel {
    #[serde(default)]
    pub per_invocation: f64,
    #[serde(default)]
    pub per_input_unit: f64,
    /// What an input unit is, e.g. `tokens`, `rows`, `bytes`; required with `perInputUnit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_unit_type: Option<String>,
    #[serde(default = "default_currency")]
    pub currency: String,
}

impl ToolCostModel {
    pub(crate) fn validate(&self) -> Result<(), FieldError> {
        non_negative("costModel.perInvocation", self.per_invocation)?;
        non_negative("costModel.perInputUnit", self.per_input_unit)?;
        match &self.input_unit_type {
            Some(unit) => text("costModel.inputUnitType", unit, 32)?,
            None if self.per_input_unit > 0.0 => {
                return Err(FieldError::new(
                    "costModel.inputUnitType",
                    "is required when perInputUnit is set",
                ));
            }
            None => {}
        }
        validate_currency("costModel.currency", &self.currency)
    }
}

/// What runs when a tool is invoked.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ToolBackend {
    /// The tool's `endpoint` is POSTed the arguments; without an endpoint, agents call
    /// the tool themselves.
    #[default]
    Http,
    /// Built into the tool registry and run in its process (`file_read`, …).
    Builtin,
    /// A tool of a registered MCP server, called with `tools/call`.
    Mcp {
        /// The MCP server's name in the mesh.
        server: String,
        /// The tool's name on that server.
        tool: String,
    },
}

impl ToolBackend {
    pub fn is_http(&self) -> bool {
        matches!(self, ToolBackend::Http)
    }

    /// The name of the backing MCP server, if there is one.
    pub fn mcp_server(&self) -> Option<&str> {
        match self {
            ToolBackend::Mcp { server, .. } => Some(server),
            _ => None,
        }
    }
}

/// Body of `POST /api/v1/tools`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewTool {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub description: Option<String>,
    pub input_schema: Value,
    pub output_schema: Value,
    pub risk_tier: RiskTier,
    /// Invocations per minute; absent means unlimited.
    #[serde(default)]
    pub rate_limit: Option<i32>,
    #[serde(default)]
    pub cost_model: Option<ToolCostModel>,
    /// Where `POST /api/v1/tools/{id}/invoke` sends the arguments (http or https);
    /// absent for tools agents call themselves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

impl NewTool {
    /// Checks everything but the schemas, whose validity the registry checks with a
    /// JSON Schema implementation.
    pub fn validate(&self) -> Result<(), FieldError> {
        text("name", &self.name, 128)?;
        text("version", &self.version, 32)?;
        if let Some(description) = &self.description
            && description.chars().count() > 4096
        {
            return Err(FieldError::new(
                "description",
                "must be at most 4096 characters",
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
        if let Some(endpoint) = &self.endpoint {
            text("endpoint", endpoint, 2048)?;
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(FieldError::new(
                    "endpoint",
                    "must be an http:// or https:// URL",
                ));
            }
        }
        Ok(())
    }

    pub fn into_tool(self, id: Uuid, now: Timestamp) -> Tool {
        Tool {
            id,
            name: self.name,
            version: self.version,
            description: self.description,
            input_schema: self.input_schema,
            output_schema: self.output_schema,
            risk_tier: self.risk_tier,
            rate_limit: self.rate_limit,
            cost_model: self.cost_model,
            endpoint: self.endpoint,
            backend: ToolBackend::Http,
            status: ToolStatus::Active,
            registered_at: now,
        }
    }
}

/// A registered tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tool {
    pub id: Uuid,
    pub name: String,
    pub version: String,
    pub description: Option<String>,
    pub input_schema: Value,
    pub output_schema: Value,
    pub risk_tier: RiskTier,
    pub rate_limit: Option<i32>,
    pub cost_model: Option<ToolCostModel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Absent for HTTP (and agent-called) tools.
    #[serde(default, skip_serializing_if = "ToolBackend::is_http")]
    pub backend: ToolBackend,
    pub status: ToolStatus,
    #[serde(with = "rfc3339_micros")]
    pub registered_at: Timestamp,
}

/// Filters of `GET /api/v1/tools`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolFilter {
    pub status: Option<ToolStatus>,
    pub name: Option<String>,
    /// Only the tools of this MCP server.
    pub mcp_server: Option<String>,
}
