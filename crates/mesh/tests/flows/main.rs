//! Orchestrated flows end to end: the code flow (planner → coders → critic) with the
//! built-in agents on the `sim` provider, approval for high-risk work, the seed's
//! agent-failure table, agents spawned as supervised processes, and flows surviving
//! the death of an orchestrator.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;
#[path = "../agents/fake_a2a.rs"]
mod fake_a2a;
mod lifecycle;
mod remote;
mod split;

use common::{Api, MeshProcess, count, events_when};
use serde_json::Value;
use std::time::Duration;

const SEED_EXAMPLE: &str = r#"{"type": "code_refactor", "input": {"spec": "Split the parser into small functions", "target": "src/foo.ts"}, "priority": 1, "metadata": {"requester": "user@example.com"}}"#;

pub(crate) struct Mesh {
    process: MeshProcess,
    api: Api,
    admin: String,
    dir: tempfile::TempDir,
}

impl Mesh {
    /// `mesh up` with the built-in agents and flows, plus `config` (TOML) and files.
    fn up(config: &str, files: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        std::fs::write(dir.path().join("mesh.toml"), config).unwrap();
        let process = MeshProcess::up_with_builtins(dir.path(), &["--config", "mesh.toml"]);
        let admin = process.admin_key.clone().unwrap();
        Mesh {
            process,
            api: Api::new(),
            admin,
            dir,
        }
    }

    fn url(&self, service: &str, path: &str) -> String {
        format!("{}{path}", self.process.url(service))
    }

    async fn submit(&self, body: &str) -> String {
        let r = self
            .api
            .post(
                &self.url("mesh-orchestrator", "/api/v1/tasks"),
                &self.admin,
                body,
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        r.body["taskId"].as_str().unwrap().to_string()
    }

    async fn task(&self, id: &str) -> Value {
        let url = self.url("mesh-orchestrator", &format!("/api/v1/tasks/{id}"));
        self.api.get(&url, &self.admin).await.body
    }

    /// Waits for the task to reach a final status; returns it.
    async fn finished(&self, id: &str) -> Value {
        wait_until(Duration::from_secs(60), || async {
            let task = self.task(id).await;
            matches!(
                task["status"].as_str(),
                Some("completed" | "failed" | "cancelled")
            )
            .then_some(task)
        })
        .await
    }

    async fn subtasks(&self, id: &str) -> Vec<Value> {
        let url = self.url(
            "mesh-orchestrator",
            &format!("/api/v1/tasks?parentId={id}&limit=500"),
        );
        self.api.get(&url, &self.admin).await.body["items"]
            .as_array()
            .cloned()
            .unwrap()
    }

    async fn provenance(&self, id: &str) -> Value {
        let url = self.url(
            "provenance-service",
            &format!("/api/v1/provenance/task/{id}"),
        );
        self.api.get(&url, &self.admin).await.body
    }
}

/// `wait_for` with a longer limit: whole flows take several model and queue round trips.
async fn wait_until<T, F, Fut>(limit: Duration, probe: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not reached within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn of_type<'a>(subtasks: &'a [Value], kind: &str) -> Vec<&'a Value> {
    subtasks.iter().filter(|t| t["type"] == kind).collect()
}

