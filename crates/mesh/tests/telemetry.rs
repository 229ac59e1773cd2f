//! OpenTelemetry end to end: a mesh with `[telemetry] otlp_endpoint` runs the seed's
//! `code_refactor` task through the built-in planner, coder and critic on the `sim`
//! provider, and a real OTLP/HTTP receiver (an axum server decoding
//! `ExportTraceServiceRequest` with the OpenTelemetry protobuf definitions) checks the
//! GenAI spans: names, kinds, attributes, parents, and the provenance events they name.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use common::{Api, MeshProcess};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::metrics::v1::metric::Data as MetricData;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as SpanStatus;
use prost::Message;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SEED_EXAMPLE: &str = r#"{"type": "code_refactor", "input": {"spec": "Split the parser into small functions", "target": "src/foo.ts"}, "priority": 1}"#;

/// One received span, flattened.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    /// `service.instance.id`: one per process.
    instance: String,
    name: String,
    kind: i32,
    trace: Vec<u8>,
    id: Vec<u8>,
    parent: Vec<u8>,
    attrs: HashMap<String, AnyValue>,
    error: bool,
}

impl Got {
    fn str(&self, key: &str) -> Option<&str> {
        match self.attrs.get(key) {
            Some(AnyValue::StringValue(s)) => Some(s),
            _ => None,
        }
    }

    fn int(&self, key: &str) -> Option<i64> {
        match self.attrs.get(key) {
            Some(AnyValue::IntValue(i)) => Some(*i),
            _ => None,
        }
    }

    fn op(&self) -> &str {
        self.str("gen_ai.operation.name").unwrap_or_default()
    }
}

#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Got>>>,
    requests: Arc<Mutex<usize>>,
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
    /// Trace exports still to answer 503, as a busy collector does.
    busy_for: Arc<Mutex<usize>>,
}

impl Receiver {
    /// An OTLP/HTTP receiver on `addr`: `POST /v1/traces` with a protobuf body.
    async fn start(addr: &str) -> Option<(Receiver, String)> {
        let listener = tokio::net::TcpListener::bind(addr).await.ok()?;
        let url = format!("http://{}", listener.local_addr().unwrap());
        let receiver = Receiver::default();
        let state = receiver.clone();
        let metrics = receiver.metrics.clone();
        let app = axum::Router::new()
            .route(
                "/v1/traces",
                axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                    let state = state.clone();
                    async move { state.accept(&headers, &body) }
                }),
            )
            .route(
                "/v1/metrics",
                axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                    let metrics = metrics.clone();
                    async move {
                        assert_eq!(headers["content-type"], "application/x-protobuf");
                        let request = ExportMetricsServiceRequest::decode(body.as_ref())
                            .expect("an OTLP metrics protobuf body");
                        metrics.lock().unwrap().push(request);
                        StatusCode::OK
                    }
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Some((receiver, url))
    }

    fn accept(&self, headers: &HeaderMap, body: &[u8]) -> StatusCode {
        *self.requests.lock().unwrap() += 1;
        assert_eq!(headers["content-type"], "application/x-protobuf");
        {
            let mut busy = self.busy_for.lock().unwrap();
            if *busy > 0 {
                *busy -= 1;
                return StatusCode::SERVICE_UNAVAILABLE;
            }
        }
        let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
        let mut spans = self.spans.lock().unwrap();
        for rs in request.resource_spans {
            let resource = rs.resource.unwrap_or_default();
            let attr = |key: &str| {
                string_attr(&resource.attributes, key)
                    .unwrap_or_else(|| panic!("every resource has {key}"))
            };
            let (service, instance) = (attr("service.name"), attr("service.instance.id"));
            for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                spans.push(Got {
                    service: service.clone(),
                    instance: instance.clone(),
                    name: span.name,
                    kind: span.kind,
                    trace: span.trace_id,
                    id: span.span_id,
                    parent: span.parent_span_id,
                    attrs: span
                        .attributes
                        .into_iter()
                        .filter_map(|kv| Some((kv.key, kv.value?.value?)))
                        .collect(),
                    error: span
                        .status
                        .is_some_and(|s| s.code == SpanStatus::Error as i32),
                });
            }
        }
        StatusCode::OK
    }

    fn spans(&self) -> Vec<Got> {
        self.spans.lock().unwrap().clone()
    }
}

