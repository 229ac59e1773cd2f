//! The OTLP/HTTP exporter: finished spans go into a bounded queue (a full queue drops
//! the span and counts it, so a request never waits on telemetry), a background task
//! sends them in batches as `ExportTraceServiceRequest` protobuf to `POST
//! {endpoint}/v1/traces`, one `ResourceSpans` per mesh service, retrying a busy or
//! unreachable collector a few times, and flushes on drain.

use crate::span::{Kind, SpanData, Value};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span as ProtoSpan, Status, span::SpanKind, status::StatusCode,
};
use prost::Message;
use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Where and how spans are exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportConfig {
    /// The full traces URL, e.g. `http://collector:4318/v1/traces`.
    pub traces_url: String,
    /// Spans held while the exporter is behind; more are dropped (OTel's default 2048).
    pub max_queue: usize,
    /// Spans per request (OTel's default 512).
    pub max_batch: usize,
    /// How long a span may wait for its batch to fill.
    pub delay: Duration,
}

impl ExportConfig {
    pub fn new(traces_url: String) -> Self {
        ExportConfig {
            traces_url,
            max_queue: 2048,
            max_batch: 512,
            delay: Duration::from_secs(1),
        }
    }
}

/// Sends to the background task: one span, or "send what you hold and tell me".
enum Item {
    Span(Box<SpanData>),
    Flush(oneshot::Sender<()>),
}

struct Exporter {
    tx: mpsc::Sender<Item>,
    dropped: AtomicU64,
    exported: AtomicU64,
}

static EXPORTER: OnceLock<Exporter> = OnceLock::new();

/// Whether spans are recorded at all (an exporter is installed).
pub fn enabled() -> bool {
    EXPORTER.get().is_some()
}

/// Starts exporting to `config.traces_url` from this process (once: later calls keep
/// the first exporter and return false). Needs a Tokio runtime.
pub fn install(config: ExportConfig, instance: &str) -> bool {
    let (tx, rx) = mpsc::channel(config.max_queue.max(1));
    let exporter = Exporter {
        tx,
        dropped: AtomicU64::new(0),
        exported: AtomicU64::new(0),
    };
    if EXPORTER.set(exporter).is_err() {
        return false;
    }
    tracing::info!(endpoint = %config.traces_url, "exporting OpenTelemetry spans over OTLP/HTTP");
    tokio::spawn(run(config, instance.to_string(), rx));
    true
}

/// Spans dropped because the queue was full or the collector failed, and spans
/// accepted by the collector, since start.
pub fn counts() -> (u64, u64) {
    EXPORTER.get().map_or((0, 0), |e| {
        (
            e.dropped.load(Ordering::Relaxed),
            e.exported.load(Ordering::Relaxed),
        )
    })
}

/// Sends every span queued so far and the metrics, and waits for them, up to `timeout`
/// each: called on drain.
pub async fn flush(timeout: Duration) {
    crate::metrics::flush_metrics(timeout).await;
    if let Some(exporter) = EXPORTER.get()
        && !flush_through(&exporter.tx, Item::Flush, timeout).await
    {
        tracing::warn!("OpenTelemetry flush timed out; queued spans are lost");
    }
}

/// Asks a background exporter to send what it holds and waits for its answer, up to
/// `timeout`; false when it did not answer in time.
pub(crate) async fn flush_through<T>(
    tx: &mpsc::Sender<T>,
    request: impl FnOnce(oneshot::Sender<()>) -> T,
    timeout: Duration,
) -> bool {
    let (ack, done) = oneshot::channel();
    let flushed = async {
        if tx.send(request(ack)).await.is_ok() {
            let _ = done.await;
        }
    };
    tokio::time::timeout(timeout, flushed).await.is_ok()
}

/// The HTTP client exporters send with: no redirects (a collector answers where it is
/// configured), a bounded wait. `None` (logged) if it cannot be built.
pub(crate) fn otlp_client(signal: &str) -> Option<reqwest::Client> {
    match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(http) => Some(http),
        Err(e) => {
            tracing::error!(error = %e, "cannot build the OTLP client; {signal} are not exported");
            None
        }
    }
}

