//! Third-party clients, unchanged, against a running mesh: the official OpenAI,
//! Anthropic, MCP and A2A Python SDKs, OPA's TypeScript SDK, and the Prometheus
//! project's exposition parser. Each script in `client_sdks/` asserts what its
//! protocol promises (answers, streams, tool calls, structured output, errors as the
//! SDK's own exception types) and prints `ok`. `.ci/run` installs the clients, pinned,
//! under the directory `MESH_TEST_CLIENT_SDKS` names (`venv/` for Python,
//! `node/node_modules/` for Node.js).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Api, MeshProcess};
use std::time::Duration;

/// A script that has not finished by then is taken to hang.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

/// How to run a script: the interpreter and the environment it needs.
struct Runner {
    program: String,
    env: Vec<(&'static str, String)>,
}

fn sdks() -> Option<std::path::PathBuf> {
    common::backend_from_env(
        "MESH_TEST_CLIENT_SDKS",
        ".ci/run installs the client SDKs under ~/.cache/mesh-client-sdks",
    )
    .map(std::path::PathBuf::from)
}

fn python() -> Option<Runner> {
    let dir = sdks()?;
    Some(Runner {
        program: dir.join("venv/bin/python").display().to_string(),
        env: vec![],
    })
}

fn node() -> Option<Runner> {
    let dir = sdks()?;
    Some(Runner {
        program: "node".into(),
        // CommonJS `require` honours NODE_PATH (ES modules would not).
        env: vec![(
            "NODE_PATH",
            dir.join("node/node_modules").display().to_string(),
        )],
    })
}

/// Runs `client_sdks/<script>` with `args`; fails with its output unless it printed
/// `ok` and exited 0.
async fn run(runner: &Runner, script: &str, args: &[&str]) {
    let path = format!("{}/tests/client_sdks/{script}", env!("CARGO_MANIFEST_DIR"));
    let child = tokio::process::Command::new(&runner.program)
        .arg(&path)
        .args(args)
        .envs(runner.env.iter().map(|(k, v)| (k, v)))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {} {path}: {e}", runner.program));
    let out = tokio::time::timeout(SCRIPT_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish in {SCRIPT_TIMEOUT:?}"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "{script} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A mesh on ephemeral ports in its own directory, and its admin key.
struct Running {
    dir: tempfile::TempDir,
    mesh: MeshProcess,
    key: String,
}

impl Running {
    /// Without the built-in agents unless `builtins`.
    fn up(builtins: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mesh = if builtins {
            MeshProcess::up_with_builtins(dir.path(), &[])
        } else {
            MeshProcess::up(dir.path(), &[])
        };
        let key = mesh.admin_key.clone().unwrap();
        Running { dir, mesh, key }
    }

    /// `client_sdks/<script> <service URL><suffix> <admin key> <extra…>`.
    async fn run(
        &self,
        runner: &Runner,
        script: &str,
        service: &str,
        suffix: &str,
        extra: &[&str],
    ) {
        let url = format!("{}{suffix}", self.mesh.url(service));
        let mut args = vec![url.as_str(), self.key.as_str()];
        args.extend_from_slice(extra);
        run(runner, script, &args).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_works_against_the_gateway() {
    let Some(python) = python() else { return };
    let m = Running::up(false);
    m.run(&python, "openai_client.py", "routing-gateway", "", &[])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_anthropic_sdk_works_against_the_gateway() {
    let Some(python) = python() else { return };
    let m = Running::up(false);
    m.run(&python, "anthropic_client.py", "routing-gateway", "", &[])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mcp_sdk_works_against_the_tool_registry() {
    let Some(python) = python() else { return };
    let m = Running::up(false);
    // The built-in `file_read` reads from the mesh's workspace (created at start).
    let file = m.dir.path().join(".mesh/workspace/notes.txt");
    std::fs::write(&file, "what the mesh\nreads back\n").unwrap();
    let file = file.to_str().unwrap();
    m.run(&python, "mcp_client.py", "tool-registry", "/mcp", &[file])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_a2a_sdk_works_against_a_mesh_agent() {
    let Some(python) = python() else { return };
    let m = Running::up(true);
    let agents = Api::new()
        .get(
            &format!("{}/api/v1/agents", m.mesh.url("agent-registry")),
            &m.key,
        )
        .await;
    assert_eq!(agents.status, 200, "{}", agents.body);
    let planner = agents.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["role"] == "planner")
        .expect("the built-in planner");
    let path = format!("/a2a/agents/{}", planner["id"].as_str().unwrap());
    let name = planner["name"].as_str().unwrap();
    m.run(
        &python,
        "a2a_client.py",
        "mesh-orchestrator",
        &path,
        &[name],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_opa_sdk_works_against_the_policy_enforcer() {
    let Some(node) = node() else { return };
    let m = Running::up(false);
    m.run(&node, "opa_client.cjs", "policy-enforcer", "", &[])
        .await;
}

/// After some traffic (so histograms and labelled counters have series), every
/// service's `/metrics` parses with Prometheus's own parser and holds together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_parses_every_services_metrics() {
    let Some(python) = python() else { return };
    let m = Running::up(false);
    m.run(&python, "openai_client.py", "routing-gateway", "", &[])
        .await;
    let urls: Vec<String> = common::SERVICES
        .iter()
        .map(|s| format!("{}/metrics", m.mesh.url(s)))
        .collect();
    let args: Vec<&str> = urls.iter().map(String::as_str).collect();
    run(&python, "prometheus_scrape.py", &args).await;
}