/// Polls `probe` until it yields a value; the code flow runs three agents on two
/// shared cores, so this allows more than `common::wait_for`'s 20 s.
async fn wait_for<T, F, Fut>(probe: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not reached within 90 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `mesh up` with the built-in agents, `config`, and the coder's target file.
fn up(dir: &Path, config: &str) -> MeshProcess {
    let target = dir.join("workspace/src/foo.ts");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::write(target, "export const answer = 42;\n").unwrap();
    let config = format!("[tools]\nallowed_paths = [\"workspace\"]\n{config}");
    std::fs::write(dir.join("mesh.toml"), config).unwrap();
    MeshProcess::up_with_builtins(dir, &["--config", "mesh.toml"])
}

/// Submits the seed example and waits for it to complete.
async fn run_seed_task(api: &Api, mesh: &MeshProcess) -> String {
    let admin = mesh.admin_key.clone().unwrap();
    let tasks = format!("{}/api/v1/tasks", mesh.url("mesh-orchestrator"));
    let r = api.post(&tasks, &admin, SEED_EXAMPLE).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["taskId"].as_str().unwrap().to_string();
    let url = format!("{tasks}/{id}");
    let task = wait_for(|| async {
        let task = api.get(&url, &admin).await.body;
        matches!(task["status"].as_str(), Some("completed" | "failed")).then_some(task)
    })
    .await;
    assert_eq!(task["status"], "completed", "{task}");
    id
}

/// A trace an outside caller started, as its `traceparent` names it.
const OUTSIDE_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const OUTSIDE_SPAN: &str = "b7ad6b7169203331";

/// A model call that fails (no such model), made inside the caller's own trace.
async fn call_unknown_model_as_an_outside_caller(api: &Api, mesh: &MeshProcess) {
    let url = format!("{}/v1/chat/completions", mesh.url("routing-gateway"));
    let r = api
        .http
        .post(url)
        .bearer_auth(mesh.admin_key.as_deref().unwrap())
        .header(
            "traceparent",
            format!("00-{OUTSIDE_TRACE}-{OUTSIDE_SPAN}-01"),
        )
        .body(r#"{"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The routing gateway's `/metrics` text.
async fn metrics(mesh: &MeshProcess) -> String {
    let url = format!("{}/metrics", mesh.url("routing-gateway"));
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

/// Every provenance event, page by page.
async fn all_events(api: &Api, mesh: &MeshProcess) -> Vec<Value> {
    let admin = mesh.admin_key.clone().unwrap();
    let mut events: Vec<Value> = Vec::new();
    loop {
        let after = events
            .last()
            .map(|e| e["seq"].as_i64().unwrap())
            .unwrap_or(0);
        let url = format!(
            "{}/api/v1/provenance/events?after={after}&limit=1000",
            mesh.url("provenance-service")
        );
        let page = api
            .get(&url, &admin)
            .await
            .body
            .as_array()
            .cloned()
            .unwrap();
        if page.is_empty() {
            return events;
        }
        events.extend(page);
    }
}

/// The ids the provenance events of `action` carry under `field`.
fn ids(events: &[Value], action: &str, field: &str) -> HashSet<String> {
    events
        .iter()
        .filter(|e| e["action"] == action)
        .filter_map(|e| e["payload"][field].as_str().map(str::to_string))
        .collect()
}

/// Runs the seed task on a mesh exporting to a fresh receiver, with `config` added;
/// returns the spans received after the mesh drained, the provenance log, the task id,
/// and the last metrics export (cumulative, so it holds every call).
async fn traced_run(
    config: &str,
) -> (
    Vec<Got>,
    Vec<Value>,
    String,
    Option<ExportMetricsServiceRequest>,
) {
    let (receiver, endpoint) = Receiver::start("127.0.0.1:0").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config =
        format!("[telemetry]\notlp_endpoint = \"{endpoint}\"\nbatch_delay_ms = 100\n{config}");
    let mut mesh = up(dir.path(), &config);
    let api = Api::new();
    let task = run_seed_task(&api, &mesh).await;
    // The gateway writes its call records in batches: wait until the calls are in.
    let events = wait_for(|| async {
        let events = all_events(&api, &mesh).await;
        let calls = ids(&events, "model_call", "modelCallId");
        let spans = receiver.spans();
        let chats: Vec<_> = spans.iter().filter(|s| s.op() == "chat").collect();
        (!chats.is_empty()
            && chats
                .iter()
                .all(|s| calls.contains(s.str("mesh.provenance.ref").unwrap_or_default())))
        .then_some(events)
    })
    .await;
    call_unknown_model_as_an_outside_caller(&api, &mesh).await;
    let metrics = metrics(&mesh).await;
    assert!(
        metrics.contains("mesh_otel_spans_exported_total"),
        "{metrics}"
    );
    // Drain flushes what is still queued (worker processes flush as they stop).
    mesh.signal("TERM");
    assert_eq!(
        mesh.wait(Duration::from_secs(60)),
        Some(0),
        "{}",
        mesh.stderr()
    );
    let last_metrics = receiver.metrics.lock().unwrap().last().cloned();
    (receiver.spans(), events, task, last_metrics)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_code_flow_exports_genai_spans_linked_to_provenance() {
    let (spans, events, task, metrics) = traced_run("").await;
    check_flow(&spans, &events, &task);
    check_metrics(&metrics.expect("metrics flushed on drain"), &events);
}

/// The string value of attribute `key`, if it has one.
fn string_attr(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(s) => Some(s.clone()),
            _ => None,
        }
    })
}

/// The GenAI client metrics count what provenance recorded: one duration per model
/// call, and the tokens of all of them by type.
fn check_metrics(request: &ExportMetricsServiceRequest, events: &[Value]) {
    let calls: Vec<&Value> = events
        .iter()
        .filter(|e| e["action"] == "model_call")
        .collect();
    let tokens = |field: &str| -> u64 {
        calls
            .iter()
            .map(|c| c["payload"][field].as_u64().unwrap())
            .sum()
    };
    let mut durations = 0;
    let mut by_type: HashMap<String, f64> = HashMap::new();
    for rm in &request.resource_metrics {
        for metric in rm.scope_metrics.iter().flat_map(|s| &s.metrics) {
            let Some(MetricData::Histogram(h)) = &metric.data else {
                panic!("{} is a histogram", metric.name);
            };
            for point in &h.data_points {
                let attr = |key: &str| string_attr(&point.attributes, key);
                assert_eq!(attr("gen_ai.operation.name").as_deref(), Some("chat"));
                assert_eq!(attr("gen_ai.provider.name").as_deref(), Some("mesh.sim"));
                assert_eq!(point.bucket_counts.iter().sum::<u64>(), point.count);
                match metric.name.as_str() {
                    "gen_ai.client.operation.duration" => {
                        assert_eq!(metric.unit, "s");
                        durations += point.count;
                    }
                    "gen_ai.client.token.usage" => {
                        let kind = attr("gen_ai.token.type").expect("a token type");
                        *by_type.entry(kind).or_default() += point.sum.unwrap();
                    }
                    other => panic!("unexpected metric {other}"),
                }
            }
        }
    }
    assert_eq!(durations, calls.len() as u64);
    assert_eq!(by_type["input"], tokens("tokensIn") as f64);
    assert_eq!(by_type["output"], tokens("tokensOut") as f64);
}

/// A collector that answers 503 for a while gets the spans once it recovers: the
/// exporter retries, as OTLP asks, rather than dropping the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_briefly_busy_collector_loses_no_spans() {
    let (receiver, endpoint) = Receiver::start("127.0.0.1:0").await.unwrap();
    *receiver.busy_for.lock().unwrap() = 2;
    let dir = tempfile::tempdir().unwrap();
    let mut mesh = up(
        dir.path(),
        &format!("[telemetry]\notlp_endpoint = \"{endpoint}\"\nbatch_delay_ms = 50\n"),
    );
    let api = Api::new();
    let key = mesh.admin_key.clone().unwrap();
    let chat =
        serde_json::json!({"model": "sim-small", "messages": [{"role": "user", "content": "hi"}]});
    let gateway = format!("{}/v1/chat/completions", mesh.url("routing-gateway"));
    for _ in 0..3 {
        assert_eq!(
            api.post(&gateway, &key, &chat.to_string()).await.status,
            200
        );
    }
    wait_for(|| async {
        let chats = receiver.spans().iter().filter(|s| s.op() == "chat").count();
        (chats >= 3).then_some(())
    })
    .await;
    assert!(
        *receiver.requests.lock().unwrap() >= 3,
        "two refused, then taken"
    );
    let text = metrics(&mesh).await;
    assert!(
        text.contains("mesh_otel_spans_dropped_total{service=\"routing-gateway\"} 0"),
        "{text}"
    );
    mesh.signal("TERM");
    assert_eq!(mesh.wait(Duration::from_secs(60)), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_in_their_own_processes_join_the_trace_by_traceparent() {
    let agents = r#"
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
    let (spans, events, task, _) = traced_run(agents).await;
    check_flow(&spans, &events, &task);
    // The workers' spans come from other processes than the gateway's, yet the
    // gateway's chat spans are their children: the context crossed HTTP.
    let gateway = spans.iter().find(|s| s.op() == "chat").unwrap();
    let worker = spans
        .iter()
        .find(|s| {
            s.op() == "invoke_agent" && s.str("gen_ai.agent.name").unwrap().starts_with("coder")
        })
        .unwrap();
    assert_ne!(gateway.instance, worker.instance);
}

fn check_flow(spans: &[Got], events: &[Value], task: &str) {
    let by_id: HashMap<&[u8], &Got> = spans.iter().map(|s| (s.id.as_slice(), s)).collect();
    let parent_of = |s: &Got| by_id.get(s.parent.as_slice()).copied();
    let of = |op: &str| spans.iter().filter(|s| s.op() == op).collect::<Vec<_>>();

    // invoke_agent: one per attempt of each agent, in the agents' own service.
    let agents = of("invoke_agent");
    for role in ["planner", "coder", "critic", "flow-runner"] {
        assert!(
            agents
                .iter()
                .any(|s| s.str("gen_ai.agent.name").unwrap().starts_with(role)),
            "no invoke_agent span for the {role}: {agents:#?}"
        );
    }
    for s in &agents {
        let agent = s.str("gen_ai.agent.name").unwrap();
        assert_eq!(s.name, format!("invoke_agent {agent}"));
        assert_eq!(s.kind, SpanKind::Internal as i32);
        assert_eq!(s.service, "mesh-agents");
        assert!(s.str("gen_ai.agent.id").is_some());
        assert!(s.str("mesh.task.id").is_some());
        assert!(s.int("mesh.task.attempt").unwrap() >= 1);
        assert!(!s.error, "{s:?}");
    }
    // The parent task's own attempts are the flow runner's; the task and its subtasks
    // are one trace, whose id is the task's.
    assert!(agents.iter().any(|s| s.str("mesh.task.id") == Some(task)));
    for s in &agents {
        assert_eq!(hex(&s.trace), task.replace('-', ""), "{s:?}");
    }
    // A subtask's attempts nest under the flow runner's attempt that spawned them.
    let subtasks: Vec<_> = agents
        .iter()
        .filter(|s| s.str("mesh.task.id") != Some(task))
        .collect();
    assert!(!subtasks.is_empty());
    for s in subtasks {
        let parent =
            parent_of(s).unwrap_or_else(|| panic!("a subtask's span has no parent: {s:?}"));
        assert_eq!(parent.op(), "invoke_agent", "{s:?}");
        assert_eq!(parent.str("mesh.task.id"), Some(task), "{s:?}");
    }

    // chat: each model call, a child of the agent that made it, naming its ModelCall.
    let chats_all = of("chat");
    let chats: Vec<_> = chats_all
        .iter()
        .copied()
        .filter(|s| s.str("gen_ai.request.model") != Some("no-such-model"))
        .collect();
    let calls = ids(events, "model_call", "modelCallId");
    assert!(chats.len() >= 3, "{chats:#?}");
    for s in &chats {
        let model = s.str("gen_ai.request.model").unwrap();
        assert_eq!(s.name, format!("chat {model}"));
        assert_eq!(s.kind, SpanKind::Client as i32);
        assert_eq!(s.service, "routing-gateway");
        assert_eq!(s.str("gen_ai.provider.name"), Some("mesh.sim"));
        assert_eq!(s.str("gen_ai.response.model"), Some(model));
        assert!(s.int("gen_ai.usage.input_tokens").unwrap() > 0);
        assert!(s.int("gen_ai.usage.output_tokens").unwrap() > 0);
        assert_eq!(s.str("mesh.provenance.action"), Some("model_call"));
        assert!(
            calls.contains(s.str("mesh.provenance.ref").unwrap()),
            "{s:?}"
        );
        let parent = parent_of(s).expect("a chat span has its agent's span as parent");
        assert_eq!(parent.op(), "invoke_agent");
        assert_eq!(parent.trace, s.trace);
        assert_eq!(parent.str("gen_ai.agent.id"), s.str("gen_ai.agent.id"));
        assert_eq!(parent.str("mesh.task.id"), s.str("mesh.task.id"));
    }

    // A failed call: `error.type`, status ERROR, and the outside caller's span as parent.
    let failed = chats_all
        .iter()
        .find(|s| s.name == "chat no-such-model")
        .unwrap_or_else(|| panic!("no span for the failed call: {chats_all:#?}"));
    assert!(failed.error);
    assert_eq!(failed.str("error.type"), Some("not_found"));
    assert_eq!(hex(&failed.trace), OUTSIDE_TRACE);
    assert_eq!(hex(&failed.parent), OUTSIDE_SPAN);

    // execute_tool: the coder's file_read, naming its ToolCall.
    let tools = of("execute_tool");
    let tool_calls = ids(events, "tool_call", "toolCallId");
    let read = tools
        .iter()
        .find(|s| s.str("gen_ai.tool.name") == Some("file_read"))
        .unwrap_or_else(|| panic!("no file_read span: {tools:#?}"));
    assert_eq!(read.name, "execute_tool file_read");
    assert_eq!(read.kind, SpanKind::Internal as i32);
    assert_eq!(read.service, "tool-registry");
    assert_eq!(read.str("gen_ai.tool.type"), Some("function"));
    let call_id = read.str("gen_ai.tool.call.id").unwrap();
    assert!(tool_calls.contains(call_id), "{read:?}");
    assert_eq!(read.str("mesh.provenance.ref"), Some(call_id));
    let coder = parent_of(read).unwrap();
    assert_eq!(coder.op(), "invoke_agent");
    assert!(coder.str("gen_ai.agent.name").unwrap().starts_with("coder"));

    // apply_guardrail: every decision, under the operation it guarded.
    let decisions = ids(events, "policy_decision", "decisionId");
    let guards = of("apply_guardrail");
    let under = |point: &str, op: &str| {
        guards.iter().any(|s| {
            s.str("mesh.policy.point") == Some(point) && parent_of(s).is_some_and(|p| p.op() == op)
        })
    };
    assert!(under("model.call", "chat"), "{guards:#?}");
    assert!(under("tool.call", "execute_tool"), "{guards:#?}");
    for s in &guards {
        let point = s.str("mesh.policy.point").unwrap();
        assert_eq!(s.name, format!("apply_guardrail {point}"));
        assert_eq!(s.kind, SpanKind::Internal as i32);
        assert!(s.str("mesh.policy.action").is_some());
    }
    // The decisions made inside a call are in the log under the ids the spans name.
    for s in guards
        .iter()
        .filter(|s| parent_of(s).is_some_and(|p| p.op() != "invoke_agent"))
    {
        let decision = s.str("mesh.provenance.ref").unwrap();
        assert!(decisions.contains(decision), "{s:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_exported_without_an_endpoint() {
    // OpenTelemetry SDKs default to localhost:4318; the mesh must not. Listen there
    // (when the port is free) and run the same flow with no endpoint configured.
    if std::env::vars().any(|(k, _)| k.starts_with("OTEL_EXPORTER_OTLP")) {
        eprintln!("SKIPPED: this environment configures an OTLP endpoint");
        return;
    }
    let Some((receiver, _)) = Receiver::start("127.0.0.1:4318").await else {
        eprintln!("SKIPPED: 127.0.0.1:4318 is taken");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut mesh = up(dir.path(), "");
    let api = Api::new();
    run_seed_task(&api, &mesh).await;
    assert!(!metrics(&mesh).await.contains("mesh_otel_"));
    mesh.signal("TERM");
    assert_eq!(mesh.wait(Duration::from_secs(30)), Some(0));
    assert_eq!(*receiver.requests.lock().unwrap(), 0);
    assert!(!mesh.stderr().contains("exporting OpenTelemetry spans"));
}
