//! The policy enforcer over HTTP: each enforcement point refused by a policy that
//! denies only that point (403, nothing written, the decision recorded), hot reload
//! that refuses a broken policy, escalation to a human, redactions, failing closed,
//! OPA's Data API, and the `mesh policy` / `mesh approvals` commands.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Api, MeshProcess, SEED_AGENT, SEED_TASK, SEED_TOOL, mesh};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

const CONFIG: &str = "[policy]\ndir = \"policies\"\nreload_ms = 50\n[secrets]\ndir = \"secrets\"\n";

/// A policy allowing everything except the one point named.
fn deny_only(point: &str) -> String {
    format!(
        "package mesh\nimport rego.v1\n\
         default decision := {{\"action\": \"allow\", \"reason\": \"ok\"}}\n\
         decision := {{\"action\": \"deny\", \"reason\": \"no {point} today\"}} if input.action == \"{point}\"\n"
    )
}

struct Mesh {
    process: MeshProcess,
    api: Api,
    admin: String,
    policies: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Mesh {
    /// `mesh up` reading `policies/` (initially `rego`) and reloading it every 50 ms.
    fn with_policy(rego: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let policies = dir.path().join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        std::fs::write(policies.join("mesh.rego"), rego).unwrap();
        std::fs::write(dir.path().join("mesh.toml"), CONFIG).unwrap();
        std::fs::create_dir_all(dir.path().join("secrets")).unwrap();
        std::fs::write(dir.path().join("secrets/github_token"), "ghs_example\n").unwrap();
        let process = MeshProcess::up(dir.path(), &["--config", "mesh.toml"]);
        let admin = process.admin_key.clone().unwrap();
        Mesh {
            process,
            api: Api::new(),
            admin,
            policies,
            _dir: dir,
        }
    }

    fn url(&self, service: &str, path: &str) -> String {
        format!("{}{path}", self.process.url(service))
    }

    async fn get(&self, service: &str, path: &str) -> common::Reply {
        self.api.get(&self.url(service, path), &self.admin).await
    }

    async fn post(&self, service: &str, path: &str, body: &str) -> common::Reply {
        self.api
            .post(&self.url(service, path), &self.admin, body)
            .await
    }

    async fn revision(&self) -> String {
        let s = self.get("policy-enforcer", "/api/v1/policy/status").await;
        assert_eq!(s.status, 200, "{}", s.body);
        s.body["revision"].as_str().unwrap().to_string()
    }

    /// Replaces the policy and waits until the mesh enforces it.
    async fn swap_policy(&self, rego: &str) {
        let before = self.revision().await;
        std::fs::write(self.policies.join("mesh.rego"), rego).unwrap();
        self.wait_for(|status| status["revision"] != before.as_str())
            .await;
    }

    async fn wait_for(&self, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = self.get("policy-enforcer", "/api/v1/policy/status").await;
            if done(&s.body) {
                return s.body;
            }
            assert!(
                Instant::now() < deadline,
                "policy status never changed: {}",
                s.body
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Decision-log entries for `point`, in OPA's shape.
    async fn decisions(&self, point: &str) -> Vec<Value> {
        let r = self
            .get("policy-enforcer", "/api/v1/policy/decisions?limit=1000")
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.body["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["labels"]["point"] == point)
            .cloned()
            .collect()
    }

    async fn count(&self, service: &str, path: &str) -> usize {
        let r = self.get(service, path).await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.body["items"].as_array().unwrap().len()
    }

    /// Asserts a 403 carrying the policy's reason and a recorded deny for `point`.
    async fn assert_refused(&self, reply: common::Reply, point: &str) {
        assert_eq!(reply.status, 403, "{point}: {}", reply.body);
        assert_eq!(
            reply.body["error"]["code"], "policy_denied",
            "{}",
            reply.body
        );
        let message = reply.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("no {point} today")), "{message}");
        let denied = self.decisions(point).await;
        assert!(
            denied.iter().any(|d| d["result"]["action"] == "deny"),
            "{point}: no deny recorded in {denied:?}"
        );
    }
}

/// A tool endpoint that answers `{"echo": <body>}` and remembers what it received.
async fn echo_tool() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push(body.clone());
                axum::Json(json!({"echo": body}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/"), seen)
}

fn tool_with_endpoint(name: &str, tier: &str, endpoint: &str) -> String {
    let mut tool: Value = serde_json::from_str(SEED_TOOL).unwrap();
    tool["name"] = json!(name);
    tool["riskTier"] = json!(tier);
    tool["endpoint"] = json!(endpoint);
    // What `echo_tool` answers; invocation checks replies against the output schema.
    tool["outputSchema"] = json!({"type": "object", "required": ["echo"]});
    tool.to_string()
}

fn agent_with(name: &str, tier: &str, capabilities: &str) -> String {
    SEED_AGENT
        .replace("coder-agent-v1", name)
        .replace(
            r#""riskTier": "medium""#,
            &format!(r#""riskTier": "{tier}""#),
        )
        .replace(r#"["typescript", "python", "refactoring"]"#, capabilities)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_enforcement_point_refuses_what_its_policy_denies() {
    let m = Mesh::with_policy(&deny_only("task.submit"));

    // task.submit: 403, no task.
    let r = m
        .post("mesh-orchestrator", "/api/v1/tasks", SEED_TASK)
        .await;
    m.assert_refused(r, "task.submit").await;
    assert_eq!(m.count("mesh-orchestrator", "/api/v1/tasks").await, 0);

    // agent.spawn: the parent is allowed, the subtask is not.
    m.swap_policy(&deny_only("agent.spawn")).await;
    let parent = m
        .post("mesh-orchestrator", "/api/v1/tasks", SEED_TASK)
        .await;
    assert_eq!(parent.status, 201, "{}", parent.body);
    let parent_id = parent.body["taskId"].as_str().unwrap().to_string();
    let child = json!({"type": "code_refactor", "input": {}, "parentId": parent_id}).to_string();
    let r = m.post("mesh-orchestrator", "/api/v1/tasks", &child).await;
    m.assert_refused(r, "agent.spawn").await;
    let children = format!("/api/v1/queue/tasks?parentId={parent_id}");
    assert_eq!(m.count("task-queue", &children).await, 0);

    // task.assign: the claim is refused and the task stays queued, attempts untouched.
    m.swap_policy(&deny_only("task.assign")).await;
    let agent = m
        .post(
            "agent-registry",
            "/api/v1/agents",
            &agent_with("assignee", "high", r#"["code_refactor"]"#),
        )
        .await;
    assert_eq!(agent.status, 201, "{}", agent.body);
    let claim = json!({"agentId": agent.body["id"], "taskTypes": ["code_refactor"]}).to_string();
    let r = m.post("task-queue", "/api/v1/queue/claim", &claim).await;
    m.assert_refused(r, "task.assign").await;
    let task = m
        .get("task-queue", &format!("/api/v1/queue/tasks/{parent_id}"))
        .await;
    assert_eq!(task.body["status"], "queued", "{}", task.body);
    assert_eq!(task.body["attempts"], 0);

    // agent.register: 403, the registry unchanged.
    m.swap_policy(&deny_only("agent.register")).await;
    let before = m.count("agent-registry", "/api/v1/agents").await;
    let r = m
        .post(
            "agent-registry",
            "/api/v1/agents",
            &agent_with("refused", "low", "[]"),
        )
        .await;
    m.assert_refused(r, "agent.register").await;
    assert_eq!(m.count("agent-registry", "/api/v1/agents").await, before);

    // tool.register: 403, no tool (the built-in tools are there from the start).
    let before = m.count("tool-registry", "/api/v1/tools").await;
    m.swap_policy(&deny_only("tool.register")).await;
    let r = m.post("tool-registry", "/api/v1/tools", SEED_TOOL).await;
    m.assert_refused(r, "tool.register").await;
    assert_eq!(m.count("tool-registry", "/api/v1/tools").await, before);

    // data.export: 403, nothing exported.
    m.swap_policy(&deny_only("data.export")).await;
    let r = m
        .get("provenance-service", "/api/v1/provenance/export?limit=10")
        .await;
    m.assert_refused(r, "data.export").await;
    let r = m
        .get(
            "provenance-service",
            &format!(
                "/api/v1/provenance/task/{}/export?format=prov-json",
                uuid::Uuid::now_v7()
            ),
        )
        .await;
    m.assert_refused(r, "data.export").await;

    // tool.call and egress: refused before anything leaves for the tool.
    let (endpoint, received) = echo_tool().await;
    m.swap_policy(&deny_only("tool.call")).await;
    let tool = m
        .post(
            "tool-registry",
            "/api/v1/tools",
            &tool_with_endpoint("echo", "low", &endpoint),
        )
        .await;
    assert_eq!(tool.status, 201, "{}", tool.body);
    let invoke = format!("/api/v1/tools/{}/invoke", tool.body["id"].as_str().unwrap());
    let call = json!({"agentId": agent.body["id"], "arguments": {"query": "rust"}}).to_string();
    let r = m.post("tool-registry", &invoke, &call).await;
    m.assert_refused(r, "tool.call").await;
    m.swap_policy(&deny_only("egress")).await;
    let r = m.post("tool-registry", &invoke, &call).await;
    m.assert_refused(r, "egress").await;
    assert!(
        received.lock().unwrap().is_empty(),
        "nothing reached the tool"
    );

    // model.call: refused, no model called.
    m.swap_policy(&deny_only("model.call")).await;
    let chat =
        json!({"model": "sim-small", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let r = m
        .post("routing-gateway", "/v1/chat/completions", &chat)
        .await;
    m.assert_refused(r, "model.call").await;

    // secret.read: refused, nothing read.
    m.swap_policy(&deny_only("secret.read")).await;
    let secret = format!(
        "/api/v1/agents/{}/secrets/github_token",
        agent.body["id"].as_str().unwrap()
    );
    let r = m.get("agent-registry", &secret).await;
    m.assert_refused(r, "secret.read").await;

    // Under the last policy the earlier points are allowed again, and the allowed
    // decisions went into the log with the writes they allowed.
    let r = m.get("agent-registry", &secret).await;
    assert_eq!(r.status, 403);
    let r = m.post("tool-registry", &invoke, &call).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["output"]["echo"]["query"], "rust");
    let r = m
        .post("routing-gateway", "/v1/chat/completions", &chat)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Model calls are recorded off the reply's path: wait for the record.
    let events = common::wait_for(|| async {
        let r = m
            .get("provenance-service", "/api/v1/provenance/events?limit=1000")
            .await;
        let done = r
            .body
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "model_call");
        done.then_some(r.body)
    })
    .await;
    let count = |action: &str| {
        events
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == action)
            .count()
    };
    assert_eq!(
        count("model_call"),
        1,
        "only the allowed model call was made"
    );
    assert_eq!(count("tool_call"), 1, "only the allowed tool call was made");
    assert_eq!(count("secret_read"), 0);
    assert_eq!(received.lock().unwrap().len(), 1);
    m.swap_policy(&deny_only("nothing")).await;
    let r = m.get("agent-registry", &secret).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["value"], "ghs_example");
    let r = m.post("tool-registry", "/api/v1/tools", SEED_TOOL).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let allowed = m.decisions("tool.register").await;
    assert!(allowed.iter().any(|d| d["result"]["action"] == "allow"));
    let r = m.post("task-queue", "/api/v1/queue/claim", &claim).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body.as_array().unwrap().len(), 1);
    let timeline = m
        .get(
            "provenance-service",
            &format!("/api/v1/provenance/task/{parent_id}"),
        )
        .await;
    let graph = &timeline.body["graph"];
    assert!(
        graph["edges"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "SUBJECT_TO" && e["from"] == agent.body["id"]),
        "{graph}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_policy_is_refused_and_the_last_good_one_stays() {
    let m = Mesh::with_policy(&deny_only("tool.register"));
    let good = m.revision().await;
    std::fs::write(
        m.policies.join("mesh.rego"),
        "package mesh\nimport rego.v1\n\ndecision := {\"action\": \n",
    )
    .unwrap();
    let status = m.wait_for(|s| !s["lastError"].is_null()).await;
    let error = status["lastError"].as_str().unwrap();
    assert!(
        error.contains("mesh.rego:"),
        "the error names file and line: {error}"
    );
    assert_eq!(status["revision"], good.as_str());
    let ready = m
        .api
        .call("GET", &m.url("task-queue", "/readyz"), None, None)
        .await;
    assert_eq!(ready.status, 200);
    assert!(
        ready.body["checks"]["policy"]["lastError"]
            .as_str()
            .unwrap()
            .contains("mesh.rego:"),
        "{}",
        ready.body
    );
    // Still enforcing the good set.
    let r = m.post("tool-registry", "/api/v1/tools", SEED_TOOL).await;
    m.assert_refused(r, "tool.register").await;
    let events = m
        .get("provenance-service", "/api/v1/provenance/events?limit=1000")
        .await;
    let rejected = events
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "policy_rejected")
        .cloned()
        .expect("policy_rejected in provenance");
    assert_eq!(rejected["payload"]["keptRevision"], good.as_str());

    // An evaluation error fails closed.
    m.swap_policy("package mesh\nimport rego.v1\ndecision := \"yes\"\n")
        .await;
    let r = m.post("tool-registry", "/api/v1/tools", SEED_TOOL).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("policy_error"),
        "{}",
        r.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redactions_change_what_is_stored() {
    let m = Mesh::with_policy(
        "package mesh\nimport rego.v1\n\
         default decision := {\"action\": \"allow\", \"reason\": \"ok\"}\n\
         decision := {\"action\": \"allow_with_redactions\", \"reason\": \"pii\", \"redactions\": [\
           {\"path\": \"/resource/attributes/input/ssn\", \"strategy\": \"mask\"},\
           {\"path\": \"/resource/attributes/input/notes\", \"pattern\": \"[a-z]+@[a-z.]+\", \"strategy\": \"hash\"},\
           {\"path\": \"/resource/attributes/input/token\", \"strategy\": \"remove\"}]} \
         if input.action == \"task.submit\"\n",
    );
    let body = json!({"type": "t", "input": {
        "ssn": "123-45-6789", "notes": "write to ann@example.com", "token": "sk-live", "keep": 1
    }})
    .to_string();
    let r = m.post("mesh-orchestrator", "/api/v1/tasks", &body).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["taskId"].as_str().unwrap();
    let task = m
        .get("mesh-orchestrator", &format!("/api/v1/tasks/{id}"))
        .await;
    let input = &task.body["input"];
    assert_eq!(input["ssn"], "****");
    assert!(input.get("token").is_none(), "{input}");
    let notes = input["notes"].as_str().unwrap();
    assert!(
        notes.starts_with("write to sha256:") && !notes.contains("ann@"),
        "{notes}"
    );
    assert_eq!(input["keep"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalated_tasks_wait_for_a_human() {
    let dir = tempfile::tempdir().unwrap();
    // The default bundle: critical-risk tasks need approval.
    let process = MeshProcess::up(dir.path(), &[]);
    let admin = process.admin_key.clone().unwrap();
    let api = Api::new();
    let orch = process.url("mesh-orchestrator");
    let critical = json!({"type": "migrate_db", "input": {}, "riskTier": "critical"}).to_string();
    let tasks_url = format!("{orch}/api/v1/tasks");
    let submit = || api.post(&tasks_url, &admin, &critical);
    let first = submit().await;
    assert_eq!(first.status, 201, "{}", first.body);
    assert_eq!(first.body["status"], "needs_approval");
    let second = submit().await;
    let (first, second) = (
        first.body["taskId"].as_str().unwrap().to_string(),
        second.body["taskId"].as_str().unwrap().to_string(),
    );
    let pending = api.get(&format!("{orch}/api/v1/approvals"), &admin).await;
    assert_eq!(pending.body["items"].as_array().unwrap().len(), 2);
    let item = &pending.body["items"][0];
    assert_eq!(item["escalationTarget"], "platform-oncall", "{item}");
    assert!(
        item["reason"]
            .as_str()
            .unwrap()
            .contains("critical-risk migrate_db"),
        "{item}"
    );
    assert_eq!(item["status"], "needs_approval");

    // A parked task is not claimable.
    let agent = api
        .post(
            &format!("{}/api/v1/agents", process.url("agent-registry")),
            &admin,
            &agent_with("dba", "critical", r#"["migrate_db"]"#),
        )
        .await;
    assert_eq!(agent.status, 201, "{}", agent.body);
    let claim = json!({"agentId": agent.body["id"], "taskTypes": ["migrate_db"]}).to_string();
    let claim_url = format!("{}/api/v1/queue/claim", process.url("task-queue"));
    let none = api.post(&claim_url, &admin, &claim).await;
    assert_eq!(none.body, json!([]));

    // Operators cannot be bypassed by agents: an agent key may not approve.
    let agent_key = api.key(&orch, &admin, "agent").await;
    let r = api
        .post(
            &format!("{orch}/api/v1/approvals/{first}/approve"),
            &agent_key,
            "",
        )
        .await;
    assert_eq!(r.status, 403);

    let approved = api
        .post(
            &format!("{orch}/api/v1/approvals/{first}/approve"),
            &admin,
            r#"{"note": "change window open"}"#,
        )
        .await;
    assert_eq!(approved.status, 200, "{}", approved.body);
    assert_eq!(approved.body["status"], "queued");
    let rejected = api
        .post(
            &format!("{orch}/api/v1/approvals/{second}/reject"),
            &admin,
            "",
        )
        .await;
    assert_eq!(rejected.body["status"], "cancelled");
    let again = api
        .post(
            &format!("{orch}/api/v1/approvals/{second}/approve"),
            &admin,
            "",
        )
        .await;
    assert_eq!(again.status, 409, "{}", again.body);

    let leased = api.post(&claim_url, &admin, &claim).await;
    assert_eq!(
        leased.body[0]["task"]["id"],
        first.as_str(),
        "{}",
        leased.body
    );
    let timeline = api
        .get(
            &format!(
                "{}/api/v1/provenance/task/{first}",
                process.url("provenance-service")
            ),
            &admin,
        )
        .await;
    let actions: Vec<&str> = timeline.body["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for expected in ["task_needs_approval", "task_approved", "task_assigned"] {
        assert!(actions.contains(&expected), "{actions:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_opa_data_api_answers_as_opa_does() {
    let dir = tempfile::tempdir().unwrap();
    let process = MeshProcess::up(dir.path(), &[]);
    let admin = process.admin_key.clone().unwrap();
    let api = Api::new();
    let base = process.url("policy-enforcer");
    let input = json!({"input": {
        "action": "egress",
        "subject": {"kind": "agent", "name": "fetcher", "roles": ["agent"], "apiKey": "sk-hidden-value"},
        "resource": {"type": "url", "attributes": {"host": "169.254.169.254"}}
    }});
    let r = api
        .post(
            &format!("{base}/v1/data/mesh/decision?metrics=true&provenance=true"),
            &admin,
            &input.to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["result"]["action"], "deny");
    assert!(r.body["decision_id"].is_string());
    assert!(r.body["metrics"]["timer_rego_query_eval_ns"].is_u64());
    assert!(r.body["provenance"]["bundles"]["mesh"]["revision"].is_string());

    // OPA's GET form carries the input in the query string, and gets the same answer;
    // an input that is not JSON, or one given twice, is refused rather than ignored.
    let with_input = reqwest::Url::parse_with_params(
        &format!("{base}/v1/data/mesh/decision"),
        &[("input", input["input"].to_string())],
    )
    .unwrap();
    let got = api.get(with_input.as_str(), &admin).await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.body["result"]["action"], "deny", "{}", got.body);
    let malformed = api
        .get(
            &format!("{base}/v1/data/mesh/decision?input=%7Bnot"),
            &admin,
        )
        .await;
    assert_eq!(malformed.status, 400, "{}", malformed.body);
    assert_eq!(malformed.body["code"], "invalid_parameter");
    let twice = api
        .post(with_input.as_str(), &admin, &input.to_string())
        .await;
    assert_eq!(twice.status, 400, "{}", twice.body);

    // A package path returns the package's document; a path naming nothing is
    // undefined: 200 with no result.
    let pkg = api
        .post(&format!("{base}/v1/data/mesh_config/egress"), &admin, "{}")
        .await;
    assert!(pkg.body["result"]["blocked"].is_array(), "{}", pkg.body);
    let missing = api
        .post(&format!("{base}/v1/data/no/such/rule"), &admin, "{}")
        .await;
    assert_eq!(missing.status, 200);
    assert!(missing.body.get("result").is_none(), "{}", missing.body);
    assert!(missing.body["decision_id"].is_string());
    // A path too long for the engine to read as a query is the caller's error.
    let long = api
        .post(
            &format!("{base}/v1/data/{}", "x".repeat(2000)),
            &admin,
            "{}",
        )
        .await;
    assert_eq!(long.status, 400, "{}", long.body);
    assert_eq!(long.body["code"], "invalid_parameter");

    let bad = api
        .post(
            &format!("{base}/v1/data/mesh/decision"),
            &admin,
            "{not json",
        )
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.body["code"], "invalid_parameter");
    let unauthenticated = api
        .call(
            "POST",
            &format!("{base}/v1/data/mesh/decision"),
            None,
            Some("{}"),
        )
        .await;
    assert_eq!(unauthenticated.status, 401);

    let health = api.call("GET", &format!("{base}/health"), None, None).await;
    assert_eq!((health.status, health.body.clone()), (200, json!({})));
    let policies = api.get(&format!("{base}/v1/policies"), &admin).await;
    let ids: Vec<&str> = policies.body["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"mesh/decision.rego"), "{ids:?}");

    // The mesh-native API.
    let decision = api
        .post(
            &format!("{base}/api/v1/evaluate"),
            &admin,
            &json!({"action": "model.call", "subject": {"roles": ["agent"]},
                    "resource": {"classification": "restricted", "attributes": {"provider": "openai"}}})
            .to_string(),
        )
        .await;
    assert_eq!(decision.body["action"], "deny", "{}", decision.body);
    assert!(
        decision.body["reason"]
            .as_str()
            .unwrap()
            .contains("not approved")
    );
    assert!(decision.body["decisionId"].is_string());

    // Decisions are logged (asynchronously) in OPA's shape, credentials masked.
    let deadline = Instant::now() + Duration::from_secs(10);
    let entry = loop {
        let log = api
            .get(
                &format!("{base}/api/v1/policy/decisions?limit=1000"),
                &admin,
            )
            .await;
        let found = log.body["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["decision_id"] == r.body["decision_id"])
            .cloned();
        if let Some(entry) = found {
            break entry;
        }
        assert!(
            Instant::now() < deadline,
            "decision never logged: {}",
            log.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(entry["path"], "mesh/decision");
    assert_eq!(entry["result"]["action"], "deny");
    assert!(entry["input"]["subject"].get("apiKey").is_none(), "{entry}");
    assert_eq!(entry["input"]["subject"]["name"], "fetcher");
    assert!(entry["bundles"]["mesh"]["revision"].is_string());
    assert!(entry["timestamp"].is_string());
}

fn write_policy_dir(dir: &Path, rego: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("p.rego"), rego).unwrap();
}

#[test]
fn mesh_policy_test_and_eval() {
    let out = mesh(&["policy", "test"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("PASS") && !text.contains("FAIL:"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let failing = dir.path().join("failing");
    write_policy_dir(
        &failing,
        "package t\nimport rego.v1\ntest_ok if true\ntest_broken if 1 == 2\n",
    );
    let out = mesh(&["policy", "test", failing.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("FAIL  data.t.test_broken") && text.contains("PASS  data.t.test_ok"),
        "{text}"
    );

    let invalid = dir.path().join("invalid");
    write_policy_dir(&invalid, "package t\n\nallow if {\n");
    let out = mesh(&["policy", "test", invalid.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("p.rego:"), "{err}");

    let input = dir.path().join("input.json");
    std::fs::write(
        &input,
        r#"{"action": "egress", "subject": {"roles": ["agent"]}, "resource": {"attributes": {"host": "example.com"}}}"#,
    )
    .unwrap();
    let out = mesh(&[
        "policy",
        "eval",
        "--input",
        input.to_str().unwrap(),
        "data.mesh.decision",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["result"][0]["expressions"][0]["value"]["action"], "deny",
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opa_bundle_is_served_with_its_revision() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    write_policy_dir(&src, &deny_only("tool.register"));
    std::fs::write(
        src.join(".manifest"),
        r#"{"revision": "v42", "roots": [""]}"#,
    )
    .unwrap();
    std::fs::write(src.join("data.json"), r#"{"limits": {"max": 3}}"#).unwrap();
    let bundle = dir.path().join("bundle.tar.gz");
    let tar = std::process::Command::new("tar")
        .args([
            "czf",
            bundle.to_str().unwrap(),
            "-C",
            src.to_str().unwrap(),
            ".",
        ])
        .status()
        .unwrap();
    assert!(tar.success());
    let process = MeshProcess::up(dir.path(), &["--policy-dir", bundle.to_str().unwrap()]);
    let admin = process.admin_key.clone().unwrap();
    let api = Api::new();
    let base = process.url("policy-enforcer");
    let status = api
        .get(&format!("{base}/api/v1/policy/status"), &admin)
        .await;
    assert_eq!(status.body["revision"], "v42", "{}", status.body);
    let max = api
        .post(&format!("{base}/v1/data/limits/max"), &admin, "")
        .await;
    assert_eq!(max.body["result"], 3);
    let r = api
        .post(
            &format!("{}/api/v1/tools", process.url("tool-registry")),
            &admin,
            SEED_TOOL,
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);

    // A broken policy set at start-up stops the mesh with a clear error.
    let broken = dir.path().join("broken");
    write_policy_dir(&broken, "package mesh\ndecision := {\n");
    let data = dir.path().join("d2");
    let mut args = vec![
        "up",
        "--policy-dir",
        broken.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let listen = common::ephemeral_listen_args();
    args.extend(listen.iter().map(String::as_str));
    let out = mesh(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("p.rego:") && err.contains("--policy-dir"),
        "{err}"
    );
}

#[test]
fn approvals_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let data = data.to_str().unwrap();
    let out = mesh(&[
        "task",
        "submit",
        "--type",
        "deploy",
        "--input",
        "{}",
        "--risk-tier",
        "critical",
        "--json",
        "--data-dir",
        data,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["status"], "needs_approval");
    let id = reply["taskId"].as_str().unwrap();
    let list = mesh(&["approvals", "list", "--data-dir", data]);
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(
        listed.contains(id) && listed.contains("platform-oncall"),
        "{listed}"
    );
    let approve = mesh(&[
        "approvals",
        "approve",
        id,
        "--note",
        "ok",
        "--data-dir",
        data,
    ]);
    assert!(
        approve.status.success(),
        "{}",
        String::from_utf8_lossy(&approve.stderr)
    );
    assert!(String::from_utf8_lossy(&approve.stdout).contains("queued"));
    let list = mesh(&["approvals", "list", "--data-dir", data]);
    assert!(String::from_utf8_lossy(&list.stdout).contains("(none)"));
    let twice = mesh(&["approvals", "reject", id, "--data-dir", data]);
    assert!(!twice.status.success());
    assert!(String::from_utf8_lossy(&twice.stderr).contains("awaiting approval"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_bundle_guards_tool_calls() {
    let dir = tempfile::tempdir().unwrap();
    let process = MeshProcess::up(dir.path(), &[]);
    let admin = process.admin_key.clone().unwrap();
    let api = Api::new();
    let tools = format!("{}/api/v1/tools", process.url("tool-registry"));
    let (endpoint, received) = echo_tool().await;
    let agent = api
        .post(
            &format!("{}/api/v1/agents", process.url("agent-registry")),
            &admin,
            &agent_with("searcher", "low", r#"["search"]"#),
        )
        .await;
    let agent_id = agent.body["id"].as_str().unwrap().to_string();
    let register = |name: &'static str, tier: &'static str, url: String| {
        let (api, tools, admin) = (api.clone(), tools.clone(), admin.clone());
        async move {
            let r = api
                .post(&tools, &admin, &tool_with_endpoint(name, tier, &url))
                .await;
            assert_eq!(r.status, 201, "{}", r.body);
            format!("{tools}/{}/invoke", r.body["id"].as_str().unwrap())
        }
    };
    let echo = register("echo", "low", endpoint.clone()).await;
    let deploy = register("deploy", "high", endpoint.clone()).await;
    let outside = register("outside", "low", "http://example.com:9/".into()).await;
    let wire = register("wire_money", "critical", endpoint.clone()).await;
    let call =
        |query: &str| json!({"agentId": agent_id, "arguments": {"query": query}}).to_string();

    // Personal data is masked before it leaves, and the reply says so.
    let r = api
        .post(&echo, &admin, &call("mail ann@example.com today"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["redacted"], true);
    assert_eq!(received.lock().unwrap()[0]["query"], "mail **** today");

    let r = api.post(&deploy, &admin, &call("x")).await;
    assert_eq!(r.status, 403);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not cover"),
        "{}",
        r.body
    );
    let r = api.post(&outside, &admin, &call("x")).await;
    assert_eq!(r.status, 403);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not on the egress allowlist"),
        "{}",
        r.body
    );
    // A critical-tier tool: a low-tier agent is refused outright; even a critical-tier
    // agent needs a human.
    let r = api.post(&wire, &admin, &call("x")).await;
    assert_eq!(r.body["error"]["code"], "policy_denied", "{}", r.body);
    let trusted = api
        .post(
            &format!("{}/api/v1/agents", process.url("agent-registry")),
            &admin,
            &agent_with("treasurer", "critical", r#"["pay"]"#),
        )
        .await;
    let critical_call =
        json!({"agentId": trusted.body["id"], "arguments": {"query": "x"}}).to_string();
    let r = api.post(&wire, &admin, &critical_call).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.body["error"]["code"], "approval_required", "{}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("security-oncall")
    );
    assert_eq!(
        received.lock().unwrap().len(),
        1,
        "only the allowed call went out"
    );

    // Arguments that break the tool's input schema are a 400, decided before policy.
    let bad = json!({"agentId": agent_id, "arguments": {"query": 7}}).to_string();
    let r = api.post(&echo, &admin, &bad).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["error"]["field"], "arguments");

    // The call is in provenance, and the egress decision was logged without the body.
    let events = api
        .get(
            &format!(
                "{}/api/v1/provenance/events?limit=1000",
                process.url("provenance-service")
            ),
            &admin,
        )
        .await;
    let calls: Vec<&Value> = events
        .body
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "tool_call")
        .collect();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["payload"]["success"], true);
    assert_eq!(calls[0]["payload"]["agentId"], agent_id.as_str());
    let log = api
        .get(
            &format!(
                "{}/api/v1/policy/decisions?limit=1000",
                process.url("policy-enforcer")
            ),
            &admin,
        )
        .await;
    let egress: Vec<&Value> = log.body["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["labels"]["point"] == "egress")
        .collect();
    assert!(!egress.is_empty());
    for d in egress {
        assert!(
            d["input"]["resource"]["attributes"].get("body").is_none(),
            "{d}"
        );
        assert!(d["input"]["resource"]["attributes"]["host"].is_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_calls_through_the_gateway_are_judged_and_traced() {
    let dir = tempfile::tempdir().unwrap();
    let process = MeshProcess::up(dir.path(), &[]);
    let admin = process.admin_key.clone().unwrap();
    let api = Api::new();
    let gw = process.url("routing-gateway");
    let models = api.get(&format!("{gw}/v1/models"), &admin).await;
    assert_eq!(models.body["object"], "list");
    assert_eq!(models.body["data"][0]["id"], "sim-small");

    let agent = api
        .post(
            &format!("{}/api/v1/agents", process.url("agent-registry")),
            &admin,
            &agent_with("writer", "low", r#"["write"]"#),
        )
        .await;
    let task = api
        .post(
            &format!("{}/api/v1/tasks", process.url("mesh-orchestrator")),
            &admin,
            SEED_TASK,
        )
        .await;
    let task_id = task.body["taskId"].as_str().unwrap().to_string();
    let body = json!({"model": "sim-small", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "summarise the mail from ann@example.com"}
    ]})
    .to_string();
    let send = |body: String, headers: Vec<(&'static str, String)>| {
        let mut req = api
            .http
            .post(format!("{gw}/v1/chat/completions"))
            .bearer_auth(&admin)
            .body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.send()
    };
    let resp = send(
        body.clone(),
        vec![
            (
                "x-mesh-agent-id",
                agent.body["id"].as_str().unwrap().to_string(),
            ),
            ("x-mesh-task-id", task_id.clone()),
        ],
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let reply: Value = resp.json().await.unwrap();
    assert_eq!(reply["object"], "chat.completion");
    assert!(
        reply["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .starts_with("[sim]")
    );
    assert!(reply["usage"]["total_tokens"].as_u64().unwrap() > 0);

    // The call is a ModelCall node the agent INVOKED, on the task's graph; the email
    // was masked before the provider saw it.
    let task_url = format!(
        "{}/api/v1/provenance/task/{task_id}",
        process.url("provenance-service")
    );
    let p = common::wait_for(|| async {
        let p = api.get(&task_url, &admin).await;
        let recorded = p.body["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "model_call");
        recorded.then_some(p)
    })
    .await;
    let call = p.body["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "model_call")
        .cloned()
        .expect("model_call on the task's timeline");
    assert_eq!(call["provider"], "sim");
    assert_eq!(call["redacted"], true);
    assert!(
        p.body["graph"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "INVOKED" && e["from"] == agent.body["id"]),
        "{}",
        p.body["graph"]
    );

    // Bad input.
    let unknown = api
        .post(
            &format!("{gw}/v1/chat/completions"),
            &admin,
            &body.replace("sim-small", "gpt-9"),
        )
        .await;
    assert_eq!(unknown.status, 404);
    assert!(
        unknown.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sim-small")
    );
    let malformed = api
        .post(
            &format!("{gw}/v1/chat/completions"),
            &admin,
            r#"{"model": "sim-small"}"#,
        )
        .await;
    assert_eq!(malformed.status, 400, "{}", malformed.body);
    let bad_class = send(
        body,
        vec![("x-mesh-data-classification", "secretish".into())],
    )
    .await
    .unwrap();
    assert_eq!(bad_class.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tools_rate_limit_holds() {
    let dir = tempfile::tempdir().unwrap();
    let process = MeshProcess::up(dir.path(), &[]);
    let admin = process.admin_key.clone().unwrap();
    let api = Api::new();
    let (endpoint, received) = echo_tool().await;
    let mut tool: Value =
        serde_json::from_str(&tool_with_endpoint("scarce", "low", &endpoint)).unwrap();
    tool["rateLimit"] = json!(2);
    let tools = format!("{}/api/v1/tools", process.url("tool-registry"));
    let r = api.post(&tools, &admin, &tool.to_string()).await;
    let invoke = format!("{tools}/{}/invoke", r.body["id"].as_str().unwrap());
    let agent = api
        .post(
            &format!("{}/api/v1/agents", process.url("agent-registry")),
            &admin,
            &agent_with("caller", "low", r#"["x"]"#),
        )
        .await;
    let call = json!({"agentId": agent.body["id"], "arguments": {"query": "q"}}).to_string();
    for _ in 0..2 {
        assert_eq!(api.post(&invoke, &admin, &call).await.status, 200);
    }
    let limited = api.post(&invoke, &admin, &call).await;
    assert_eq!(limited.status, 429, "{}", limited.body);
    assert_eq!(limited.body["error"]["code"], "rate_limited");
    assert_eq!(received.lock().unwrap().len(), 2);
}
