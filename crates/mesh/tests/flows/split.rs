//! Flows with two orchestrators on one PostgreSQL, one of them killed mid-flow.

use super::common::{self, Api, MeshProcess};
use super::{SEED_EXAMPLE, wait_until};
use std::path::Path;
use std::time::Duration;

/// `mesh serve mesh-orchestrator` on PostgreSQL, reaching the rest at `base`'s ports,
/// running the built-in agents and flows with `config`.
fn orchestrator(dir: &Path, store: &str, base: &MeshProcess, config: &str) -> MeshProcess {
    let name = format!("orch-{}.toml", uuid::Uuid::new_v4().simple());
    std::fs::write(dir.join(&name), config).unwrap();
    let peers = [
        "task-queue",
        "agent-registry",
        "routing-gateway",
        "tool-registry",
    ];
    let mut args = vec![
        "serve".to_string(),
        "mesh-orchestrator".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--store".into(),
        store.to_string(),
        "--config".into(),
        name,
    ];
    for peer in peers {
        args.push("--peer".into());
        args.push(format!("{peer}={}", base.url(peer)));
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    MeshProcess::start_as_configured(dir, &refs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_orchestrators_share_the_flows_and_survive_losing_one() {
    let Some(store) = common::postgres_url().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The shared services, with a slow sim model so flows are still running when an
    // orchestrator dies.
    std::fs::write(
        dir.path().join("base.toml"),
        "[queue]\nlease_ms = 2000\n\n[[gateway.providers]]\nname = \"slow\"\nkind = \"sim\"\nmodels = [\"sim-slow\"]\nlatency_ms = 300\n",
    )
    .unwrap();
    let base = MeshProcess::up(dir.path(), &["--store", &store, "--config", "base.toml"]);
    let admin = base.admin_key.clone().unwrap();
    let config = r#"
[queue]
lease_ms = 2000

[[agents]]
name = "planner"
kind = "planner"
model = "sim-slow"

[[agents]]
name = "coder"
kind = "coder"
model = "sim-slow"

[[agents]]
name = "critic"
kind = "critic"
model = "sim-slow"
"#;
    let mut first = orchestrator(dir.path(), &store, &base, config);
    let api = Api::new();
    let submit = |orch: &MeshProcess, i: usize| {
        let url = format!("{}/api/v1/tasks", orch.url("mesh-orchestrator"));
        let body = SEED_EXAMPLE.replace("src/foo.ts", &format!("src/f{i}.ts"));
        let api = &api;
        let admin = &admin;
        async move {
            let r = api.post(&url, admin, &body).await;
            assert_eq!(r.status, 201, "{}", r.body);
            r.body["taskId"].as_str().unwrap().to_string()
        }
    };
    let tasks_url = |id: &str| format!("{}/api/v1/tasks/{id}", base.url("mesh-orchestrator"));
    let mut ids = vec![submit(&first, 0).await, submit(&first, 1).await];
    // The first orchestrator's runner has taken its flows …
    wait_until(Duration::from_secs(30), || async {
        for id in &ids {
            if api.get(&tasks_url(id), &admin).await.body["status"] == "queued" {
                return None;
            }
        }
        Some(())
    })
    .await;
    // … a second orchestrator joins and takes new ones alongside it …
    let second = orchestrator(dir.path(), &store, &base, config);
    ids.push(submit(&second, 2).await);
    ids.push(submit(&first, 3).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // … and the first dies mid-flow, with its runner and its agents.
    first.signal("KILL");
    first.wait(Duration::from_secs(10));
    for id in &ids {
        let task = wait_until(Duration::from_secs(90), || async {
            let task = api.get(&tasks_url(id), &admin).await.body;
            matches!(task["status"].as_str(), Some("completed" | "failed")).then_some(task)
        })
        .await;
        assert_eq!(task["status"], "completed", "{task}");
    }
    let events = api
        .get(
            &format!(
                "{}/api/v1/provenance/events?limit=1000",
                base.url("provenance-service")
            ),
            &admin,
        )
        .await
        .body;
    let runners: std::collections::HashSet<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "task_assigned")
        .filter(|e| ids.iter().any(|id| e["taskId"] == id.as_str()))
        .map(|e| e["payload"]["agentName"].as_str().unwrap())
        .collect();
    assert_eq!(
        runners.len(),
        2,
        "both orchestrators ran flows: {runners:?}"
    );
    drop(second);
}
