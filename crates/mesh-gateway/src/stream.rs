//! Server-Sent Events for `stream: true`: the `chat.completion.chunk` frames OpenAI
//! clients read, produced from a `sim` completion or relayed from an upstream as its
//! bytes arrive, with the text and usage collected on the way for provenance.

use crate::Gateway;
use crate::budget::{self, Reservation};
use crate::call::Protocol;
use crate::chat::Completion;
use crate::providers::Provider;
use crate::trail::{Trail, Usage, spend};
use crate::translate::{AnthropicToOpenAi, DropUsage, OpenAiToAnthropic, Translate};
use axum::body::Bytes;
use mesh_policy::Actor;
use serde_json::{Value, json};
use std::sync::Arc;

/// One SSE frame.
pub fn frame(data: &Value) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

pub fn done() -> Bytes {
    Bytes::from_static(b"data: [DONE]\n\n")
}

/// A finished completion as the chunks a streaming client expects: the role, the
/// text a word a chunk, each tool call (its name, then its arguments), the finish
/// reason, the usage when the client asked for it, `[DONE]`.
pub fn chunks(
    completion: &Completion,
    id: &str,
    model: &str,
    created: i64,
    with_usage: bool,
) -> Vec<Bytes> {
    let chunk = |delta: Value, finish: Option<&str>| {
        frame(&json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }))
    };
    let mut out = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
    if !completion.content.is_empty() {
        for (i, word) in completion.content.split(' ').enumerate() {
            let piece = if i == 0 {
                word.to_string()
            } else {
                format!(" {word}")
            };
            out.push(chunk(json!({"content": piece}), None));
        }
    }
    let calls = completion.extra.get("tool_calls").and_then(Value::as_array);
    for (index, call) in calls.into_iter().flatten().enumerate() {
        let function = &call["function"];
        out.push(chunk(
            json!({"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                                   "function": {"name": function["name"], "arguments": ""}}]}),
            None,
        ));
        out.push(chunk(
            json!({"tool_calls": [{"index": index, "function": {"arguments": function["arguments"]}}]}),
            None,
        ));
    }
    out.push(chunk(json!({}), Some(completion.finish_reason)));
    if with_usage {
        out.push(usage_chunk(
            id,
            model,
            created,
            completion.prompt_tokens,
            completion.completion_tokens,
        ));
    }
    out.push(done());
    out
}

/// The chunk that closes an OpenAI stream when `stream_options.include_usage` is set:
/// no choices, the call's token counts.
pub fn usage_chunk(id: &str, model: &str, created: i64, prompt: u64, completion: u64) -> Bytes {
    frame(&json!({
        "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion},
    }))
}

/// A whole completion (from `sim`, or chosen by `consensus`) as the stream a client of
/// `protocol` expects.
pub(crate) fn whole(
    completion: &Completion,
    id: &str,
    model: &str,
    client: Protocol,
) -> axum::body::Body {
    let frames = match client {
        Protocol::OpenAi { usage } => {
            chunks(completion, id, model, crate::trail::now_secs(), usage)
        }
        Protocol::Anthropic => {
            crate::anthropic::to_events(completion, &id.replacen("chatcmpl-", "msg_", 1), model)
        }
    };
    axum::body::Body::from_stream(futures_util::stream::iter(
        frames.into_iter().map(Ok::<_, std::convert::Infallible>),
    ))
}

/// An upstream's SSE bytes as they arrive.
pub(crate) type UpstreamBytes = futures_util::stream::BoxStream<'static, reqwest::Result<Bytes>>;

/// Collects what an upstream stream said, line by line, as bytes pass through.
#[derive(Debug, Default)]
pub struct StreamTally {
    pending: String,
    pub content: String,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub chunks: u64,
}

impl StreamTally {
    pub fn feed(&mut self, bytes: &[u8]) {
        self.pending.push_str(&String::from_utf8_lossy(bytes));
        while let Some(end) = self.pending.find('\n') {
            let line: String = self.pending.drain(..=end).collect();
            let Some(data) = line.trim().strip_prefix("data:") else {
                continue;
            };
            let Ok(chunk) = serde_json::from_str::<Value>(data.trim()) else {
                continue;
            };
            self.chunks += 1;
            if let Some(text) = chunk
                .pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
            {
                self.content.push_str(text);
            }
            if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
                self.prompt_tokens = usage.get("prompt_tokens").and_then(Value::as_u64);
                self.completion_tokens = usage.get("completion_tokens").and_then(Value::as_u64);
            }
        }
    }
}

/// What a relayed stream needs besides its bytes.
pub(crate) struct Relayed {
    pub provider: Provider,
    pub model: String,
    pub reservation: Option<Reservation>,
    pub client: Protocol,
}

