//! OpenTelemetry for the mesh: spans for model calls (`chat`), tool calls
//! (`execute_tool`), agent runs (`invoke_agent`) and policy decisions
//! (`apply_guardrail`) in the GenAI semantic conventions, each naming the provenance
//! event it left, and the GenAI client metrics of model calls (`metrics`), exported over
//! OTLP/HTTP (protobuf) when an endpoint is configured.
//!
//! The current span travels with the work: in-process as a Tokio task-local
//! ([`within`]), across processes as the W3C `traceparent` header. With no exporter
//! installed nothing is recorded and a span is an empty value: instrumented code pays
//! one atomic load.
//!
//! This crate must never block or fail the work it observes: spans are queued without
//! waiting, and export errors only drop spans (counted) and log.

mod export;
pub mod metrics;
pub mod semconv;
mod span;

pub use export::{ExportConfig, counts, enabled, flush, install};
pub use span::{Kind, Span, SpanContext, Value};

/// The `traceparent` header, on requests and as services read it.
pub const TRACEPARENT: &str = "traceparent";

tokio::task_local! {
    static CURRENT: SpanContext;
}

/// The span the running task is inside, if any.
pub fn current() -> Option<SpanContext> {
    if !enabled() {
        return None;
    }
    CURRENT.try_with(|c| *c).ok()
}

/// The `traceparent` header for an outgoing request made inside the current span.
pub fn traceparent() -> Option<String> {
    current().map(|c| c.traceparent())
}

/// Runs `work` with `parent` as the current span (unchanged when `None`), so spans
/// started inside it are its children.
pub async fn within<F: std::future::Future>(parent: Option<SpanContext>, work: F) -> F::Output {
    match parent {
        Some(ctx) => CURRENT.scope(ctx, work).await,
        None => work.await,
    }
}

/// The parent named by an incoming request's `traceparent` header, when telemetry is
/// on.
pub fn parent_from_header(header: Option<&str>) -> Option<SpanContext> {
    if !enabled() {
        return None;
    }
    header.and_then(SpanContext::parse)
}
