//! A tool's `rateLimit` held across tool-registry processes that share a Redis
//! (`[tools] limits_store`): together they allow exactly `rateLimit` invocations.

use super::*;

/// An HTTP tool endpoint that answers every call with `{"ok": true}`.
async fn ok_endpoint() -> String {
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(|| async { axum::Json(json!({"ok": true})) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tools_redis_limit_is_exact_across_tool_registry_processes() {
    let Some(redis) = common::backend_from_env("MESH_TEST_REDIS_URL", ".ci/run starts Redis")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let prefix = uuid::Uuid::new_v4().simple().to_string();
    std::fs::write(
        dir.path().join("mesh.toml"),
        format!("[tools]\nlimits_store = \"{redis}?prefix={prefix}\"\n"),
    )
    .unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let key_out = common::mesh(&["keys", "create", "--role", "admin", "--data-dir", data]);
    assert!(key_out.status.success());
    let key = String::from_utf8(key_out.stdout)
        .unwrap()
        .trim()
        .to_string();
    // One whole mesh and a second tool registry on the same store: the tool has one id.
    let a = MeshProcess::up(dir.path(), &["--config", "mesh.toml", "--data-dir", data]);
    let b = MeshProcess::start(
        dir.path(),
        &[
            "serve",
            "tool-registry",
            "--listen",
            "127.0.0.1:0",
            "--config",
            "mesh.toml",
            "--data-dir",
            data,
        ],
    );
    let api = Api::new();
    let agent = register_agent(&api, &a, &key, "limited-caller", "low").await;
    let mut tool: Value = serde_json::from_str(common::SEED_TOOL).unwrap();
    tool["name"] = json!("scarce-shared");
    tool["endpoint"] = json!(ok_endpoint().await);
    tool["outputSchema"] = json!({"type": "object"});
    tool["rateLimit"] = json!(3);
    let tools = format!("{}/api/v1/tools", a.url("tool-registry"));
    let registered = api.post(&tools, &key, &tool.to_string()).await;
    assert_eq!(registered.status, 201, "{}", registered.body);
    let id = registered.body["id"].as_str().unwrap().to_string();
    let urls = [a.url("tool-registry"), b.url("tool-registry")];
    let body = json!({"agentId": agent, "arguments": {"query": "q"}}).to_string();
    let mut seen = Vec::new();
    // In turn, so which calls are refused is certain: each process alone would allow
    // three (six in all); shared, the fourth is refused, whichever process takes it.
    for i in 0..6 {
        let resp = api
            .http
            .post(format!("{}/api/v1/tools/{id}/invoke", urls[i % 2]))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        seen.push((resp.status().as_u16(), retry_after));
    }
    let statuses: Vec<u16> = seen.iter().map(|(s, _)| *s).collect();
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429], "{seen:?}");
    // A token comes back every 20 s at 3 a minute.
    for (_, retry_after) in &seen[3..] {
        assert!(matches!(retry_after, Some(1..=20)), "{seen:?}");
    }
}
