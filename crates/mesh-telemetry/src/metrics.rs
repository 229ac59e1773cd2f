//! GenAI client metrics in the OpenTelemetry semantic conventions:
//! `gen_ai.client.operation.duration` (seconds) and `gen_ai.client.token.usage`
//! (tokens, one point per `gen_ai.token.type`), explicit-bucket histograms with the
//! conventions' advised boundaries, aggregated in-process with cumulative temporality
//! and sent as `ExportMetricsServiceRequest` protobuf to `POST {endpoint}/v1/metrics`
//! every interval and on flush.
//!
//! Recording costs one atomic load when no metrics exporter is installed, and a short
//! mutex hold when one is: a model call never waits on the collector.

use crate::export::{flush_through, kv, otlp_client, post_otlp, resource};
use crate::semconv;
use crate::span::Value;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Histogram as ProtoHistogram, HistogramDataPoint, Metric,
    ResourceMetrics, ScopeMetrics, metric,
};
use prost::Message;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

pub const OPERATION_DURATION: &str = "gen_ai.client.operation.duration";
pub const TOKEN_USAGE: &str = "gen_ai.client.token.usage";
pub const TOKEN_TYPE: &str = "gen_ai.token.type";

/// The conventions' advised bucket boundaries.
const DURATION_BOUNDS: &[f64] = &[
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
const TOKEN_BOUNDS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];

/// Where and how often metrics are exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// The full metrics URL, e.g. `http://collector:4318/v1/metrics`.
    pub metrics_url: String,
    /// Between exports (OTel's default 60 s, `OTEL_METRIC_EXPORT_INTERVAL`).
    pub interval: Duration,
}

/// One finished model call, as the metrics see it.
pub struct ChatCall<'a> {
    /// The mesh service that made the call (the resource's `service.name`).
    pub service: &'a str,
    /// `gen_ai.provider.name`: the API the provider speaks.
    pub provider: &'a str,
    pub request_model: &'a str,
    pub response_model: &'a str,
    /// `error.type` for a call that failed after reaching its provider.
    pub error_type: Option<&'a str>,
    pub duration: Duration,
    /// Input and output tokens, for a call that returned them.
    pub tokens: Option<(u64, u64)>,
}

/// A series: instrument, service, and its attributes (sorted, so equal sets meet).
type SeriesKey = (&'static str, String, Vec<(&'static str, String)>);

struct Histogram {
    bounds: &'static [f64],
    /// `bounds.len() + 1` buckets: bucket `i` counts values in `(bounds[i-1], bounds[i]]`.
    counts: Vec<u64>,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    fn observe(&mut self, value: f64) {
        let bucket = self.bounds.partition_point(|b| *b < value);
        self.counts[bucket] += 1;
        self.count += 1;
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }
}

enum Request {
    Flush(oneshot::Sender<()>),
}

struct Metrics {
    start_ns: u64,
    series: Mutex<BTreeMap<SeriesKey, Histogram>>,
    tx: mpsc::Sender<Request>,
    exported: AtomicU64,
    failed: AtomicU64,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// Starts aggregating and exporting to `config.metrics_url` (once per process; later
/// calls return false). Needs a Tokio runtime.
pub fn install_metrics(config: MetricsConfig, instance: &str) -> bool {
    let (tx, rx) = mpsc::channel(4);
    let metrics = Metrics {
        start_ns: now_ns(),
        series: Mutex::new(BTreeMap::new()),
        tx,
        exported: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    };
    if METRICS.set(metrics).is_err() {
        return false;
    }
    tracing::info!(endpoint = %config.metrics_url, "exporting OpenTelemetry metrics over OTLP/HTTP");
    tokio::spawn(run(config, instance.to_string(), rx));
    true
}

/// Whether model calls are being counted (a metrics exporter is installed).
pub fn enabled() -> bool {
    METRICS.get().is_some()
}

/// Exports that the collector accepted and that failed, since start.
pub fn metric_exports() -> (u64, u64) {
    METRICS.get().map_or((0, 0), |m| {
        (
            m.exported.load(Ordering::Relaxed),
            m.failed.load(Ordering::Relaxed),
        )
    })
}

/// Records a model call's duration and, when it has them, its token counts.
pub fn record_chat(call: ChatCall) {
    let Some(metrics) = METRICS.get() else {
        return;
    };
    let attributes = vec![
        (semconv::OPERATION, semconv::CHAT.to_string()),
        (semconv::PROVIDER, call.provider.to_string()),
        (semconv::REQUEST_MODEL, call.request_model.to_string()),
        (semconv::RESPONSE_MODEL, call.response_model.to_string()),
    ];
    let mut duration_attributes = attributes.clone();
    if let Some(error) = call.error_type {
        duration_attributes.push((semconv::ERROR_TYPE, error.to_string()));
    }
    let Ok(mut series) = metrics.series.lock() else {
        return;
    };
    let mut observe = |name, bounds, mut attributes: Vec<(&'static str, String)>, value| {
        attributes.sort();
        series
            .entry((name, call.service.to_string(), attributes))
            .or_insert_with(|| Histogram::new(bounds))
            .observe(value);
    };
    observe(
        OPERATION_DURATION,
        DURATION_BOUNDS,
        duration_attributes,
        call.duration.as_secs_f64(),
    );
    if let Some((input, output)) = call.tokens {
        for (kind, count) in [("input", input), ("output", output)] {
            let mut with_type = attributes.clone();
            with_type.push((TOKEN_TYPE, kind.to_string()));
            observe(TOKEN_USAGE, TOKEN_BOUNDS, with_type, count as f64);
        }
    }
}

/// Exports what has been recorded and waits for it, up to `timeout`: called on drain.
pub async fn flush_metrics(timeout: Duration) {
    if let Some(metrics) = METRICS.get()
        && !flush_through(&metrics.tx, Request::Flush, timeout).await
    {
        tracing::warn!("OpenTelemetry metrics flush timed out");
    }
}

async fn run(config: MetricsConfig, instance: String, mut rx: mpsc::Receiver<Request>) {
    let Some(http) = otlp_client("metrics") else {
        return;
    };
    let mut ticks = tokio::time::interval(config.interval);
    // An export held up by a slow collector (retries included) is not followed by a
    // burst of catch-up exports: the totals are cumulative, the next one has them all.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        let ack = tokio::select! {
            _ = ticks.tick() => None,
            request = rx.recv() => match request {
                Some(Request::Flush(ack)) => Some(ack),
                None => return,
            },
        };
        if let Some(body) = snapshot(&instance) {
            send(&http, &config.metrics_url, body).await;
        }
        if let Some(ack) = ack {
            let _ = ack.send(());
        }
    }
}

