//! Bad input gets a clear 4xx and leaves nothing behind; every route checks its
//! permission; every denial is recorded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Api, MeshProcess, SEED_AGENT, SEED_TASK, SEED_TOOL};
use serde_json::Value;

/// (method, url, body, expected status, error code, error field)
type Case = (
    &'static str,
    String,
    Option<String>,
    u16,
    &'static str,
    Option<&'static str>,
);
/// (method, service, path, body, permission)
type Route = (
    &'static str,
    &'static str,
    String,
    Option<String>,
    &'static str,
);

async fn head_count(api: &Api, mesh: &MeshProcess, key: &str) -> i64 {
    let v = api
        .get(
            &format!(
                "{}/api/v1/provenance/verify",
                mesh.url("provenance-service")
            ),
            key,
        )
        .await;
    v.body["head"]["count"].as_i64().unwrap()
}

async fn task_count(api: &Api, mesh: &MeshProcess, key: &str) -> usize {
    let r = api
        .get(
            &format!("{}/api/v1/tasks?limit=500", mesh.url("mesh-orchestrator")),
            key,
        )
        .await;
    r.body["items"].as_array().unwrap().len()
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = MeshProcess::up(dir.path(), &[]);
    let key = mesh.admin_key.clone().unwrap();
    let api = Api::new();
    let orch = mesh.url("mesh-orchestrator");
    let reg = mesh.url("agent-registry");
    let tools = mesh.url("tool-registry");
    let prov = mesh.url("provenance-service");
    let big = format!(r#"{{"type":"t","input":"{}"}}"#, "x".repeat(2 << 20));
    let tasks = format!("{orch}/api/v1/tasks");
    let agents = format!("{reg}/api/v1/agents");
    let tools_url = format!("{tools}/api/v1/tools");
    let cases: Vec<Case> = vec![
        ("POST", tasks.clone(), Some("{\"type\": ".into()), 400, "malformed_json", None),
        ("POST", tasks.clone(), Some("".into()), 400, "malformed_json", None),
        ("POST", tasks.clone(), Some("[1,2]".into()), 400, "invalid_request", None),
        ("POST", tasks.clone(), Some(r#"{"type":"t"}"#.into()), 400, "invalid_request", Some("input")),
        ("POST", tasks.clone(), Some(r#"{"type":"t","input":{},"priority":"high"}"#.into()), 400, "invalid_request", Some("priority")),
        ("POST", tasks.clone(), Some(r#"{"type":"t","input":{},"riskTier":"extreme"}"#.into()), 400, "invalid_request", Some("riskTier")),
        ("POST", tasks.clone(), Some(r#"{"type":"t","input":{},"dataClassification":"secret"}"#.into()), 400, "invalid_request", Some("dataClassification")),
        ("POST", tasks.clone(), Some(r#"{"type":"t","input":{},"prio":1}"#.into()), 400, "invalid_request", Some("prio")),
        ("POST", tasks.clone(), Some(r#"{"type":"","input":{}}"#.into()), 400, "invalid_request", Some("type")),
        ("POST", tasks.clone(), Some(r#"{"type":"t","input":null}"#.into()), 400, "invalid_request", Some("input")),
        ("POST", tasks.clone(), Some(r#"{"type":"t","input":{},"parentId":"nope"}"#.into()), 400, "invalid_request", Some("parentId")),
        ("POST", tasks.clone(), Some(r#"{"type":"t","input":{},"parentId":"01a20aae-b382-76d3-a28b-aaf05dc4b866"}"#.into()), 400, "invalid_request", Some("parentId")),
        ("POST", tasks.clone(), Some(r#"{"type":"t","input":"a\u0000b"}"#.into()), 400, "invalid_request", None),
        ("POST", tasks.clone(), Some(big), 413, "payload_too_large", None),
        ("GET", format!("{tasks}/not-a-uuid"), None, 400, "invalid_id", Some("id")),
        ("POST", format!("{tasks}/1234/cancel"), None, 400, "invalid_id", Some("id")),
        ("GET", format!("{tasks}/01a20aae-b382-76d3-a28b-aaf05dc4b866"), None, 404, "not_found", None),
        ("GET", format!("{tasks}?status=done"), None, 400, "invalid_request", None),
        ("GET", format!("{tasks}?cursor=zzz"), None, 400, "invalid_request", Some("cursor")),
        ("GET", format!("{orch}/api/v1/nothing"), None, 404, "not_found", None),
        ("DELETE", tasks.clone(), None, 405, "method_not_allowed", None),
        ("POST", agents.clone(), Some(SEED_AGENT.replace("\"coder\"", "\"wizard\"")), 400, "invalid_request", Some("role")),
        ("POST", agents.clone(), Some(SEED_AGENT.replace("\"medium\"", "\"extreme\"")), 400, "invalid_request", Some("riskTier")),
        ("POST", agents.clone(), Some(SEED_AGENT.replace("\"capabilities\": [\"typescript\", \"python\", \"refactoring\"]", "\"capabilities\": \"python\"")), 400, "invalid_request", Some("capabilities")),
        ("POST", agents.clone(), Some(r#"{"name":"a","version":"1","role":"coder","riskTier":"low","capabilities":[],"modelPreference":{"provider":"p"}}"#.into()), 400, "invalid_request", Some("modelPreference.model")),
        ("POST", format!("{reg}/api/v1/agents/xyz/heartbeat"), None, 400, "invalid_id", Some("id")),
        ("POST", tools_url.clone(), Some(SEED_TOOL.replace(r#""type": "object""#, r#""type": "objekt""#)), 400, "invalid_request", Some("inputSchema")),
        ("POST", tools_url.clone(), Some(SEED_TOOL.replace(r#""outputSchema": {"type": "array", "items": {"type": "string"}}"#, r#""outputSchema": 42"#)), 400, "invalid_request", Some("outputSchema")),
        ("POST", tools_url.clone(), Some(SEED_TOOL.replace("\"rateLimit\": 60", "\"rateLimit\": 0")), 400, "invalid_request", Some("rateLimit")),
        ("POST", tools_url.clone(), Some(SEED_TOOL.replace("\"USD\"", "\"dollars\"")), 400, "invalid_request", Some("costModel.currency")),
        ("GET", format!("{prov}/api/v1/provenance/task/zzz"), None, 400, "invalid_id", Some("id")),
        ("POST", format!("{orch}/api/v1/keys"), Some(r#"{"name":"k","roles":["root"]}"#.into()), 400, "invalid_request", Some("roles[0]")),
        ("POST", format!("{orch}/api/v1/keys"), Some(r#"{"name":"k","roles":[]}"#.into()), 400, "invalid_request", Some("roles")),
    ];
    let head = head_count(&api, &mesh, &key).await;
    for (method, url, body, status, code, field) in cases {
        let r = api.call(method, &url, Some(&key), body.as_deref()).await;
        assert_eq!(r.status, status, "{method} {url} {body:?}: {}", r.body);
        let err = &r.body["error"];
        assert_eq!(err["code"], code, "{method} {url}: {}", r.body);
        assert!(
            err["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}",
            r.body
        );
        if let Some(field) = field {
            let got = err["field"].as_str().unwrap_or("");
            assert_eq!(got, field, "{method} {url}: {}", r.body);
        }
    }
    // Nothing was written: no task, no agent, no tool, no provenance event.
    assert_eq!(head_count(&api, &mesh, &key).await, head);
    assert_eq!(task_count(&api, &mesh, &key).await, 0);
    let listed = api.get(&agents, &key).await;
    assert_eq!(listed.body["items"], Value::Array(vec![]));
    let listed = api.get(&tools_url, &key).await;
    let registered: Vec<&Value> = listed.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["backend"]["kind"] != "builtin")
        .collect();
    assert!(registered.is_empty(), "{registered:?}");
}

/// (method, service, path, body, permission) for every guarded route.
fn routes(task: &str, agent: &str, tool: &str, key_id: &str) -> Vec<Route> {
    vec![
        (
            "POST",
            "mesh-orchestrator",
            "/api/v1/tasks".into(),
            Some(SEED_TASK.into()),
            "task.submit",
        ),
        (
            "GET",
            "mesh-orchestrator",
            "/api/v1/tasks".into(),
            None,
            "task.read",
        ),
        (
            "GET",
            "mesh-orchestrator",
            format!("/api/v1/tasks/{task}"),
            None,
            "task.read",
        ),
        (
            "POST",
            "mesh-orchestrator",
            format!("/api/v1/tasks/{task}/cancel"),
            None,
            "task.cancel",
        ),
        (
            "POST",
            "mesh-orchestrator",
            "/api/v1/keys".into(),
            Some(r#"{"name":"x","roles":["auditor"]}"#.into()),
            "keys.manage",
        ),
        (
            "GET",
            "mesh-orchestrator",
            "/api/v1/keys".into(),
            None,
            "keys.manage",
        ),
        (
            "POST",
            "mesh-orchestrator",
            format!("/api/v1/keys/{key_id}/revoke"),
            None,
            "keys.manage",
        ),
        (
            "POST",
            "task-queue",
            "/api/v1/queue/tasks".into(),
            Some(SEED_TASK.into()),
            "task.submit",
        ),
        (
            "GET",
            "task-queue",
            "/api/v1/queue/tasks".into(),
            None,
            "task.read",
        ),
        (
            "GET",
            "task-queue",
            format!("/api/v1/queue/tasks/{task}"),
            None,
            "task.read",
        ),
        (
            "POST",
            "task-queue",
            format!("/api/v1/queue/tasks/{task}/cancel"),
            None,
            "task.cancel",
        ),
        (
            "POST",
            "task-queue",
            "/api/v1/queue/claim".into(),
            Some(format!(r#"{{"agentId":"{agent}","taskTypes":["none"]}}"#)),
            "task.claim",
        ),
        (
            "POST",
            "task-queue",
            format!("/api/v1/queue/tasks/{task}/heartbeat"),
            Some(r#"{"leaseToken":"01a20aae-b382-76d3-a28b-aaf05dc4b866"}"#.into()),
            "task.claim",
        ),
        (
            "POST",
            "task-queue",
            format!("/api/v1/queue/tasks/{task}/complete"),
            Some(r#"{"leaseToken":"01a20aae-b382-76d3-a28b-aaf05dc4b866"}"#.into()),
            "task.claim",
        ),
        (
            "POST",
            "task-queue",
            format!("/api/v1/queue/tasks/{task}/yield"),
            Some(r#"{"leaseToken":"01a20aae-b382-76d3-a28b-aaf05dc4b866"}"#.into()),
            "task.claim",
        ),
        (
            "POST",
            "task-queue",
            format!("/api/v1/queue/tasks/{task}/await-children"),
            Some(r#"{"leaseToken":"01a20aae-b382-76d3-a28b-aaf05dc4b866"}"#.into()),
            "task.claim",
        ),
        (
            "POST",
            "task-queue",
            format!("/api/v1/queue/tasks/{task}/fail"),
            Some(r#"{"leaseToken":"01a20aae-b382-76d3-a28b-aaf05dc4b866","reason":"x"}"#.into()),
            "task.claim",
        ),
        (
            "GET",
            "task-queue",
            "/api/v1/queue/dead-letters".into(),
            None,
            "task.read",
        ),
        (
            "POST",
            "task-queue",
            format!("/api/v1/queue/dead-letters/{task}/requeue"),
            None,
            "task.requeue",
        ),
        (
            "GET",
            "task-queue",
            "/api/v1/queue/stats?type=x".into(),
            None,
            "task.read",
        ),
        (
            "POST",
            "agent-registry",
            "/api/v1/agents".into(),
            Some(SEED_AGENT.replace("coder-agent-v1", "perm-agent")),
            "agent.register",
        ),
        (
            "GET",
            "agent-registry",
            "/api/v1/agents".into(),
            None,
            "agent.read",
        ),
        (
            "GET",
            "agent-registry",
            "/api/v1/agents/summary".into(),
            None,
            "agent.read",
        ),
        (
            "GET",
            "agent-registry",
            format!("/api/v1/agents/{agent}"),
            None,
            "agent.read",
        ),
        (
            "POST",
            "agent-registry",
            format!("/api/v1/agents/{agent}/heartbeat"),
            None,
            "agent.heartbeat",
        ),
        (
            "POST",
            "agent-registry",
            format!("/api/v1/agents/{agent}/retire"),
            None,
            "agent.retire",
        ),
        (
            "POST",
            "tool-registry",
            "/api/v1/tools".into(),
            Some(SEED_TOOL.replace("web-search", "perm-tool")),
            "tool.register",
        ),
        (
            "GET",
            "tool-registry",
            "/api/v1/tools".into(),
            None,
            "tool.read",
        ),
        (
            "GET",
            "tool-registry",
            format!("/api/v1/tools/{tool}"),
            None,
            "tool.read",
        ),
        (
            "POST",
            "tool-registry",
            format!("/api/v1/tools/{tool}/retire"),
            None,
            "tool.retire",
        ),
        (
            "GET",
            "provenance-service",
            format!("/api/v1/provenance/task/{task}"),
            None,
            "provenance.read",
        ),
        (
            "GET",
            "provenance-service",
            "/api/v1/provenance/events".into(),
            None,
            "provenance.read",
        ),
        (
            "POST",
            "events-bus",
            "/api/v1/events/perm.test".into(),
            Some("{}".into()),
            "events.publish",
        ),
        (
            "GET",
            "events-bus",
            "/api/v1/events/perm.test".into(),
            None,
            "events.read",
        ),
        (
            "POST",
            "events-bus",
            "/api/v1/events/perm.test/groups/g/read".into(),
            Some(r#"{"consumer":"c"}"#.into()),
            "events.read",
        ),
        (
            "POST",
            "events-bus",
            "/api/v1/events/perm.test/groups/g/ack".into(),
            Some(r#"{"offsets":[]}"#.into()),
            "events.read",
        ),
        (
            "GET",
            "provenance-service",
            "/api/v1/provenance/verify".into(),
            None,
            "provenance.verify",
        ),
    ]
}

fn granted(role: &str, permission: &str) -> bool {
    match role {
        "admin" => true,
        "operator" => permission != "keys.manage",
        "agent" => matches!(
            permission,
            "task.claim"
                | "task.submit"
                | "task.read"
                | "agent.register"
                | "agent.heartbeat"
                | "agent.retire"
                | "agent.read"
                | "tool.read"
                | "events.publish"
                | "events.read"
        ),
        "auditor" => matches!(
            permission,
            "task.read"
                | "agent.read"
                | "tool.read"
                | "provenance.read"
                | "provenance.verify"
                | "events.read"
        ),
        _ => false,
    }
}

#[tokio::test]
async fn every_route_checks_its_permission_and_records_denials() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = MeshProcess::up(dir.path(), &[]);
    let admin = mesh.admin_key.clone().unwrap();
    let api = Api::new();
    let url = |svc: &str, path: &str| format!("{}{path}", mesh.url(svc));
    let task = api
        .post(
            &url("mesh-orchestrator", "/api/v1/tasks"),
            &admin,
            SEED_TASK,
        )
        .await
        .body["taskId"]
        .as_str()
        .unwrap()
        .to_string();
    let agent = api
        .post(&url("agent-registry", "/api/v1/agents"), &admin, SEED_AGENT)
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let tool = api
        .post(&url("tool-registry", "/api/v1/tools"), &admin, SEED_TOOL)
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let victim = api
        .post(
            &url("mesh-orchestrator", "/api/v1/keys"),
            &admin,
            r#"{"name":"victim","roles":["auditor"]}"#,
        )
        .await;
    let key_id = victim.body["record"]["id"].as_str().unwrap().to_string();

    for role in ["operator", "agent", "auditor"] {
        let key = api.key(&mesh.url("mesh-orchestrator"), &admin, role).await;
        for (method, svc, path, body, permission) in routes(&task, &agent, &tool, &key_id) {
            let r = api
                .call(method, &url(svc, &path), Some(&key), body.as_deref())
                .await;
            if granted(role, permission) {
                assert!(
                    r.status != 401 && r.status != 403,
                    "{role} denied {method} {path}: {}",
                    r.body
                );
            } else {
                assert_eq!(r.status, 403, "{role} allowed {method} {path}: {}", r.body);
                assert_eq!(r.body["error"]["code"], "forbidden");
                assert!(
                    r.body["error"]["message"]
                        .as_str()
                        .unwrap()
                        .contains(permission)
                );
            }
        }
    }
    // No key and a wrong key are 401 on every guarded route.
    for (method, svc, path, body, _) in routes(&task, &agent, &tool, &key_id) {
        let r = api
            .call(method, &url(svc, &path), None, body.as_deref())
            .await;
        assert_eq!(r.status, 401, "{method} {path}: {}", r.body);
        let r = api
            .call(
                method,
                &url(svc, &path),
                Some("mesh_wrong"),
                body.as_deref(),
            )
            .await;
        assert_eq!(r.status, 401, "{method} {path}: {}", r.body);
    }
    // A 401 names the scheme it wants, as HTTP requires.
    let (svc, path) = ("mesh-orchestrator", "/api/v1/tasks");
    let refused = api.http.get(url(svc, path)).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(
        refused.headers()["www-authenticate"],
        "Bearer realm=\"agentic-mesh\""
    );
    // Denials are in the provenance log, and the chain still verifies.
    let events = api
        .get(
            &url("provenance-service", "/api/v1/provenance/events?limit=1000"),
            &admin,
        )
        .await;
    let denials: Vec<&Value> = events
        .body
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "auth_denied")
        .collect();
    assert!(
        denials
            .iter()
            .any(|e| e["payload"]["status"] == 403 && e["actor"] == "auditor-test")
    );
    assert!(
        denials
            .iter()
            .any(|e| e["payload"]["status"] == 401 && e["actor"] == "anonymous")
    );
    let v = api
        .get(
            &url("provenance-service", "/api/v1/provenance/verify"),
            &admin,
        )
        .await;
    assert_eq!(v.body["ok"], true, "{}", v.body);
    // A revoked key stops working.
    let doomed = api
        .key(&mesh.url("mesh-orchestrator"), &admin, "operator")
        .await;
    let keys = api
        .get(&url("mesh-orchestrator", "/api/v1/keys"), &admin)
        .await;
    let doomed_id = keys
        .body
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|k| k["name"] == "operator-test")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        keys.body
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k.get("keyHash").is_none())
    );
    assert_eq!(
        api.get(&url("mesh-orchestrator", "/api/v1/tasks"), &doomed)
            .await
            .status,
        200
    );
    let r = api
        .post(
            &url(
                "mesh-orchestrator",
                &format!("/api/v1/keys/{doomed_id}/revoke"),
            ),
            &admin,
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        api.get(&url("mesh-orchestrator", "/api/v1/tasks"), &doomed)
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn tenants_do_not_see_each_others_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = MeshProcess::up(dir.path(), &[]);
    let admin = mesh.admin_key.clone().unwrap();
    let api = Api::new();
    let orch = mesh.url("mesh-orchestrator");
    let mut keys = Vec::new();
    for tenant in ["acme", "globex"] {
        let r = api
            .post(
                &format!("{orch}/api/v1/keys"),
                &admin,
                &format!(r#"{{"name":"{tenant}-op","roles":["operator"],"tenant":"{tenant}"}}"#),
            )
            .await;
        keys.push(r.body["key"].as_str().unwrap().to_string());
    }
    let acme_task = api
        .post(&format!("{orch}/api/v1/tasks"), &keys[0], SEED_TASK)
        .await
        .body["taskId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        api.get(&format!("{orch}/api/v1/tasks/{acme_task}"), &keys[1])
            .await
            .status,
        404
    );
    assert_eq!(
        api.post(
            &format!("{orch}/api/v1/tasks/{acme_task}/cancel"),
            &keys[1],
            ""
        )
        .await
        .status,
        404
    );
    let globex_list = api.get(&format!("{orch}/api/v1/tasks"), &keys[1]).await;
    assert_eq!(globex_list.body["items"].as_array().unwrap().len(), 0);
    let acme_list = api.get(&format!("{orch}/api/v1/tasks"), &keys[0]).await;
    assert_eq!(acme_list.body["items"][0]["tenant"], "acme");
    let all = api.get(&format!("{orch}/api/v1/tasks"), &admin).await;
    assert_eq!(all.body["items"].as_array().unwrap().len(), 1);
}
