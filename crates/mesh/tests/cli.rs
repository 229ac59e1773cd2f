//! The CLI against the store directly, with and without a running mesh.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Api, MeshProcess, mesh};
use serde_json::Value;

fn stdout(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[tokio::test]
async fn keys_create_prints_the_key_alone_with_or_without_the_mesh() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    // Without a running mesh: the key is the whole of stdout.
    let out = stdout(&mesh(&[
        "keys",
        "create",
        "--role",
        "operator",
        "--data-dir",
        data,
    ]));
    let offline_key = out.trim();
    assert!(
        offline_key.starts_with("mesh_") && offline_key.len() == 69,
        "{out:?}"
    );
    assert_eq!(out.lines().count(), 1);
    // The store already has a key, so `up` prints none.
    let running = MeshProcess::up(dir.path(), &["--data-dir", data]);
    assert!(running.admin_key.is_none());
    // While it runs, a new key works at once.
    let online_key = stdout(&mesh(&[
        "keys",
        "create",
        "--role",
        "admin",
        "--role",
        "auditor",
        "--data-dir",
        data,
    ]))
    .trim()
    .to_string();
    let api = Api::new();
    let orch = running.url("mesh-orchestrator");
    for key in [offline_key, online_key.as_str()] {
        let r = api.get(&format!("{orch}/api/v1/tasks"), key).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let listed = stdout(&mesh(&["keys", "list", "--data-dir", data]));
    assert!(
        listed.contains("operator-key") && listed.contains("admin,auditor"),
        "{listed}"
    );
    assert!(!listed.contains(&online_key));
    let bad = mesh(&["keys", "create", "--role", "root", "--data-dir", data]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown role"));
}

#[tokio::test]
async fn task_commands_and_tables() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let data = data.to_str().unwrap();
    let id = stdout(&mesh(&[
        "task",
        "submit",
        "--type",
        "code_refactor",
        "--input",
        r#"{"spec":"x"}"#,
        "--priority",
        "2",
        "--risk-tier",
        "medium",
        "--data-dir",
        data,
    ]))
    .trim()
    .to_string();
    uuid::Uuid::parse_str(&id).unwrap();
    let got: Value = serde_json::from_str(&stdout(&mesh(&[
        "task",
        "get",
        &id,
        "--json",
        "--data-dir",
        data,
    ])))
    .unwrap();
    assert_eq!(
        (
            got["status"].as_str(),
            got["riskTier"].as_str(),
            got["priority"].as_i64()
        ),
        (Some("queued"), Some("medium"), Some(2))
    );
    let table = stdout(&mesh(&["task", "list", "--data-dir", data]));
    assert!(
        table.starts_with("ID") && table.contains(&id) && table.contains("code_refactor"),
        "{table}"
    );
    stdout(&mesh(&["task", "cancel", &id, "--data-dir", data]));
    let listed: Value = serde_json::from_str(&stdout(&mesh(&[
        "task",
        "list",
        "--status",
        "cancelled",
        "--json",
        "--data-dir",
        data,
    ])))
    .unwrap();
    assert_eq!(listed["items"][0]["id"], id.as_str());
    let bad = mesh(&[
        "task",
        "submit",
        "--type",
        "t",
        "--input",
        "{nope",
        "--data-dir",
        data,
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--input is not valid JSON"));
    let bad = mesh(&["task", "list", "--status", "done", "--data-dir", data]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown task status"));
    let shown = stdout(&mesh(&["provenance", "show", &id, "--data-dir", data]));
    assert!(
        shown.contains("task_created") && shown.contains("task_cancelled"),
        "{shown}"
    );
    assert!(stdout(&mesh(&["agents", "list", "--data-dir", data])).contains("(none)"));
    assert!(stdout(&mesh(&["tools", "list", "--data-dir", data])).contains("(none)"));
    for cmd in [
        vec!["--help"],
        vec!["up", "--help"],
        vec!["keys", "create", "--help"],
        vec!["provenance", "verify", "--help"],
    ] {
        assert!(mesh(&cmd).status.success(), "{cmd:?}");
    }
}

/// Edits the SQLite log as an attacker with file access would, then verifies.
#[tokio::test]
async fn provenance_verify_names_the_first_tampered_event() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let data_s = data.to_str().unwrap();
    for i in 0..5 {
        stdout(&mesh(&[
            "task",
            "submit",
            "--type",
            "t",
            "--input",
            &format!("{{\"i\":{i}}}"),
            "--data-dir",
            data_s,
        ]));
    }
    let ok = mesh(&["provenance", "verify", "--data-dir", data_s]);
    assert!(stdout(&ok).contains("intact: 15 events"), "{}", stdout(&ok));
    let db = rusqlite::Connection::open(data.join("mesh.db")).unwrap();
    let id_at = |seq: i64| -> String {
        db.query_row(
            "SELECT id FROM provenance_events WHERE seq = ?1",
            [seq],
            |r| r.get(0),
        )
        .unwrap()
    };
    let verify = || {
        let out = mesh(&["provenance", "verify", "--data-dir", data_s]);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };

    let fourth = id_at(4);
    db.execute(
        "UPDATE provenance_events SET actor = 'mallory' WHERE seq = 4",
        [],
    )
    .unwrap();
    let (code, out) = verify();
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(&fourth) && out.contains("altered"), "{out}");
    db.execute("UPDATE provenance_events SET actor = 'cli:' || (SELECT substr(actor, 5) FROM provenance_events WHERE seq = 3) WHERE seq = 4", []).unwrap();
    assert_eq!(verify().0, Some(0));

    db.execute("DELETE FROM provenance_events WHERE seq > 8", [])
        .unwrap();
    let (code, out) = verify();
    assert_eq!(code, Some(1));
    assert!(out.contains("removed"), "{out}");

    let sixth = id_at(6);
    db.execute("DELETE FROM provenance_events WHERE seq = 5", [])
        .unwrap();
    let (code, out) = verify();
    assert_eq!(code, Some(1));
    assert!(out.contains(&sixth) && out.contains("missing"), "{out}");
    let json: Value = serde_json::from_str(&String::from_utf8_lossy(
        &mesh(&["provenance", "verify", "--json", "--data-dir", data_s]).stdout,
    ))
    .unwrap();
    assert_eq!(json["breach"]["kind"], "deleted");
    assert_eq!(json["breach"]["eventId"], sixth.as_str());
}

#[tokio::test]
async fn postgres_schema_has_the_seed_tables() {
    let Some(url) = common::postgres_url().await else {
        return;
    };
    stdout(&mesh(&["migrate", "--store", &url]));
    stdout(&mesh(&["migrate", "--store", &url])); // idempotent
    let rows = common::pg_query(
        &url,
        "SELECT table_name::text, column_name::text, data_type::text FROM information_schema.columns
         WHERE table_schema = current_schema() AND table_name IN ('tasks', 'agents', 'tools')",
    )
    .await;
    let cols: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let has = |t: &str, c: &str, ty: &str| {
        assert!(
            cols.iter().any(|(a, b, d)| a == t && b == c && d == ty),
            "{t}.{c} {ty} missing: {cols:?}"
        )
    };
    for (c, ty) in [
        ("id", "uuid"),
        ("parent_id", "uuid"),
        ("type", "character varying"),
        ("status", "character varying"),
        ("priority", "integer"),
        ("input", "jsonb"),
        ("output", "jsonb"),
        ("metadata", "jsonb"),
        ("created_at", "timestamp with time zone"),
        ("updated_at", "timestamp with time zone"),
        ("completed_at", "timestamp with time zone"),
    ] {
        has("tasks", c, ty);
    }
    for (c, ty) in [
        ("id", "uuid"),
        ("name", "character varying"),
        ("version", "character varying"),
        ("role", "character varying"),
        ("risk_tier", "character varying"),
        ("capabilities", "jsonb"),
        ("model_preference", "jsonb"),
        ("status", "character varying"),
        ("registered_at", "timestamp with time zone"),
        ("last_heartbeat", "timestamp with time zone"),
    ] {
        has("agents", c, ty);
    }
    for (c, ty) in [
        ("id", "uuid"),
        ("name", "character varying"),
        ("version", "character varying"),
        ("input_schema", "jsonb"),
        ("output_schema", "jsonb"),
        ("risk_tier", "character varying"),
        ("rate_limit", "integer"),
        ("cost_model", "jsonb"),
        ("status", "character varying"),
    ] {
        has("tools", c, ty);
    }
}

#[tokio::test]
async fn mesh_demo_runs_the_code_flow_and_leaves_an_inspectable_record() {
    // A fresh working directory, as on a fresh checkout: the default data directory.
    let cwd = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::mesh_bin())
        .arg("demo")
        .current_dir(cwd.path())
        .env("MESH_LOG", "warn")
        .output()
        .unwrap();
    let text = stdout(&out);
    for expected in [
        "took plan",
        "called file_read (ok",
        "review round 1: reject",
        "review round 2: approve",
        "the task is complete",
        "Provenance chain: verified",
    ] {
        assert!(
            text.contains(expected),
            "`{expected}` missing from:\n{text}"
        );
    }
    assert!(!text.contains("missing relationships"), "{text}");
    let id = text
        .lines()
        .find_map(|l| l.strip_prefix("Task ")?.split(' ').next())
        .unwrap()
        .to_string();
    // The record stays in ./.mesh: the CLI reads it back afterwards.
    let run = |args: &[&str]| {
        std::process::Command::new(common::mesh_bin())
            .args(args)
            .current_dir(cwd.path())
            .env("MESH_LOG", "warn")
            .output()
            .unwrap()
    };
    let task: Value = serde_json::from_str(&stdout(&run(&["task", "get", &id, "--json"]))).unwrap();
    assert_eq!(task["status"], "completed");
    assert_eq!(task["output"]["rounds"], 2);
    let shown = stdout(&run(&["provenance", "show", &id]));
    assert!(
        shown.contains("REVIEWED_BY") && shown.contains("CALLED"),
        "{shown}"
    );
    assert!(stdout(&run(&["provenance", "verify"])).starts_with("intact"));
}

/// `mesh … | head`: a reader that goes away ends the command quietly, with the status
/// of a command stopped by SIGPIPE, not a panic and its backtrace.
#[test]
fn a_closed_pipe_ends_output_quietly() {
    let mut child = std::process::Command::new(common::mesh_bin())
        .args(["policy", "test"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Close the read end before the command prints anything.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(141), "{stderr}");
}
