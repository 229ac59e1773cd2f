//! The tool registry end to end over HTTP: MCP servers (a separate process over stdio,
//! and Streamable HTTP) proxied with every check of a tool call, the mesh's own `/mcp`
//! spoken to as a raw MCP client, the built-in tools, and tools' rate limits shared
//! across tool-registry processes through Redis.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "tools/builtins.rs"]
mod builtins;
mod common;
#[path = "tools/mcp_endpoint.rs"]
mod mcp_endpoint;
#[path = "tools/mcp_servers.rs"]
mod mcp_servers;
#[path = "tools/rate_limits.rs"]
mod rate_limits;

use common::{Api, MeshProcess, Reply, events_when};
use serde_json::{Value, json};
use std::process::Command;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mcp_server.py");

/// The Python interpreter itself: `python3` may be a wrapper (pyenv's shim) whose
/// killing would leave the interpreter running.
fn python() -> &'static str {
    static PYTHON: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PYTHON.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    })
}

async fn register_agent(
    api: &Api,
    mesh: &MeshProcess,
    key: &str,
    name: &str,
    tier: &str,
) -> String {
    let body = json!({"name": name, "version": "1.0.0", "role": "custom", "riskTier": tier,
                      "capabilities": ["tools"]});
    let url = format!("{}/api/v1/agents", mesh.url("agent-registry"));
    let r = api.post(&url, key, &body.to_string()).await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["id"].as_str().unwrap().to_string()
}

async fn register_server(api: &Api, mesh: &MeshProcess, key: &str, body: Value) -> Reply {
    let url = format!("{}/api/v1/mcp/servers", mesh.url("tool-registry"));
    api.post(&url, key, &body.to_string()).await
}

async fn invoke(api: &Api, mesh: &MeshProcess, key: &str, tool: &str, body: Value) -> Reply {
    let url = format!("{}/api/v1/tools/{tool}/invoke", mesh.url("tool-registry"));
    api.post(&url, key, &body.to_string()).await
}

async fn tool(api: &Api, mesh: &MeshProcess, key: &str, name: &str) -> Value {
    let url = format!("{}/api/v1/tools?name={name}", mesh.url("tool-registry"));
    let r = api.get(&url, key).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["items"][0].clone()
}

async fn wait_for_status(api: &Api, mesh: &MeshProcess, key: &str, name: &str, status: &str) {
    common::wait_for(|| async {
        (tool(api, mesh, key, name).await["status"] == status).then_some(())
    })
    .await;
}

fn tool_calls(events: &[Value]) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| e["action"] == "tool_call")
        .collect()
}

fn call_of<'a>(events: &'a [Value], tool: &str) -> Vec<&'a Value> {
    tool_calls(events)
        .into_iter()
        .filter(|e| e["payload"]["toolName"] == tool)
        .collect()
}

fn error_of(r: &Reply) -> (u16, String, String) {
    (
        r.status,
        r.body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        r.body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}
