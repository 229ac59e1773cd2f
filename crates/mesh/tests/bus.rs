//! The events bus over HTTP: publish and replay, consumer groups, SSE, and task
//! lifecycle events relayed from the provenance log — embedded, on Redis Streams and on
//! NATS JetStream.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Api, MeshProcess, SEED_TASK};
use serde_json::{Value, json};
use std::time::Duration;

async fn wait_for_events(api: &Api, url: &str, key: &str, n: usize) -> Vec<Value> {
    for _ in 0..200 {
        let r = api.get(url, key).await;
        if let Some(items) = r.body.as_array()
            && items.len() >= n
        {
            return items.clone();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("fewer than {n} events at {url}");
}

async fn exercise(mesh: &MeshProcess, key: &str) {
    let api = Api::new();
    let bus = mesh.url("events-bus");
    let r = api
        .post(
            &format!("{bus}/api/v1/events/agent.chat"),
            key,
            r#"{"text": "hello"}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["payload"]["text"], "hello");
    let first_offset = r.body["offset"].as_str().unwrap().to_string();
    api.post(
        &format!("{bus}/api/v1/events/agent.chat"),
        key,
        r#"{"text": "again"}"#,
    )
    .await;
    let replay = api
        .get(&format!("{bus}/api/v1/events/agent.chat"), key)
        .await;
    assert_eq!(replay.body.as_array().unwrap().len(), 2);
    let after = api
        .get(
            &format!("{bus}/api/v1/events/agent.chat?after={first_offset}"),
            key,
        )
        .await;
    assert_eq!(after.body[0]["payload"]["text"], "again");

    // Lifecycle topics are the mesh's own: a client cannot forge a task.completed.
    for (topic, code) in [("Bad%20Topic", 400), ("a*b", 400), ("task.completed", 400)] {
        let r = api
            .post(&format!("{bus}/api/v1/events/{topic}"), key, "{}")
            .await;
        assert_eq!(r.status, code, "{topic}: {}", r.body);
        assert_eq!(r.body["error"]["field"], "topic");
    }
    let bad = api
        .get(&format!("{bus}/api/v1/events/agent.chat?after=zzz"), key)
        .await;
    assert_eq!(bad.status, 400);

    // Consumer groups over HTTP.
    let read = |consumer: &str| {
        let url = format!("{bus}/api/v1/events/agent.chat/groups/readers/read");
        let body = json!({"consumer": consumer, "limit": 1}).to_string();
        let api = api.clone();
        let key = key.to_string();
        async move { api.post(&url, &key, &body).await.body }
    };
    let a = read("a").await;
    let b = read("b").await;
    assert_ne!(a[0]["event"]["id"], b[0]["event"]["id"]);
    let acked = api
        .post(
            &format!("{bus}/api/v1/events/agent.chat/groups/readers/ack"),
            key,
            &json!({"offsets": [a[0]["event"]["offset"]]}).to_string(),
        )
        .await;
    assert_eq!(acked.body["acked"], 1);

    // A task's lifecycle reaches the bus (read from the log, or relayed to an external
    // bus).
    let submitted = api
        .post(
            &format!("{}/api/v1/tasks", mesh.url("mesh-orchestrator")),
            key,
            SEED_TASK,
        )
        .await;
    let task_id = submitted.body["taskId"].as_str().unwrap().to_string();
    let queued = wait_for_events(&api, &format!("{bus}/api/v1/events/task.queued"), key, 1).await;
    assert_eq!(queued[0]["payload"]["taskId"], task_id.as_str());
    assert_eq!(queued[0]["payload"]["action"], "task_queued");

    // SSE: the stream replays the topic and then follows it.
    let mut stream = api
        .http
        .get(format!(
            "{bus}/api/v1/events/stream?topics=agent.chat,task.cancelled"
        ))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    api.post(
        &format!(
            "{}/api/v1/tasks/{task_id}/cancel",
            mesh.url("mesh-orchestrator")
        ),
        key,
        "",
    )
    .await;
    let mut text = String::new();
    while !(text.contains("\"again\"") && text.contains("event: task.cancelled")) {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("event: agent.chat"), "{text}");
    assert!(text.contains("id: agent.chat:"), "{text}");
}

#[tokio::test]
async fn embedded_bus_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = MeshProcess::up(dir.path(), &[]);
    exercise(&mesh, mesh.admin_key.as_deref().unwrap()).await;
}

#[tokio::test]
async fn redis_streams_bus_over_http() {
    let Some(redis) = common::backend_from_env("MESH_TEST_REDIS_URL", ".ci/run starts Redis")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = format!("{redis}?prefix=it-{}", uuid::Uuid::new_v4().simple());
    let mesh = MeshProcess::up(dir.path(), &["--bus", &url]);
    exercise(&mesh, mesh.admin_key.as_deref().unwrap()).await;
}

#[tokio::test]
async fn nats_jetstream_bus_over_http() {
    let Some(nats) = common::backend_from_env("MESH_TEST_NATS_URL", ".ci/run starts NATS") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = format!("{nats}?prefix=it-{}", uuid::Uuid::new_v4().simple());
    let mesh = MeshProcess::up(dir.path(), &["--bus", &url]);
    exercise(&mesh, mesh.admin_key.as_deref().unwrap()).await;
}

#[tokio::test]
async fn an_unreachable_bus_fails_start_up() {
    let mut args = vec![
        "up".to_string(),
        "--bus".into(),
        "redis://127.0.0.1:1".into(),
    ];
    args.extend(common::ephemeral_listen_args());
    let out = common::mesh(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--bus") && err.contains("redis://127.0.0.1:1"),
        "{err}"
    );
}
