//! The task queue over HTTP: leases with fencing, retries, dead letters, lease expiry
//! re-routing, deadlines and idempotent submission.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Api, MeshProcess, Reply, SEED_AGENT};
use serde_json::{Value, json};
use std::time::Duration;

const CONFIG: &str = r#"
[queue]
lease_ms = 5000
backoff_base_ms = 50
backoff_max_ms = 100
sweep_interval_ms = 50
max_attempts_by_type = { flaky = 2 }
"#;

struct Fixture {
    mesh: MeshProcess,
    api: Api,
    admin: String,
    worker: String,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("mesh.toml");
        std::fs::write(&config, CONFIG).unwrap();
        let mesh = MeshProcess::up(dir.path(), &["--config", config.to_str().unwrap()]);
        let admin = mesh.admin_key.clone().unwrap();
        Fixture {
            mesh,
            api: Api::new(),
            admin,
            worker: String::new(),
            _dir: dir,
        }
    }

    async fn with_worker_key(mut self) -> Self {
        self.worker = self
            .api
            .key(&self.mesh.url("mesh-orchestrator"), &self.admin, "agent")
            .await;
        self
    }

    fn queue(&self, path: &str) -> String {
        format!("{}/api/v1/queue{path}", self.mesh.url("task-queue"))
    }

    async fn agent(&self, name: &str) -> String {
        let body = SEED_AGENT.replace("coder-agent-v1", name).replace(
            r#"["typescript", "python", "refactoring"]"#,
            r#"["build", "flaky", "orphan", "typescript"]"#,
        );
        let r = self
            .api
            .post(
                &format!("{}/api/v1/agents", self.mesh.url("agent-registry")),
                &self.worker,
                &body,
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        r.body["id"].as_str().unwrap().to_string()
    }

    async fn submit(&self, body: Value) -> String {
        let r = self
            .api
            .post(
                &format!("{}/api/v1/tasks", self.mesh.url("mesh-orchestrator")),
                &self.admin,
                &body.to_string(),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        r.body["taskId"].as_str().unwrap().to_string()
    }

    async fn claim(&self, agent: &str, types: &[&str], extra: Value) -> Reply {
        let mut body = json!({"agentId": agent, "taskTypes": types});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        self.api
            .post(&self.queue("/claim"), &self.worker, &body.to_string())
            .await
    }

    async fn task(&self, id: &str) -> Value {
        self.api
            .get(&self.queue(&format!("/tasks/{id}")), &self.admin)
            .await
            .body
    }

    /// Polls a task until `done` holds (the sweeper runs in the background).
    async fn wait_for(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..200 {
            let task = self.task(id).await;
            if done(&task) {
                return task;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "task {id} never reached the expected state: {}",
            self.task(id).await
        );
    }
}

#[tokio::test]
async fn claim_complete_with_fenced_tokens() {
    let f = Fixture::new().with_worker_key().await;
    let a = f.agent("worker-a").await;
    let first = f
        .submit(json!({"type": "build", "input": {"n": 1}, "idempotencyKey": "build-1"}))
        .await;
    let again = f
        .submit(json!({"type": "build", "input": {"n": 2}, "idempotencyKey": "build-1"}))
        .await;
    assert_eq!(first, again, "same idempotency key, same task");

    let none = f.claim(&a, &["nothing-matches"], json!({})).await;
    assert_eq!((none.status, none.body.clone()), (200, json!([])));
    let undeclared = f
        .submit(json!({"type": "nothing-matches", "input": {}}))
        .await;
    let none = f.claim(&a, &["nothing-matches"], json!({})).await;
    assert_eq!(
        none.body,
        json!([]),
        "{undeclared} is not among the agent's capabilities"
    );
    let leases = f.claim(&a, &["build"], json!({"limit": 10})).await;
    assert_eq!(leases.status, 200, "{}", leases.body);
    assert_eq!(
        leases.body.as_array().unwrap().len(),
        1,
        "one task despite two submissions"
    );
    let lease = &leases.body[0];
    assert_eq!(
        (lease["task"]["id"].as_str(), lease["attempt"].as_i64()),
        (Some(first.as_str()), Some(1))
    );
    let token = lease["leaseToken"].as_str().unwrap();

    let url = f.queue(&format!("/tasks/{first}/complete"));
    let bad = f
        .api
        .post(&url, &f.worker, r#"{"leaseToken":"not-a-token"}"#)
        .await;
    assert_eq!(
        (bad.status, bad.body["error"]["field"].as_str()),
        (400, Some("leaseToken"))
    );
    let stale = f
        .api
        .post(
            &url,
            &f.worker,
            r#"{"leaseToken":"01a20aae-b382-76d3-a28b-aaf05dc4b866"}"#,
        )
        .await;
    assert_eq!(
        (stale.status, stale.body["error"]["code"].as_str()),
        (409, Some("conflict"))
    );
    let hb = f
        .api
        .post(
            &f.queue(&format!("/tasks/{first}/heartbeat")),
            &f.worker,
            &json!({"leaseToken": token, "leaseMs": 10000}).to_string(),
        )
        .await;
    assert_eq!(hb.status, 200, "{}", hb.body);
    let done = f
        .api
        .post(
            &url,
            &f.worker,
            &json!({"leaseToken": token, "output": {"ok": true}}).to_string(),
        )
        .await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(
        (
            done.body["status"].as_str(),
            done.body["output"]["ok"].as_bool()
        ),
        (Some("completed"), Some(true))
    );
    let twice = f
        .api
        .post(&url, &f.worker, &json!({"leaseToken": token}).to_string())
        .await;
    assert_eq!(twice.status, 409);
    let missing = f
        .api
        .post(
            &f.queue("/tasks/01a20aae-b382-76d3-a28b-aaf05dc4b866/complete"),
            &f.worker,
            &json!({"leaseToken": token}).to_string(),
        )
        .await;
    assert_eq!(missing.status, 404);

    let unknown = f
        .claim(
            "01a20aae-b382-76d3-a28b-aaf05dc4b866",
            &["build"],
            json!({}),
        )
        .await;
    assert_eq!(
        (unknown.status, unknown.body["error"]["field"].as_str()),
        (400, Some("agentId"))
    );
    let r = f
        .api
        .post(
            &format!("{}/api/v1/agents/{a}/retire", f.mesh.url("agent-registry")),
            &f.admin,
            "",
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        f.claim(&a, &["build"], json!({})).await.status,
        409,
        "a retired agent takes no work"
    );

    let p = f
        .api
        .get(
            &format!(
                "{}/api/v1/provenance/task/{first}",
                f.mesh.url("provenance-service")
            ),
            &f.admin,
        )
        .await;
    let edges = p.body["graph"]["edges"].as_array().unwrap();
    assert!(
        edges
            .iter()
            .any(|e| e["type"] == "ASSIGNED_TO" && e["to"] == a.as_str()),
        "{}",
        p.body
    );
    let actions: Vec<&str> = p.body["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "task_created",
            "task_queued",
            "policy_decision",
            "policy_decision",
            "task_assigned",
            "task_completed"
        ]
    );
}

#[tokio::test]
async fn a_waiting_claim_is_woken_by_new_work() {
    let f = Fixture::new().with_worker_key().await;
    let a = f.agent("waiter").await;
    let claim = {
        let (api, url, key) = (f.api.clone(), f.queue("/claim"), f.worker.clone());
        let body = json!({"agentId": a, "taskTypes": ["build"], "waitMs": 10000}).to_string();
        tokio::spawn(async move { api.post(&url, &key, &body).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let id = f.submit(json!({"type": "build", "input": {}})).await;
    let got = claim.await.unwrap();
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(
        got.body[0]["task"]["id"],
        id.as_str(),
        "the long poll returned the new task"
    );
    let too_long = f.claim(&a, &["build"], json!({"waitMs": 60000})).await;
    assert_eq!(
        (too_long.status, too_long.body["error"]["field"].as_str()),
        (400, Some("waitMs"))
    );
}

#[tokio::test]
async fn failures_retry_then_dead_letter_and_requeue() {
    let f = Fixture::new().with_worker_key().await;
    let a = f.agent("worker-a").await;
    let id = f.submit(json!({"type": "flaky", "input": {}})).await;
    let fail = |token: String| {
        let url = f.queue(&format!("/tasks/{id}/fail"));
        let api = f.api.clone();
        let key = f.worker.clone();
        async move {
            api.post(
                &url,
                &key,
                &json!({"leaseToken": token, "reason": "upstream timeout"}).to_string(),
            )
            .await
        }
    };
    let lease = f.claim(&a, &["flaky"], json!({})).await.body[0].clone();
    let r = fail(lease["leaseToken"].as_str().unwrap().to_string()).await;
    assert_eq!(
        (r.status, r.body["outcome"].as_str()),
        (200, Some("retrying")),
        "{}",
        r.body
    );
    // Claimable again by the same agent once the backoff passes and no other agent has
    // taken it within the queue's retry-elsewhere grace (3 s).
    let mut retry = Value::Null;
    for _ in 0..400 {
        let got = f.claim(&a, &["flaky"], json!({})).await.body;
        if let Some(l) = got.get(0) {
            retry = l.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(retry["attempt"], 2, "{retry}");
    let r = fail(retry["leaseToken"].as_str().unwrap().to_string()).await;
    assert_eq!(r.body["outcome"], "dead_lettered");
    assert_eq!(r.body["task"]["lastError"], "upstream timeout");
    let letters = f.api.get(&f.queue("/dead-letters"), &f.admin).await;
    assert!(
        letters.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == id.as_str())
    );
    let forbidden = f
        .api
        .post(
            &f.queue(&format!("/dead-letters/{id}/requeue")),
            &f.worker,
            "",
        )
        .await;
    assert_eq!(forbidden.status, 403, "agents may not requeue");
    let back = f
        .api
        .post(
            &f.queue(&format!("/dead-letters/{id}/requeue")),
            &f.admin,
            "",
        )
        .await;
    assert_eq!(
        (back.body["status"].as_str(), back.body["attempts"].as_i64()),
        (Some("queued"), Some(0))
    );
}

#[tokio::test]
async fn expired_leases_go_to_another_agent_and_deadlines_fail() {
    let f = Fixture::new().with_worker_key().await;
    let crashed = f.agent("crashed").await;
    let survivor = f.agent("survivor").await;
    let id = f.submit(json!({"type": "orphan", "input": {}})).await;
    let lease = f
        .claim(&crashed, &["orphan"], json!({"leaseMs": 200}))
        .await
        .body[0]
        .clone();
    // The crashed agent never reports; the sweeper takes the task back.
    let task = f.wait_for(&id, |t| t["status"] == "queued").await;
    assert_eq!(
        (task["lastError"].as_str(), task["lastFailedAgent"].as_str()),
        (Some("lease_expired"), Some(crashed.as_str()))
    );
    let mut taken = Value::Null;
    for _ in 0..100 {
        let got = f.claim(&survivor, &["orphan"], json!({})).await.body;
        if let Some(l) = got.get(0) {
            taken = l.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        (
            taken["task"]["leasedBy"].as_str(),
            taken["attempt"].as_i64()
        ),
        (Some(survivor.as_str()), Some(2))
    );
    let late = f
        .api
        .post(
            &f.queue(&format!("/tasks/{id}/complete")),
            &f.worker,
            &json!({"leaseToken": lease["leaseToken"]}).to_string(),
        )
        .await;
    assert_eq!(late.status, 409, "the crashed agent's token is fenced off");

    let deadline =
        mesh_types::time::format(&(mesh_types::time::now() + chrono::Duration::milliseconds(150)));
    let slo = f
        .submit(json!({"type": "nobody-handles-this", "input": {}, "deadline": deadline}))
        .await;
    let task = f.wait_for(&slo, |t| t["status"] == "failed").await;
    assert_eq!(task["lastError"], "slo_timeout");
}

#[tokio::test]
async fn batches_submit_all_or_nothing_and_complete_each_alone() {
    let f = Fixture::new().with_worker_key().await;
    let a = f.agent("worker-batch").await;
    let batch = f.queue("/tasks/batch");

    // One invalid task: 400 naming it, and none of the batch is stored.
    let bad = f
        .api
        .post(
            &batch,
            &f.admin,
            &json!({"tasks": [
                {"type": "build", "input": {"n": 1}},
                {"type": "build", "input": {"n": 2}, "priority": 5000},
            ]})
            .to_string(),
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert_eq!(
        bad.body["error"]["field"], "tasks[1].priority",
        "{}",
        bad.body
    );
    let nothing = f.claim(&a, &["build"], json!({"limit": 10})).await;
    assert_eq!(
        nothing.body,
        json!([]),
        "the valid first task was not stored"
    );
    let empty = f.api.post(&batch, &f.admin, r#"{"tasks": []}"#).await;
    assert_eq!(
        (empty.status, empty.body["error"]["field"].as_str()),
        (400, Some("tasks"))
    );

    let stored = f
        .api
        .post(
            &batch,
            &f.admin,
            &json!({"tasks": [
                {"type": "build", "input": {"n": 1}},
                {"type": "build", "input": {"n": 2}, "idempotencyKey": "b-2"},
                {"type": "build", "input": {"n": 3}, "idempotencyKey": "b-2"},
            ]})
            .to_string(),
        )
        .await;
    assert_eq!(stored.status, 201, "{}", stored.body);
    let tasks = stored.body["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 3);
    assert_eq!(
        tasks[1]["id"], tasks[2]["id"],
        "a repeated key is the first task"
    );
    assert_eq!(tasks[0]["status"], "queued");
    let first = tasks[0]["id"].as_str().unwrap().to_string();
    let events = f
        .api
        .get(
            &format!(
                "{}/api/v1/provenance/task/{first}",
                f.mesh.url("provenance-service")
            ),
            &f.admin,
        )
        .await;
    assert_eq!(events.status, 200, "{}", events.body);
    let actions: Vec<&str> = events.body["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(
        actions.contains(&"task_created") && actions.contains(&"task_queued"),
        "each task of a batch is recorded as a single one is: {actions:?}"
    );

    let leases = f.claim(&a, &["build"], json!({"limit": 10})).await;
    let leases = leases.body.as_array().unwrap().clone();
    assert_eq!(leases.len(), 2, "two distinct tasks");
    let completions = json!({"completions": [
        {"taskId": leases[0]["task"]["id"], "leaseToken": leases[0]["leaseToken"], "output": {"ok": 1}},
        {"taskId": leases[1]["task"]["id"], "leaseToken": "01a20aae-b382-76d3-a28b-aaf05dc4b866"},
    ]});
    let done = f
        .api
        .post(
            &f.queue("/completions"),
            &f.worker,
            &completions.to_string(),
        )
        .await;
    assert_eq!(done.status, 200, "{}", done.body);
    let results = done.body["results"].as_array().unwrap();
    assert_eq!(results[0]["task"]["status"], "completed");
    assert_eq!(results[0]["task"]["output"]["ok"], 1);
    assert_eq!(
        (
            results[1]["error"]["status"].as_u64(),
            results[1]["error"]["code"].as_str()
        ),
        (Some(409), Some("conflict")),
        "{}",
        done.body
    );
    let second = leases[1]["task"]["id"].as_str().unwrap();
    assert_eq!(
        f.task(second).await["status"],
        "running",
        "a refused completion changes nothing"
    );
    let malformed = f
        .api
        .post(
            &f.queue("/completions"),
            &f.worker,
            r#"{"completions": [{"taskId": "x", "leaseToken": "y"}]}"#,
        )
        .await;
    assert_eq!(malformed.status, 400, "{}", malformed.body);
    let none = f
        .api
        .post(
            &f.queue("/completions"),
            &f.worker,
            r#"{"completions": []}"#,
        )
        .await;
    assert_eq!(
        (none.status, none.body["error"]["field"].as_str()),
        (400, Some("completions"))
    );
}
