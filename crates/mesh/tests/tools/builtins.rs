//! The built-in tools: file access kept to the allowed directories, `http_fetch`
//! through the egress policy; and an HTTP tool's output checked against its schema.

use super::*;

#[tokio::test]
async fn builtin_tools_keep_to_their_directories_and_the_egress_policy() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = MeshProcess::up(dir.path(), &[]);
    let key = mesh.admin_key.clone().unwrap();
    let api = Api::new();
    let agent = register_agent(&api, &mesh, &key, "builder", "high").await;
    let ws = dir.path().join(".mesh/workspace");
    std::fs::write(dir.path().join("secret.txt"), "not for agents").unwrap();
    let builtin = tool(&api, &mesh, &key, "file_read").await;
    assert_eq!(builtin["backend"]["kind"], "builtin");

    let wrote = invoke(
        &api,
        &mesh,
        &key,
        "file_write",
        json!({"agentId": agent,
        "arguments": {"path": "notes/a.txt", "content": "first", "createDirs": true}}),
    )
    .await;
    assert_eq!(wrote.status, 200, "{}", wrote.body);
    assert_eq!(
        (wrote.body["cost"].as_f64(), wrote.body["currency"].as_str()),
        (Some(0.0), Some("USD"))
    );
    assert_eq!(
        std::fs::read_to_string(ws.join("notes/a.txt")).unwrap(),
        "first"
    );
    let read = invoke(
        &api,
        &mesh,
        &key,
        builtin["id"].as_str().unwrap(),
        json!({"agentId": agent, "arguments": {"path": "notes/a.txt"}}),
    )
    .await;
    assert_eq!(read.body["output"]["content"], "first", "{}", read.body);

    // Escapes: `..` is a 400, a path or link that lands outside is a 403.
    let outside = dir.path().join("secret.txt");
    std::os::unix::fs::symlink(&outside, ws.join("link.txt")).unwrap();
    let cases = [
        ("file_read", json!({"path": "../secret.txt"}), 400),
        ("file_read", json!({"path": outside}), 403),
        ("file_read", json!({"path": "link.txt"}), 403),
        (
            "file_write",
            json!({"path": "../../escaped.txt", "content": "x"}),
            400,
        ),
        (
            "file_write",
            json!({"path": "link.txt", "content": "x"}),
            403,
        ),
        (
            "file_write",
            json!({"path": dir.path().join("escaped.txt"), "content": "x"}),
            403,
        ),
    ];
    for (name, arguments, status) in cases {
        let r = invoke(
            &api,
            &mesh,
            &key,
            name,
            json!({"agentId": agent, "arguments": arguments}),
        )
        .await;
        assert_eq!(r.status, status, "{name} {arguments}: {}", r.body);
    }
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "not for agents");
    assert!(!dir.path().join("escaped.txt").exists());
    // Arguments that break the schema name the path.
    let typed = invoke(
        &api,
        &mesh,
        &key,
        "file_read",
        json!({"agentId": agent, "arguments": {"path": 7}}),
    )
    .await;
    assert_eq!(typed.status, 400);
    assert!(
        typed.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("arguments/path"),
        "{}",
        typed.body
    );

    // http_fetch: an allowed host is fetched, a blocked one never is.
    let page = axum::Router::new().route(
        "/page",
        axum::routing::get(|| async { "hello from the web" }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, page).await.unwrap() });
    let fetched = invoke(
        &api,
        &mesh,
        &key,
        "http_fetch",
        json!({"agentId": agent, "arguments": {"url": format!("http://{addr}/page")}}),
    )
    .await;
    assert_eq!(fetched.status, 200, "{}", fetched.body);
    assert_eq!(
        (
            fetched.body["output"]["status"].as_i64(),
            fetched.body["output"]["body"].as_str()
        ),
        (Some(200), Some("hello from the web"))
    );
    let blocked = invoke(
        &api,
        &mesh,
        &key,
        "http_fetch",
        json!({"agentId": agent, "arguments": {"url": "http://169.254.169.254/latest/meta-data"}}),
    )
    .await;
    let (status, code, message) = error_of(&blocked);
    assert_eq!(
        (status, code.as_str()),
        (403, "policy_denied"),
        "{}",
        blocked.body
    );
    assert!(message.contains("169.254.169.254"), "{message}");
    let not_url = invoke(
        &api,
        &mesh,
        &key,
        "http_fetch",
        json!({"agentId": agent, "arguments": {"url": "file:///etc/passwd"}}),
    )
    .await;
    assert_eq!(
        (not_url.status, not_url.body["error"]["field"].as_str()),
        (400, Some("arguments.url")),
        "{}",
        not_url.body
    );

    // Output that breaks its schema, from an HTTP tool: 502 and a failed call on record.
    let endpoint = axum::Router::new().route(
        "/",
        axum::routing::post(|| async { axum::Json(json!({"items": [1, "two"]})) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, endpoint).await.unwrap() });
    let registered = api.post(&format!("{}/api/v1/tools", mesh.url("tool-registry")), &key, &json!({
        "name": "lister", "version": "1.0.0", "riskTier": "low", "endpoint": format!("http://{addr}/"),
        "inputSchema": {"type": "object"},
        "outputSchema": {"type": "object", "properties": {"items": {"type": "array", "items": {"type": "integer"}}}},
        "costModel": {"perInvocation": 0.5, "perInputUnit": 0.25, "inputUnitType": "tokens"},
    }).to_string()).await;
    assert_eq!(registered.status, 201, "{}", registered.body);
    let r = invoke(
        &api,
        &mesh,
        &key,
        "lister",
        json!({"agentId": agent, "arguments": {"q": "a b"}}),
    )
    .await;
    let (status, code, message) = error_of(&r);
    assert_eq!(
        (status, code.as_str()),
        (502, "tool_output_invalid"),
        "{}",
        r.body
    );
    assert!(message.contains("/items/1"), "{message}");
    let events = events_when(&api, &mesh, &key, |e| !call_of(e, "lister").is_empty()).await;
    let call = &call_of(&events, "lister")[0]["payload"];
    assert_eq!(call["success"], false);
    assert!(
        call["error"].as_str().unwrap().contains("/items/1"),
        "{call}"
    );
    // `{"q":"a b"}` is two whitespace-separated words: 0.5 + 2 × 0.25.
    assert_eq!(
        (call["cost"].as_f64(), call["costUnits"].as_u64()),
        (Some(1.0), Some(2)),
        "{call}"
    );
    assert_eq!(
        call_of(&events, "file_read").len(),
        4,
        "one read and three refused reads were made"
    );
}

