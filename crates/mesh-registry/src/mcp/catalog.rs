//! Tools crossing the MCP boundary: a server's tool as a mesh tool (named
//! `<server>.<tool>`), and a mesh tool as an MCP tool for `/mcp` clients.

use crate::tools::check_schema;
use mesh_types::{McpServer, Tool, ToolBackend, ToolStatus};
use serde_json::{Value, json};
use uuid::Uuid;

/// A tool from a server's `tools/list`, or why it cannot be one.
pub(crate) fn tool_from_mcp(
    server: &McpServer,
    version: &str,
    listed: &Value,
) -> Result<Tool, String> {
    let remote = listed["name"].as_str().unwrap_or_default();
    let name = format!("{}.{remote}", server.name);
    mesh_types::validate::text("name", remote, 128)
        .and_then(|()| mesh_types::validate::text("name", &name, 128))
        .map_err(|e| format!("its name cannot be a mesh tool name ({e})"))?;
    let input_schema = listed
        .get("inputSchema")
        .cloned()
        .unwrap_or_else(|| json!({"type": "object"}));
    check_schema("inputSchema", &input_schema).map_err(|e| e.message)?;
    // A tool that declares no output schema may answer anything.
    let output_schema = listed
        .get("outputSchema")
        .cloned()
        .unwrap_or_else(|| json!({}));
    check_schema("outputSchema", &output_schema).map_err(|e| e.message)?;
    let description = listed["description"]
        .as_str()
        .or_else(|| listed["title"].as_str())
        .map(|d| d.chars().take(4096).collect());
    Ok(Tool {
        id: Uuid::now_v7(),
        name,
        version: version.to_string(),
        description,
        input_schema,
        output_schema,
        risk_tier: server.risk_tier,
        rate_limit: server.rate_limit,
        cost_model: server.cost_model.clone(),
        endpoint: None,
        backend: ToolBackend::Mcp {
            server: server.name.clone(),
            tool: remote.to_string(),
        },
        status: ToolStatus::Active,
        registered_at: mesh_types::time::now(),
    })
}

/// The version recorded on a server's tools: what its `serverInfo` says.
pub(crate) fn server_version(server_info: &Value) -> String {
    let version: String = server_info["version"]
        .as_str()
        .unwrap_or("unversioned")
        .chars()
        .filter(|c| !c.is_control())
        .take(32)
        .collect();
    if version.trim().is_empty() {
        "unversioned".to_string()
    } else {
        version
    }
}

/// A mesh tool as `/mcp`'s `tools/list` shows it, or `None` when MCP cannot carry its
/// arguments (MCP arguments are always an object).
pub(crate) fn descriptor(tool: &Tool) -> Option<Value> {
    let input = object_schema(&tool.input_schema)?;
    let mut listed = json!({
        "name": tool.name,
        "title": tool.name,
        "description": tool.description.clone().unwrap_or_default(),
        "inputSchema": input,
    });
    if declares_object(&tool.output_schema) {
        listed["outputSchema"] = tool.output_schema.clone();
    }
    Some(listed)
}

/// Whether a schema requires an object, so MCP's `structuredContent` can carry it.
pub(crate) fn declares_object(schema: &Value) -> bool {
    schema["type"] == "object"
}

/// The schema as MCP wants it, `"type": "object"` at the top: an untyped schema gains
/// it (the arguments are an object anyway); one that never admits an object has none.
fn object_schema(schema: &Value) -> Option<Value> {
    match schema {
        Value::Bool(true) => Some(json!({"type": "object"})),
        Value::Object(fields) => match fields.get("type") {
            None => {
                let mut typed = fields.clone();
                typed.insert("type".into(), json!("object"));
                Some(Value::Object(typed))
            }
            Some(t) if t == "object" => Some(schema.clone()),
            Some(Value::Array(types)) if types.iter().any(|t| t == "object") => {
                let mut typed = fields.clone();
                typed.insert("type".into(), json!("object"));
                Some(Value::Object(typed))
            }
            Some(_) => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_types::{McpTransport, NewMcpServer};

    fn server() -> McpServer {
        let new: NewMcpServer =
            serde_json::from_value(json!({"name": "files", "command": ["srv"], "riskTier": "low"}))
                .unwrap();
        new.into_server(
            McpTransport::Stdio {
                command: vec!["srv".into()],
                env: Default::default(),
            },
            Uuid::now_v7(),
            mesh_types::time::now(),
        )
    }

    #[test]
    fn a_listed_tool_becomes_a_mesh_tool() {
        let listed = json!({"name": "read", "description": "Reads",
                            "inputSchema": {"type": "object", "properties": {"p": {"type": "string"}}}});
        let tool = tool_from_mcp(&server(), "1.2.0", &listed).unwrap();
        assert_eq!(tool.name, "files.read");
        assert_eq!(tool.output_schema, json!({}));
        assert_eq!(
            tool.backend,
            ToolBackend::Mcp {
                server: "files".into(),
                tool: "read".into()
            }
        );
        let bad = json!({"name": "x", "inputSchema": {"type": "objekt"}});
        assert!(tool_from_mcp(&server(), "1", &bad).is_err());
        let nameless = json!({"inputSchema": {}});
        assert!(tool_from_mcp(&server(), "1", &nameless).is_err());
    }

    #[test]
    fn only_object_arguments_cross_to_mcp() {
        let mut tool =
            tool_from_mcp(&server(), "1", &json!({"name": "t", "inputSchema": {}})).unwrap();
        assert_eq!(
            descriptor(&tool).unwrap()["inputSchema"],
            json!({"type": "object"})
        );
        tool.input_schema = json!({"type": "array"});
        assert!(descriptor(&tool).is_none());
        tool.input_schema = json!(true);
        tool.output_schema = json!({"type": "object"});
        let listed = descriptor(&tool).unwrap();
        assert_eq!(listed["outputSchema"], json!({"type": "object"}));
    }
}
