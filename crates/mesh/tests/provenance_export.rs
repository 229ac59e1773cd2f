//! `GET /api/v1/provenance/task/{id}/export` and `mesh provenance export`: a task tree
//! as PROV-JSON, openCypher or JSON lines, over HTTP and from the store directly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Api, MeshProcess, mesh};
use serde_json::Value;

#[tokio::test]
async fn a_task_exports_in_every_format_over_http_and_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let running = MeshProcess::up(dir.path(), &["--data-dir", data]);
    let key = running.admin_key.clone().unwrap();
    let api = Api::new();
    let r = api
        .post(
            &format!("{}/api/v1/tasks", running.url("mesh-orchestrator")),
            &key,
            common::SEED_TASK,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let task = r.body["taskId"].as_str().unwrap().to_string();
    let export = |format: &str| {
        format!(
            "{}/api/v1/provenance/task/{task}/export?format={format}",
            running.url("provenance-service")
        )
    };

    let r = api.get(&export("prov-json"), &key).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let activity = &r.body["activity"][format!("mesh:task-{task}")];
    assert_eq!(activity["prov:type"]["$"], "mesh:Task", "{}", r.body);
    assert_eq!(activity["mesh:type"], "code_refactor");

    let r = api.get(&export("cypher"), &key).await;
    assert_eq!(r.status, 200);
    let cypher = r.body.as_str().unwrap();
    assert!(
        cypher.starts_with(&format!("MERGE (n:Task {{id: '{task}'}})"))
            || cypher.contains(&format!("MERGE (n:Task {{id: '{task}'}}) SET")),
        "{cypher}"
    );

    let r = api.get(&export("jsonl"), &key).await;
    assert_eq!(r.status, 200);
    let lines: Vec<Value> = r
        .body
        .as_str()
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["action"], "task_created");
    assert!(lines.iter().all(|e| e["taskId"] == task.as_str()));

    let r = api.get(&export("xml"), &key).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["error"]["field"], "format");
    let r = api
        .get(
            &format!(
                "{}/api/v1/provenance/task/{}/export?format=jsonl",
                running.url("provenance-service"),
                uuid::Uuid::now_v7()
            ),
            &key,
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.body);

    // The CLI reads the store directly, whether or not the mesh runs.
    let out = mesh(&[
        "provenance",
        "export",
        "--task",
        &task,
        "--format",
        "cypher",
        "--data-dir",
        data,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), cypher);
    let out = mesh(&[
        "provenance",
        "export",
        "--task",
        &task,
        "--format",
        "dot",
        "--data-dir",
        data,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("prov-json, cypher or jsonl"));
}

/// A whole code flow (planner, coders, critic, model and tool calls, decisions) as
/// PROV-JSON: the structure the submission defines, every relation's ends present.
#[tokio::test]
async fn a_code_flow_exports_as_valid_prov_json() {
    let dir = tempfile::tempdir().unwrap();
    let running = MeshProcess::up_with_builtins(dir.path(), &[]);
    let key = running.admin_key.clone().unwrap();
    let api = Api::new();
    let orchestrator = running.url("mesh-orchestrator");
    let r = api
        .post(
            &format!("{orchestrator}/api/v1/tasks"),
            &key,
            common::SEED_TASK,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let task = r.body["taskId"].as_str().unwrap().to_string();
    common::wait_for(|| async {
        let t = api
            .get(&format!("{orchestrator}/api/v1/tasks/{task}"), &key)
            .await
            .body;
        (t["status"] == "completed").then_some(())
    })
    .await;
    let url = format!(
        "{}/api/v1/provenance/task/{task}/export?format=prov-json",
        running.url("provenance-service")
    );
    let doc = api.get(&url, &key).await.body;
    let schema: Value = serde_json::from_str(include_str!(
        "../../mesh-provenance/tests/fixtures/prov-json.schema.json"
    ))
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    for (relation, attr, section) in [
        ("wasAssociatedWith", "prov:activity", "activity"),
        ("wasAssociatedWith", "prov:agent", "agent"),
        ("wasInformedBy", "prov:informed", "activity"),
        ("wasInformedBy", "prov:informant", "activity"),
        ("wasGeneratedBy", "prov:entity", "entity"),
        ("wasGeneratedBy", "prov:activity", "activity"),
    ] {
        let relations = doc[relation]
            .as_object()
            .unwrap_or_else(|| panic!("no {relation}"));
        for rel in relations.values() {
            let end = rel[attr].as_str().unwrap();
            assert!(
                doc[section].get(end).is_some(),
                "{relation}: {end} is no {section}"
            );
        }
    }
    let roles: Vec<&str> = doc["wasAssociatedWith"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(|r| r["prov:role"]["$"].as_str())
        .collect();
    assert!(
        roles.contains(&"mesh:assignee") && roles.contains(&"mesh:subject"),
        "{roles:?}"
    );
    assert!(doc["agent"].as_object().unwrap().len() >= 3);
}
