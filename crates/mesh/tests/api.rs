//! The seed's API contracts against a real `mesh up` on ephemeral ports.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Api, MeshProcess, SEED_AGENT, SEED_TASK, SEED_TOOL};
use serde_json::{Value, json};
use std::time::Duration;

fn ts(v: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn seed_contracts_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = MeshProcess::up(dir.path(), &[]);
    let key = mesh
        .admin_key
        .clone()
        .expect("first start prints an admin key");
    let api = Api::new();
    let orch = mesh.url("mesh-orchestrator");

    let r = api
        .post(&format!("{orch}/api/v1/tasks"), &key, SEED_TASK)
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["status"], "queued");
    let id = r.body["taskId"].as_str().unwrap().to_string();
    ts(&r.body["estimatedCompletion"]);

    let task = api.get(&format!("{orch}/api/v1/tasks/{id}"), &key).await;
    assert_eq!(task.status, 200);
    assert_eq!(task.body["type"], "code_refactor");
    assert_eq!(task.body["riskTier"], "low");
    assert_eq!(task.body["dataClassification"], "internal");
    assert_eq!(task.body["metadata"]["requester"], "user@example.com");

    // A subtask, then filters and cursor pagination.
    let sub = api
        .post(
            &format!("{orch}/api/v1/tasks"),
            &key,
            &json!({"type": "code_review", "input": {"diff": "x"}, "parentId": id, "riskTier": "high", "dataClassification": "restricted"}).to_string(),
        )
        .await;
    assert_eq!(sub.status, 201, "{}", sub.body);
    let sub_id = sub.body["taskId"].as_str().unwrap().to_string();
    let reviews = api
        .get(
            &format!("{orch}/api/v1/tasks?type=code_review&status=queued"),
            &key,
        )
        .await;
    assert_eq!(reviews.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(reviews.body["items"][0]["riskTier"], "high");
    let page1 = api.get(&format!("{orch}/api/v1/tasks?limit=1"), &key).await;
    assert_eq!(page1.body["items"][0]["id"], sub_id.as_str());
    let cursor = page1.body["nextCursor"].as_str().unwrap();
    let page2 = api
        .get(
            &format!("{orch}/api/v1/tasks?limit=1&cursor={cursor}"),
            &key,
        )
        .await;
    assert_eq!(page2.body["items"][0]["id"], id.as_str());
    assert!(page2.body["nextCursor"].is_null());

    // Cancelling the parent cancels the child.
    let cancelled = api
        .post(&format!("{orch}/api/v1/tasks/{id}/cancel"), &key, "")
        .await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    assert_eq!(cancelled.body["status"], "cancelled");
    let child = api
        .get(&format!("{orch}/api/v1/tasks/{sub_id}"), &key)
        .await;
    assert_eq!(child.body["status"], "cancelled");
    let again = api
        .post(&format!("{orch}/api/v1/tasks/{id}/cancel"), &key, "")
        .await;
    assert_eq!(again.status, 409);

    // Provenance: the seed's timeline entries and graph.
    let prov = mesh.url("provenance-service");
    let p = api
        .get(&format!("{prov}/api/v1/provenance/task/{id}"), &key)
        .await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert_eq!(p.body["taskId"], id.as_str());
    let actions: Vec<&str> = p.body["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for want in [
        "task_created",
        "task_queued",
        "subtask_created",
        "task_cancelled",
    ] {
        assert!(actions.contains(&want), "{want} missing from {actions:?}");
    }
    let spawned = p.body["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "subtask_created")
        .unwrap();
    assert_eq!(spawned["subtaskId"], sub_id.as_str());
    assert!(
        spawned["eventId"].is_string()
            && spawned["timestamp"].is_string()
            && spawned["agent"] == "bootstrap-admin"
    );
    let edges = p.body["graph"]["edges"].as_array().unwrap();
    assert!(
        edges.iter().any(|e| e["type"] == "SPAWNED"
            && e["from"] == id.as_str()
            && e["to"] == sub_id.as_str())
    );
    assert!(
        p.body["graph"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["label"] == "Task" && n["properties"]["status"] == "cancelled")
    );

    // Agents: seed body, duplicate name, heartbeat, retire.
    let reg = mesh.url("agent-registry");
    let a = api
        .post(&format!("{reg}/api/v1/agents"), &key, SEED_AGENT)
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.body["status"], "active");
    let agent_id = a.body["id"].as_str().unwrap().to_string();
    let dup = api
        .post(&format!("{reg}/api/v1/agents"), &key, SEED_AGENT)
        .await;
    assert_eq!(dup.status, 409);
    assert_eq!(dup.body["error"]["code"], "conflict");
    let hb = api
        .post(
            &format!("{reg}/api/v1/agents/{agent_id}/heartbeat"),
            &key,
            "",
        )
        .await;
    assert_eq!(hb.status, 200);
    assert!(hb.body["lastHeartbeat"].is_string());
    let listed = api
        .get(
            &format!("{reg}/api/v1/agents?capability=python&role=coder"),
            &key,
        )
        .await;
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 1);
    let retired = api
        .post(&format!("{reg}/api/v1/agents/{agent_id}/retire"), &key, "")
        .await;
    assert_eq!(retired.body["status"], "retired");

    // Tools.
    let tools = mesh.url("tool-registry");
    let t = api
        .post(&format!("{tools}/api/v1/tools"), &key, SEED_TOOL)
        .await;
    assert_eq!(t.status, 201, "{}", t.body);
    let tool_id = t.body["id"].as_str().unwrap().to_string();
    assert_eq!(t.body["costModel"]["perInvocation"], 0.001);
    let got = api
        .get(&format!("{tools}/api/v1/tools/{tool_id}"), &key)
        .await;
    assert_eq!(got.body["name"], "web-search");
    let listed = api
        .get(&format!("{tools}/api/v1/tools?status=active"), &key)
        .await;
    let active = listed.body["items"].as_array().unwrap();
    assert!(
        active.iter().any(|t| t["name"] == "web-search"),
        "{active:?}"
    );
    assert!(active.iter().all(|t| t["status"] == "active"), "{active:?}");
    let retired = api
        .post(&format!("{tools}/api/v1/tools/{tool_id}/retire"), &key, "")
        .await;
    assert_eq!(retired.body["status"], "retired");

    let v = api
        .get(&format!("{prov}/api/v1/provenance/verify"), &key)
        .await;
    assert_eq!(v.status, 200, "{}", v.body);
    assert_eq!(v.body["ok"], true);
}

