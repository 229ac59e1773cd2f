//! Acknowledged writes survive `kill -9`, and the provenance chain stays intact.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Api, MeshProcess, SEED_TASK};
use std::sync::{Arc, Mutex};

/// Submits tasks from several clients, SIGKILLs the mesh mid-stream, restarts it on the
/// same store and checks that every task that got a 201 is there.
async fn kill_during_writes(dir: &std::path::Path, extra: &[&str]) {
    let mut mesh = MeshProcess::up(dir, extra);
    let key = match &mesh.admin_key {
        Some(k) => k.clone(),
        None => panic!("expected a bootstrap key"),
    };
    let orch = mesh.url("mesh-orchestrator");
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let api = Api::new();
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (api, orch, key, acked) = (api.clone(), orch.clone(), key.clone(), acked.clone());
        clients.push(tokio::spawn(async move {
            for _ in 0..2_000 {
                let sent = api
                    .http
                    .post(format!("{orch}/api/v1/tasks"))
                    .bearer_auth(&key)
                    .header("content-type", "application/json")
                    .body(SEED_TASK)
                    .send()
                    .await;
                let Ok(resp) = sent else { return };
                if resp.status() != 201 {
                    return;
                }
                let Ok(body) = resp.json::<serde_json::Value>().await else {
                    return;
                };
                acked
                    .lock()
                    .unwrap()
                    .push(body["taskId"].as_str().unwrap().to_string());
            }
        }));
    }
    // Kill once a good number of writes are acknowledged and more are in flight.
    while acked.lock().unwrap().len() < 150 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    mesh.signal("KILL");
    mesh.wait(std::time::Duration::from_secs(10));
    for c in clients {
        c.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 150);

    let restarted = MeshProcess::up(dir, extra);
    let orch = restarted.url("mesh-orchestrator");
    let mut missing = Vec::new();
    for id in &acked {
        if api
            .get(&format!("{orch}/api/v1/tasks/{id}"), &key)
            .await
            .status
            != 200
        {
            missing.push(id.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged tasks lost: {missing:?}",
        missing.len(),
        acked.len()
    );
    let v = api
        .get(
            &format!(
                "{}/api/v1/provenance/verify",
                restarted.url("provenance-service")
            ),
            &key,
        )
        .await;
    assert_eq!(v.body["ok"], true, "{}", v.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_acknowledged_writes_through_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    kill_during_writes(dir.path(), &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_acknowledged_writes_through_kill_9() {
    let Some(url) = common::postgres_url().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    kill_during_writes(dir.path(), &["--store", &url]).await;
}
