//! A remote A2A agent taking part in the code flow.

use super::{Mesh, SEED_EXAMPLE, fake_a2a};
use serde_json::{Value, json};

/// No built-in critic: the review stage can only be done by an imported agent.
const NO_CRITIC: &str = r#"
[[agents]]
name = "planner"
kind = "planner"

[[agents]]
name = "coder"
kind = "coder"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_a2a_agent_reviews_in_the_code_flow() {
    let mesh = Mesh::up(NO_CRITIC, &[]);
    let remote = fake_a2a::fake_agent("review").await;
    let import = mesh
        .api
        .post(
            &mesh.url("agent-registry", "/api/v1/agents/import"),
            &mesh.admin,
            &json!({"url": remote.base, "name": "remote-critic", "role": "critic"}).to_string(),
        )
        .await;
    assert_eq!(import.status, 201, "{}", import.body);
    let id = mesh.submit(SEED_EXAMPLE).await;
    let task = mesh.finished(&id).await;
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(task["output"]["rounds"], 1);
    assert_eq!(
        task["output"]["reviews"][0]["notes"],
        "the remote critic approves"
    );
    // The remote agent got the review over A2A: the changes to judge as data.
    let (count, changes) = {
        let sent = remote.tasks.lock().unwrap();
        let (_, message) = sent.values().next().unwrap();
        let changes = message.parts[0].data.as_ref().unwrap()["changes"].clone();
        (sent.len(), changes)
    };
    assert_eq!(count, 1);
    assert_eq!(changes.as_array().unwrap().len(), 3);
    let provenance = mesh.provenance(&id).await;
    let reviewer = provenance["graph"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "REVIEWED_BY")
        .unwrap()["to"]
        .clone();
    assert_eq!(reviewer, import.body["id"]);
}

/// A remote agent that wants a bearer token gets it from the secret store, read where
/// its proxy runs: the import names the secret (which takes `secret.read`), never the
/// value, and a value is refused. A secret rotated in place is used from the next task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_a2a_agent_gets_its_token_from_the_secret_store() {
    let config = format!("{NO_CRITIC}\n[secrets]\ndir = \"secrets\"\n");
    let mesh = Mesh::up(&config, &[("secrets/remote_token", "tok-77\n")]);
    let remote = fake_a2a::fake_agent("review").await;
    *remote.required_token.lock().unwrap() = Some("tok-77".into());
    let url = mesh.url("agent-registry", "/api/v1/agents/import");
    let body = |token: &str| {
        json!({"url": remote.base, "name": "remote-critic", "role": "critic", "token": token})
            .to_string()
    };

    let value = mesh.api.post(&url, &mesh.admin, &body("tok-77")).await;
    assert_eq!(value.status, 400, "{}", value.body);
    let operator = mesh
        .api
        .key(&mesh.url("mesh-orchestrator", ""), &mesh.admin, "operator")
        .await;
    let refused = mesh
        .api
        .post(&url, &operator, &body("secret://remote_token"))
        .await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(
        refused.body.to_string().contains("secret"),
        "{}",
        refused.body
    );

    let import = mesh
        .api
        .post(&url, &mesh.admin, &body("secret://remote_token"))
        .await;
    assert_eq!(import.status, 201, "{}", import.body);
    let shown: &Value = &import.body;
    assert_eq!(shown["a2a"]["token"], "secret://remote_token", "{shown}");
    assert!(!shown.to_string().contains("tok-77"));

    // The review reached the remote agent, which refuses calls without the token.
    let id = mesh.submit(SEED_EXAMPLE).await;
    let task = mesh.finished(&id).await;
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(
        task["output"]["reviews"][0]["notes"],
        "the remote critic approves"
    );
    assert_eq!(remote.tasks.lock().unwrap().len(), 1);

    // The secret is rotated in place, as Kubernetes updates a mounted secret; the
    // remote agent now takes only the new token.
    std::fs::write(mesh.dir.path().join("secrets/remote_token"), "tok-88\n").unwrap();
    *remote.required_token.lock().unwrap() = Some("tok-88".into());
    let id = mesh.submit(SEED_EXAMPLE).await;
    let task = mesh.finished(&id).await;
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(remote.tasks.lock().unwrap().len(), 2);
}
