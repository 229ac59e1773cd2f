//! A protocol-faithful OpenAI-compatible upstream for gateway tests.

use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// What the fake upstream saw: the Authorization header and the body of each request.
pub type Seen = Arc<Mutex<Vec<(Option<String>, Value)>>>;

/// Calls that reached `/down` and `/wobbly`.
pub static DOWN_HITS: AtomicUsize = AtomicUsize::new(0);
pub static WOBBLY_HITS: AtomicUsize = AtomicUsize::new(0);

/// An OpenAI-compatible upstream: `/good/chat/completions` answers like OpenAI does,
/// `/schemaless/…` refuses a `json_schema` response format, `/garbage/…` answers HTML, `/down/…` a 503, `/wobbly/…` a 503 twice, then like
/// `/good`, `/late/…` like `/good` after 300 ms (so a race's other runner, failing,
/// always finishes first).
pub async fn upstream() -> (String, Seen) {
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let good = move |headers: axum::http::HeaderMap, axum::Json(body): axum::Json<Value>| {
        let log = log.clone();
        async move {
            let auth = headers
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_string());
            log.lock().unwrap().push((auth, body.clone()));
            if body["tools"].is_array() {
                return axum::response::IntoResponse::into_response(axum::Json(json!({
                    "id": "chatcmpl-2", "object": "chat.completion", "created": 1, "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                        "role": "assistant", "content": null,
                        "tool_calls": [{"id": "call_1", "type": "function",
                                        "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]}}],
                    "usage": {"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29}
                })));
            }
            if body["stream"] == true {
                let mut frames = vec![
                    json!({"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hel"}}]}),
                    json!({"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]}),
                ];
                // As OpenAI: usage only when asked for, in a chunk of its own.
                if body["stream_options"]["include_usage"] == true {
                    frames.push(json!({"id": "c1", "object": "chat.completion.chunk", "choices": [],
                                       "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}));
                }
                let text: String = frames
                    .iter()
                    .map(|f| format!("data: {f}\n\n"))
                    .collect::<String>()
                    + "data: [DONE]\n\n";
                return axum::response::IntoResponse::into_response((
                    [(axum::http::header::CONTENT_TYPE, "text/event-stream")],
                    text,
                ));
            }
            axum::response::IntoResponse::into_response(axum::Json(json!({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello from upstream"},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}
            })))
        }
    };
    let good2 = good.clone();
    let wobbly = move |headers: axum::http::HeaderMap, body: axum::Json<Value>| {
        let good = good2.clone();
        async move {
            if WOBBLY_HITS.fetch_add(1, Ordering::SeqCst) < 2 {
                return axum::response::IntoResponse::into_response((
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                ));
            }
            good(headers, body).await
        }
    };
    let good3 = good.clone();
    let late = move |headers: axum::http::HeaderMap, body: axum::Json<Value>| {
        let good = good3.clone();
        async move {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            good(headers, body).await
        }
    };
    let good4 = good.clone();
    // Like llama-cpp-python's server: `json_schema` is refused, the schema inside
    // `json_object` taken.
    let schemaless = move |headers: axum::http::HeaderMap, body: axum::Json<Value>| {
        let good = good4.clone();
        async move {
            if body.0["response_format"]["type"] == "json_schema" {
                return axum::response::IntoResponse::into_response((
                    axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                    axum::Json(
                        json!({"error": {"message": "('body', 'response_format', 'type'): Input should be 'text' or 'json_object'"}}),
                    ),
                ));
            }
            good(headers, body).await
        }
    };
    let app = axum::Router::new()
        .route("/good/chat/completions", axum::routing::post(good))
        .route(
            "/schemaless/chat/completions",
            axum::routing::post(schemaless),
        )
        .route("/late/chat/completions", axum::routing::post(late))
        .route("/wobbly/chat/completions", axum::routing::post(wobbly))
        .route(
            "/garbage/chat/completions",
            axum::routing::post(|| async { "<html>oops</html>" }),
        )
        .route(
            "/down/chat/completions",
            axum::routing::post(|| async {
                DOWN_HITS.fetch_add(1, Ordering::SeqCst);
                (axum::http::StatusCode::SERVICE_UNAVAILABLE, "down")
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}
