//! Third-party clients, unchanged: the official OpenAI, Anthropic, MCP and A2A Python
//! SDKs against a running mesh. Each script in `client_sdks/` asserts what its
//! protocol promises (answers, streams, tool calls, structured output, errors as the
//! SDK's own exception types) and prints `ok`. `.ci/run` installs the SDKs, pinned,
//! into a virtual environment and names its interpreter in
//! `MESH_TEST_CLIENT_SDKS_PYTHON`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Api, MeshProcess};
use std::time::Duration;

/// A script that has not finished by then is taken to hang.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

fn python() -> Option<String> {
    common::backend_from_env(
        "MESH_TEST_CLIENT_SDKS_PYTHON",
        ".ci/run installs openai, anthropic, mcp and a2a-sdk into a virtual environment",
    )
}

/// Runs `client_sdks/<script>` with `args`; fails with its output unless it printed
/// `ok` and exited 0.
async fn run(python: &str, script: &str, args: &[&str]) {
    let path = format!("{}/tests/client_sdks/{script}", env!("CARGO_MANIFEST_DIR"));
    let child = tokio::process::Command::new(python)
        .arg(&path)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python} {path}: {e}"));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_works_against_the_gateway() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mesh = MeshProcess::up(dir.path(), &[]);
    let key = mesh.admin_key.clone().unwrap();
    run(
        &python,
        "openai_client.py",
        &[&mesh.url("routing-gateway"), &key],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_anthropic_sdk_works_against_the_gateway() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mesh = MeshProcess::up(dir.path(), &[]);
    let key = mesh.admin_key.clone().unwrap();
    run(
        &python,
        "anthropic_client.py",
        &[&mesh.url("routing-gateway"), &key],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mcp_sdk_works_against_the_tool_registry() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mesh = MeshProcess::up(dir.path(), &[]);
    let key = mesh.admin_key.clone().unwrap();
    // The built-in `file_read` reads from the mesh's workspace (created at start).
    let file = dir.path().join(".mesh/workspace/notes.txt");
    std::fs::write(&file, "what the mesh\nreads back\n").unwrap();
    let url = format!("{}/mcp", mesh.url("tool-registry"));
    run(
        &python,
        "mcp_client.py",
        &[&url, &key, file.to_str().unwrap()],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_a2a_sdk_works_against_a_mesh_agent() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mesh = MeshProcess::up_with_builtins(dir.path(), &[]);
    let key = mesh.admin_key.clone().unwrap();
    let agents = Api::new()
        .get(
            &format!("{}/api/v1/agents", mesh.url("agent-registry")),
            &key,
        )
        .await;
    assert_eq!(agents.status, 200, "{}", agents.body);
    let list = agents.body["items"].as_array().or(agents.body.as_array());
    let planner = list
        .unwrap()
        .iter()
        .find(|a| a["role"] == "planner")
        .expect("the built-in planner");
    let base = format!(
        "{}/a2a/agents/{}",
        mesh.url("mesh-orchestrator"),
        planner["id"].as_str().unwrap()
    );
    run(
        &python,
        "a2a_client.py",
        &[&base, &key, planner["name"].as_str().unwrap()],
    )
    .await;
}