pub(crate) fn submit(span: SpanData) {
    if let Some(exporter) = EXPORTER.get()
        && exporter.tx.try_send(Item::Span(Box::new(span))).is_err()
    {
        exporter.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

async fn run(config: ExportConfig, instance: String, mut rx: mpsc::Receiver<Item>) {
    let Some(http) = otlp_client("spans") else {
        return;
    };
    let mut batch: Vec<SpanData> = Vec::new();
    loop {
        let deadline = tokio::time::sleep(config.delay);
        tokio::pin!(deadline);
        // Collect until the batch is full or the delay is over.
        let mut ack = None;
        while batch.len() < config.max_batch && ack.is_none() {
            tokio::select! {
                item = rx.recv() => match item {
                    Some(Item::Span(span)) => batch.push(*span),
                    Some(Item::Flush(a)) => ack = Some(a),
                    None => return,
                },
                _ = &mut deadline => break,
            }
        }
        if ack.is_some() {
            // A flush takes what is queued behind it too.
            while let Ok(Item::Span(span)) = rx.try_recv() {
                batch.push(*span);
            }
        }
        while !batch.is_empty() {
            let rest = batch.split_off(batch.len().min(config.max_batch));
            let sending = std::mem::replace(&mut batch, rest);
            send(&http, &config.traces_url, &instance, sending).await;
        }
        if let Some(ack) = ack {
            let _ = ack.send(());
        }
    }
}

async fn send(http: &reqwest::Client, url: &str, instance: &str, spans: Vec<SpanData>) {
    let Some(exporter) = EXPORTER.get() else {
        return;
    };
    let count = spans.len() as u64;
    let body = encode(spans, instance).encode_to_vec();
    let counter = if post_otlp(http, url, body, "spans").await {
        &exporter.exported
    } else {
        &exporter.dropped
    };
    counter.fetch_add(count, Ordering::Relaxed);
}

/// Tries per export: the first and up to three retries.
const EXPORT_ATTEMPTS: u32 = 4;
/// The longest wait before a retry, whatever `Retry-After` asks.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(5);

/// POSTs an OTLP/HTTP protobuf body; true when the collector accepted it. As the OTLP
/// specification asks, 429, 502, 503 and 504 and failed connections are retried
/// after `Retry-After` or an exponential backoff; other refusals are final. The
/// attempts are bounded, so telemetry never builds up behind a collector that stays
/// down: what the exporter's queue cannot hold meanwhile is dropped and counted.
pub(crate) async fn post_otlp(
    http: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    what: &str,
) -> bool {
    for attempt in 1..=EXPORT_ATTEMPTS {
        let sent = http
            .post(url)
            .header("content-type", "application/x-protobuf")
            .body(body.clone())
            .send()
            .await;
        let retry_after = match sent {
            Ok(r) if r.status().is_success() => return true,
            Ok(r) if matches!(r.status().as_u16(), 429 | 502 | 503 | 504) => {
                tracing::debug!(
                    status = r.status().as_u16(),
                    attempt,
                    "the OTLP collector is busy"
                );
                r.headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
                    .map(Duration::from_secs)
            }
            Ok(r) => {
                tracing::warn!(
                    status = r.status().as_u16(),
                    "the OTLP collector refused {what}"
                );
                return false;
            }
            Err(e) => {
                tracing::debug!(error = %e, attempt, "cannot reach the OTLP collector");
                None
            }
        };
        if attempt == EXPORT_ATTEMPTS {
            break;
        }
        let backoff = Duration::from_millis(250 << attempt);
        tokio::time::sleep(retry_after.unwrap_or(backoff).min(MAX_RETRY_WAIT)).await;
    }
    tracing::warn!(
        attempts = EXPORT_ATTEMPTS,
        "the OTLP collector did not take {what}; dropped"
    );
    false
}

/// The OTLP request for `spans`: one resource per mesh service.
fn encode(spans: Vec<SpanData>, instance: &str) -> ExportTraceServiceRequest {
    let mut by_service: BTreeMap<String, Vec<ProtoSpan>> = BTreeMap::new();
    for span in spans {
        by_service
            .entry(span.service.clone())
            .or_default()
            .push(proto_span(span));
    }
    let resource_spans = by_service
        .into_iter()
        .map(|(service, spans)| ResourceSpans {
            resource: Some(resource(&service, instance)),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "agentic-mesh".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

/// The resource a mesh service's telemetry comes from.
pub(crate) fn resource(service: &str, instance: &str) -> Resource {
    Resource {
        attributes: vec![
            kv("service.name", Value::Str(service.into())),
            kv("service.namespace", Value::Str("agentic-mesh".into())),
            kv(
                "service.version",
                Value::Str(env!("CARGO_PKG_VERSION").into()),
            ),
            kv("service.instance.id", Value::Str(instance.into())),
            kv("telemetry.sdk.name", Value::Str("mesh-telemetry".into())),
            kv("telemetry.sdk.language", Value::Str("rust".into())),
        ],
        ..Default::default()
    }
}

fn proto_span(span: SpanData) -> ProtoSpan {
    ProtoSpan {
        trace_id: span.context.trace_id.to_vec(),
        span_id: span.context.span_id.to_vec(),
        parent_span_id: span.parent.map(|p| p.span_id.to_vec()).unwrap_or_default(),
        // Sampled, as the `traceparent` it propagates says.
        flags: 0x01,
        name: span.name,
        kind: match span.kind {
            Kind::Internal => SpanKind::Internal,
            Kind::Client => SpanKind::Client,
        } as i32,
        start_time_unix_nano: span.start_ns,
        end_time_unix_nano: span.end_ns,
        attributes: span
            .attributes
            .into_iter()
            .map(|(k, v)| kv(&k, v))
            .collect(),
        status: Some(match span.error {
            Some(message) => Status {
                message,
                code: StatusCode::Error as i32,
            },
            None => Status::default(),
        }),
        ..Default::default()
    }
}

pub(crate) fn kv(key: &str, value: Value) -> KeyValue {
    let value = match value {
        Value::Str(s) => any_value::Value::StringValue(s),
        Value::Int(i) => any_value::Value::IntValue(i),
        Value::Bool(b) => any_value::Value::BoolValue(b),
        Value::Double(d) => any_value::Value::DoubleValue(d),
    };
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}