/// Two tool registries starting together on one PostgreSQL: the built-in tools are
/// registered once (the loser of the race meets the unique name and goes on), and an
/// MCP server registered through one is served by the other, which connects to it.
#[tokio::test]
async fn tool_registries_sharing_postgres_share_builtins_and_mcp_servers() {
    let Some(url) = common::postgres_url().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = common::mesh(&["keys", "create", "--role", "operator", "--store", &url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let serve = |service: &str| {
        let args = ["serve", service, "--listen", "127.0.0.1:0", "--store", &url];
        MeshProcess::start(dir.path(), &args)
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| serve("tool-registry"));
        let b = s.spawn(|| serve("tool-registry"));
        (a.join().unwrap(), b.join().unwrap())
    });
    let rows = common::pg_query(
        &url,
        "SELECT name FROM tools WHERE backend = 'builtin' ORDER BY name",
    )
    .await;
    let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(names, ["file_read", "file_write", "http_fetch"]);

    let registry = serve("agent-registry");
    let api = Api::new();
    let agents = format!("{}/api/v1/agents", registry.url("agent-registry"));
    let body = json!({"name": "shared", "version": "1", "role": "custom", "riskTier": "low",
                      "capabilities": []});
    let agent = api.post(&agents, &key, &body.to_string()).await;
    assert_eq!(agent.status, 201, "{}", agent.body);
    let registered = api
        .post(
            &format!("{}/api/v1/mcp/servers", a.url("tool-registry")),
            &key,
            &json!({"name": "shared", "command": [python(), FIXTURE], "riskTier": "low"})
                .to_string(),
        )
        .await;
    assert_eq!(registered.status, 201, "{}", registered.body);
    let call = json!({"agentId": agent.body["id"], "arguments": {"text": "via b"}});
    let echoed = api
        .post(
            &format!("{}/api/v1/tools/shared.echo/invoke", b.url("tool-registry")),
            &key,
            &call.to_string(),
        )
        .await;
    assert_eq!(
        echoed.body["output"],
        json!({"echo": "via b"}),
        "{}",
        echoed.body
    );
    let listed = api
        .get(
            &format!("{}/api/v1/mcp/servers", b.url("tool-registry")),
            &key,
        )
        .await;
    assert_eq!(
        listed.body["items"][0]["connected"], true,
        "{}",
        listed.body
    );
}
