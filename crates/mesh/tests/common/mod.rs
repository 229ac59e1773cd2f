//! Starting the real `mesh` binary on ephemeral ports and talking HTTP to it.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod upstream;

use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SERVICES: [&str; 8] = [
    "mesh-orchestrator",
    "routing-gateway",
    "policy-enforcer",
    "provenance-service",
    "agent-registry",
    "tool-registry",
    "events-bus",
    "task-queue",
];

pub fn mesh_bin() -> &'static str {
    env!("CARGO_BIN_EXE_mesh")
}

/// `mesh` with the given arguments, run to completion in a scratch directory (so a
/// default `./.mesh` never lands in the source tree).
pub fn mesh(args: &[&str]) -> std::process::Output {
    let cwd = tempfile::tempdir().unwrap();
    Command::new(mesh_bin())
        .args(args)
        .current_dir(cwd.path())
        .env("MESH_LOG", "warn")
        .output()
        .unwrap()
}

/// `--listen SERVICE=127.0.0.1:0` for every service, so `mesh up` never needs the seed
/// ports.
pub fn ephemeral_listen_args() -> Vec<String> {
    SERVICES
        .iter()
        .flat_map(|s| ["--listen".to_string(), format!("{s}=127.0.0.1:0")])
        .collect()
}

pub struct MeshProcess {
    pub child: Child,
    pub endpoints: HashMap<String, String>,
    pub admin_key: Option<String>,
    pub stderr_path: PathBuf,
}

impl MeshProcess {
    /// `mesh <args>` (up or serve) without the built-in agents and flows, which would
    /// take the tests' tasks (see [`without_builtins`]); waits until it is up.
    pub fn start(dir: &Path, args: &[&str]) -> MeshProcess {
        let args = without_builtins(dir, args);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        Self::start_as_configured(dir, &refs)
    }

    /// `mesh up` with every service on an ephemeral port, agents and flows as the
    /// configuration says (the built-in planner, coders, critic and flows by default).
    pub fn up_with_builtins(dir: &Path, extra: &[&str]) -> MeshProcess {
        let mut args = vec!["up".to_string()];
        args.extend(ephemeral_listen_args());
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        Self::start_as_configured(dir, &refs)
    }

    /// `mesh <args>` exactly as given, waiting until it prints its endpoints.
    pub fn start_as_configured(dir: &Path, args: &[&str]) -> MeshProcess {
        let stderr_path = dir.join(format!("mesh-{}.log", uuid::Uuid::new_v4().simple()));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut child = Command::new(mesh_bin())
            .args(args)
            .current_dir(dir)
            .env("MESH_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut endpoints = HashMap::new();
        let mut admin_key = None;
        let mut expect_key = false;
        loop {
            let Some(Ok(line)) = lines.next() else {
                let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                panic!("mesh exited before it was up; stderr:\n{log}");
            };
            let trimmed = line.trim();
            if expect_key {
                admin_key = Some(trimmed.to_string());
                expect_key = false;
            } else if trimmed.starts_with("Admin API key") {
                expect_key = true;
            } else if trimmed.starts_with("Press Ctrl-C") {
                break;
            } else if let Some((name, url)) = trimmed.split_once(char::is_whitespace)
                && SERVICES.contains(&name)
            {
                endpoints.insert(name.to_string(), url.trim().to_string());
            }
        }
        // Keep draining stdout so the process never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        MeshProcess {
            child,
            endpoints,
            admin_key,
            stderr_path,
        }
    }

    /// `mesh up` with every service on an ephemeral port.
    pub fn up(dir: &Path, extra: &[&str]) -> MeshProcess {
        let mut args = vec!["up".to_string()];
        args.extend(ephemeral_listen_args());
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        Self::start(dir, &refs)
    }

    pub fn url(&self, service: &str) -> String {
        self.endpoints
            .get(service)
            .unwrap_or_else(|| panic!("{service} not started"))
            .clone()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                panic!("mesh did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for MeshProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tiny blocking-free HTTP helper over reqwest.
/// `args` with a configuration declaring no agents and no flows: the given `--config`
/// file's text after `agents = []` and `flows = []` (top-level keys come before any
/// table), or a file holding only those. Tests of other services use their own agents.
pub fn without_builtins(dir: &Path, args: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let bare = "agents = []\nflows = []\n";
    let path = dir.join(format!("bare-{}.toml", uuid::Uuid::new_v4().simple()));
    match args.iter().position(|a| a == "--config") {
        Some(i) => {
            let given = dir.join(&args[i + 1]);
            let text = std::fs::read_to_string(&given).unwrap();
            std::fs::write(&path, format!("{bare}{text}")).unwrap();
            args[i + 1] = path.display().to_string();
        }
        None => {
            std::fs::write(&path, bare).unwrap();
            args.push("--config".into());
            args.push(path.display().to_string());
        }
    }
    args
}

#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
}

pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Api {
    pub fn new() -> Self {
        Api {
            http: reqwest::Client::new(),
        }
    }

    pub async fn call(
        &self,
        method: &str,
        url: &str,
        key: Option<&str>,
        body: Option<&str>,
    ) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, url);
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply { status, body }
    }

