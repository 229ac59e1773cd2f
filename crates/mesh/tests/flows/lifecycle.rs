//! The agents the mesh spawns: the `agent.spawn` point and supervised worker processes.

use super::common::{Api, MeshProcess, count, events_when, wait_for};
use super::{Mesh, SEED_EXAMPLE};
use serde_json::{Value, json};
use std::path::Path;

#[tokio::test]
async fn declared_agents_refused_by_agent_spawn_do_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies"),
        &policies,
    );
    std::fs::write(
        policies.join("mesh/no_coders.rego"),
        "package mesh\nimport rego.v1\n\
         deny contains \"no coders today\" if {\n\
           input.action == \"agent.spawn\"\n\
           input.resource.type == \"agent\"\n\
           input.resource.attributes.kind == \"coder\"\n\
         }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("mesh.toml"),
        "[policy]\ndir = \"policies\"\n",
    )
    .unwrap();
    let process = MeshProcess::up_with_builtins(dir.path(), &["--config", "mesh.toml"]);
    let admin = process.admin_key.clone().unwrap();
    let api = Api::new();
    let agents = wait_for(|| async {
        let r = api
            .get(
                &format!("{}/api/v1/agents?limit=100", process.url("agent-registry")),
                &admin,
            )
            .await;
        let items = r.body["items"].as_array().cloned().unwrap_or_default();
        (items.len() >= 3).then_some(items)
    })
    .await;
    let names: Vec<&str> = agents.iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert!(
        names.iter().any(|n| n.starts_with("planner-1-")),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n.starts_with("critic-1-")),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n.starts_with("coder-")), "{names:?}");
    let events = events_when(&api, &process, &admin, |e| {
        e.iter()
            .any(|e| e["action"] == "policy_decision" && e["payload"]["action"] == "deny")
    })
    .await;
    let refusals: Vec<&Value> = events
        .iter()
        .filter(|e| e["action"] == "policy_decision" && e["payload"]["action"] == "deny")
        .collect();
    assert_eq!(refusals.len(), 2, "one per coder replica");
    assert!(
        refusals[0]["payload"]["reason"]
            .as_str()
            .unwrap()
            .contains("no coders today")
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[tokio::test]
async fn process_agents_run_the_flow_and_are_restarted_when_killed() {
    let config = r#"
[queue]
lease_ms = 3000

[[agents]]
name = "planner"
kind = "planner"
mode = "process"

[[agents]]
name = "coder"
kind = "coder"
mode = "process"

[[agents]]
name = "critic"
kind = "critic"
mode = "process"
"#;
    let mesh = Mesh::up(config, &[]);
    let id = mesh.submit(SEED_EXAMPLE).await;
    let task = mesh.finished(&id).await;
    assert_eq!(task["status"], "completed", "{task}");
    let spawned = events_when(&mesh.api, &mesh.process, &mesh.admin, |e| {
        count(e, "agent_spawned") >= 3
    })
    .await;
    let coder = spawned
        .iter()
        .find(|e| e["action"] == "agent_spawned" && e["payload"]["kind"] == "coder")
        .unwrap();
    assert_eq!(coder["payload"]["mode"], "process");
    let pid = coder["payload"]["pid"].as_u64().unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let events = events_when(&mesh.api, &mesh.process, &mesh.admin, |e| {
        count(e, "agent_process_exited") == 1 && count(e, "agent_spawned") >= 4
    })
    .await;
    let respawned: Vec<&Value> = events
        .iter()
        .filter(|e| e["action"] == "agent_spawned" && e["payload"]["kind"] == "coder")
        .collect();
    assert_eq!(respawned.len(), 2);
    assert_ne!(respawned[1]["payload"]["pid"], json!(pid));
    // The restarted coder does the next flow's work.
    let again = mesh
        .submit(&SEED_EXAMPLE.replace("src/foo.ts", "src/bar.ts"))
        .await;
    assert_eq!(mesh.finished(&again).await["status"], "completed");
}
