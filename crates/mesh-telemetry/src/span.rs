//! Spans as the mesh records them: W3C trace context (ids and the `traceparent`
//! header), attributes, and the span that ends itself when dropped.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

/// Identifies a span across processes: what `traceparent` carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
}

impl SpanContext {
    /// The W3C `traceparent` header value (version 00, sampled).
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-01", hex(&self.trace_id), hex(&self.span_id))
    }

    /// Reads a `traceparent` header; `None` for anything malformed or all-zero ids, as
    /// the W3C Trace Context specification requires (the receiver then starts a trace).
    pub fn parse(header: &str) -> Option<Self> {
        let mut parts = header.trim().split('-');
        let version = parts.next()?;
        let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
        // Version ff is invalid; a later version may add fields after the flags.
        if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        if flags.len() != 2 {
            return None;
        }
        let trace_id = unhex::<16>(trace)?;
        let span_id = unhex::<8>(span)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(SpanContext { trace_id, span_id })
    }

    pub(crate) fn child_of(parent: Option<SpanContext>) -> Self {
        SpanContext {
            trace_id: parent.map(|p| p.trace_id).unwrap_or_else(random),
            span_id: random(),
        }
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // Without an entropy source, ids from the clock still keep traces apart.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = now_nanos().to_le_bytes();
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = nanos[i % nanos.len()] ^ (i as u8);
        }
    }
    bytes
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != N * 2 || !text.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

pub(crate) fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// OpenTelemetry span kinds the mesh uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Work inside this process: agent runs, tool executions, policy decisions.
    Internal,
    /// A call to another system: a model provider.
    Client,
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
    Double(f64),
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Str(v)
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Str(v.clone())
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Int(i64::from(v))
    }
}
impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Value::Int(i64::from(v))
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Double(v)
    }
}

/// A finished span, as the exporter sends it.
#[derive(Debug, Clone)]
pub(crate) struct SpanData {
    /// The mesh service that did the work: the exported `service.name`.
    pub service: String,
    pub name: String,
    pub kind: Kind,
    pub context: SpanContext,
    pub parent: Option<SpanContext>,
    pub start_ns: u64,
    pub end_ns: u64,
    pub attributes: Vec<(Cow<'static, str>, Value)>,
    /// `Some(description)` when the operation failed (status ERROR).
    pub error: Option<String>,
}

/// A span in progress. When telemetry is off it holds nothing and every method is a
/// no-op, so instrumented code pays one check and no allocation. It is exported when
/// [`Span::end`] is called or it is dropped (a cancelled operation still reports).
#[derive(Debug, Default)]
pub struct Span {
    data: Option<Box<SpanData>>,
}

impl Span {
    /// A span that records nothing.
    pub fn none() -> Self {
        Span { data: None }
    }

    /// Starts `{operation} {target}` as a child of the current span (see
    /// [`crate::within`]), with `gen_ai.operation.name` = `operation`, as the GenAI
    /// semantic conventions name spans.
    pub fn start(service: &str, operation: &'static str, target: &str, kind: Kind) -> Self {
        Self::start_in(service, operation, target, kind, None)
    }

    /// Like [`Span::start`]; outside any span, a root span in trace `trace_id` (so
    /// work done at different times, such as a task's attempts, shares one trace).
    pub fn start_in(
        service: &str,
        operation: &'static str,
        target: &str,
        kind: Kind,
        trace_id: Option<[u8; 16]>,
    ) -> Self {
        Self::start_after(service, operation, target, kind, trace_id, None)
    }

    /// Like [`Span::start_in`]; outside any span, a child of `remote` when given — a
    /// span in another process or at another time, whose `traceparent` the work
    /// carried (a subtask, from the attempt that spawned it).
    pub fn start_after(
        service: &str,
        operation: &'static str,
        target: &str,
        kind: Kind,
        trace_id: Option<[u8; 16]>,
        remote: Option<SpanContext>,
    ) -> Self {
        if !crate::enabled() {
            return Span::none();
        }
        let parent = crate::current().or(remote);
        let mut context = SpanContext::child_of(parent);
        if let (None, Some(trace)) = (parent, trace_id)
            && trace != [0; 16]
        {
            context.trace_id = trace;
        }
        Span {
            data: Some(Box::new(SpanData {
                service: service.to_string(),
                name: format!("{operation} {target}"),
                kind,
                context,
                parent,
                start_ns: now_nanos(),
                end_ns: 0,
                attributes: vec![(Cow::Borrowed(crate::semconv::OPERATION), operation.into())],
                error: None,
            })),
        }
    }

    pub fn is_recording(&self) -> bool {
        self.data.is_some()
    }

    pub fn context(&self) -> Option<SpanContext> {
        self.data.as_ref().map(|d| d.context)
    }

    /// Moves the start back to when the work really began (spans opened after the
    /// fact, from a record that kept its start `Instant`).
    pub fn started_ago(&mut self, elapsed: std::time::Duration) {
        if let Some(d) = &mut self.data {
            d.start_ns = now_nanos().saturating_sub(elapsed.as_nanos() as u64);
        }
    }

    /// Sets an attribute; the value is converted only when the span records.
    pub fn set<V: Into<Value>>(&mut self, key: &'static str, value: V) {
        if let Some(d) = &mut self.data {
            match d.attributes.iter_mut().find(|(k, _)| k == key) {
                Some(slot) => slot.1 = value.into(),
                None => d.attributes.push((Cow::Borrowed(key), value.into())),
            }
        }
    }

    /// Like [`Span::set`], for an optional value.
    pub fn set_opt<V: Into<Value>>(&mut self, key: &'static str, value: Option<V>) {
        if let Some(v) = value {
            self.set(key, v);
        }
    }

    /// Marks the operation failed: `error.type` (a low-cardinality code such as the
    /// mesh error code) and status ERROR with `message`.
    pub fn fail(&mut self, error_type: &str, message: &str) {
        if let Some(d) = &mut self.data {
            d.error = Some(message.to_string());
        }
        self.set(crate::semconv::ERROR_TYPE, error_type);
    }

    pub fn failed(&self) -> bool {
        self.data.as_ref().is_some_and(|d| d.error.is_some())
    }

    /// Ends the span now and queues it for export.
    pub fn end(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        if let Some(mut d) = self.data.take() {
            d.end_ns = now_nanos().max(d.start_ns);
            crate::export::submit(*d);
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_rejects_malformed_headers() {
        let ctx = SpanContext::child_of(None);
        let header = ctx.traceparent();
        assert_eq!(header.len(), 55);
        assert_eq!(SpanContext::parse(&header), Some(ctx));
        let child = SpanContext::child_of(Some(ctx));
        assert_eq!(child.trace_id, ctx.trace_id);
        assert_ne!(child.span_id, ctx.span_id);
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(SpanContext::parse(good).is_some());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        ] {
            assert_eq!(SpanContext::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn without_an_exporter_spans_record_nothing() {
        // No test in this crate installs an exporter: spans are inert.
        let mut span = Span::start("test", "chat", "m", Kind::Client);
        span.set("k", "v");
        assert!(!span.is_recording());
        assert_eq!(span.context(), None);
    }
}
