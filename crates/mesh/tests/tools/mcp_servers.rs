//! Registered MCP servers: a process over stdio and a Streamable HTTP endpoint, both
//! revisions, servers that cannot be reached, and reconnection after a restart.

use super::*;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};

#[tokio::test]
async fn an_mcp_server_process_is_proxied_with_every_check() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = MeshProcess::up(dir.path(), &[]);
    let key = mesh.admin_key.clone().unwrap();
    let api = Api::new();
    let agent = register_agent(&api, &mesh, &key, "tool-user", "high").await;
    let lock = dir.path().join("crashed.lock");
    let r = register_server(
        &api,
        &mesh,
        &key,
        json!({
            "name": "fx", "command": [python(), FIXTURE, "--lock", lock], "riskTier": "low",
            "costModel": {"perInvocation": 0.01, "perInputUnit": 0.001, "inputUnitType": "bytes",
                          "currency": "EUR"},
        }),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["server"]["protocolVersion"], "2026-07-28");
    assert_eq!(r.body["server"]["transport"], "stdio");
    // Seven tools over four pages of tools/list: the cursor was followed.
    let names: Vec<&str> = r.body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "fx.echo",
            "fx.add",
            "fx.fail",
            "fx.bad_output",
            "fx.crash",
            "fx.whoami",
            "fx.grow"
        ]
    );
    assert_eq!(
        r.body["tools"][0]["backend"],
        json!({"kind": "mcp", "server": "fx", "tool": "echo"})
    );
    assert_eq!(
        r.body["tools"][1]["outputSchema"],
        json!({}),
        "no output schema: anything goes"
    );
    let listed = api
        .get(
            &format!("{}/api/v1/mcp/servers", mesh.url("tool-registry")),
            &key,
        )
        .await;
    assert_eq!(
        listed.body["items"][0]["connected"], true,
        "{}",
        listed.body
    );

    let task = api
        .post(
            &format!("{}/api/v1/tasks", mesh.url("mesh-orchestrator")),
            &key,
            r#"{"type": "tool-check", "input": {}}"#,
        )
        .await;
    assert_eq!(task.status, 201, "{}", task.body);
    let task = task.body["taskId"].as_str().unwrap().to_string();

    // A call by name: the output is the server's structuredContent; the cost follows the
    // cost model (per invocation plus per byte of the arguments).
    let ok = invoke(
        &api,
        &mesh,
        &key,
        "fx.echo",
        json!({"agentId": agent, "arguments": {"text": "hi"}, "taskId": task}),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.body["output"], json!({"echo": "hi"}));
    let expected_cost = 0.01 + 0.001 * r#"{"text":"hi"}"#.len() as f64;
    assert!(
        (ok.body["cost"].as_f64().unwrap() - expected_cost).abs() < 1e-9,
        "{}",
        ok.body
    );
    assert_eq!(ok.body["currency"], "EUR");
    // No structuredContent: the content array is the output.
    let sum = invoke(
        &api,
        &mesh,
        &key,
        "fx.add",
        json!({"agentId": agent, "arguments": {"a": 2, "b": 3}}),
    )
    .await;
    assert_eq!(
        sum.body["output"],
        json!([{"type": "text", "text": "5"}]),
        "{}",
        sum.body
    );
    // Under 2026-07-28 each request declares its version in _meta.
    let who = invoke(
        &api,
        &mesh,
        &key,
        "fx.whoami",
        json!({"agentId": agent, "arguments": {}}),
    )
    .await;
    assert_eq!(
        who.body["output"],
        json!({"negotiated": "2026-07-28", "meta": "2026-07-28"})
    );

    // Input that fails the schema: 400 naming the path, and nothing is called.
    let bad = invoke(
        &api,
        &mesh,
        &key,
        "fx.echo",
        json!({"agentId": agent, "arguments": {"text": 5}}),
    )
    .await;
    let (status, _, message) = error_of(&bad);
    assert_eq!(status, 400, "{}", bad.body);
    assert!(message.contains("arguments/text"), "{message}");
    // Output that fails the schema: 502 naming the path, recorded as a failed call.
    let out = invoke(
        &api,
        &mesh,
        &key,
        "fx.bad_output",
        json!({"agentId": agent, "arguments": {}}),
    )
    .await;
    let (status, code, message) = error_of(&out);
    assert_eq!(
        (status, code.as_str()),
        (502, "tool_output_invalid"),
        "{}",
        out.body
    );
    assert!(message.contains("/count"), "{message}");
    // isError: a failed call, the server's words passed on.
    let failed = invoke(
        &api,
        &mesh,
        &key,
        "fx.fail",
        json!({"agentId": agent, "arguments": {}}),
    )
    .await;
    let (status, code, message) = error_of(&failed);
    assert_eq!(
        (status, code.as_str()),
        (502, "tool_failed"),
        "{}",
        failed.body
    );
    assert!(message.contains("deliberate failure"), "{message}");

    let events = events_when(&api, &mesh, &key, |e| tool_calls(e).len() >= 5).await;
    assert_eq!(
        tool_calls(&events).len(),
        5,
        "the call with bad input never went out"
    );
    let echo = call_of(&events, "fx.echo")[0];
    assert_eq!(echo["actor"], "tool-user");
    assert_eq!(echo["taskId"], task.as_str());
    let p = &echo["payload"];
    assert_eq!(
        (p["success"].as_bool(), p["agentId"].as_str()),
        (Some(true), Some(agent.as_str()))
    );
    assert_eq!(
        (p["mcpServer"].as_str(), p["currency"].as_str()),
        (Some("fx"), Some("EUR"))
    );
    assert!((p["cost"].as_f64().unwrap() - expected_cost).abs() < 1e-9);
    let invalid = &call_of(&events, "fx.bad_output")[0]["payload"];
    assert_eq!(invalid["success"], false);
    assert!(
        invalid["error"].as_str().unwrap().contains("/count"),
        "{invalid}"
    );
    assert_eq!(call_of(&events, "fx.fail")[0]["payload"]["success"], false);
    // On the task's graph: a ToolCall node the agent CALLED.
    let graph = api
        .get(
            &format!(
                "{}/api/v1/provenance/task/{task}",
                mesh.url("provenance-service")
            ),
            &key,
        )
        .await
        .body["graph"]
        .clone();
    let node = graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["label"] == "ToolCall")
        .expect("a ToolCall node")
        .clone();
    assert_eq!(
        (
            node["properties"]["tool_name"].as_str(),
            node["properties"]["success"].as_bool()
        ),
        (Some("fx.echo"), Some(true))
    );
    assert!(
        graph["edges"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "CALLED" && e["from"] == agent.as_str() && e["to"] == node["id"]),
        "{graph}"
    );

    grows_when_told(&api, &mesh, &key, &agent, "fx").await;

    // The server dies (and cannot come back while the lock exists): the call that killed
    // it answers 503 naming the server, its tools turn unhealthy, calls answer 503.
    let crash = invoke(
        &api,
        &mesh,
        &key,
        "fx.crash",
        json!({"agentId": agent, "arguments": {}}),
    )
    .await;
    let (status, code, message) = error_of(&crash);
    assert_eq!(
        (status, code.as_str()),
        (503, "mcp_unavailable"),
        "{}",
        crash.body
    );
    assert!(message.contains("MCP server fx"), "{message}");
    wait_for_status(&api, &mesh, &key, "fx.echo", "unhealthy").await;
    let down = invoke(
        &api,
        &mesh,
        &key,
        "fx.echo",
        json!({"agentId": agent, "arguments": {"text": "x"}}),
    )
    .await;
    let (status, _, message) = error_of(&down);
    assert_eq!(status, 503, "{}", down.body);
    assert!(message.contains("MCP server fx"), "{message}");
    // Reconnecting fails, and the server list says why.
    let servers = format!("{}/api/v1/mcp/servers", mesh.url("tool-registry"));
    let listed = common::wait_for(|| async {
        let r = api.get(&servers, &key).await;
        let error = r.body["items"][0]["lastError"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        error.contains("locked").then_some(r.body)
    })
    .await;
    assert_eq!(listed["items"][0]["connected"], false, "{listed}");
    // Back once it can start again.
    std::fs::remove_file(&lock).unwrap();
    wait_for_status(&api, &mesh, &key, "fx.echo", "active").await;
    let again = invoke(
        &api,
        &mesh,
        &key,
        "fx.echo",
        json!({"agentId": agent, "arguments": {"text": "back"}}),
    )
    .await;
    assert_eq!(
        again.body["output"],
        json!({"echo": "back"}),
        "{}",
        again.body
    );
    let events = events_when(&api, &mesh, &key, |e| {
        e.iter().any(|e| e["action"] == "tool_recovered")
    })
    .await;
    assert!(
        events
            .iter()
            .any(|e| e["action"] == "tool_unhealthy" && e["payload"]["toolName"] == "fx.echo")
    );

    // Retired with its tools; a retired server's tools are not called.
    let retired = api
        .post(
            &format!("{}/api/v1/mcp/servers/fx/retire", mesh.url("tool-registry")),
            &key,
            "",
        )
        .await;
    assert_eq!(retired.body["status"], "retired", "{}", retired.body);
    assert_eq!(
        tool(&api, &mesh, &key, "fx.echo").await["status"],
        "retired"
    );
    let gone = invoke(
        &api,
        &mesh,
        &key,
        "fx.echo",
        json!({"agentId": agent, "arguments": {"text": "x"}}),
    )
    .await;
    assert_eq!(gone.status, 409, "{}", gone.body);
}