#[tokio::test]
async fn estimated_completion_grows_with_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = MeshProcess::up(dir.path(), &[]);
    let key = mesh.admin_key.clone().unwrap();
    let api = Api::new();
    let orch = mesh.url("mesh-orchestrator");
    let submit = || async {
        let r = api
            .post(&format!("{orch}/api/v1/tasks"), &key, SEED_TASK)
            .await;
        assert_eq!(r.status, 201);
        let task = api
            .get(
                &format!("{orch}/api/v1/tasks/{}", r.body["taskId"].as_str().unwrap()),
                &key,
            )
            .await;
        (ts(&r.body["estimatedCompletion"]) - ts(&task.body["createdAt"])).num_milliseconds()
    };
    let first = submit().await;
    for _ in 0..4 {
        submit().await;
    }
    let sixth = submit().await;
    assert!(
        sixth > first,
        "estimate did not grow: {first} ms then {sixth} ms"
    );
    // Five tasks ahead with no observed durations: six default-length waves.
    assert_eq!(sixth, 6 * first, "first {first} ms, sixth {sixth} ms");
    // More agents able to take the task drain the queue in parallel; agents that cannot
    // take it change nothing.
    let reg = mesh.url("agent-registry");
    let register = |name: String, capability: &'static str| {
        let body = SEED_AGENT
            .replace("coder-agent-v1", &name)
            .replace("\"refactoring\"", &format!("\"{capability}\""));
        let url = format!("{reg}/api/v1/agents");
        let (api, key) = (&api, &key);
        async move { assert_eq!(api.post(&url, key, &body).await.status, 201) }
    };
    for i in 0..5 {
        register(format!("reviewer-{i}"), "code_review").await;
    }
    let unhelped = submit().await;
    assert_eq!(
        unhelped,
        7 * first,
        "agents of another capability do not help"
    );
    for i in 0..5 {
        register(format!("coder-{i}"), "code_refactor").await;
    }
    let parallel = submit().await;
    assert!(
        parallel < unhelped,
        "five capable agents should shorten the estimate: {parallel} ms vs {unhelped} ms"
    );
}

