//! The seed's agent-failure table, over HTTP with real agent processes:
//!
//! | Agent crash | re-route to an equivalent agent | `a_crashed_agents_task_completes_on_its_peer` |
//! | Agent timeout | kill, log, retry on a different agent | `a_timed_out_attempt_is_killed_and_retried_elsewhere` |
//! | Invalid output | route to the critic | `flows.rs::invalid_output_is_routed_to_the_critic` |
//! | No available agents | queue with SLO-aware timeout | `queue.rs` (`slo_timeout`) |

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Api, MeshProcess, spawn_echo_agent, wait_for};
use serde_json::{Value, json};
use std::process::Child;

struct Setup {
    mesh: MeshProcess,
    api: Api,
    admin: String,
    key_file: std::path::PathBuf,
    dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let mesh = MeshProcess::up(dir.path(), &[]);
    let admin = mesh.admin_key.clone().unwrap();
    let api = Api::new();
    let key = api
        .key(&mesh.url("mesh-orchestrator"), &admin, "agent")
        .await;
    let key_file = dir.path().join("agent.key");
    std::fs::write(&key_file, key).unwrap();
    Setup {
        mesh,
        api,
        admin,
        key_file,
        dir,
    }
}

impl Setup {
    fn agent(&self, name: &str, work_ms: u64) -> Child {
        spawn_echo_agent(
            self.dir.path(),
            &self.mesh,
            &self.key_file,
            &[
                "--name",
                name,
                "--types",
                "slow_job",
                "--work-ms",
                &work_ms.to_string(),
                "--lease-ms",
                "900",
            ],
        )
    }

    async fn submit(&self, metadata: Value) -> String {
        let body = json!({"type": "slow_job", "input": {"n": 1}, "metadata": metadata});
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

    async fn task(&self, id: &str) -> Value {
        let url = format!("{}/api/v1/tasks/{id}", self.mesh.url("mesh-orchestrator"));
        self.api.get(&url, &self.admin).await.body
    }

    async fn agent_id(&self, name: &str) -> String {
        let url = format!(
            "{}/api/v1/agents?limit=100",
            self.mesh.url("agent-registry")
        );
        wait_for(|| async {
            let agents = self.api.get(&url, &self.admin).await.body;
            agents["items"]
                .as_array()?
                .iter()
                .find(|a| a["name"] == name)
                .map(|a| a["id"].as_str().unwrap().to_string())
        })
        .await
    }

    async fn events(&self, id: &str) -> Vec<Value> {
        let url = format!(
            "{}/api/v1/provenance/task/{id}",
            self.mesh.url("provenance-service")
        );
        self.api.get(&url, &self.admin).await.body["timeline"]
            .as_array()
            .cloned()
            .unwrap()
    }
}

/// Waits until `id` is running on the agent with id `agent`.
async fn running_on(s: &Setup, id: &str, agent: &str) {
    wait_for(|| async {
        let task = s.task(id).await;
        (task["status"] == "running" && task["leasedBy"] == agent).then_some(())
    })
    .await;
}

async fn completed(s: &Setup, id: &str) -> Value {
    wait_for(|| async {
        let task = s.task(id).await;
        (task["status"] == "completed").then_some(task)
    })
    .await
}

#[tokio::test]
async fn a_timed_out_attempt_is_killed_and_retried_elsewhere() {
    let s = setup().await;
    let mut stuck = s.agent("stuck", 60_000);
    let stuck_id = s.agent_id("stuck").await;
    let id = s.submit(json!({"timeoutMs": 1500})).await;
    running_on(&s, &id, &stuck_id).await;
    let mut quick = s.agent("quick", 10);
    let quick_id = s.agent_id("quick").await;

    let task = completed(&s, &id).await;
    assert_eq!(task["output"]["agent"], "quick", "{task}");
    assert_eq!(task["attempts"], 2);
    let events = s.events(&id).await;
    let timeout = events
        .iter()
        .find(|e| e["action"] == "task_retry_scheduled")
        .unwrap();
    assert_eq!(timeout["agentId"], stuck_id.as_str());
    assert!(
        timeout["reason"]
            .as_str()
            .unwrap()
            .starts_with("agent_timeout"),
        "{timeout}"
    );
    let done = events
        .iter()
        .find(|e| e["action"] == "task_completed")
        .unwrap();
    assert_eq!(done["agentId"], quick_id.as_str());
    // The stuck agent was told to stop: its handler was dropped, not left running.
    let log = std::fs::read_dir(s.dir.path())
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
        .find(|text| text.contains("abandoning the task"));
    assert!(
        log.is_some(),
        "the stuck agent never logged abandoning the task"
    );
    for child in [&mut stuck, &mut quick] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

#[tokio::test]
async fn a_crashed_agents_task_completes_on_its_peer() {
    let s = setup().await;
    let mut crashing = s.agent("crashing", 60_000);
    let crashing_id = s.agent_id("crashing").await;
    let id = s.submit(json!({})).await;
    running_on(&s, &id, &crashing_id).await;
    let mut peer = s.agent("peer", 10);
    s.agent_id("peer").await;
    crashing.kill().unwrap();
    crashing.wait().unwrap();

    let task = completed(&s, &id).await;
    assert_eq!(task["output"]["agent"], "peer", "{task}");
    let events = s.events(&id).await;
    let lost = events
        .iter()
        .find(|e| e["action"] == "task_retry_scheduled")
        .unwrap();
    assert_eq!(lost["agentId"], crashing_id.as_str());
    assert!(lost["reason"].as_str().unwrap().contains("lease"), "{lost}");
    peer.kill().unwrap();
    peer.wait().unwrap();
}
