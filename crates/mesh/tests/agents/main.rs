//! The agent registry's work with other agents, end to end over HTTP: remote A2A agents
//! imported from their cards and doing mesh work, their health probed; invalid cards
//! refused; drains; every mesh agent served over A2A; capability matching.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;
mod fake_a2a;
mod helpers;
mod streaming;

use common::{Api, count, events_when, wait_for};
use fake_a2a::fake_agent;
use helpers::{agent_status, echo_worker, events_of, import, submit, task_when, up};
use mesh_a2a::jsonrpc;
use mesh_a2a::mesh::parts_to_value;
use mesh_a2a::{A2aClient, A2aError, Message, Part, Role, SendMessageConfiguration};
use mesh_a2a::{SendMessageRequest, SendMessageResponse, TaskState};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_a2a_agent_is_imported_does_mesh_work_and_is_probed() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = up(dir.path());
    let admin = mesh.admin_key.clone().unwrap();
    let api = Api::new();
    let fake = fake_agent("summarize").await;

    let r = import(
        &api,
        &mesh,
        &admin,
        json!({"url": fake.base, "maxConcurrency": 2}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let agent = r.body;
    let id = agent["id"].as_str().unwrap().to_string();
    assert_eq!(agent["name"], "fake-summarize");
    assert_eq!(agent["capabilities"], json!(["summarize", "text"]));
    assert_eq!(
        (agent["role"].as_str(), agent["riskTier"].as_str()),
        (Some("custom"), Some("low"))
    );
    assert_eq!(
        agent["a2a"]["url"],
        format!("{}/rpc", fake.base),
        "the JSON-RPC interface, not the preferred gRPC one"
    );
    assert_eq!(
        agent["a2a"]["cardUrl"],
        format!("{}/.well-known/agent-card.json", fake.base)
    );
    let listed = api
        .get(
            &format!("{}/api/v1/agents?a2a=true", mesh.url("agent-registry")),
            &admin,
        )
        .await
        .body;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{listed}");

    // A task of its capability, submitted to the mesh, is done by the remote agent.
    let task = submit(
        &api,
        &mesh,
        &admin,
        json!({"type": "summarize", "input": {"text": "hello mesh"}}),
    )
    .await;
    let done = task_when(&api, &mesh, &admin, &task, "completed").await;
    assert_eq!(
        done["output"]["result"],
        json!({"summary": "HELLO MESH"}),
        "{done}"
    );
    let remote_id = done["output"]["a2aTaskId"].as_str().unwrap();
    let sent = fake.tasks.lock().unwrap()[remote_id].1.clone();
    assert_eq!(sent.metadata.unwrap()["meshTaskId"], task.as_str());
    assert_eq!(sent.parts, vec![Part::text("hello mesh")]);
    let events = events_when(&api, &mesh, &admin, |e| count(e, "task_completed") >= 1).await;
    let assigned = events
        .iter()
        .find(|e| e["action"] == "task_assigned" && e["taskId"] == task.as_str())
        .unwrap();
    assert_eq!(assigned["payload"]["agentId"], id.as_str());

    // A remote failure is a failed attempt, with the remote's reason.
    let failing = submit(
        &api,
        &mesh,
        &admin,
        json!({"type": "summarize", "input": {"text": "fail"}}),
    )
    .await;
    let failed = task_when(&api, &mesh, &admin, &failing, "failed").await;
    assert!(
        failed["lastError"]
            .as_str()
            .unwrap()
            .contains("cannot summarize that"),
        "{failed}"
    );

    // Probes: a card that stops being served makes it unhealthy; served again, active.
    fake.healthy.store(false, Ordering::SeqCst);
    agent_status(&api, &mesh, &admin, &id, "unhealthy").await;
    fake.healthy.store(true, Ordering::SeqCst);
    agent_status(&api, &mesh, &admin, &id, "active").await;
    let events = events_when(&api, &mesh, &admin, |e| {
        e.iter()
            .any(|e| e["action"] == "agent_recovered" && e["subjectId"] == id.as_str())
    })
    .await;
    let failed_probe = events
        .iter()
        .find(|e| e["action"] == "agent_probe_failed" && e["subjectId"] == id.as_str())
        .unwrap();
    assert!(
        failed_probe["payload"]["error"]
            .as_str()
            .unwrap()
            .contains("503"),
        "{failed_probe}"
    );
    let recovered = events
        .iter()
        .find(|e| e["action"] == "agent_recovered" && e["subjectId"] == id.as_str())
        .unwrap();
    assert_eq!(recovered["payload"]["reason"], "probe succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_card_that_is_not_valid_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = up(dir.path());
    let admin = mesh.admin_key.clone().unwrap();
    let api = Api::new();
    let fake = fake_agent("summarize").await;

    let broken = import(
        &api,
        &mesh,
        &admin,
        json!({"url": format!("{}/broken", fake.base)}),
    )
    .await;
    assert_eq!(
        (broken.status, broken.body["error"]["code"].as_str()),
        (400, Some("invalid_agent_card")),
        "{}",
        broken.body
    );
    assert!(
        broken.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("missing field `skills`"),
        "{}",
        broken.body
    );
    let html = import(
        &api,
        &mesh,
        &admin,
        json!({"url": format!("{}/html", fake.base)}),
    )
    .await;
    assert_eq!(html.status, 400, "{}", html.body);
    assert!(
        html.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not JSON"),
        "{}",
        html.body
    );
    let closed = import(&api, &mesh, &admin, json!({"url": "http://127.0.0.1:9"})).await;
    assert_eq!(
        (closed.status, closed.body["error"]["code"].as_str()),
        (502, Some("agent_unreachable")),
        "{}",
        closed.body
    );
    let scheme = import(&api, &mesh, &admin, json!({"url": "ftp://127.0.0.1/x"})).await;
    assert_eq!(
        (scheme.status, scheme.body["error"]["field"].as_str()),
        (400, Some("url"))
    );
    // The URL is the caller's: the egress policy decides before anything is fetched.
    let metadata = import(
        &api,
        &mesh,
        &admin,
        json!({"url": "http://169.254.169.254"}),
    )
    .await;
    assert_eq!(metadata.status, 403, "{}", metadata.body);
    assert!(
        metadata.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("blocked"),
        "{}",
        metadata.body
    );

    let listed = api
        .get(
            &format!("{}/api/v1/agents", mesh.url("agent-registry")),
            &admin,
        )
        .await
        .body;
    assert_eq!(listed["items"], json!([]), "nothing registered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_agent_finishes_its_task_takes_no_more_and_is_retired() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = up(dir.path());
    let admin = mesh.admin_key.clone().unwrap();
    let api = Api::new();
    let (_stop, worker, id) = echo_worker(
        &api,
        &mesh,
        &admin,
        "drainee",
        &["slow"],
        Duration::from_secs(2),
    )
    .await;
    let first = submit(
        &api,
        &mesh,
        &admin,
        json!({"type": "slow", "input": {"n": 1}}),
    )
    .await;
    task_when(&api, &mesh, &admin, &first, "running").await;

    let registry = mesh.url("agent-registry");
    let r = api
        .post(&format!("{registry}/api/v1/agents/{id}/drain"), &admin, "")
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["drainingSince"].is_string(), "{}", r.body);
    assert_eq!(r.body["status"], "active", "it still holds its lease");
    let claim = api
        .post(
            &format!("{}/api/v1/queue/claim", mesh.url("task-queue")),
            &admin,
            &json!({"agentId": id, "taskTypes": ["slow"]}).to_string(),
        )
        .await;
    assert_eq!(
        (claim.status, claim.body["error"]["code"].as_str()),
        (409, Some("agent_draining")),
        "{}",
        claim.body
    );
    let second = submit(
        &api,
        &mesh,
        &admin,
        json!({"type": "slow", "input": {"n": 2}}),
    )
    .await;
    let matched = api
        .post(
            &format!("{registry}/api/v1/agents/match"),
            &admin,
            r#"{"capabilities": ["slow"]}"#,
        )
        .await
        .body;
    assert_eq!(matched["candidates"], json!([]), "{matched}");
    assert_eq!(matched["excluded"][0]["reason"], "agent is draining");

    let done = task_when(&api, &mesh, &admin, &first, "completed").await;
    assert_eq!(done["output"]["echo"], json!({"n": 1}));
    agent_status(&api, &mesh, &admin, &id, "retired").await;
    let report = tokio::time::timeout(Duration::from_secs(20), worker)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (report.completed, report.failed),
        (1, 0),
        "the worker stops by itself once drained"
    );
    let waiting = api
        .get(
            &format!("{}/api/v1/tasks/{second}", mesh.url("mesh-orchestrator")),
            &admin,
        )
        .await
        .body;
    assert_eq!(
        waiting["status"], "queued",
        "no new work went to the draining agent"
    );
    let events = events_when(&api, &mesh, &admin, |e| count(e, "agent_drained") == 1).await;
    let lifecycle = events_of(&events, &id);
    let at = |action: &str| lifecycle.iter().position(|a| *a == action).unwrap();
    assert!(
        at("agent_draining") < at("agent_drained") && at("agent_drained") < at("agent_retired"),
        "{lifecycle:?}"
    );
    assert_eq!(
        lifecycle.iter().filter(|a| **a == "agent_retired").count(),
        1,
        "{lifecycle:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_agent_serves_its_agent_card_and_takes_a2a_messages() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = up(dir.path());
    let admin = mesh.admin_key.clone().unwrap();
    let api = Api::new();
    let (_stop, _worker, id) = echo_worker(
        &api,
        &mesh,
        &admin,
        "a2a-echo",
        &["echo", "shout"],
        Duration::ZERO,
    )
    .await;
    let orch = mesh.url("mesh-orchestrator");

    // The card is public, and parses with the mesh's own (specification-checking) parser.
    let card_url = format!("{orch}/a2a/agents/{id}/.well-known/agent-card.json");
    let bytes = api
        .http
        .get(&card_url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let card = mesh_a2a::parse_card(&bytes).unwrap();
    assert_eq!(card.name, "a2a-echo");
    let skills: Vec<&str> = card.skills.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(skills, ["echo", "shout"]);
    let rpc = card.jsonrpc_interface().unwrap().url.clone();
    assert_eq!(rpc, format!("{orch}/a2a/agents/{id}"));

    let http = reqwest::Client::new();
    let client = A2aClient::new(http.clone(), &rpc, Some(admin.clone())).unwrap();
    let send = |text: &str, message_id: &str, immediately: bool, metadata: Option<Value>| {
        let mut message = Message::new(message_id, Role::User, vec![Part::text(text)]);
        message.metadata = metadata;
        SendMessageRequest {
            tenant: None,
            message,
            configuration: Some(SendMessageConfiguration {
                return_immediately: immediately,
                ..Default::default()
            }),
            metadata: None,
        }
    };
    let SendMessageResponse::Task(sent) = client
        .send_message(&send("hi", "m-1", true, None))
        .await
        .unwrap()
    else {
        panic!("SendMessage answers with a task")
    };
    assert!(
        matches!(sent.status.state, TaskState::Submitted | TaskState::Working),
        "{sent:?}"
    );
    let done = wait_for(|| async {
        let task = client.get_task(&sent.id).await.unwrap();
        (task.status.state == TaskState::Completed).then_some(task)
    })
    .await;
    assert_eq!(
        parts_to_value(&done.artifacts[0].parts),
        json!({"echo": {"text": "hi"}})
    );
    let mesh_task = api
        .get(&format!("{orch}/api/v1/tasks/{}", sent.id), &admin)
        .await
        .body;
    assert_eq!(
        (mesh_task["type"].as_str(), mesh_task["status"].as_str()),
        (Some("echo"), Some("completed"))
    );
    assert_eq!(mesh_task["metadata"]["a2a"]["agentId"], id.as_str());

    // Without returnImmediately the reply waits for the end; the type may be named.
    let named = Some(json!({"taskType": "shout"}));
    let SendMessageResponse::Task(waited) = client
        .send_message(&send("hey", "m-2", false, named))
        .await
        .unwrap()
    else {
        panic!("a task")
    };
    assert_eq!(waited.status.state, TaskState::Completed, "{waited:?}");
    let shouted = api
        .get(&format!("{orch}/api/v1/tasks/{}", waited.id), &admin)
        .await
        .body;
    assert_eq!(shouted["type"], "shout");
    // The same message again is the same task.
    let SendMessageResponse::Task(again) = client
        .send_message(&send("hi", "m-1", true, None))
        .await
        .unwrap()
    else {
        panic!("a task")
    };
    assert_eq!(again.id, sent.id);

    let err = |e: A2aError| match e {
        A2aError::Rpc(err) => err.code,
        other => panic!("{other:?}"),
    };
    let unknown = client
        .get_task(&uuid::Uuid::now_v7().to_string())
        .await
        .unwrap_err();
    assert_eq!(err(unknown), jsonrpc::TASK_NOT_FOUND);
    let finished = client.cancel_task(&sent.id).await.unwrap_err();
    assert_eq!(err(finished), jsonrpc::TASK_NOT_CANCELABLE);
    let foreign = client
        .send_message(&send("x", "m-3", true, Some(json!({"taskType": "deploy"}))))
        .await
        .unwrap_err();
    assert_eq!(err(foreign), jsonrpc::INVALID_PARAMS);
    let raw = |body: &'static str| {
        let (api, rpc, admin) = (api.clone(), rpc.clone(), admin.clone());
        async move { api.post(&rpc, &admin, body).await }
    };
    let garbled = raw("{not json").await;
    assert_eq!(garbled.status, 200);
    assert_eq!(garbled.body["error"]["code"], jsonrpc::PARSE_ERROR);
    let unknown = raw(r#"{"jsonrpc": "2.0", "id": 7, "method": "ListAllTheThings"}"#).await;
    assert_eq!(
        (
            unknown.body["id"].as_i64(),
            unknown.body["error"]["code"].as_i64()
        ),
        (Some(7), Some(jsonrpc::METHOD_NOT_FOUND))
    );
    // A method of A2A 1.0 this server does not serve is an unsupported operation.
    let unserved = raw(r#"{"jsonrpc": "2.0", "id": 8, "method": "ListTasks"}"#).await;
    assert_eq!(
        unserved.body["error"]["code"].as_i64(),
        Some(jsonrpc::UNSUPPORTED_OPERATION)
    );
    // A client naming another protocol version is told so; 1.0 (with or without a
    // patch number) is served.
    let versioned = |version: &'static str| {
        let (api, rpc, admin) = (api.clone(), rpc.clone(), admin.clone());
        async move {
            let body =
                r#"{"jsonrpc": "2.0", "id": 9, "method": "GetTask", "params": {"id": "nope"}}"#;
            let resp = api
                .http
                .post(&rpc)
                .bearer_auth(&admin)
                .header("A2A-Version", version)
                .body(body)
                .send()
                .await
                .unwrap();
            resp.json::<serde_json::Value>().await.unwrap()["error"]["code"].as_i64()
        }
    };
    assert_eq!(versioned("0.3").await, Some(jsonrpc::VERSION_NOT_SUPPORTED));
    assert_eq!(versioned("2.0").await, Some(jsonrpc::VERSION_NOT_SUPPORTED));
    assert_eq!(versioned("1.0").await, Some(jsonrpc::TASK_NOT_FOUND));
    assert_eq!(versioned("1.0.1").await, Some(jsonrpc::TASK_NOT_FOUND));
    let keyless = A2aClient::new(http, &rpc, None).unwrap();
    let refused = keyless.get_task(&sent.id).await.unwrap_err();
    assert!(
        matches!(&refused, A2aError::Unreachable(why) if why.contains("401")),
        "{refused:?}"
    );
    let auditor = api.key(&orch, &admin, "auditor").await;
    let reader = A2aClient::new(reqwest::Client::new(), &rpc, Some(auditor)).unwrap();
    assert_eq!(
        reader.get_task(&sent.id).await.unwrap().id,
        sent.id,
        "an auditor may read"
    );
    let denied = reader
        .send_message(&send("no", "m-4", true, None))
        .await
        .unwrap_err();
    assert!(
        matches!(&denied, A2aError::Unreachable(why) if why.contains("403")),
        "{denied:?}"
    );
    let gone = api
        .get(
            &format!(
                "{orch}/a2a/agents/{}/.well-known/agent-card.json",
                uuid::Uuid::now_v7()
            ),
            &admin,
        )
        .await;
    assert_eq!(gone.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matching_ranks_an_idle_agent_before_a_loaded_one_and_leaves_out_the_unhealthy() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = up(dir.path());
    let admin = mesh.admin_key.clone().unwrap();
    let api = Api::new();
    let registry = mesh.url("agent-registry");
    let register = |name: &'static str, tier: &'static str, max: Option<u32>| {
        let api = api.clone();
        let (registry, admin) = (registry.clone(), admin.clone());
        async move {
            let body = json!({"name": name, "version": "1", "role": "coder", "riskTier": tier,
                              "capabilities": ["match-x"], "maxConcurrency": max});
            let r = api
                .post(
                    &format!("{registry}/api/v1/agents"),
                    &admin,
                    &body.to_string(),
                )
                .await;
            assert_eq!(r.status, 201, "{}", r.body);
            r.body["id"].as_str().unwrap().to_string()
        }
    };
    let idle = register("idle", "medium", None).await;
    let loaded = register("loaded", "high", None).await;
    let full = register("full", "high", Some(1)).await;
    let junior = register("junior", "low", None).await;
    // Keep them alive: nothing heartbeats for agents registered by hand.
    let beats = {
        let (api, registry, admin) = (api.clone(), registry.clone(), admin.clone());
        let ids = [idle.clone(), loaded.clone(), full.clone(), junior.clone()];
        tokio::spawn(async move {
            loop {
                for id in &ids {
                    api.post(
                        &format!("{registry}/api/v1/agents/{id}/heartbeat"),
                        &admin,
                        "",
                    )
                    .await;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    // A remote agent with the capability, whose card stops being served.
    let fake = fake_agent("match-x").await;
    let sick = import(
        &api,
        &mesh,
        &admin,
        json!({"url": fake.base, "riskTier": "high"}),
    )
    .await;
    let sick = sick.body["id"].as_str().unwrap().to_string();
    fake.healthy.store(false, Ordering::SeqCst);
    agent_status(&api, &mesh, &admin, &sick, "unhealthy").await;

    // `loaded` and `full` hold a lease each; `full` declared it can hold one: busy.
    for agent in [&loaded, &full] {
        submit(&api, &mesh, &admin, json!({"type": "match-x", "input": {}})).await;
        let claim = api
            .post(
                &format!("{}/api/v1/queue/claim", mesh.url("task-queue")),
                &admin,
                &json!({"agentId": agent, "taskTypes": ["match-x"]}).to_string(),
            )
            .await;
        assert_eq!(
            claim.body.as_array().map(Vec::len),
            Some(1),
            "{}",
            claim.body
        );
    }
    agent_status(&api, &mesh, &admin, &full, "busy").await;

    let matched = api
        .post(
            &format!("{registry}/api/v1/agents/match"),
            &admin,
            r#"{"capabilities": ["match-x"], "riskTier": "medium"}"#,
        )
        .await;
    assert_eq!(matched.status, 200, "{}", matched.body);
    let candidates = matched.body["candidates"].as_array().unwrap();
    let order: Vec<&str> = candidates
        .iter()
        .map(|c| c["agentId"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        [idle.as_str(), loaded.as_str(), full.as_str()],
        "active and idle, active with a lease, busy: {}",
        matched.body
    );
    let leases: Vec<Option<u64>> = candidates.iter().map(|c| c["leases"].as_u64()).collect();
    assert_eq!(leases, [Some(0), Some(1), Some(1)]);
    assert!(candidates[0]["score"].as_f64() > candidates[1]["score"].as_f64());
    assert!(candidates[1]["score"].as_f64() > candidates[2]["score"].as_f64());
    let reasons = |i: usize| candidates[i]["reasons"].as_array().unwrap().clone();
    assert!(
        reasons(1).contains(&json!("1 leases held")),
        "{:?}",
        reasons(1)
    );
    assert!(reasons(2).contains(&json!("busy")), "{:?}", reasons(2));
    assert!(
        reasons(2).contains(&json!("1 of 1 leases held")),
        "{:?}",
        reasons(2)
    );
    let excluded: HashMap<&str, &str> = matched.body["excluded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["agentId"].as_str().unwrap(),
                e["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(excluded[sick.as_str()], "agent is unhealthy");
    assert_eq!(
        excluded[junior.as_str()],
        "risk tier low does not cover medium"
    );
    let one = api
        .post(
            &format!("{registry}/api/v1/agents/match"),
            &admin,
            r#"{"capabilities": ["match-x"], "limit": 1}"#,
        )
        .await
        .body;
    assert_eq!(one["candidates"].as_array().unwrap().len(), 1);
    let bad = api
        .post(
            &format!("{registry}/api/v1/agents/match"),
            &admin,
            r#"{"capabilities": ["match-x"], "limit": 0}"#,
        )
        .await;
    assert_eq!(
        (bad.status, bad.body["error"]["field"].as_str()),
        (400, Some("limit"))
    );

    // The gateway's task routing ranks with the same matcher.
    let routed = api
        .post(
            &format!("{}/api/v1/route/task", mesh.url("routing-gateway")),
            &admin,
            r#"{"taskType": "match-x", "riskTier": "medium"}"#,
        )
        .await;
    assert_eq!(routed.status, 200, "{}", routed.body);
    assert_eq!(
        routed.body["selectedAgent"]["agentId"],
        idle.as_str(),
        "{}",
        routed.body
    );
    assert_eq!(routed.body["alternatives"][0]["agentId"], loaded.as_str());
    let events = events_when(&api, &mesh, &admin, |e| count(e, "agent_busy") == 1).await;
    assert_eq!(events_of(&events, &full).last(), Some(&"agent_busy"));
    beats.abort();
}
