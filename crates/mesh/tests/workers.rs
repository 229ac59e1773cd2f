//! Agents in their own processes, speaking HTTP to the mesh: the example agent does
//! real work, and SIGKILLs of workers and of the mesh lose and duplicate nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Api, MeshProcess, spawn_echo_agent};
use serde_json::json;
use std::collections::HashMap;
use std::process::Child;
use std::time::Duration;

async fn count_by_status(api: &Api, mesh: &MeshProcess, key: &str) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{}/api/v1/tasks?limit=500", mesh.url("mesh-orchestrator"));
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page = api.get(&url, key).await.body;
        for t in page["items"].as_array().unwrap() {
            *counts
                .entry(t["status"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return counts,
        }
    }
}

fn write_key(dir: &std::path::Path, key: &str) -> std::path::PathBuf {
    let path = dir.join("agent.key");
    std::fs::write(&path, key).unwrap();
    path
}

fn sigterm(child: &Child) {
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
}

#[tokio::test]
async fn a_separate_agent_process_does_the_work_and_retires() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = MeshProcess::up(dir.path(), &[]);
    let admin = mesh.admin_key.clone().unwrap();
    let api = Api::new();
    let agent_key = api
        .key(&mesh.url("mesh-orchestrator"), &admin, "agent")
        .await;
    let key_file = write_key(dir.path(), &agent_key);
    let mut worker = spawn_echo_agent(
        dir.path(),
        &mesh,
        &key_file,
        &["--name", "echo-1", "--types", "echo"],
    );
    let orch = mesh.url("mesh-orchestrator");
    let mut ids = Vec::new();
    for i in 0..20 {
        let r = api
            .post(
                &format!("{orch}/api/v1/tasks"),
                &admin,
                &json!({"type": "echo", "input": {"i": i}}).to_string(),
            )
            .await;
        ids.push(r.body["taskId"].as_str().unwrap().to_string());
    }
    for _ in 0..400 {
        if count_by_status(&api, &mesh, &admin).await.get("completed") == Some(&20) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let t = api
        .get(&format!("{orch}/api/v1/tasks/{}", ids[7]), &admin)
        .await
        .body;
    assert_eq!(t["status"], "completed", "{t}");
    assert_eq!(t["output"]["echo"], json!({"i": 7}));
    assert_eq!(t["output"]["agent"], "echo-1");
    sigterm(&worker);
    let status = worker.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let agents = api
        .get(
            &format!("{}/api/v1/agents", mesh.url("agent-registry")),
            &admin,
        )
        .await
        .body;
    assert_eq!(agents["items"][0]["status"], "retired", "{agents}");
}