/// Every series so far as one request (cumulative: each export repeats the totals);
/// `None` before anything was recorded.
fn snapshot(instance: &str) -> Option<ExportMetricsServiceRequest> {
    let metrics = METRICS.get()?;
    let series = metrics.series.lock().ok()?;
    if series.is_empty() {
        return None;
    }
    Some(encode(&series, metrics.start_ns, now_ns(), instance))
}

async fn send(http: &reqwest::Client, url: &str, body: ExportMetricsServiceRequest) {
    let Some(metrics) = METRICS.get() else {
        return;
    };
    // Cumulative totals: a failed export loses nothing, the next one carries them.
    let counter = if post_otlp(http, url, body.encode_to_vec(), "metrics").await {
        &metrics.exported
    } else {
        &metrics.failed
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

fn encode(
    series: &BTreeMap<SeriesKey, Histogram>,
    start_ns: u64,
    now_ns: u64,
    instance: &str,
) -> ExportMetricsServiceRequest {
    // service → instrument → data points
    let mut by_service: BTreeMap<&str, BTreeMap<&str, Vec<HistogramDataPoint>>> = BTreeMap::new();
    for ((name, service, attributes), h) in series {
        by_service
            .entry(service.as_str())
            .or_default()
            .entry(name)
            .or_default()
            .push(HistogramDataPoint {
                attributes: attributes
                    .iter()
                    .map(|(k, v)| kv(k, Value::Str(v.clone())))
                    .collect(),
                start_time_unix_nano: start_ns,
                time_unix_nano: now_ns,
                count: h.count,
                sum: Some(h.sum),
                bucket_counts: h.counts.clone(),
                explicit_bounds: h.bounds.to_vec(),
                min: Some(h.min),
                max: Some(h.max),
                ..Default::default()
            });
    }
    let resource_metrics = by_service
        .into_iter()
        .map(|(service, instruments)| ResourceMetrics {
            resource: Some(resource(service, instance)),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "agentic-mesh".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                metrics: instruments
                    .into_iter()
                    .map(|(name, data_points)| metric(name, data_points))
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    ExportMetricsServiceRequest { resource_metrics }
}

fn metric(name: &str, data_points: Vec<HistogramDataPoint>) -> Metric {
    let (description, unit) = if name == OPERATION_DURATION {
        ("GenAI operation duration.", "s")
    } else {
        ("Number of input and output tokens used.", "{token}")
    };
    Metric {
        name: name.into(),
        description: description.into(),
        unit: unit.into(),
        data: Some(metric::Data::Histogram(ProtoHistogram {
            data_points,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        })),
        ..Default::default()
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_values_up_to_their_upper_bound() {
        let mut h = Histogram::new(&[1.0, 4.0]);
        for v in [0.5, 1.0, 1.5, 4.0, 9.0] {
            h.observe(v);
        }
        assert_eq!(h.counts, vec![2, 2, 1]);
        assert_eq!((h.count, h.sum, h.min, h.max), (5, 16.0, 0.5, 9.0));
    }

    #[test]
    fn series_encode_per_service_and_instrument() {
        let mut series = BTreeMap::new();
        let attrs = |t: &str| {
            vec![
                (semconv::PROVIDER, "openai".to_string()),
                (TOKEN_TYPE, t.to_string()),
            ]
        };
        for t in ["input", "output"] {
            let mut h = Histogram::new(TOKEN_BOUNDS);
            h.observe(10.0);
            series.insert((TOKEN_USAGE, "routing-gateway".to_string(), attrs(t)), h);
        }
        let mut d = Histogram::new(DURATION_BOUNDS);
        d.observe(0.05);
        series.insert(
            (OPERATION_DURATION, "routing-gateway".to_string(), vec![]),
            d,
        );
        let request = encode(&series, 1, 2, "i");
        assert_eq!(request.resource_metrics.len(), 1);
        let metrics = &request.resource_metrics[0].scope_metrics[0].metrics;
        let names: Vec<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, [OPERATION_DURATION, TOKEN_USAGE]);
        let Some(metric::Data::Histogram(tokens)) = &metrics[1].data else {
            panic!("a histogram");
        };
        assert_eq!(tokens.data_points.len(), 2);
        assert_eq!(
            tokens.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        let point = &tokens.data_points[0];
        assert_eq!(point.bucket_counts.len(), TOKEN_BOUNDS.len() + 1);
        assert_eq!(point.bucket_counts[2], 1, "10 tokens fall in (4, 16]");
        assert_eq!((point.start_time_unix_nano, point.time_unix_nano), (1, 2));
    }
}