/// The server's `grow` tool adds `extra` and sends `notifications/tools/list_changed`:
/// the registry lists the server's tools again, and `extra` can be called.
async fn grows_when_told(api: &Api, mesh: &MeshProcess, key: &str, agent: &str, server: &str) {
    let extra = format!("{server}.extra");
    assert!(
        tool(api, mesh, key, &extra).await.is_null(),
        "not listed yet"
    );
    let grow = json!({"agentId": agent, "arguments": {}});
    let r = invoke(api, mesh, key, &format!("{server}.grow"), grow).await;
    assert_eq!(r.status, 200, "{}", r.body);
    wait_for_status(api, mesh, key, &extra, "active").await;
    let call = json!({"agentId": agent, "arguments": {}});
    let r = invoke(api, mesh, key, &extra, call).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// The fixture serving Streamable HTTP, stopped however the test ends; its URL.
fn http_fixture(extra: &[&str]) -> (KillOnDrop, String) {
    let mut child = Command::new(python())
        .arg(FIXTURE)
        .args(["--http", "0"])
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().strip_prefix("listening ").unwrap().to_string();
    (KillOnDrop(child), format!("http://127.0.0.1:{port}/mcp"))
}

#[tokio::test]
async fn mcp_servers_of_either_revision_and_transport_or_none() {
    let dir = tempfile::tempdir().unwrap();
    let mut mesh = MeshProcess::up(dir.path(), &[]);
    let key = mesh.admin_key.clone().unwrap();
    let api = Api::new();
    let agent = register_agent(&api, &mesh, &key, "tool-user", "high").await;

    // Streamable HTTP: a session, the version header, and tools/call answered as an
    // event stream (the fixture refuses requests without the first two).
    let (mut server, url) = http_fixture(&[]);
    let r = register_server(
        &api,
        &mesh,
        &key,
        json!({"name": "remote", "url": url, "riskTier": "low"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["server"]["transport"], "http");
    let echoed = invoke(
        &api,
        &mesh,
        &key,
        "remote.echo",
        json!({"agentId": agent, "arguments": {"text": "over http"}}),
    )
    .await;
    assert_eq!(
        echoed.body["output"],
        json!({"echo": "over http"}),
        "{}",
        echoed.body
    );
    // Over Streamable HTTP the notification comes in the call's event stream, or on
    // the standalone GET stream of a server that keeps one.
    grows_when_told(&api, &mesh, &key, &agent, "remote").await;
    let (_streamer, streamer_url) = http_fixture(&["--get-stream"]);
    let r = register_server(
        &api,
        &mesh,
        &key,
        json!({"name": "streamer", "url": streamer_url, "riskTier": "low"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    grows_when_told(&api, &mesh, &key, &agent, "streamer").await;
    // An HTTP server is somewhere else: the call passed the egress point for its host.
    let events = events_when(&api, &mesh, &key, |e| !call_of(e, "remote.echo").is_empty()).await;
    assert!(events.iter().any(|e| e["action"] == "policy_decision"
        && e["payload"]["point"] == "egress"
        && e["payload"]["input"]["resource"]["attributes"]["host"] == "127.0.0.1"));
    // It goes away: the call says which server, and the tools turn unhealthy.
    server.stop();
    let down = invoke(
        &api,
        &mesh,
        &key,
        "remote.echo",
        json!({"agentId": agent, "arguments": {"text": "x"}}),
    )
    .await;
    let (status, code, message) = error_of(&down);
    assert_eq!(
        (status, code.as_str()),
        (503, "mcp_unavailable"),
        "{}",
        down.body
    );
    assert!(message.contains("MCP server remote"), "{message}");
    wait_for_status(&api, &mesh, &key, "remote.echo", "unhealthy").await;

    // A server that answers 2025-11-25 is spoken to in 2025-11-25 (no _meta).
    let r = register_server(&api, &mesh, &key, json!({
        "name": "older", "command": [python(), FIXTURE, "--answer-version", "2025-11-25"], "riskTier": "low"})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["server"]["protocolVersion"], "2025-11-25");
    let who = invoke(
        &api,
        &mesh,
        &key,
        "older.whoami",
        json!({"agentId": agent, "arguments": {}}),
    )
    .await;
    assert_eq!(
        who.body["output"],
        json!({"negotiated": "2025-11-25", "meta": null}),
        "{}",
        who.body
    );
    // A stateless server without initialize is discovered instead.
    let r = register_server(
        &api,
        &mesh,
        &key,
        json!({
        "name": "stateless", "command": [python(), FIXTURE, "--modern-only"], "riskTier": "low"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["server"]["protocolVersion"], "2026-07-28");
    let who = invoke(
        &api,
        &mesh,
        &key,
        "stateless.whoami",
        json!({"agentId": agent, "arguments": {}}),
    )
    .await;
    assert_eq!(who.body["output"]["meta"], "2026-07-28", "{}", who.body);

    // Unreachable or foreign servers: 502 naming why, and nothing registered.
    let cases = [
        (
            json!({"name": "missing", "command": ["/nonexistent/mcp-server"]}),
            "cannot start",
        ),
        (
            json!({"name": "quitter", "command": [python(), "-c", "import sys; sys.stderr.write('no way\\n'); sys.exit(3)"]}),
            "no way",
        ),
        (
            json!({"name": "refused", "url": "http://127.0.0.1:1/mcp"}),
            "127.0.0.1:1",
        ),
        (
            json!({"name": "ancient", "command": [python(), FIXTURE, "--answer-version", "2024-11-05"]}),
            "2024-11-05",
        ),
    ];
    for (body, why) in cases {
        let r = register_server(&api, &mesh, &key, body.clone()).await;
        let (status, code, message) = error_of(&r);
        assert_eq!(
            (status, code.as_str()),
            (502, "mcp_unreachable"),
            "{body}: {}",
            r.body
        );
        assert!(
            message.contains(why) && message.contains(body["name"].as_str().unwrap()),
            "{message}"
        );
    }
    let listed = api
        .get(
            &format!("{}/api/v1/mcp/servers", mesh.url("tool-registry")),
            &key,
        )
        .await;
    let names: Vec<&str> = listed.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["remote", "streamer", "older", "stateless"]);
    // Bad registrations are 400s and 409s.
    let both = register_server(
        &api,
        &mesh,
        &key,
        json!({"name": "x", "command": ["a"], "url": "http://h/"}),
    )
    .await;
    assert_eq!(
        (both.status, both.body["error"]["field"].as_str()),
        (400, Some("command")),
        "{}",
        both.body
    );
    let dotted = register_server(&api, &mesh, &key, json!({"name": "a.b", "command": ["a"]})).await;
    assert_eq!(dotted.status, 400, "{}", dotted.body);
    let again = register_server(
        &api,
        &mesh,
        &key,
        json!({"name": "older", "command": [python(), FIXTURE]}),
    )
    .await;
    assert_eq!(again.status, 409, "{}", again.body);

    // After a restart the servers are connected to again from the store: their tools
    // work without registering anew, and the one that is gone stays unhealthy.
    mesh.signal("TERM");
    assert_eq!(mesh.wait(std::time::Duration::from_secs(30)), Some(0));
    let mesh = MeshProcess::up(dir.path(), &[]);
    let who = invoke(
        &api,
        &mesh,
        &key,
        "older.whoami",
        json!({"agentId": agent, "arguments": {}}),
    )
    .await;
    assert_eq!(
        who.body["output"]["negotiated"], "2025-11-25",
        "{}",
        who.body
    );
    assert_eq!(
        tool(&api, &mesh, &key, "remote.echo").await["status"],
        "unhealthy"
    );
    let down = invoke(
        &api,
        &mesh,
        &key,
        "remote.echo",
        json!({"agentId": agent, "arguments": {"text": "x"}}),
    )
    .await;
    assert_eq!(down.status, 503, "{}", down.body);
    let tools = api
        .get(
            &format!("{}/api/v1/tools?limit=500", mesh.url("tool-registry")),
            &key,
        )
        .await;
    let built_in = tools.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["backend"]["kind"] == "builtin")
        .count();
    assert_eq!(built_in, 3, "registered once, not again at the restart");
}

/// Credentials for MCP servers come from the secret store: `headers` for a Streamable
/// HTTP server, `env` for a process (which otherwise inherits only a minimal
/// environment). They are read at connection, never shown or logged, and naming one
/// needs the `secret.read` the policy grants.
#[tokio::test]
async fn mcp_server_credentials_come_from_the_secret_store() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("secrets")).unwrap();
    std::fs::write(
        dir.path().join("secrets/mcp_bearer"),
        "Bearer s3cret-value\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("secrets/fixture_token"), "tok-42-value\n").unwrap();
    std::fs::write(
        dir.path().join("mesh.toml"),
        "[secrets]\ndir = \"secrets\"\n",
    )
    .unwrap();
    let mesh = MeshProcess::up(dir.path(), &["--config", "mesh.toml"]);
    let key = mesh.admin_key.clone().unwrap();
    let api = Api::new();
    let agent = register_agent(&api, &mesh, &key, "tool-user", "high").await;

    // A server that wants a bearer token: refused without it, served with it.
    let (_server, url) = http_fixture(&["--require-header", "Authorization=Bearer s3cret-value"]);
    let bare = register_server(&api, &mesh, &key, json!({"name": "locked", "url": url})).await;
    assert_eq!(
        (bare.status, error_of(&bare).1.as_str()),
        (502, "mcp_unreachable"),
        "{}",
        bare.body
    );
    let r = register_server(
        &api,
        &mesh,
        &key,
        json!({"name": "locked", "url": url, "riskTier": "low",
               "headers": {"Authorization": "secret://mcp_bearer", "X-Client": "mesh-test"}}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        r.body["server"]["headers"],
        json!({"Authorization": "secret://mcp_bearer", "X-Client": "(literal)"})
    );
    let echoed = invoke(
        &api,
        &mesh,
        &key,
        "locked.echo",
        json!({"agentId": agent, "arguments": {"text": "with a token"}}),
    )
    .await;
    assert_eq!(
        echoed.body["output"],
        json!({"echo": "with a token"}),
        "{}",
        echoed.body
    );

    // A process gets its env, secrets resolved, and not the mesh's own environment.
    let r = register_server(
        &api,
        &mesh,
        &key,
        json!({"name": "envd", "command": [python(), FIXTURE], "riskTier": "low",
               "env": {"FIXTURE_TOKEN": "secret://fixture_token", "MODE": "plain"}}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let seen = invoke(
        &api,
        &mesh,
        &key,
        "envd.whoami",
        json!({"agentId": agent, "arguments": {"env": ["FIXTURE_TOKEN", "MODE", "CARGO_MANIFEST_DIR", "PATH"]}}),
    )
    .await;
    let env = &seen.body["output"]["env"];
    assert_eq!(env["FIXTURE_TOKEN"], "tok-42-value", "{}", seen.body);
    assert_eq!(env["MODE"], "plain");
    assert!(env["PATH"].is_string(), "PATH is passed on: {env}");
    assert_eq!(
        env["CARGO_MANIFEST_DIR"],
        Value::Null,
        "the mesh's environment is not"
    );
    let listed = api
        .get(
            &format!("{}/api/v1/mcp/servers", mesh.url("tool-registry")),
            &key,
        )
        .await;
    let envd = listed.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "envd")
        .unwrap()
        .clone();
    assert_eq!(
        envd["env"],
        json!({"FIXTURE_TOKEN": "secret://fixture_token", "MODE": "(literal)"})
    );

    // A secret that does not exist fails the connection, naming it; one the caller's
    // role may not read is refused by the policy before anything connects.
    let missing = register_server(
        &api,
        &mesh,
        &key,
        json!({"name": "nosecret", "command": [python(), FIXTURE], "env": {"T": "secret://nope"}}),
    )
    .await;
    let (status, code, message) = error_of(&missing);
    assert_eq!(
        (status, code.as_str()),
        (502, "mcp_unreachable"),
        "{}",
        missing.body
    );
    assert!(message.contains("secret://nope"), "{message}");
    let operator = api
        .key(&mesh.url("mesh-orchestrator"), &key, "operator")
        .await;
    let refused = register_server(
        &api,
        &mesh,
        &operator,
        json!({"name": "borrowed", "command": [python(), FIXTURE], "env": {"T": "secret://fixture_token"}}),
    )
    .await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(
        error_of(&refused).2.contains("fixture_token"),
        "{}",
        refused.body
    );

    // No secret value reached the log.
    let events = events_when(&api, &mesh, &key, |e| !call_of(e, "envd.whoami").is_empty()).await;
    let log = serde_json::to_string(&events).unwrap();
    for secret in ["s3cret-value", "tok-42-value", "mesh-test"] {
        assert!(!log.contains(secret), "{secret} is in the provenance log");
    }
}

/// A child process killed when dropped.
struct KillOnDrop(Child);

impl KillOnDrop {
    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.stop();
    }
}
