//! The client against a small A2A server on port 0.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use mesh_a2a::jsonrpc::{Request, Response, RpcError};
use mesh_a2a::{A2aClient, A2aError, Message, Part, Role, SendMessageRequest, SendMessageResponse};
use serde_json::json;

async fn rpc(headers: HeaderMap, Json(req): Json<Request>) -> impl IntoResponse {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer sesame") {
        return (StatusCode::UNAUTHORIZED, "no key").into_response();
    }
    assert_eq!(headers.get("a2a-version").unwrap(), "1.0");
    let reply = match (req.method.as_str(), req.params["id"].as_str()) {
        ("SendMessage", _) => Response::result(
            req.id,
            json!({"task": {"id": "t-1", "contextId": "c-1",
                            "status": {"state": "TASK_STATE_WORKING"}}}),
        ),
        ("GetTask", Some("t-1")) => Response::result(
            req.id,
            json!({"id": "t-1", "status": {"state": "TASK_STATE_COMPLETED"},
                   "artifacts": [{"artifactId": "a", "parts": [{"data": {"ok": true}}]}]}),
        ),
        ("GetTask", Some(other)) => Response::error(req.id, RpcError::task_not_found(other)),
        ("CancelTask", _) => Response::result(req.id, json!({"no": "task"})),
        (method, _) => Response::error(req.id, RpcError::method_not_found(method)),
    };
    Json(reply).into_response()
}

async fn serve() -> String {
    let app = axum::Router::new()
        .route("/rpc", post(rpc))
        .route(
            "/moved/.well-known/agent-card.json",
            get(|| async { Redirect::temporary("http://169.254.169.254/") }),
        )
        .route(
            "/huge.json",
            get(|| async { "x".repeat(mesh_a2a::MAX_REPLY_BYTES + 1) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn send_message_get_task_and_errors() {
    let base = serve().await;
    let client = A2aClient::new(http(), &format!("{base}/rpc"), Some("sesame".into())).unwrap();
    let request = SendMessageRequest {
        tenant: None,
        message: Message::new("m-1", Role::User, vec![Part::text("hi")]),
        configuration: None,
        metadata: None,
    };
    let SendMessageResponse::Task(task) = client.send_message(&request).await.unwrap() else {
        panic!("expected a task")
    };
    assert_eq!(task.id, "t-1");
    let done = client.get_task("t-1").await.unwrap();
    assert!(done.status.state.is_terminal());
    assert_eq!(done.artifacts[0].parts[0].data, Some(json!({"ok": true})));
    let missing = client.get_task("t-9").await.unwrap_err();
    let A2aError::Rpc(err) = &missing else {
        panic!("{missing:?}")
    };
    assert_eq!(err.code, mesh_a2a::jsonrpc::TASK_NOT_FOUND);
    assert_eq!(err.data.as_ref().unwrap()[0]["reason"], "TASK_NOT_FOUND");
    // A result that is not a task is the agent's fault, and says so.
    let bad = client.cancel_task("t-1").await.unwrap_err();
    assert!(matches!(bad, A2aError::Invalid(_)), "{bad:?}");

    let keyless = A2aClient::new(http(), &format!("{base}/rpc"), None).unwrap();
    let refused = keyless.get_task("t-1").await.unwrap_err();
    assert!(
        matches!(&refused, A2aError::Unreachable(why) if why.contains("401")),
        "{refused:?}"
    );
}

#[tokio::test]
async fn cards_that_redirect_are_too_large_or_absent_are_refused() {
    let base = serve().await;
    let http = http();
    let moved = mesh_a2a::card_url(&format!("{base}/moved")).unwrap();
    let err = mesh_a2a::fetch_card(&http, &moved).await.unwrap_err();
    assert!(
        matches!(&err, A2aError::Unreachable(why) if why.contains("redirects") && why.contains("169.254.169.254")),
        "{err:?}"
    );
    let huge = mesh_a2a::card_url(&format!("{base}/huge.json")).unwrap();
    let err = mesh_a2a::fetch_card(&http, &huge).await.unwrap_err();
    assert!(matches!(err, A2aError::Invalid(_)), "{err:?}");
    let absent = mesh_a2a::card_url(&base).unwrap();
    let err = mesh_a2a::fetch_card(&http, &absent).await.unwrap_err();
    assert!(
        matches!(&err, A2aError::Unreachable(why) if why.contains("404")),
        "{err:?}"
    );
    let closed = mesh_a2a::card_url("http://127.0.0.1:9").unwrap();
    let err = mesh_a2a::fetch_card(&http, &closed).await.unwrap_err();
    assert!(matches!(err, A2aError::Unreachable(_)), "{err:?}");
}
