//! Prometheus text metrics for one service: request counts and latency histograms by
//! route template (never the raw path, so cardinality stays bounded).

use crate::ServiceName;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Default, Clone)]
struct RouteStats {
    count: u64,
    sum_seconds: f64,
    buckets: [u64; BUCKETS.len()],
}

type RouteKey = (String, String, u16);

/// Writes a service's own samples (with their `# HELP`/`# TYPE` lines) into the
/// exposition text.
pub type Collector = Box<dyn Fn(&mut String) + Send + Sync>;

pub struct Metrics {
    service: ServiceName,
    routes: Mutex<BTreeMap<RouteKey, RouteStats>>,
    collectors: Mutex<Vec<Collector>>,
    started: Instant,
}

impl Metrics {
    pub fn new(service: ServiceName) -> Self {
        Self {
            service,
            routes: Mutex::new(BTreeMap::new()),
            collectors: Mutex::new(Vec::new()),
            started: Instant::now(),
        }
    }

    pub fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let Ok(mut routes) = self.routes.lock() else {
            return;
        };
        let stats = routes
            .entry((method.to_string(), route.to_string(), status))
            .or_default();
        stats.count += 1;
        stats.sum_seconds += seconds;
        for (slot, bound) in stats.buckets.iter_mut().zip(BUCKETS) {
            if seconds <= bound {
                *slot += 1;
            }
        }
    }

    /// Adds samples a service computes when scraped (circuit-breaker states, say).
    pub fn add_collector(&self, collector: Collector) {
        if let Ok(mut c) = self.collectors.lock() {
            c.push(collector);
        }
    }

    /// Requests counted for one route template and status, for tests and dashboards.
    pub fn count(&self, method: &str, route: &str, status: u16) -> u64 {
        self.routes
            .lock()
            .ok()
            .and_then(|r| {
                r.get(&(method.to_string(), route.to_string(), status))
                    .map(|s| s.count)
            })
            .unwrap_or(0)
    }

    /// The exposition text; `gauges` are extra `(name, help, value)` samples.
    pub fn render(&self, ready: bool, gauges: &[(&str, &str, f64)]) -> String {
        let service = self.service.as_str();
        let mut out = String::new();
        let _ = writeln!(out, "# HELP mesh_up Whether the service process is up.");
        let _ = writeln!(out, "# TYPE mesh_up gauge");
        let _ = writeln!(out, "mesh_up{{service=\"{service}\"}} 1");
        let _ = writeln!(
            out,
            "# HELP mesh_ready Whether the service accepts work (0 while starting or draining)."
        );
        let _ = writeln!(out, "# TYPE mesh_ready gauge");
        let _ = writeln!(
            out,
            "mesh_ready{{service=\"{service}\"}} {}",
            u8::from(ready)
        );
        let _ = writeln!(
            out,
            "# HELP mesh_uptime_seconds Seconds since the service started."
        );
        let _ = writeln!(out, "# TYPE mesh_uptime_seconds gauge");
        let _ = writeln!(
            out,
            "mesh_uptime_seconds{{service=\"{service}\"}} {:.3}",
            self.started.elapsed().as_secs_f64()
        );
        // Process-wide: in `mesh up` every service shows the same figures.
        let mut otel = Vec::new();
        if mesh_telemetry::enabled() {
            let (dropped, exported) = mesh_telemetry::counts();
            otel.push((
                "mesh_otel_spans_exported_total",
                "Spans the OTLP collector accepted (this process).",
                exported,
            ));
            otel.push((
                "mesh_otel_spans_dropped_total",
                "Spans dropped: export queue full or collector failing (this process).",
                dropped,
            ));
        }
        if mesh_telemetry::metrics::enabled() {
            let (exported, failed) = mesh_telemetry::metrics::metric_exports();
            otel.push((
                "mesh_otel_metric_exports_total",
                "Metric exports the OTLP collector accepted (this process).",
                exported,
            ));
            otel.push((
                "mesh_otel_metric_exports_failed_total",
                "Metric exports that failed; the next carries their cumulative totals (this process).",
                failed,
            ));
        }
        for (name, help, value) in otel {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name}{{service=\"{service}\"}} {value}");
        }
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name}{{service=\"{service}\"}} {value}");
        }
        if let Ok(collectors) = self.collectors.lock() {
            for collect in collectors.iter() {
                collect(&mut out);
            }
        }
        let routes = self.routes.lock().map(|r| r.clone()).unwrap_or_default();
        let _ = writeln!(
            out,
            "# HELP mesh_http_requests_total HTTP requests served, by route template and status."
        );
        let _ = writeln!(out, "# TYPE mesh_http_requests_total counter");
        for ((method, route, status), stats) in &routes {
            let _ = writeln!(
                out,
                "mesh_http_requests_total{{service=\"{service}\",method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {}",
                stats.count
            );
        }
        let _ = writeln!(
            out,
            "# HELP mesh_http_request_duration_seconds HTTP request latency."
        );
        let _ = writeln!(out, "# TYPE mesh_http_request_duration_seconds histogram");
        for ((method, route, status), stats) in &routes {
            let labels = format!(
                "service=\"{service}\",method=\"{method}\",route=\"{route}\",status=\"{status}\""
            );
            for (bound, n) in BUCKETS.iter().zip(stats.buckets) {
                let _ = writeln!(
                    out,
                    "mesh_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "mesh_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                stats.count
            );
            let _ = writeln!(
                out,
                "mesh_http_request_duration_seconds_sum{{{labels}}} {}",
                stats.sum_seconds
            );
            let _ = writeln!(
                out,
                "mesh_http_request_duration_seconds_count{{{labels}}} {}",
                stats.count
            );
        }
        out
    }
}

/// Middleware counting every request under its route template.
pub async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    // A caller's `traceparent` makes the spans this request starts children of its
    // span (read only when telemetry is on).
    let parent = mesh_telemetry::parent_from_header(
        req.headers()
            .get(mesh_telemetry::TRACEPARENT)
            .and_then(|v| v.to_str().ok()),
    );
    let response = mesh_telemetry::within(parent, next.run(req)).await;
    metrics.observe(
        &method,
        &route,
        response.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    response
}
