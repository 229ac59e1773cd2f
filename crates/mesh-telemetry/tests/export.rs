//! The exporter against a minimal OTLP/HTTP receiver: nesting through `within`, the
//! protobuf a collector gets, flush, and the bounded queue dropping (and counting)
//! spans rather than waiting. One test: the exporter is installed once per process.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use mesh_telemetry::{ExportConfig, Kind, Span, semconv};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use prost::Message;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Accepts HTTP/1.1 POSTs, answers 200, and hands on each decoded body.
async fn receiver() -> (
    String,
    mpsc::UnboundedReceiver<(String, ExportTraceServiceRequest)>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut conn, _) = listener.accept().await.unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let mut chunk = [0u8; 4096];
                    let n = conn.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map(|v| v.trim().parse().unwrap())
                        .unwrap_or(0);
                    if buf.len() < end + 4 + length {
                        continue;
                    }
                    let body = buf[end + 4..end + 4 + length].to_vec();
                    buf.drain(..end + 4 + length);
                    let request = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
                    tx.send((head.clone(), request)).unwrap();
                    conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await
                        .unwrap();
                }
            });
        }
    });
    (url, rx)
}

fn attr<'a>(
    span: &'a opentelemetry_proto::tonic::trace::v1::Span,
    key: &str,
) -> Option<&'a opentelemetry_proto::tonic::common::v1::any_value::Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

#[tokio::test]
async fn spans_nest_export_as_otlp_protobuf_and_overflow_is_dropped() {
    use opentelemetry_proto::tonic::common::v1::any_value::Value::{IntValue, StringValue};
    let (url, mut received) = receiver().await;
    let config = ExportConfig {
        max_queue: 4,
        // Long enough that only flushes send: the test decides when batches go.
        delay: Duration::from_secs(600),
        ..ExportConfig::new(url)
    };
    assert!(mesh_telemetry::install(config.clone(), "instance-1"));
    assert!(
        !mesh_telemetry::install(config, "instance-2"),
        "installed once"
    );

    let parent = Span::start(
        "mesh-agents",
        semconv::INVOKE_AGENT,
        "coder-1",
        Kind::Internal,
    );
    let outer = parent.context().unwrap();
    mesh_telemetry::within(Some(outer), async {
        assert_eq!(mesh_telemetry::current(), Some(outer));
        assert_eq!(mesh_telemetry::traceparent(), Some(outer.traceparent()));
        let mut chat = Span::start("routing-gateway", semconv::CHAT, "sim-small", Kind::Client);
        chat.set(semconv::INPUT_TOKENS, 12u64);
        chat.fail("provider_failed", "upstream said no");
        chat.end();
    })
    .await;
    assert_eq!(mesh_telemetry::current(), None);
    parent.end();
    // A trace chosen by the caller roots a span outside any span, never inside one.
    let rooted = Span::start_in(
        "mesh-rooted",
        semconv::INVOKE_AGENT,
        "r",
        Kind::Internal,
        Some([7; 16]),
    );
    assert_eq!(rooted.context().unwrap().trace_id, [7; 16]);
    drop(rooted);
    mesh_telemetry::within(Some(outer), async {
        let inner = Span::start_in(
            "mesh-rooted",
            semconv::INVOKE_AGENT,
            "r",
            Kind::Internal,
            Some([7; 16]),
        );
        assert_eq!(inner.context().unwrap().trace_id, outer.trace_id);
    })
    .await;
    mesh_telemetry::flush(Duration::from_secs(5)).await;

    let (head, request) = received.recv().await.unwrap();
    assert!(head.starts_with("post /v1/traces"), "{head}");
    assert!(
        head.contains("content-type: application/x-protobuf"),
        "{head}"
    );
    let mut by_service = std::collections::HashMap::new();
    for rs in &request.resource_spans {
        let attrs = &rs.resource.as_ref().unwrap().attributes;
        let get = |k: &str| {
            attrs
                .iter()
                .find(|kv| kv.key == k)
                .and_then(|kv| kv.value.as_ref()?.value.clone())
        };
        assert_eq!(
            get("service.instance.id"),
            Some(StringValue("instance-1".into()))
        );
        let Some(StringValue(service)) = get("service.name") else {
            panic!("no service.name")
        };
        for span in &rs.scope_spans[0].spans {
            by_service.insert(service.clone(), span.clone());
        }
    }
    let agent = &by_service["mesh-agents"];
    let chat = &by_service["routing-gateway"];
    assert_eq!(agent.name, "invoke_agent coder-1");
    assert_eq!(agent.kind, SpanKind::Internal as i32);
    assert!(agent.parent_span_id.is_empty());
    assert_eq!(chat.name, "chat sim-small");
    assert_eq!(chat.kind, SpanKind::Client as i32);
    assert_eq!(chat.trace_id, agent.trace_id);
    assert_eq!(chat.parent_span_id, agent.span_id);
    assert!(chat.start_time_unix_nano <= chat.end_time_unix_nano);
    assert_eq!(
        attr(chat, "gen_ai.operation.name"),
        Some(&StringValue("chat".into()))
    );
    assert_eq!(attr(chat, "gen_ai.usage.input_tokens"), Some(&IntValue(12)));
    assert_eq!(
        attr(chat, "error.type"),
        Some(&StringValue("provider_failed".into()))
    );
    let status = chat.status.as_ref().unwrap();
    assert_eq!(status.code, StatusCode::Error as i32);
    assert_eq!(status.message, "upstream said no");

    // Ten spans with no await between them: the exporter cannot run, so four are
    // queued and six dropped, and nobody waited.
    for i in 0..10 {
        drop(Span::start(
            "tool-registry",
            semconv::EXECUTE_TOOL,
            &format!("t{i}"),
            Kind::Internal,
        ));
    }
    assert_eq!(mesh_telemetry::counts().0, 6);
    mesh_telemetry::flush(Duration::from_secs(5)).await;
    let (_, request) = received.recv().await.unwrap();
    let names: Vec<_> = request.resource_spans[0].scope_spans[0]
        .spans
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "execute_tool t0",
            "execute_tool t1",
            "execute_tool t2",
            "execute_tool t3"
        ]
    );
    assert_eq!(mesh_telemetry::counts(), (6, 8));
}