#[tokio::test]
async fn every_port_serves_health_metrics_and_openapi_without_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = MeshProcess::up(dir.path(), &[]);
    let api = Api::new();
    for service in common::SERVICES {
        let base = mesh.url(service);
        let h = api
            .call("GET", &format!("{base}/healthz"), None, None)
            .await;
        assert_eq!((h.status, h.body["service"].as_str()), (200, Some(service)));
        let r = api.call("GET", &format!("{base}/readyz"), None, None).await;
        assert_eq!(r.status, 200, "{service}: {}", r.body);
        assert_eq!(r.body["status"], "ready");
        let m = api
            .call("GET", &format!("{base}/metrics"), None, None)
            .await;
        let text = m.body.as_str().unwrap();
        assert!(
            text.contains(&format!("mesh_up{{service=\"{service}\"}} 1")),
            "{text}"
        );
        assert!(text.contains("mesh_http_requests_total{"), "{text}");
        check_exposition(service, text);
        assert!(
            text.contains("route=\"/healthz\",status=\"200\"} 1"),
            "{text}"
        );
        let o = api
            .call("GET", &format!("{base}/openapi.json"), None, None)
            .await;
        assert_eq!(o.body["openapi"], "3.1.0");
        assert!(o.body["paths"]["/healthz"].is_object());
        let mut ids = std::collections::HashSet::new();
        for (path, ops) in o.body["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                let id = op["operationId"].as_str().unwrap_or_default().to_string();
                assert!(
                    ids.insert(id),
                    "{service}: {method} {path}: a unique operationId"
                );
            }
        }
    }
    // Routes that once served without being documented.
    for (service, method, path) in [
        ("routing-gateway", "post", "/v1/messages"),
        ("routing-gateway", "get", "/api/v1/providers"),
        ("routing-gateway", "post", "/api/v1/route/model"),
        ("routing-gateway", "post", "/api/v1/route/task"),
        ("routing-gateway", "get", "/api/v1/budgets/{scope}"),
        ("policy-enforcer", "get", "/v1/data/{path}"),
        ("policy-enforcer", "get", "/health"),
        ("task-queue", "post", "/api/v1/queue/tasks/{id}/yield"),
        (
            "task-queue",
            "post",
            "/api/v1/queue/tasks/{id}/await-children",
        ),
    ] {
        let o = api
            .call(
                "GET",
                &format!("{}/openapi.json", mesh.url(service)),
                None,
                None,
            )
            .await;
        assert!(
            o.body["paths"][path][method].is_object(),
            "{service} documents {method} {path}"
        );
    }
    let orch = api
        .call(
            "GET",
            &format!("{}/openapi.json", mesh.url("mesh-orchestrator")),
            None,
            None,
        )
        .await;
    assert!(orch.body["paths"]["/api/v1/tasks"]["post"]["requestBody"].is_object());
}

/// Prometheus text format as scrapers read it: every sample's family has its HELP and
/// TYPE lines, and every sample names the service it came from.
fn check_exposition(service: &str, text: &str) {
    let mut described = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "))
        {
            let name = rest.split(' ').next().unwrap();
            described.insert((line[..6].to_string(), name.to_string()));
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name = line.split(['{', ' ']).next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                let base = name.strip_suffix(suffix)?;
                described
                    .contains(&("# TYPE".to_string(), base.to_string()))
                    .then_some(base)
            })
            .unwrap_or(name);
        for kind in ["# HELP", "# TYPE"] {
            assert!(
                described.contains(&(kind.to_string(), family.to_string())),
                "{service}: {family} has no {kind} line before\n{line}"
            );
        }
        assert!(
            line.contains(&format!("service=\"{service}\"")),
            "{service}: a sample without its service label: {line}"
        );
    }
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut mesh = MeshProcess::up(dir.path(), &[]);
    mesh.signal("TERM");
    assert_eq!(
        mesh.wait(Duration::from_secs(20)),
        Some(0),
        "{}",
        mesh.stderr()
    );
    assert!(mesh.stderr().contains("draining"));
}

#[tokio::test]
async fn an_unreachable_store_fails_start_up_naming_the_setting() {
    let out = common::mesh(&[
        "up",
        "--store",
        "postgres://mesh:secret@127.0.0.1:1/nowhere",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--store"), "{err}");
    assert!(err.contains("127.0.0.1:1"), "{err}");
    assert!(!err.contains("secret"), "the password leaked: {err}");
    let out = common::mesh(&["up", "--store", "mysql://x/y"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected sqlite://"));
}

#[tokio::test]
async fn silent_agents_become_unhealthy_and_recover_on_heartbeat() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mesh.toml");
    std::fs::write(&config, "heartbeat_ttl_secs = 1\n").unwrap();
    let mesh = MeshProcess::up(dir.path(), &["--config", config.to_str().unwrap()]);
    let key = mesh.admin_key.clone().unwrap();
    let api = Api::new();
    let reg = mesh.url("agent-registry");
    let id = api
        .post(&format!("{reg}/api/v1/agents"), &key, SEED_AGENT)
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Poll the state (not a timing assertion): the sweeper runs every ttl/3.
    let mut status = String::new();
    for _ in 0..200 {
        status = api
            .get(&format!("{reg}/api/v1/agents/{id}"), &key)
            .await
            .body["status"]
            .as_str()
            .unwrap()
            .to_string();
        if status == "unhealthy" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, "unhealthy");
    let back = api
        .post(&format!("{reg}/api/v1/agents/{id}/heartbeat"), &key, "")
        .await;
    assert_eq!(back.body["status"], "active");
    let events = api
        .get(
            &format!(
                "{}/api/v1/provenance/events?limit=100",
                mesh.url("provenance-service")
            ),
            &key,
        )
        .await;
    let actions: Vec<&str> = events
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"agent_heartbeat_expired"), "{actions:?}");
    assert!(actions.contains(&"agent_recovered"), "{actions:?}");
}
