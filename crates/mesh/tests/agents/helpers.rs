//! Starting the mesh, local SDK agents, and reading tasks, agents and events.

use crate::common::{self, Api, MeshProcess, wait_for};
use async_trait::async_trait;
use mesh_sdk::{AgentError, BaseAgent, MeshClient, TaskContext, TaskOutcome, Worker};
use mesh_types::{NewAgent, Task};
use serde_json::{Value, json};
use std::time::Duration;

/// Probes and the lifecycle sweep run every 3 s (a third of the TTL); failures
/// dead-letter at once so a failed remote task is seen quickly.
const CONFIG: &str = "heartbeat_ttl_secs = 9\n[queue]\nmax_attempts = 1\n";

pub fn up(dir: &std::path::Path) -> MeshProcess {
    let config = dir.join("mesh.toml");
    std::fs::write(&config, CONFIG).unwrap();
    MeshProcess::up(dir, &["--config", config.to_str().unwrap()])
}

/// Echoes its input after `work`.
struct Echo {
    name: String,
    types: Vec<String>,
    work: Duration,
}

#[async_trait]
impl BaseAgent for Echo {
    fn descriptor(&self) -> NewAgent {
        serde_json::from_value(json!({
            "name": self.name, "version": "1.0.0", "role": "custom", "riskTier": "low",
            "capabilities": self.types,
        }))
        .unwrap()
    }

    async fn on_task_received(
        &self,
        _: &TaskContext,
        task: &Task,
    ) -> Result<TaskOutcome, AgentError> {
        tokio::time::sleep(self.work).await;
        Ok(TaskOutcome::Complete(json!({"echo": task.input})))
    }
}

/// An echo agent working for `mesh` over HTTP in this process; `stop` ends it.
pub async fn echo_worker(
    api: &Api,
    mesh: &MeshProcess,
    admin: &str,
    name: &str,
    types: &[&str],
    work: Duration,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<mesh_sdk::WorkerReport>,
    String,
) {
    let key = api
        .key(&mesh.url("mesh-orchestrator"), admin, "agent")
        .await;
    let client =
        MeshClient::http(&mesh.url("task-queue"), &mesh.url("agent-registry"), &key).unwrap();
    let agent = Echo {
        name: name.into(),
        types: types.iter().map(|t| t.to_string()).collect(),
        work,
    };
    let options = mesh_sdk::WorkerOptions {
        concurrency: 1,
        ..Default::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(async move {
        Worker::new(agent, client, options)
            .run(async move {
                let _ = stopped.await;
            })
            .await
            .unwrap()
    });
    let id = agent_named(api, mesh, admin, name).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    (stop, worker, id)
}

async fn agent_named(api: &Api, mesh: &MeshProcess, key: &str, name: &str) -> Value {
    let url = format!("{}/api/v1/agents?limit=500", mesh.url("agent-registry"));
    wait_for(|| async {
        let page = api.get(&url, key).await.body;
        page["items"]
            .as_array()?
            .iter()
            .find(|a| a["name"] == name)
            .cloned()
    })
    .await
}

pub async fn agent_status(
    api: &Api,
    mesh: &MeshProcess,
    key: &str,
    id: &str,
    status: &str,
) -> Value {
    let url = format!("{}/api/v1/agents/{id}", mesh.url("agent-registry"));
    wait_for(|| async {
        let agent = api.get(&url, key).await.body;
        (agent["status"] == status).then_some(agent)
    })
    .await
}

pub async fn submit(api: &Api, mesh: &MeshProcess, key: &str, body: Value) -> String {
    let r = api
        .post(
            &format!("{}/api/v1/tasks", mesh.url("mesh-orchestrator")),
            key,
            &body.to_string(),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["taskId"].as_str().unwrap().to_string()
}

pub async fn task_when(api: &Api, mesh: &MeshProcess, key: &str, id: &str, status: &str) -> Value {
    let url = format!("{}/api/v1/tasks/{id}", mesh.url("mesh-orchestrator"));
    wait_for(|| async {
        let task = api.get(&url, key).await.body;
        (task["status"] == status).then_some(task)
    })
    .await
}

pub async fn import(api: &Api, mesh: &MeshProcess, key: &str, body: Value) -> common::Reply {
    api.post(
        &format!("{}/api/v1/agents/import", mesh.url("agent-registry")),
        key,
        &body.to_string(),
    )
    .await
}

pub fn events_of<'a>(events: &'a [Value], subject: &str) -> Vec<&'a str> {
    events
        .iter()
        .filter(|e| e["subjectId"] == subject)
        .filter_map(|e| e["action"].as_str())
        .collect()
}
