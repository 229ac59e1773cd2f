//! Split mode: services as separate processes on one PostgreSQL, reaching each other
//! only through their HTTP APIs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Api, MeshProcess, SEED_AGENT, SEED_TASK, mesh};
use std::time::Duration;

fn serve(dir: &std::path::Path, service: &str, url: &str, peers: &[(&str, &str)]) -> MeshProcess {
    let mut args = vec![
        "serve".to_string(),
        service.to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--store".into(),
        url.to_string(),
    ];
    for (name, peer) in peers {
        args.push("--peer".into());
        args.push(format!("{name}={peer}"));
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    MeshProcess::start(dir, &refs)
}

/// `checks.peers` of a process's `/readyz`, once its first probe has reported.
async fn peer_checks(api: &Api, url: &str) -> serde_json::Value {
    common::wait_for(|| async {
        let r = api.call("GET", &format!("{url}/readyz"), None, None).await;
        let peers = r.body["checks"]["peers"].clone();
        peers.is_object().then_some(peers)
    })
    .await
}

/// A peer that does not answer shows in `/readyz`, naming it, without making the
/// process unready (every replica shares its peers).
#[tokio::test]
async fn readyz_names_peers_that_do_not_answer() {
    let dir = tempfile::tempdir().unwrap();
    // Port 9 (discard) is closed on loopback.
    let orch = MeshProcess::start(
        dir.path(),
        &[
            "serve",
            "mesh-orchestrator",
            "--listen",
            "127.0.0.1:0",
            "--peer",
            "task-queue=http://127.0.0.1:9",
            "--peer",
            "agent-registry=http://127.0.0.1:9",
        ],
    );
    let api = Api::new();
    let url = orch.url("mesh-orchestrator");
    let peers = peer_checks(&api, &url).await;
    for name in ["task-queue", "agent-registry"] {
        assert_eq!(peers[name]["ok"], false, "{peers}");
        assert!(
            peers[name]["error"].as_str().unwrap().contains("refused"),
            "{peers}"
        );
    }
    assert!(
        peers.get("routing-gateway").is_none(),
        "no agents run here: {peers}"
    );
    let r = api.call("GET", &format!("{url}/readyz"), None, None).await;
    assert_eq!((r.status, r.body["status"].as_str()), (200, Some("ready")));
}

fn counter(metrics: &str, route: &str, status: u16) -> u64 {
    metrics
        .lines()
        .find(|l| {
            l.starts_with("mesh_http_requests_total{")
                && l.contains(&format!("route=\"{route}\",status=\"{status}\""))
        })
        .and_then(|l| l.rsplit(' ').next())
        .map(|n| n.parse().unwrap())
        .unwrap_or(0)
}

#[tokio::test]
async fn orchestrator_reaches_queue_and_registry_over_http() {
    let Some(url) = common::postgres_url().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = mesh(&["keys", "create", "--role", "operator", "--store", &url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();

    let mut queue = serve(dir.path(), "task-queue", &url, &[]);
    let registry = serve(dir.path(), "agent-registry", &url, &[]);
    let queue_url = queue.url("task-queue");
    let registry_url = registry.url("agent-registry");
    let orch = serve(
        dir.path(),
        "mesh-orchestrator",
        &url,
        &[
            ("task-queue", &queue_url),
            ("agent-registry", &registry_url),
        ],
    );
    let orch_url = orch.url("mesh-orchestrator");
    assert_eq!(
        orch.endpoints.len(),
        1,
        "serve runs one service: {:?}",
        orch.endpoints
    );

    let api = Api::new();
    // Its /readyz says the peers it calls answer.
    let peers = peer_checks(&api, &orch_url).await;
    for (name, url) in [
        ("task-queue", &queue_url),
        ("agent-registry", &registry_url),
    ] {
        assert_eq!(peers[name]["ok"], true, "{peers}");
        assert_eq!(peers[name]["url"], url.as_str(), "{peers}");
    }
    assert_eq!(
        api.post(&format!("{registry_url}/api/v1/agents"), &key, SEED_AGENT)
            .await
            .status,
        201
    );
    let r = api
        .post(&format!("{orch_url}/api/v1/tasks"), &key, SEED_TASK)
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["taskId"].as_str().unwrap().to_string();

    // The calls crossed the wire: the queue and registry processes served them.
    let qm = api
        .call("GET", &format!("{queue_url}/metrics"), None, None)
        .await;
    let qm = qm.body.as_str().unwrap();
    assert_eq!(counter(qm, "/api/v1/queue/tasks", 201), 1, "{qm}");
    assert_eq!(counter(qm, "/api/v1/queue/stats", 200), 1, "{qm}");
    let rm = api
        .call("GET", &format!("{registry_url}/metrics"), None, None)
        .await;
    assert_eq!(
        counter(rm.body.as_str().unwrap(), "/api/v1/agents/match", 200),
        1
    );

    // Reads and errors come back through the orchestrator unchanged.
    let got = api
        .get(&format!("{orch_url}/api/v1/tasks/{id}"), &key)
        .await;
    assert_eq!(got.body["id"], id.as_str());
    let missing = api
        .get(
            &format!("{orch_url}/api/v1/tasks/01a20aae-b382-76d3-a28b-aaf05dc4b866"),
            &key,
        )
        .await;
    assert_eq!(
        (missing.status, missing.body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let bad = api
        .post(
            &format!("{orch_url}/api/v1/tasks"),
            &key,
            r#"{"type":"t","input":{},"parentId":"01a20aae-b382-76d3-a28b-aaf05dc4b866"}"#,
        )
        .await;
    assert_eq!(
        (bad.status, bad.body["error"]["field"].as_str()),
        (400, Some("parentId"))
    );
    let cancelled = api
        .post(&format!("{orch_url}/api/v1/tasks/{id}/cancel"), &key, "")
        .await;
    assert_eq!(cancelled.body["status"], "cancelled", "{}", cancelled.body);

    // The task row and its provenance are in the one shared PostgreSQL, chain intact.
    let rows = common::pg_query(&url, "SELECT status::text FROM tasks").await;
    assert_eq!(
        rows.iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>(),
        vec!["cancelled".to_string()]
    );
    let verify = mesh(&["provenance", "verify", "--store", &url]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );

    // With the queue gone, the orchestrator says which dependency failed.
    queue.signal("TERM");
    assert_eq!(queue.wait(Duration::from_secs(20)), Some(0));
    let down = api
        .post(&format!("{orch_url}/api/v1/tasks"), &key, SEED_TASK)
        .await;
    assert_eq!(down.status, 503, "{}", down.body);
    assert_eq!(down.body["error"]["code"], "dependency_unavailable");
    assert!(
        down.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("task-queue")
    );
}