    pub async fn get(&self, url: &str, key: &str) -> Reply {
        self.call("GET", url, Some(key), None).await
    }

    pub async fn post(&self, url: &str, key: &str, body: &str) -> Reply {
        self.call("POST", url, Some(key), Some(body)).await
    }

    /// Creates a key with the given role through the API.
    pub async fn key(&self, orchestrator: &str, admin: &str, role: &str) -> String {
        let r = self
            .post(
                &format!("{orchestrator}/api/v1/keys"),
                admin,
                &format!(r#"{{"name":"{role}-test","roles":["{role}"]}}"#),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        r.body["key"].as_str().unwrap().to_string()
    }
}

pub const SEED_TASK: &str = r#"{
  "type": "code_refactor",
  "input": { "spec": "...", "target": "src/foo.ts" },
  "priority": 1,
  "metadata": { "requester": "user@example.com" }
}"#;

pub const SEED_AGENT: &str = r#"{
  "name": "coder-agent-v1",
  "version": "1.0.0",
  "role": "coder",
  "riskTier": "medium",
  "capabilities": ["typescript", "python", "refactoring"],
  "modelPreference": { "provider": "anthropic", "model": "claude-sonnet-4-5-20250929" }
}"#;

pub const SEED_TOOL: &str = r#"{
  "name": "web-search",
  "version": "1.0.0",
  "inputSchema": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
  "outputSchema": {"type": "array", "items": {"type": "string"}},
  "riskTier": "low",
  "rateLimit": 60,
  "costModel": {"perInvocation": 0.001, "perInputUnit": 0.0, "currency": "USD"}
}"#;

/// The backend a test needs, named by the environment variable `var`, or `None`
/// outside CI when it is not set (the test reports itself skipped). Under CI a
/// missing backend fails the test: `.ci/run` provides every one (`how` says how).
pub fn backend_from_env(var: &str, how: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(value) => Some(value),
        Err(_) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must set {var} ({how})"
            );
            eprintln!("SKIPPED: {var} is not set");
            None
        }
    }
}

/// Fresh PostgreSQL database URL (a schema per test) or `None` when not configured
/// outside CI. Under CI a missing URL fails the test.
pub async fn postgres_url() -> Option<String> {
    let base = backend_from_env("MESH_TEST_POSTGRES_URL", ".ci/run starts PostgreSQL")?;
    let schema = format!("mesh_it_{}", uuid::Uuid::new_v4().simple());
    let (client, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{sep}options=-c%20search_path%3D{schema}"))
}

pub async fn pg_query(url: &str, sql: &str) -> Vec<tokio_postgres::Row> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client.query(sql, &[]).await.unwrap()
}

/// The example agent binary, built by `cargo test` beside the `mesh` binary.
pub fn echo_agent_bin() -> PathBuf {
    let path = Path::new(mesh_bin())
        .parent()
        .unwrap()
        .join("examples")
        .join("echo_agent");
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (or `cargo build -p mesh --example echo_agent`)",
        path.display()
    );
    path
}

/// An echo agent process working for the mesh at the given task queue and registry.
pub fn spawn_echo_agent(dir: &Path, mesh: &MeshProcess, key_file: &Path, extra: &[&str]) -> Child {
    let log =
        std::fs::File::create(dir.join(format!("agent-{}.log", uuid::Uuid::new_v4().simple())))
            .unwrap();
    Command::new(echo_agent_bin())
        .args([
            "--queue",
            &mesh.url("task-queue"),
            "--registry",
            &mesh.url("agent-registry"),
        ])
        .arg("--key-file")
        .arg(key_file)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Polls `probe` until it yields a value (for effects written off the request's path,
/// such as batched provenance records); panics after 20 s.
pub async fn wait_for<T, F, Fut>(probe: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "condition not reached within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The provenance log's events (up to 1,000), once `done` holds for them: for records
/// written off the request's path.
pub async fn events_when(
    api: &Api,
    mesh: &MeshProcess,
    key: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let url = format!(
        "{}/api/v1/provenance/events?limit=1000",
        mesh.url("provenance-service")
    );
    wait_for(|| async {
        let r = api.get(&url, key).await;
        let events = r.body.as_array().cloned().unwrap_or_default();
        done(&events).then_some(events)
    })
    .await
}

/// How many of `events` have `action`.
pub fn count(events: &[Value], action: &str) -> usize {
    events.iter().filter(|e| e["action"] == action).count()
}
