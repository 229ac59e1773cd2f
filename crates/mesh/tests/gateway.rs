//! The routing gateway's OpenAI-compatible ingress against a protocol-faithful upstream:
//! configured providers, credentials from the secret store, provider failures.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::upstream::{DOWN_HITS, Seen, WOBBLY_HITS, upstream};
use common::{Api, MeshProcess, mesh};
use serde_json::{Value, json};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

fn config(base: &str) -> String {
    format!(
        r#"
[secrets]
dir = "secrets"

[[gateway.providers]]
name = "upstream"
kind = "openai"
base_url = "{base}/good"
api_key = "secret://upstream_key"
models = ["up-model"]

[[gateway.providers]]
name = "flaky"
kind = "openai"
base_url = "{base}/garbage"
models = ["garbage-model"]

[[gateway.providers]]
name = "dead"
kind = "openai"
base_url = "{base}/down"
models = ["down-model"]
max_attempts = 2
fallback_model = "up-model"

[[gateway.providers]]
name = "wobbly"
kind = "openai"
base_url = "{base}/wobbly"
models = ["wobbly-model"]

[[gateway.providers]]
name = "broken"
kind = "openai"
base_url = "{base}/down"
models = ["broken-model"]
max_attempts = 1
breaker_failures = 2
breaker_cooldown_ms = 600000

[[gateway.providers]]
name = "schemaless"
kind = "openai"
base_url = "{base}/schemaless"
models = ["schemaless-model"]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_providers_are_called_with_their_secret() {
    let (base, seen) = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("secrets")).unwrap();
    std::fs::write(dir.path().join("secrets/upstream_key"), "sk-upstream-123\n").unwrap();
    std::fs::write(dir.path().join("mesh.toml"), config(&base)).unwrap();
    let process = MeshProcess::up(dir.path(), &["--config", "mesh.toml"]);
    let admin = process.admin_key.clone().unwrap();
    let api = Api::new();
    let gw = process.url("routing-gateway");

    let models = api.get(&format!("{gw}/v1/models"), &admin).await;
    let ids: Vec<(&str, &str)> = models.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["id"].as_str().unwrap(), m["owned_by"].as_str().unwrap()))
        .collect();
    assert!(
        ids.contains(&("up-model", "upstream")) && ids.contains(&("sim-small", "sim")),
        "{ids:?}"
    );

    let chat = |model: &str| {
        json!({"model": model, "temperature": 0.2,
               "messages": [{"role": "user", "content": [{"type": "text", "text": "hi there"}]}]})
        .to_string()
    };
    let r = api
        .post(
            &format!("{gw}/v1/chat/completions"),
            &admin,
            &chat("up-model"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["choices"][0]["message"]["content"],
        "hello from upstream"
    );
    assert_eq!(r.body["usage"]["total_tokens"], 15);
    let (auth, body) = seen.lock().unwrap()[0].clone();
    assert_eq!(auth.as_deref(), Some("Bearer sk-upstream-123"));
    assert_eq!(body["model"], "up-model");
    assert_eq!(body["temperature"], 0.2, "unknown fields pass through");
    assert_eq!(body["stream"], false);

    // Tool calls pass through both ways: the tools to the provider, its tool call back.
    let with_tools = json!({"model": "up-model", "messages": [{"role": "user", "content": "weather in Oslo?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather",
                   "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]});
    let r = api
        .post(
            &format!("{gw}/v1/chat/completions"),
            &admin,
            &with_tools.to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let choice = &r.body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert!(choice["message"]["content"].is_null());
    assert_eq!(
        choice["message"]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
    assert_eq!(
        seen.lock().unwrap().last().unwrap().1["tools"][0]["function"]["name"],
        "get_weather"
    );

    // Streaming: relayed from the upstream, and from sim as the same text it would send
    // whole.
    let streamed = |model: &str| {
        let body = json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "hi there"}]});
        stream_text(&api, &gw, &admin, body)
    };
    assert_eq!(streamed("up-model").await.0, "hello");
    // The gateway asked the upstream for usage; the client, which did not, got no
    // usage chunk (it has no choices, and clients read `choices[0]`)...
    let asked = seen.lock().unwrap().last().unwrap().1.clone();
    assert_eq!(asked["stream_options"]["include_usage"], true, "{asked}");
    // ...a client that asks gets it last, from the upstream or from sim.
    for model in ["up-model", "sim-small"] {
        let body = json!({"model": model, "stream": true, "stream_options": {"include_usage": true},
                          "messages": [{"role": "user", "content": "hi there"}]});
        let (_, usage) = stream_text(&api, &gw, &admin, body).await;
        let usage = usage.unwrap_or_else(|| panic!("{model}: no usage chunk"));
        assert!(usage["completion_tokens"].as_u64().unwrap() > 0, "{usage}");
    }
    // The same OpenAI stream, translated for an Anthropic client.
    let anthropic = api
        .http
        .post(format!("{gw}/v1/messages"))
        .header("x-api-key", &admin)
        .body(
            json!({"model": "up-model", "max_tokens": 10, "stream": true,
                     "messages": [{"role": "user", "content": "hi"}]})
            .to_string(),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let deltas: String = anthropic
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|e| e["delta"]["text"].as_str().map(str::to_string))
        .collect();
    assert_eq!(deltas, "hello", "{anthropic}");
    assert!(anthropic.starts_with("event: message_start"), "{anthropic}");
    assert_eq!(seen.lock().unwrap().last().unwrap().1["stream"], true);
    let whole = api
        .post(
            &format!("{gw}/v1/chat/completions"),
            &admin,
            &json!({"model": "sim-small", "messages": [{"role": "user", "content": "hi there"}]})
                .to_string(),
        )
        .await;
    assert_eq!(
        streamed("sim-small").await.0,
        whole.body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
    );
    // A server that refuses `json_schema` (as llama-cpp-python's does, 422) is asked
    // again with the schema in its own dialect.
    let format =
        json!({"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "object"}}});
    let structured = api
        .post(
            &format!("{gw}/v1/chat/completions"),
            &admin,
            &json!({"model": "schemaless-model", "response_format": format,
                    "messages": [{"role": "user", "content": "hi"}]})
            .to_string(),
        )
        .await;
    assert_eq!(structured.status, 200, "{}", structured.body);
    assert_eq!(
        seen.lock().unwrap().last().unwrap().1["response_format"],
        json!({"type": "json_object", "schema": {"type": "object"}})
    );

    // sim calls a required tool with arguments for its schema, in OpenAI's wire shape.
    let tool_call = api
        .post(
            &format!("{gw}/v1/chat/completions"),
            &admin,
            &json!({"model": "sim-small", "tool_choice": "required",
                    "messages": [{"role": "user", "content": "What should I wear?"}],
                    "tools": [{"type": "function", "function": {"name": "get_weather",
                        "parameters": {"type": "object", "required": ["city", "days"],
                            "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}}}}}]})
            .to_string(),
        )
        .await;
    assert_eq!(tool_call.status, 200, "{}", tool_call.body);
    let choice = &tool_call.body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{}", tool_call.body);
    assert_eq!(choice["message"]["content"], Value::Null);
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(
        arguments["city"].is_string() && arguments["days"] == 1,
        "{arguments}"
    );

    // A provider answering garbage is a 502 naming it (no fallback configured).
    let url = format!("{gw}/v1/chat/completions");
    let post = |model: &str| {
        let (api, url, admin, body) = (api.clone(), url.clone(), admin.clone(), chat(model));
        async move { api.post(&url, &admin, &body).await }
    };
    let r = post("garbage-model").await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("flaky"),
        "{}",
        r.body
    );

    // Transient failures are retried (503, 503, then an answer) ...
    let r = post("wobbly-model").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(WOBBLY_HITS.load(Ordering::SeqCst), 3);
    // ... a provider that stays down is tried max_attempts times, then its fallback
    // answers ...
    let r = post("down-model").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["choices"][0]["message"]["content"],
        "hello from upstream"
    );
    assert_eq!(DOWN_HITS.load(Ordering::SeqCst), 2);
    // ... and after breaker_failures failures in a row the breaker opens: the next
    // call fails at once without reaching the provider.
    for _ in 0..2 {
        let r = post("broken-model").await;
        assert_eq!(r.status, 502, "{}", r.body);
    }
    let hits = DOWN_HITS.load(Ordering::SeqCst);
    let r = post("broken-model").await;
    assert_eq!(r.status, 502);
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("circuit breaker open"), "{message}");
    assert_eq!(DOWN_HITS.load(Ordering::SeqCst), hits);
    let providers = api.get(&format!("{gw}/api/v1/providers"), &admin).await;
    let broken = providers.body["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "broken")
        .cloned()
        .unwrap();
    assert_eq!(broken["breaker"]["state"], "open", "{broken}");
    let metrics = api.call("GET", &format!("{gw}/metrics"), None, None).await;
    let text = metrics.body.as_str().unwrap();
    assert!(
        text.contains(
            "mesh_gateway_breaker_state{service=\"routing-gateway\",provider=\"broken\"} 2"
        ),
        "{text}"
    );

    // Calls and failures are in provenance with provider and token counts; a relayed
    // stream is recorded when it ends, just after the client has read it.
    let settled = |events: &[Value]| {
        common::count(events, "model_call_failed") == 4
            && events.iter().any(|e| {
                e["action"] == "model_call"
                    && e["payload"]["stream"] == true
                    && e["payload"]["provider"] == "upstream"
            })
    };
    let events = common::events_when(&api, &process, &admin, settled).await;
    let calls: Vec<&Value> = events
        .iter()
        .filter(|e| e["action"] == "model_call")
        .collect();
    assert_eq!(calls[0]["payload"]["provider"], "upstream");
    assert_eq!(calls[0]["payload"]["tokensIn"], 11);
    assert_eq!(calls[0]["payload"]["tokensOut"], 4);
    assert_eq!(
        calls[0]["payload"]["cost"], 0.0,
        "the upstream has no prices configured"
    );
    let relayed = calls
        .iter()
        .find(|c| c["payload"]["stream"] == true && c["payload"]["provider"] == "upstream")
        .expect("the relayed stream is recorded when it ends");
    assert_eq!(relayed["payload"]["tokensIn"], 5);
    assert_eq!(relayed["payload"]["tokensOut"], 2);
    // The call's own start, no later than the append that recorded it.
    let time = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    for call in &calls {
        assert!(
            time(&call["payload"]["startedAt"]) <= time(&call["timestamp"]),
            "{call}"
        );
    }
    let failover = calls
        .iter()
        .find(|c| c["payload"]["requestedModel"] == "down-model")
        .expect("the failed-over call");
    assert_eq!(failover["payload"]["failover"], true);
    assert_eq!(failover["payload"]["provider"], "upstream");
    assert_eq!(
        failover["payload"]["failedAttempts"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // garbage once, broken three times (the third stopped by the breaker)
    let failed = events.iter().filter(|e| e["action"] == "model_call_failed");
    assert_eq!(failed.count(), 4);
}

/// A streamed chat call's text and its usage chunk, if one came; every chunk but the
/// usage chunk has a choice.
async fn stream_text(api: &Api, gw: &str, key: &str, body: Value) -> (String, Option<Value>) {
    let resp = post_chat(api, gw, key, &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let text = resp.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let chunks: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .collect();
    let (usage, rest): (Vec<Value>, Vec<Value>) = chunks
        .into_iter()
        .partition(|c| c["choices"].as_array().is_some_and(|c| c.is_empty()));
    assert!(usage.len() <= 1, "{text}");
    let content = rest
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect::<String>();
    (content, usage.first().map(|u| u["usage"].clone()))
}

#[test]
fn credentials_must_come_from_the_secret_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let start = |toml: &str| {
        let file = dir.path().join("m.toml");
        std::fs::write(&file, toml).unwrap();
        let mut args = vec![
            "up".to_string(),
            "--config".into(),
            file.to_str().unwrap().into(),
            "--data-dir".into(),
            data.to_str().unwrap().into(),
        ];
        args.extend(common::ephemeral_listen_args());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = mesh(&refs);
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let literal = start(
        "[[gateway.providers]]\nname = \"x\"\nkind = \"openai\"\nbase_url = \"http://h/v1\"\napi_key = \"sk-live\"\nmodels = [\"m\"]\n",
    );
    assert!(literal.contains("secret://NAME"), "{literal}");
    let missing = start(&format!(
        "[secrets]\ndir = \"{}\"\n[[gateway.providers]]\nname = \"x\"\nkind = \"openai\"\nbase_url = \"http://h/v1\"\napi_key = \"secret://nope\"\nmodels = [\"m\"]\n",
        dir.path().display()
    ));
    assert!(missing.contains("no secret named nope"), "{missing}");
    let clash =
        start("[[gateway.providers]]\nname = \"x\"\nkind = \"sim\"\nmodels = [\"sim-small\"]\n");
    assert!(clash.contains("already served"), "{clash}");
    let nowhere = start(
        "[[gateway.providers]]\nname = \"x\"\nkind = \"sim\"\nmodels = [\"m\"]\nfallback_model = \"ghost\"\n",
    );
    assert!(nowhere.contains("fallback_model ghost"), "{nowhere}");
}

/// `POST /v1/chat/completions` with `body`, the response as it came.
async fn post_chat(api: &Api, gw: &str, key: &str, body: &Value) -> reqwest::Response {
    api.http
        .post(format!("{gw}/v1/chat/completions"))
        .bearer_auth(key)
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

async fn chat_status(api: &Api, gw: &str, key: &str) -> (u16, Option<String>) {
    let body = json!({"model": "sim-small", "messages": [{"role": "user", "content": "hi"}]});
    let resp = post_chat(api, gw, key, &body).await;
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (resp.status().as_u16(), retry)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_queue_then_refuse_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    // Three calls per key, refilled at one every 1,000 s: the fourth is refused.
    std::fs::write(
        dir.path().join("mesh.toml"),
        "[gateway.limits]\nper_key_rps = 0.001\nburst_secs = 3000\n",
    )
    .unwrap();
    let process = MeshProcess::up(dir.path(), &["--config", "mesh.toml"]);
    let admin = process.admin_key.clone().unwrap();
    let api = Api::new();
    let gw = process.url("routing-gateway");
    for _ in 0..3 {
        assert_eq!(chat_status(&api, &gw, &admin).await.0, 200);
    }
    let (status, retry) = chat_status(&api, &gw, &admin).await;
    assert_eq!(status, 429);
    assert!(retry.unwrap().parse::<u64>().unwrap() >= 1);
    // The limit is per key: another key still has its three.
    let other = api
        .key(&process.url("mesh-orchestrator"), &admin, "operator")
        .await;
    assert_eq!(chat_status(&api, &gw, &other).await.0, 200);

    // Waiting instead of refusing: 20 per second, one at a time, waits of at most 2 s.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mesh.toml"),
        "[gateway.limits]\nper_model_rps = 20\nburst_secs = 0\nmax_wait_ms = 2000\n",
    )
    .unwrap();
    let process = MeshProcess::up(dir.path(), &["--config", "mesh.toml"]);
    let admin = process.admin_key.clone().unwrap();
    let gw = process.url("routing-gateway");
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let (api, gw, admin) = (api.clone(), gw.clone(), admin.clone());
            tokio::spawn(async move { chat_status(&api, &gw, &admin).await.0 })
        })
        .collect();
    for call in calls {
        assert_eq!(
            call.await.unwrap(),
            200,
            "queued calls wait for their token"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_limit_is_exact_across_gateway_processes() {
    let Some(redis) = common::backend_from_env("MESH_TEST_REDIS_URL", ".ci/run starts Redis")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let prefix = uuid::Uuid::new_v4().simple().to_string();
    std::fs::write(
        dir.path().join("mesh.toml"),
        format!(
            "[gateway.limits]\nglobal_rps = 0.001\nburst_secs = 4000\nstore = \"{redis}?prefix={prefix}\"\n"
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let key_out = mesh(&[
        "keys",
        "create",
        "--role",
        "admin",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(key_out.status.success());
    let key = String::from_utf8(key_out.stdout)
        .unwrap()
        .trim()
        .to_string();
    let serve = |_: usize| {
        MeshProcess::start(
            dir.path(),
            &[
                "serve",
                "routing-gateway",
                "--listen",
                "127.0.0.1:0",
                "--config",
                "mesh.toml",
                "--data-dir",
                data.to_str().unwrap(),
            ],
        )
    };
    let (a, b) = (serve(0), serve(1));
    let api = Api::new();
    let urls = [a.url("routing-gateway"), b.url("routing-gateway")];
    let calls: Vec<_> = (0..12)
        .map(|i| {
            let (api, gw, key) = (api.clone(), urls[i % 2].clone(), key.clone());
            tokio::spawn(async move { chat_status(&api, &gw, &key).await.0 })
        })
        .collect();
    let mut statuses = Vec::new();
    for call in calls {
        statuses.push(call.await.unwrap());
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((ok, limited), (4, 8), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_both_ways() {
    // A fake Anthropic upstream that checks what Anthropic checks.
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = axum::Router::new().route(
        "/anthropic/messages",
        axum::routing::post(move |headers: axum::http::HeaderMap, axum::Json(body): axum::Json<Value>| {
            let log = log.clone();
            async move {
                let key = headers.get("x-api-key").map(|v| v.to_str().unwrap().to_string());
                assert_eq!(headers["anthropic-version"], "2023-06-01");
                log.lock().unwrap().push((key, body.clone()));
                if body["stream"] == true {
                    let events = [
                        json!({"type": "message_start", "message": {"id": "msg_up", "usage": {"input_tokens": 9, "output_tokens": 0}}}),
                        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
                        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Bon"}}),
                        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "jour"}}),
                        json!({"type": "content_block_stop", "index": 0}),
                        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}}),
                        json!({"type": "message_stop"}),
                    ];
                    let text: String = events
                        .iter()
                        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
                        .collect();
                    return axum::response::IntoResponse::into_response((
                        [(axum::http::header::CONTENT_TYPE, "text/event-stream")],
                        text,
                    ));
                }
                axum::response::IntoResponse::into_response(axum::Json(json!({
                    "id": "msg_up", "type": "message", "role": "assistant", "model": body["model"],
                    "content": [{"type": "text", "text": "Bonjour"},
                                {"type": "tool_use", "id": "tu_1", "name": "lookup", "input": {"q": "x"}}],
                    "stop_reason": "tool_use", "usage": {"input_tokens": 9, "output_tokens": 3}
                })))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("secrets")).unwrap();
    std::fs::write(dir.path().join("secrets/claude"), "sk-ant-test").unwrap();
    std::fs::write(
        dir.path().join("mesh.toml"),
        format!(
            "[secrets]\ndir = \"secrets\"\n[[gateway.providers]]\nname = \"claude\"\nkind = \"anthropic\"\nbase_url = \"{base}/anthropic\"\napi_key = \"secret://claude\"\nmodels = [\"claude-test\"]\n"
        ),
    )
    .unwrap();
    let process = MeshProcess::up(dir.path(), &["--config", "mesh.toml"]);
    let admin = process.admin_key.clone().unwrap();
    let api = Api::new();
    let gw = process.url("routing-gateway");

    // OpenAI shape in, Anthropic upstream: system extracted, max_tokens supplied, the
    // tool use back as an OpenAI tool call.
    let r = api
        .post(
            &format!("{gw}/v1/chat/completions"),
            &admin,
            &json!({"model": "claude-test", "messages": [
                {"role": "system", "content": "answer in French"},
                {"role": "user", "content": "hello"}]})
            .to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let message = &r.body["choices"][0]["message"];
    assert_eq!(message["content"], "Bonjour");
    assert_eq!(message["tool_calls"][0]["function"]["name"], "lookup");
    assert_eq!(r.body["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(r.body["usage"]["prompt_tokens"], 9);
    let (key, sent) = seen.lock().unwrap()[0].clone();
    assert_eq!(key.as_deref(), Some("sk-ant-test"));
    assert_eq!(sent["system"], "answer in French");
    assert_eq!(sent["messages"][0]["role"], "user");
    assert!(sent["max_tokens"].as_u64().unwrap() > 0);

    // Anthropic shape in, to any provider (here sim), whole and streamed.
    let body = json!({"model": "sim-small", "max_tokens": 30, "system": "be brief",
                      "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]});
    let r = api
        .post(&format!("{gw}/v1/messages"), &admin, &body.to_string())
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["type"], "message");
    assert!(r.body["id"].as_str().unwrap().starts_with("msg_"));
    assert!(
        r.body["content"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("[sim]")
    );
    assert_eq!(r.body["stop_reason"], "end_turn");
    assert!(r.body["usage"]["output_tokens"].as_u64().unwrap() > 0);
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    // Anthropic's clients send the key as `x-api-key`.
    let resp = api
        .http
        .post(format!("{gw}/v1/messages"))
        .header("x-api-key", &admin)
        .body(streamed.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let text = resp.text().await.unwrap();
    let events: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(events.first(), Some(&"message_start"));
    assert_eq!(events.last(), Some(&"message_stop"));
    assert!(events.contains(&"content_block_delta"));
    let missing = api
        .post(
            &format!("{gw}/v1/messages"),
            &admin,
            r#"{"model": "sim-small", "messages": []}"#,
        )
        .await;
    assert_eq!(missing.status, 400);
    assert_eq!(missing.body["error"]["field"], "max_tokens");
    // Errors also carry OpenAI's `type` and `param`.
    assert_eq!(missing.body["error"]["type"], "invalid_request_error");
    assert_eq!(missing.body["error"]["param"], "max_tokens");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_providers_drill_retries_and_failover() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mesh.toml"),
        r#"
[[gateway.providers]]
name = "wobbly-sim"
kind = "sim"
models = ["wobbly-sim-model"]
failure = "5xx"
fail_every = 2

[[gateway.providers]]
name = "dead-sim"
kind = "sim"
models = ["dead-sim-model"]
failure = "garbage"
fallback_model = "sim-small"
"#,
    )
    .unwrap();
    let process = MeshProcess::up(dir.path(), &["--config", "mesh.toml"]);
    let admin = process.admin_key.clone().unwrap();
    let api = Api::new();
    let gw = process.url("routing-gateway");
    let chat = |model: &str| {
        json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string()
    };
    for _ in 0..3 {
        let r = api
            .post(
                &format!("{gw}/v1/chat/completions"),
                &admin,
                &chat("wobbly-sim-model"),
            )
            .await;
        assert_eq!(
            r.status, 200,
            "every second call fails and is retried: {}",
            r.body
        );
    }
    let r = api
        .post(
            &format!("{gw}/v1/chat/completions"),
            &admin,
            &chat("dead-sim-model"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["model"], "sim-small");
    let events = Value::Array(
        common::events_when(&api, &process, &admin, |e| {
            common::count(e, "model_call") == 4
        })
        .await,
    );
    let retried = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["action"] == "model_call"
                && !e["payload"]["failedAttempts"]
                    .as_array()
                    .unwrap()
                    .is_empty()
        })
        .count();
    // calls 2 and 4 of wobbly-sim fail: the second and third requests retry; then the failover
    assert_eq!(retried, 3);
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[gateway.providers]]\nname = \"x\"\nkind = \"sim\"\nmodels = [\"m\"]\nfailure = \"sometimes\"\n").unwrap();
    let mut args = vec![
        "up".to_string(),
        "--config".into(),
        bad.to_str().unwrap().into(),
        "--data-dir".into(),
        dir.path().join("d2").to_str().unwrap().into(),
    ];
    args.extend(common::ephemeral_listen_args());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = mesh(&refs);
    assert!(String::from_utf8_lossy(&out.stderr).contains("failure `sometimes`"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_whose_calls_keep_failing_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mesh.toml"),
        "[gateway.agent_breaker]\nfailures = 3\ncooldown_ms = 60000\n\n[[gateway.providers]]\nname = \"broken\"\nkind = \"sim\"\nmodels = [\"broken-model\"]\nfailure = \"5xx\"\nmax_attempts = 1\nbreaker_failures = 100\n",
    )
    .unwrap();
    let process = MeshProcess::up(dir.path(), &["--config", "mesh.toml"]);
    let admin = process.admin_key.clone().unwrap();
    let api = Api::new();
    let agents = format!("{}/api/v1/agents", process.url("agent-registry"));
    let mut ids = Vec::new();
    for name in ["flailing", "bystander"] {
        let mut agent: Value = serde_json::from_str(common::SEED_AGENT).unwrap();
        agent["name"] = json!(name);
        let r = api.post(&agents, &admin, &agent.to_string()).await;
        ids.push(r.body["id"].as_str().unwrap().to_string());
    }
    let gw = process.url("routing-gateway");
    let call = |agent: &str| {
        let req = api
            .http
            .post(format!("{gw}/v1/chat/completions"))
            .bearer_auth(&admin)
            .header("x-mesh-agent-id", agent)
            .body(
                json!({"model": "broken-model", "messages": [{"role": "user", "content": "x"}]})
                    .to_string(),
            );
        async move {
            let resp = req.send().await.unwrap();
            let retry = resp.headers().get("retry-after").is_some();
            (resp.status().as_u16(), retry)
        }
    };
    // `[gateway.agent_breaker] failures = 3`: the fourth call is held back.
    for _ in 0..3 {
        assert_eq!(call(&ids[0]).await.0, 502);
    }
    assert_eq!(
        call(&ids[0]).await,
        (503, true),
        "the agent's breaker opened"
    );
    assert_eq!(
        call(&ids[1]).await.0,
        502,
        "other agents still reach the provider"
    );
    let status = api.get(&format!("{gw}/api/v1/providers"), &admin).await;
    assert_eq!(
        status.body["agentsStopped"][0]["agentId"],
        ids[0].as_str(),
        "{}",
        status.body
    );
}
