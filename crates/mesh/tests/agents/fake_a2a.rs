//! A remote agent speaking A2A, for the tests: it serves its card and takes work.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use mesh_a2a::jsonrpc::{self, RpcError};
use mesh_a2a::{Message, SendMessageRequest};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A remote agent speaking A2A: it serves its card (503 while unhealthy), takes
/// `SendMessage`, and reports each task working on the first `GetTask` and completed
/// (the text upper-cased; a code flow's review approved) on the second; a message
/// saying "fail" fails.
#[derive(Default)]
pub struct Fake {
    pub base: String,
    skill: String,
    pub healthy: AtomicBool,
    next: AtomicU64,
    /// Remote task id → (polls so far, the message received).
    pub tasks: Mutex<HashMap<String, (u32, Message)>>,
    /// When set, calls without `Authorization: Bearer <it>` are refused 401.
    pub required_token: Mutex<Option<String>>,
}

fn card(fake: &Fake) -> Value {
    json!({
        "name": format!("fake-{}", fake.skill), "description": "A fake remote agent",
        "version": "0.9.0",
        "supportedInterfaces": [
            {"url": format!("{}/grpc", fake.base), "protocolBinding": "GRPC", "protocolVersion": "1.0"},
            {"url": format!("{}/rpc", fake.base), "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}
        ],
        "capabilities": {"streaming": false},
        "defaultInputModes": ["text/plain"], "defaultOutputModes": ["application/json"],
        "skills": [{"id": fake.skill, "name": "Summarize", "description": "Summaries",
                    "tags": ["text"]}]
    })
}

async fn fake_card(State(fake): State<Arc<Fake>>) -> Response {
    if !fake.healthy.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
    }
    axum::Json(card(&fake)).into_response()
}

fn remote_task(id: &str, state: &str, message: Option<&Message>) -> Value {
    let mut task = json!({"id": id, "contextId": "ctx", "status": {"state": state}});
    if state == "TASK_STATE_COMPLETED" {
        let text = message.and_then(|m| m.parts[0].text.clone());
        // Asked to review a code flow's changes, it approves them, as a critic would.
        let reviewing = message
            .and_then(|m| m.parts[0].data.as_ref())
            .is_some_and(|d| d.get("changes").is_some());
        let answer = if reviewing {
            json!({"verdict": "approve", "notes": "the remote critic approves"})
        } else {
            json!({"summary": text.unwrap_or_default().to_uppercase()})
        };
        task["artifacts"] = json!([{"artifactId": "a1", "parts": [{"data": answer}]}]);
    }
    if state == "TASK_STATE_FAILED" {
        task["status"]["message"] = json!({"messageId": "m", "role": "ROLE_AGENT",
                                           "parts": [{"text": "cannot summarize that"}]});
    }
    task
}

async fn fake_rpc(
    State(fake): State<Arc<Fake>>,
    headers: axum::http::HeaderMap,
    axum::Json(req): axum::Json<jsonrpc::Request>,
) -> Response {
    let required = fake.required_token.lock().unwrap().clone();
    if let Some(token) = required {
        let sent = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if sent != Some(format!("Bearer {token}").as_str()) {
            return (StatusCode::UNAUTHORIZED, "a bearer token is required").into_response();
        }
    }
    let reply = match req.method.as_str() {
        "SendMessage" => {
            let sent: SendMessageRequest = serde_json::from_value(req.params).unwrap();
            let id = format!("remote-{}", fake.next.fetch_add(1, Ordering::SeqCst));
            fake.tasks
                .lock()
                .unwrap()
                .insert(id.clone(), (0, sent.message));
            jsonrpc::Response::result(
                req.id,
                json!({"task": remote_task(&id, "TASK_STATE_SUBMITTED", None)}),
            )
        }
        "GetTask" => {
            let id = req.params["id"].as_str().unwrap_or_default().to_string();
            let mut tasks = fake.tasks.lock().unwrap();
            match tasks.get_mut(&id) {
                None => jsonrpc::Response::error(req.id, RpcError::task_not_found(&id)),
                Some((polls, message)) => {
                    *polls += 1;
                    let text = message.parts[0].text.clone().unwrap_or_default();
                    let state = match (*polls, text.as_str()) {
                        (1, _) => "TASK_STATE_WORKING",
                        (_, "fail") => "TASK_STATE_FAILED",
                        _ => "TASK_STATE_COMPLETED",
                    };
                    jsonrpc::Response::result(req.id, remote_task(&id, state, Some(message)))
                }
            }
        }
        other => jsonrpc::Response::error(req.id, RpcError::method_not_found(other)),
    };
    axum::Json(reply).into_response()
}

pub async fn fake_agent(skill: &str) -> Arc<Fake> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let fake = Arc::new(Fake {
        base,
        skill: skill.to_string(),
        healthy: AtomicBool::new(true),
        ..Fake::default()
    });
    let mut broken = card(&fake);
    broken.as_object_mut().unwrap().remove("skills");
    let app = axum::Router::new()
        .route("/.well-known/agent-card.json", get(fake_card))
        .route("/rpc", post(fake_rpc))
        .route(
            "/broken/.well-known/agent-card.json",
            get(move || async move { axum::Json(broken) }),
        )
        .route(
            "/html/.well-known/agent-card.json",
            get(|| async { "<html>hello</html>" }),
        )
        .with_state(fake.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    fake
}