fn edge_kinds(provenance: &Value) -> Vec<String> {
    let mut kinds: Vec<String> = provenance["graph"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect();
    kinds.sort();
    kinds.dedup();
    kinds
}

#[tokio::test]
async fn the_code_flow_plans_codes_and_converges_after_a_critic_rejection() {
    // The coders read their target through the tool registry's file_read.
    let target = ("workspace/src/foo.ts", "export const answer = 42;\n");
    let mesh = Mesh::up("[tools]\nallowed_paths = [\"workspace\"]\n", &[target]);
    let id = mesh.submit(SEED_EXAMPLE).await;
    let task = mesh.finished(&id).await;
    assert_eq!(task["status"], "completed", "{task}");
    let output = &task["output"];
    // The embedded fixture: three planned steps; the critic rejects round 1, approves 2.
    assert_eq!(output["plan"].as_array().unwrap().len(), 3, "{output}");
    assert_eq!(output["rounds"], 2);
    let verdicts: Vec<&str> = output["reviews"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(verdicts, ["reject", "approve"]);
    assert!(
        output["changes"][0]["content"]
            .as_str()
            .unwrap()
            .contains("src/foo.ts"),
        "{output}"
    );

    let subtasks = mesh.subtasks(&id).await;
    assert_eq!(of_type(&subtasks, "plan").len(), 1);
    assert_eq!(
        of_type(&subtasks, "implement").len(),
        6,
        "3 steps × 2 rounds"
    );
    assert_eq!(of_type(&subtasks, "review").len(), 2);
    assert!(subtasks.iter().all(|t| t["status"] == "completed"));
    // Round 2's coders got the critic's notes.
    let second: Vec<&Value> = of_type(&subtasks, "implement")
        .into_iter()
        .filter(|t| t["metadata"]["round"] == 2)
        .collect();
    assert_eq!(second.len(), 3);
    assert!(
        second[0]["input"]["notes"]
            .as_str()
            .unwrap()
            .contains("unit test")
    );

    // Model calls are written in batches: wait for them before reading the graph.
    events_when(&mesh.api, &mesh.process, &mesh.admin, |e| {
        count(e, "model_call") >= 9
    })
    .await;
    let provenance = mesh.provenance(&id).await;
    let kinds = edge_kinds(&provenance);
    for kind in [
        "SPAWNED",
        "ASSIGNED_TO",
        "INVOKED",
        "CALLED",
        "SUBJECT_TO",
        "PRODUCED",
        "REVIEWED_BY",
    ] {
        assert!(
            kinds.contains(&kind.to_string()),
            "{kind} missing from {kinds:?}"
        );
    }
    let reads: Vec<&Value> = provenance["graph"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["label"] == "ToolCall")
        .collect();
    assert_eq!(reads.len(), 6, "one file_read per coder subtask");
    assert!(
        reads.iter().all(|r| r["properties"]["success"] == true),
        "{reads:?}"
    );
    let reviewed_by: Vec<&Value> = provenance["graph"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "REVIEWED_BY")
        .collect();
    assert_eq!(reviewed_by[0]["from"], id.as_str());
    let critic = provenance["graph"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == reviewed_by[0]["to"])
        .unwrap();
    assert!(
        critic["properties"]["name"]
            .as_str()
            .unwrap()
            .starts_with("critic-")
    );
}

#[tokio::test]
async fn the_sim_fixture_decides_the_subtasks() {
    let script = r#"
[[reply]]
when = ["You are the planner agent"]
text = '{"steps": [{"title": "Only step A"}, {"title": "Only step B"}]}'
[[reply]]
when = ["You are the critic agent"]
text = '{"verdict": "approve", "notes": "fine"}'
[[reply]]
when = ["You are the coder agent"]
text = 'did {{line:Step}}'
"#;
    let mesh = Mesh::up(
        "[gateway]\nsim_script = \"script.toml\"\n",
        &[("script.toml", script)],
    );
    let id = mesh.submit(SEED_EXAMPLE).await;
    let task = mesh.finished(&id).await;
    assert_eq!(task["status"], "completed", "{task}");
    let titles: Vec<&str> = task["output"]["plan"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["Only step A", "Only step B"]);
    assert_eq!(task["output"]["rounds"], 1);
    let subtasks = mesh.subtasks(&id).await;
    assert_eq!(of_type(&subtasks, "implement").len(), 2);
    assert_eq!(
        task["output"]["changes"][1]["content"],
        "did 2 of 2: Only step B"
    );
}

#[tokio::test]
async fn invalid_output_is_routed_to_the_critic() {
    // First-round coders answer nothing, which fails the flow's output schema; the
    // critic sees why and sends the work back; second-round coders answer properly.
    let script = r#"
[[reply]]
when = ["You are the planner agent"]
text = '{"steps": [{"title": "One step"}]}'
[[reply]]
when = ["You are the critic agent", "produced invalid output"]
text = '{"verdict": "reject", "notes": "the change was empty"}'
[[reply]]
when = ["You are the critic agent"]
text = '{"verdict": "approve", "notes": "ok now"}'
[[reply]]
when = ["You are the coder agent", "Reviewer notes from the last round: none"]
text = ''
[[reply]]
when = ["You are the coder agent"]
text = 'a real change'
"#;
    let mesh = Mesh::up(
        "[gateway]\nsim_script = \"script.toml\"\n",
        &[("script.toml", script)],
    );
    let id = mesh.submit(SEED_EXAMPLE).await;
    let task = mesh.finished(&id).await;
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(task["output"]["rounds"], 2);
    assert_eq!(task["output"]["reviews"][0]["verdict"], "reject");
    let subtasks = mesh.subtasks(&id).await;
    let first_review = of_type(&subtasks, "review")
        .into_iter()
        .find(|t| t["metadata"]["round"] == 1)
        .unwrap();
    let problems = first_review["input"]["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1);
    assert!(
        problems[0].as_str().unwrap().contains("output/content"),
        "{problems:?}"
    );
    let events = events_when(&mesh.api, &mesh.process, &mesh.admin, |e| {
        count(e, "output_invalid") == 1
    })
    .await;
    let invalid = events
        .iter()
        .find(|e| e["action"] == "output_invalid")
        .unwrap();
    assert_eq!(invalid["payload"]["routedTo"], "critic");
}

#[tokio::test]
async fn high_risk_code_waits_for_a_human_then_runs() {
    let mesh = Mesh::up("", &[]);
    let body = SEED_EXAMPLE.replace("\"priority\": 1", "\"priority\": 1, \"riskTier\": \"high\"");
    let id = mesh.submit(&body).await;
    let parked = mesh.task(&id).await;
    assert_eq!(parked["status"], "needs_approval", "{parked}");
    assert_eq!(parked["metadata"]["flow"], "high_risk_code");
    let approvals = mesh
        .api
        .get(
            &mesh.url("mesh-orchestrator", "/api/v1/approvals"),
            &mesh.admin,
        )
        .await;
    let pending = &approvals.body["items"][0];
    assert_eq!(pending["id"], id.as_str());
    assert!(
        pending["reason"]
            .as_str()
            .unwrap()
            .contains("high_risk_code"),
        "{pending}"
    );
    // The same team the bundled policy names for critical tasks.
    assert_eq!(pending["escalationTarget"], "platform-oncall");
    // Nothing runs until a human says so.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(mesh.subtasks(&id).await.is_empty());
    let approve = mesh
        .api
        .post(
            &mesh.url(
                "mesh-orchestrator",
                &format!("/api/v1/approvals/{id}/approve"),
            ),
            &mesh.admin,
            "{}",
        )
        .await;
    assert_eq!(approve.status, 200, "{}", approve.body);
    let task = mesh.finished(&id).await;
    assert_eq!(task["status"], "completed", "{task}");
}
