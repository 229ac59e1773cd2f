//! The mesh's own `/mcp`, spoken to as a raw MCP client would.

use super::*;

/// A raw JSON-RPC POST to `/mcp`.
async fn mcp(
    api: &Api,
    mesh: &MeshProcess,
    key: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> Reply {
    let mut post = api
        .http
        .post(format!("{}/mcp", mesh.url("tool-registry")))
        .bearer_auth(key)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(body.to_string());
    for (name, value) in headers {
        post = post.header(*name, *value);
    }
    let resp = post.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    Reply {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
    }
}

fn request(id: u64, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

fn listed_names(reply: &Reply) -> Vec<String> {
    reply.body["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", reply.body))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn an_mcp_client_lists_and_calls_the_mesh_tools() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = MeshProcess::up(dir.path(), &[]);
    let admin = mesh.admin_key.clone().unwrap();
    let api = Api::new();
    let key = api
        .key(&mesh.url("mesh-orchestrator"), &admin, "agent")
        .await;

    // Negotiation: each supported revision is answered in kind, anything else with
    // 2025-11-25, the newest revision that has initialize.
    for (asked, answered) in [
        ("2026-07-28", "2026-07-28"),
        ("2025-11-25", "2025-11-25"),
        ("2024-11-05", "2025-11-25"),
    ] {
        let init = mcp(&api, &mesh, &key, &[], request(1, "initialize", json!({
            "protocolVersion": asked, "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}))).await;
        assert_eq!(init.status, 200, "{}", init.body);
        assert_eq!(
            init.body["result"]["protocolVersion"], answered,
            "{}",
            init.body
        );
        assert_eq!(init.body["result"]["serverInfo"]["name"], "agentic-mesh");
        assert!(init.body["result"]["capabilities"]["tools"].is_object());
    }
    let note = mcp(
        &api,
        &mesh,
        &key,
        &[("mcp-protocol-version", "2025-11-25")],
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    assert_eq!(note.status, 202);
    let ping = mcp(
        &api,
        &mesh,
        &key,
        &[("mcp-protocol-version", "2025-11-25")],
        request(2, "ping", json!({})),
    )
    .await;
    assert_eq!(ping.body, json!({"jsonrpc": "2.0", "id": 2, "result": {}}));
    let discover = mcp(
        &api,
        &mesh,
        &key,
        &[],
        request(3, "server/discover", json!({})),
    )
    .await;
    assert_eq!(
        discover.body["result"]["supportedVersions"],
        json!(["2026-07-28", "2025-11-25"])
    );

    // What the key's own (low-tier) agent may use: file_read, not file_write or http_fetch.
    let legacy = mcp(
        &api,
        &mesh,
        &key,
        &[("mcp-protocol-version", "2025-11-25")],
        request(4, "tools/list", json!({})),
    )
    .await;
    let names = listed_names(&legacy);
    assert!(names.contains(&"file_read".to_string()), "{names:?}");
    assert!(
        !names.contains(&"file_write".to_string()) && !names.contains(&"http_fetch".to_string()),
        "{names:?}"
    );
    assert!(
        legacy.body["result"].get("resultType").is_none(),
        "2025-11-25 results carry no resultType"
    );
    let read_tool = legacy.body["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "file_read")
        .unwrap();
    assert_eq!(read_tool["inputSchema"]["type"], "object");
    assert_eq!(
        read_tool["outputSchema"]["required"],
        json!(["path", "content", "bytes", "truncated"])
    );
    // A 2026-07-28 request without initialize, its version in _meta.
    let meta = json!({"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                                "io.modelcontextprotocol/clientCapabilities": {}}});
    let modern = mcp(
        &api,
        &mesh,
        &key,
        &[("mcp-protocol-version", "2026-07-28")],
        request(5, "tools/list", meta.clone()),
    )
    .await;
    assert_eq!(listed_names(&modern), names);
    assert_eq!(
        (
            modern.body["result"]["resultType"].as_str(),
            modern.body["result"]["cacheScope"].as_str()
        ),
        (Some("complete"), Some("private"))
    );
    // One agent for the key, registered through the agent registry.
    let agents = api
        .get(
            &format!(
                "{}/api/v1/agents?capability=mcp-client",
                mesh.url("agent-registry")
            ),
            &admin,
        )
        .await;
    let agents = agents.body["items"].as_array().unwrap().clone();
    assert_eq!(agents.len(), 1, "{agents:?}");
    assert_eq!(agents[0]["riskTier"], "low");

    // A named high-tier agent sees and uses more: it writes, the key's agent reads back.
    let writer = register_agent(&api, &mesh, &admin, "writer", "high").await;
    let as_writer = [
        ("mcp-protocol-version", "2025-11-25"),
        ("x-mesh-agent-id", writer.as_str()),
    ];
    let wide = mcp(
        &api,
        &mesh,
        &key,
        &as_writer,
        request(6, "tools/list", json!({})),
    )
    .await;
    assert!(
        listed_names(&wide).contains(&"file_write".to_string()),
        "{}",
        wide.body
    );
    let wrote = mcp(&api, &mesh, &key, &as_writer, request(7, "tools/call", json!({
        "name": "file_write", "arguments": {"path": "mcp/hello.txt", "content": "from MCP", "createDirs": true}}))).await;
    assert_eq!(wrote.body["result"]["isError"], false, "{}", wrote.body);
    let read = mcp(
        &api,
        &mesh,
        &key,
        &[("mcp-protocol-version", "2025-11-25")],
        request(
            8,
            "tools/call",
            json!({
        "name": "file_read", "arguments": {"path": "mcp/hello.txt"}}),
        ),
    )
    .await;
    let result = &read.body["result"];
    assert_eq!(
        (
            result["isError"].as_bool(),
            result["structuredContent"]["content"].as_str()
        ),
        (Some(false), Some("from MCP")),
        "{}",
        read.body
    );
    let text: Value = serde_json::from_str(result["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(text["content"], "from MCP");
    assert_eq!(
        std::fs::read_to_string(dir.path().join(".mesh/workspace/mcp/hello.txt")).unwrap(),
        "from MCP"
    );
    // Tool failures are results with isError; an unknown tool is a protocol error.
    let escape = mcp(
        &api,
        &mesh,
        &key,
        &[],
        request(
            9,
            "tools/call",
            json!({
        "name": "file_read", "arguments": {"path": "../mesh.db"}}),
        ),
    )
    .await;
    assert_eq!(escape.body["result"]["isError"], true, "{}", escape.body);
    assert!(
        escape.body["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains(".."),
        "{}",
        escape.body
    );
    let not_listed = mcp(
        &api,
        &mesh,
        &key,
        &[],
        request(
            10,
            "tools/call",
            json!({
        "name": "file_write", "arguments": {"path": "x.txt", "content": "x"}}),
        ),
    )
    .await;
    assert_eq!(
        not_listed.body["result"]["isError"], true,
        "the low-tier agent may not write: {}",
        not_listed.body
    );
    let unknown = mcp(
        &api,
        &mesh,
        &key,
        &[],
        request(11, "tools/call", json!({"name": "nope", "arguments": {}})),
    )
    .await;
    assert_eq!(unknown.body["error"]["code"], -32602, "{}", unknown.body);

    // Protocol errors.
    let bad_header = mcp(
        &api,
        &mesh,
        &key,
        &[("mcp-protocol-version", "1999-01-01")],
        request(12, "ping", json!({})),
    )
    .await;
    assert_eq!(
        (bad_header.status, bad_header.body["error"]["code"].as_i64()),
        (400, Some(-32022)),
        "{}",
        bad_header.body
    );
    assert_eq!(
        bad_header.body["error"]["data"]["supported"],
        json!(["2026-07-28", "2025-11-25"])
    );
    let bad_meta = mcp(
        &api,
        &mesh,
        &key,
        &[],
        request(
            13,
            "tools/list",
            json!({"_meta": {"io.modelcontextprotocol/protocolVersion": "2030-01-01"}}),
        ),
    )
    .await;
    assert_eq!(bad_meta.status, 400, "{}", bad_meta.body);
    let mismatch = mcp(
        &api,
        &mesh,
        &key,
        &[("mcp-protocol-version", "2025-11-25")],
        request(14, "tools/list", meta),
    )
    .await;
    assert_eq!(
        (mismatch.status, mismatch.body["error"]["code"].as_i64()),
        (400, Some(-32600)),
        "{}",
        mismatch.body
    );
    let unknown_method = mcp(
        &api,
        &mesh,
        &key,
        &[],
        request(15, "resources/list", json!({})),
    )
    .await;
    assert_eq!(unknown_method.body["error"]["code"], -32601);
    let bad_params = mcp(&api, &mesh, &key, &[], request(16, "initialize", json!({}))).await;
    assert_eq!(bad_params.body["error"]["code"], -32602);
    let batch = mcp(
        &api,
        &mesh,
        &key,
        &[],
        json!([request(17, "ping", json!({}))]),
    )
    .await;
    assert_eq!(
        (batch.status, batch.body["error"]["code"].as_i64()),
        (400, Some(-32600))
    );
    let garbage = api
        .call(
            "POST",
            &format!("{}/mcp", mesh.url("tool-registry")),
            Some(&key),
            Some("{not json"),
        )
        .await;
    assert_eq!(
        (garbage.status, garbage.body["error"]["code"].as_i64()),
        (400, Some(-32700))
    );
    let stranger = mcp(
        &api,
        &mesh,
        &key,
        &[("x-mesh-agent-id", "0192d1a0-0000-7000-8000-000000000000")],
        request(18, "tools/list", json!({})),
    )
    .await;
    assert_eq!(stranger.status, 400, "{}", stranger.body);
    let get = api
        .call(
            "GET",
            &format!("{}/mcp", mesh.url("tool-registry")),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(get.status, 405);
    let anonymous = api
        .call(
            "POST",
            &format!("{}/mcp", mesh.url("tool-registry")),
            None,
            Some(&request(19, "ping", json!({})).to_string()),
        )
        .await;
    assert_eq!(anonymous.status, 401);

    // Calls over /mcp are tool calls like any other, by the agents that made them.
    let events = events_when(&api, &mesh, &admin, |e| call_of(e, "file_read").len() >= 2).await;
    let reads = call_of(&events, "file_read");
    assert_eq!(reads[0]["payload"]["agentId"], agents[0]["id"]);
    assert_eq!(
        (
            reads[0]["payload"]["success"].as_bool(),
            reads[1]["payload"]["success"].as_bool()
        ),
        (Some(true), Some(false))
    );
    assert_eq!(
        call_of(&events, "file_write").len(),
        1,
        "the refused write never ran"
    );
}
