//! A2A streaming on a mesh agent's endpoint: `SendStreamingMessage` and
//! `SubscribeToTask` answer with Server-Sent Events, each a JSON-RPC response to the
//! call, following the task until it ends.

use super::common::Api;
use super::helpers::{echo_worker, up};
use mesh_a2a::jsonrpc;
use serde_json::{Value, json};
use std::time::Duration;

/// Posts a JSON-RPC call and reads the event stream to its end: the `data` of each
/// event, parsed. A reply that is not a stream comes back as its one JSON body.
async fn stream_call(api: &Api, url: &str, key: &str, body: Value) -> (String, Vec<Value>) {
    let resp = api
        .http
        .post(url)
        .bearer_auth(key)
        .header("accept", "text/event-stream")
        .json(&body)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    let kind = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = resp.text().await.unwrap();
    if !kind.starts_with("text/event-stream") {
        return (kind, vec![serde_json::from_str(&text).unwrap()]);
    }
    let events = text
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(|data| serde_json::from_str(data.trim()).unwrap())
        .collect();
    (kind, events)
}

/// What each event reports: `task`, `statusUpdate` or `artifactUpdate`, with the state
/// a task or status carries.
fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            let result = e["result"].as_object().unwrap();
            let (kind, body) = result.iter().next().unwrap();
            match body["status"]["state"].as_str() {
                Some(state) => format!("{kind}:{state}"),
                None => kind.clone(),
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_agent_streams_its_tasks_to_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = up(dir.path());
    let admin = mesh.admin_key.clone().unwrap();
    let api = Api::new();
    let (_stop, _worker, id) = echo_worker(
        &api,
        &mesh,
        &admin,
        "slow-echo",
        &["echo"],
        Duration::from_secs(2),
    )
    .await;
    let rpc = format!("{}/a2a/agents/{id}", mesh.url("mesh-orchestrator"));
    let card: Value = api
        .get(&format!("{rpc}/.well-known/agent-card.json"), &admin)
        .await
        .body;
    assert_eq!(card["capabilities"]["streaming"], true, "{card}");
    let message = |message_id: &str| json!({"messageId": message_id, "role": "ROLE_USER", "parts": [{"text": "hello"}]});

    let (kind, events) = stream_call(
        &api,
        &rpc,
        &admin,
        json!({"jsonrpc": "2.0", "id": "s-1", "method": jsonrpc::SEND_STREAMING_MESSAGE,
               "params": {"message": message("m-1")}}),
    )
    .await;
    assert!(kind.starts_with("text/event-stream"), "{kind}");
    assert!(
        events
            .iter()
            .all(|e| e["id"] == "s-1" && e["jsonrpc"] == "2.0")
    );
    let seen = kinds(&events);
    // The agent takes its time, so the stream sees it working.
    assert_eq!(
        seen,
        [
            "task:TASK_STATE_SUBMITTED",
            "statusUpdate:TASK_STATE_WORKING",
            "artifactUpdate",
            "statusUpdate:TASK_STATE_COMPLETED"
        ],
        "{events:#?}"
    );
    let task_id = events[0]["result"]["task"]["id"].as_str().unwrap();
    let artifact = &events[2]["result"]["artifactUpdate"];
    assert_eq!(artifact["taskId"], task_id);
    assert_eq!(artifact["lastChunk"], true);
    assert_eq!(
        artifact["artifact"]["parts"][0]["data"]["echo"],
        json!({"text": "hello"})
    );

    // A task sent without streaming can be followed from a second connection.
    let sent = api
        .post(
            &rpc,
            &admin,
            &json!({"jsonrpc": "2.0", "id": 2, "method": jsonrpc::SEND_MESSAGE,
                    "params": {"message": message("m-2"),
                               "configuration": {"returnImmediately": true}}})
            .to_string(),
        )
        .await;
    let second = sent.body["result"]["task"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let subscribe = json!({"jsonrpc": "2.0", "id": 3, "method": jsonrpc::SUBSCRIBE_TO_TASK,
                           "params": {"id": second}});
    let (_, events) = stream_call(&api, &rpc, &admin, subscribe.clone()).await;
    let seen = kinds(&events);
    assert!(seen[0].starts_with("task:"), "{seen:?}");
    assert_eq!(
        seen.last().map(String::as_str),
        Some("statusUpdate:TASK_STATE_COMPLETED")
    );
    assert_eq!(seen.iter().filter(|k| *k == "artifactUpdate").count(), 1);

    // Once it has ended there is nothing to subscribe to: an error, not a stream.
    let (kind, ended) = stream_call(&api, &rpc, &admin, subscribe).await;
    assert!(kind.starts_with("application/json"), "{kind}");
    assert_eq!(
        ended[0]["error"]["code"].as_i64(),
        Some(jsonrpc::UNSUPPORTED_OPERATION)
    );
    // An unknown task and a malformed message are refused before any stream.
    let (_, unknown) = stream_call(
        &api,
        &rpc,
        &admin,
        json!({"jsonrpc": "2.0", "id": 4, "method": jsonrpc::SUBSCRIBE_TO_TASK,
               "params": {"id": uuid::Uuid::now_v7().to_string()}}),
    )
    .await;
    assert_eq!(
        unknown[0]["error"]["code"].as_i64(),
        Some(jsonrpc::TASK_NOT_FOUND)
    );
    let (_, empty) = stream_call(
        &api,
        &rpc,
        &admin,
        json!({"jsonrpc": "2.0", "id": 5, "method": jsonrpc::SEND_STREAMING_MESSAGE,
               "params": {"message": {"messageId": "m-3", "role": "ROLE_USER", "parts": []}}}),
    )
    .await;
    assert_eq!(
        empty[0]["error"]["code"].as_i64(),
        Some(jsonrpc::INVALID_PARAMS)
    );
    // Streaming submits a task, so it takes task.submit: an auditor may only read.
    let auditor = api
        .key(&mesh.url("mesh-orchestrator"), &admin, "auditor")
        .await;
    let refused = api
        .post(
            &rpc,
            &auditor,
            &json!({"jsonrpc": "2.0", "id": 6, "method": jsonrpc::SEND_STREAMING_MESSAGE,
                    "params": {"message": message("m-4")}})
            .to_string(),
        )
        .await;
    assert_eq!(refused.status, 403, "{}", refused.body);
}