/// Kills workers and the mesh at pseudo-random points while 500 tasks flow, then checks
/// the ledger: every acknowledged task completed exactly once.
async fn crash_ledger(extra: &[&str]) {
    const TASKS: usize = 500;
    const WORKERS: usize = 3;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mesh.toml");
    std::fs::write(
        &config,
        "[queue]\nlease_ms = 1000\nsweep_interval_ms = 100\nbackoff_base_ms = 20\nbackoff_max_ms = 100\nmax_attempts = 1000\n",
    )
    .unwrap();
    let mut args = vec!["--config", config.to_str().unwrap()];
    args.extend_from_slice(extra);
    let mut mesh = MeshProcess::up(dir.path(), &args);
    let admin = mesh.admin_key.clone().unwrap();
    let api = Api::new();
    let agent_key = api
        .key(&mesh.url("mesh-orchestrator"), &admin, "agent")
        .await;
    let key_file = write_key(dir.path(), &agent_key);
    let worker_args = [
        "--types",
        "job",
        "--concurrency",
        "2",
        "--work-ms",
        "40",
        "--lease-ms",
        "1000",
    ];

    // Submit everything first; each submission is acknowledged before it counts.
    let orch = mesh.url("mesh-orchestrator");
    let mut acked = Vec::with_capacity(TASKS);
    for i in 0..TASKS {
        let body = json!({"type": "job", "input": {"i": i}, "idempotencyKey": format!("job-{i}")});
        let r = api
            .post(&format!("{orch}/api/v1/tasks"), &admin, &body.to_string())
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        acked.push(r.body["taskId"].as_str().unwrap().to_string());
    }

    let mut workers: Vec<Child> = (0..WORKERS)
        .map(|_| spawn_echo_agent(dir.path(), &mesh, &key_file, &worker_args))
        .collect();
    let mut kills = 0;
    let mut mesh_kills = 0;
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    while kills < 24 {
        tokio::time::sleep(Duration::from_millis(150 + next() % 200)).await;
        if kills % 6 == 5 {
            // The mesh itself dies; workers lose their connection and are restarted
            // against the new one (its ports are ephemeral).
            mesh.signal("KILL");
            mesh.wait(Duration::from_secs(10));
            mesh = MeshProcess::up(dir.path(), &args);
            for w in &mut workers {
                let _ = w.kill();
                let _ = w.wait();
                *w = spawn_echo_agent(dir.path(), &mesh, &key_file, &worker_args);
            }
            mesh_kills += 1;
        } else {
            // A kill is meant to land on work in flight: wait (briefly) until some task
            // is leased, so that a run cannot end with no orphan to re-run (a kill that
            // lands between tasks orphans nothing).
            for _ in 0..30 {
                let running = count_by_status(&api, &mesh, &admin).await;
                if running.get("running").copied().unwrap_or(0) > 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let victim = (next() % WORKERS as u64) as usize;
            let _ = workers[victim].kill();
            let _ = workers[victim].wait();
            workers[victim] = spawn_echo_agent(dir.path(), &mesh, &key_file, &worker_args);
        }
        kills += 1;
    }

    let mut counts = HashMap::new();
    for _ in 0..1200 {
        counts = count_by_status(&api, &mesh, &admin).await;
        if counts.get("completed") == Some(&TASKS) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for w in &workers {
        sigterm(w);
    }
    for w in &mut workers {
        let _ = w.wait();
    }
    assert_eq!(
        counts.get("completed"),
        Some(&TASKS),
        "{counts:?} after {kills} kills ({mesh_kills} of the mesh)"
    );

    // The ledger, from the provenance log: one accepted completion per task.
    let prov = mesh.url("provenance-service");
    let mut completions: HashMap<String, usize> = HashMap::new();
    let mut reruns = 0;
    let mut after = 0;
    loop {
        let events = api
            .get(
                &format!("{prov}/api/v1/provenance/events?after={after}&limit=1000"),
                &admin,
            )
            .await
            .body;
        let events = events.as_array().unwrap();
        let Some(last) = events.last() else { break };
        after = last["seq"].as_i64().unwrap();
        for e in events {
            match e["action"].as_str() {
                Some("task_completed") => {
                    *completions
                        .entry(e["taskId"].as_str().unwrap().to_string())
                        .or_default() += 1
                }
                Some("task_retry_scheduled") if e["payload"]["reason"] == "lease_expired" => {
                    reruns += 1
                }
                _ => {}
            }
        }
    }
    let lost: Vec<&String> = acked
        .iter()
        .filter(|id| !completions.contains_key(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged tasks never completed",
        lost.len()
    );
    let twice: Vec<(&String, &usize)> = completions.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        twice.is_empty(),
        "tasks completed more than once: {twice:?}"
    );
    assert!(reruns > 0, "the kills should have orphaned some tasks");
    let v = api
        .get(&format!("{prov}/api/v1/provenance/verify"), &admin)
        .await
        .body;
    assert_eq!(v["ok"], true, "{v}");
    eprintln!(
        "ledger: {TASKS} tasks, {kills} kills ({mesh_kills} of the mesh), {reruns} orphaned tasks re-run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_survives_killed_workers_and_mesh() {
    crash_ledger(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_survives_killed_workers_and_mesh() {
    let Some(url) = common::postgres_url().await else {
        return;
    };
    crash_ledger(&["--store", &url]).await;
}
