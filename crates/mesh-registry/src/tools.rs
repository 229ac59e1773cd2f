use mesh_policy::{Enforcer, Point};
use mesh_service::buckets::{Bucket, TokenBuckets};
use mesh_service::{ApiError, ServiceContext};
use mesh_types::tool::ToolFilter;
use mesh_types::{EventDraft, NewTool, Page, PageRequest, Principal, Tool, ToolStatus};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;
use uuid::Uuid;

/// The tool registry's core.
pub struct ToolRegistry {
    ctx: ServiceContext,
    policy: Arc<Enforcer>,
    /// Calls tools' endpoints (invocation proxying).
    http: reqwest::Client,
    /// Each tool's `rateLimit` (invocations per minute), in this process.
    limits: TokenBuckets,
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
    pub fn new(ctx: ServiceContext, policy: Arc<Enforcer>) -> Arc<Self> {
        Arc::new(Self {
            ctx,
            policy,
            http: reqwest::Client::new(),
            limits: TokenBuckets::default(),
        })
    }

    pub(crate) fn policy(&self) -> &Enforcer {
        &self.policy
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// A token for one invocation of `tool`, or 429 with when to try again.
    pub(crate) fn take_invocation(&self, tool: &Tool) -> Result<(), ApiError> {
        let Some(per_minute) = tool.rate_limit.filter(|n| *n > 0) else {
            return Ok(());
        };
        let bucket = Bucket {
            key: tool.id.to_string(),
            rate: f64::from(per_minute) / 60.0,
            burst: f64::from(per_minute),
        };
        let wait = self.limits.take(std::slice::from_ref(&bucket));
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
        let event = EventDraft::new(
            "tool_registered",
            &caller.name,
            "tool",
            Some(tool.id.to_string()),
        )
        .payload(json!({
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

    pub async fn list(&self, query: ToolListQuery) -> Result<Page<Tool>, ApiError> {
        let filter = ToolFilter {
            status: query.status,
            name: query.name,
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

/// A schema must be a JSON Schema document: an object or boolean that validates
/// against the metaschema of its `$schema` (2020-12 when absent).
fn check_schema(field: &str, schema: &Value) -> Result<(), ApiError> {
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