impl Gateway {
    /// Passes an upstream stream through chunk by chunk, tallying it for provenance.
    /// Upstream bytes are translated to OpenAI chunks (from Anthropic events when the
    /// provider speaks them), tallied, then translated to the client's protocol.
    pub(crate) fn relay(
        self: &Arc<Self>,
        mut bytes: UpstreamBytes,
        relayed: Relayed,
        mut trail: Trail,
        actor: Actor,
    ) -> axum::body::Body {
        use futures_util::StreamExt;
        let Relayed {
            provider,
            model,
            reservation,
            client,
        } = relayed;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<axum::body::Bytes, std::io::Error>>(64);
        let gateway = self.clone();
        let id = trail.reply_id();
        let mut upstream: Option<Box<dyn Translate>> = provider
            .speaks_anthropic()
            .then(|| Box::new(AnthropicToOpenAi::new(&id, &model)) as Box<dyn Translate>);
        // Upstreams are always asked for usage (the call is accounted from it); an
        // OpenAI client that did not ask for it does not get it.
        let mut downstream: Option<Box<dyn Translate>> = match client {
            Protocol::Anthropic => Some(Box::new(OpenAiToAnthropic::new(
                &id.replacen("chatcmpl-", "msg_", 1),
                &model,
            ))),
            Protocol::OpenAi { usage: false } => Some(Box::new(DropUsage::default())),
            Protocol::OpenAi { usage: true } => None,
        };
        tokio::spawn(async move {
            let mut tally = StreamTally::default();
            let mut error = None;
            'relay: while let Some(chunk) = bytes.next().await {
                match chunk {
                    Ok(chunk) => {
                        let frames = match upstream.as_mut() {
                            Some(t) => t.feed(&chunk),
                            None => vec![chunk],
                        };
                        for frame in frames {
                            tally.feed(&frame);
                            let out = match downstream.as_mut() {
                                Some(t) => t.feed(&frame),
                                None => vec![frame],
                            };
                            for piece in out {
                                if tx.send(Ok(piece)).await.is_err() {
                                    error = Some("the client disconnected mid-stream".to_string());
                                    break 'relay;
                                }
                            }
                        }
                    }
                    Err(e) => {
                        error = Some(format!("provider {}: stream broke: {e}", provider.name));
                        let _ = tx.send(Err(std::io::Error::other(e))).await;
                        break;
                    }
                }
            }
            if error.is_none() {
                gateway
                    .latency
                    .observe(&model, trail.started.elapsed().as_secs_f64() * 1000.0);
            }
            let usage = Usage {
                tokens_in: tally.prompt_tokens.unwrap_or(0),
                // Without a usage frame, count content chunks (about a token each).
                tokens_out: tally.completion_tokens.unwrap_or(tally.chunks),
                text: tally.content,
            };
            budget::settle(&gateway.ctx.store, reservation, spend(&provider, &usage)).await;
            // The span ends with the stream, as the record does.
            trail.finish_span(
                actor.agent.as_ref(),
                actor.task,
                Some((&provider, &model, &usage)),
                error.as_deref(),
            );
            let hashes = match gateway.archive.get() {
                Some(archive) => trail.archive(archive, error.is_none().then_some(&usage)),
                None => Default::default(),
            };
            let event = trail.event(
                &actor.name,
                actor.agent,
                actor.task,
                Some((&provider, &model, &usage)),
                error.as_deref(),
                hashes,
            );
            let mut events = trail.decisions;
            events.push(event);
            gateway.records.log_all(events).await;
        });
        axum::body::Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_reads_frames_split_anywhere() {
        let mut t = StreamTally::default();
        let stream = "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n";
        for piece in stream.as_bytes().chunks(7) {
            t.feed(piece);
        }
        assert_eq!(t.content, "Hello");
        assert_eq!(
            (t.prompt_tokens, t.completion_tokens, t.chunks),
            (Some(3), Some(2), 2)
        );
    }

    #[test]
    fn chunks_spell_out_the_completion() {
        let c = Completion {
            content: "a b".into(),
            extra: Default::default(),
            prompt_tokens: 1,
            completion_tokens: 2,
            finish_reason: "stop",
        };
        let frames = chunks(&c, "id", "m", 0, false);
        let mut t = StreamTally::default();
        for f in &frames {
            t.feed(f);
        }
        assert_eq!(t.content, "a b");
        assert_eq!(t.completion_tokens, None, "usage only when asked for");
        assert_eq!(frames.last().unwrap(), &done());
    }

    /// Tool calls stream as OpenAI streams them (name first, then the arguments), and a
    /// client that asked for usage gets the closing usage chunk.
    #[test]
    fn chunks_carry_tool_calls_and_usage() {
        let mut extra = serde_json::Map::new();
        extra.insert(
            "tool_calls".into(),
            json!([{"id": "call_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]),
        );
        let c = Completion {
            content: String::new(),
            extra,
            prompt_tokens: 4,
            completion_tokens: 6,
            finish_reason: "tool_calls",
        };
        let frames = chunks(&c, "id", "m", 0, true);
        let parsed: Vec<Value> = frames[..frames.len() - 1]
            .iter()
            .map(|f| {
                let text = String::from_utf8_lossy(f);
                serde_json::from_str(text.trim().trim_start_matches("data: ")).unwrap()
            })
            .collect();
        let calls: Vec<&Value> = parsed
            .iter()
            .filter_map(|c| c.pointer("/choices/0/delta/tool_calls/0"))
            .collect();
        assert_eq!(calls[0]["function"]["name"], "get_weather");
        assert_eq!(calls[0]["id"], "call_1");
        assert_eq!(calls[1]["function"]["arguments"], "{\"city\":\"Oslo\"}");
        assert!(
            parsed.iter().all(|c| c
                .pointer("/choices/0/delta/content")
                .is_none_or(|t| t == "")),
            "no text"
        );
        let last = parsed.last().unwrap();
        assert_eq!(last["choices"], json!([]));
        assert_eq!(last["usage"]["total_tokens"], 10);
        assert_eq!(
            parsed[parsed.len() - 2]["choices"][0]["finish_reason"],
            "tool_calls"
        );
    }
}
