//! Streams translated as they pass: Anthropic's message events into OpenAI's
//! `chat.completion.chunk` frames (an Anthropic upstream behind `/v1/chat/completions`)
//! and OpenAI's chunks into Anthropic's events (any provider behind `/v1/messages`),
//! text and tool calls alike. Each translator buffers partial lines, so frames may be
//! split anywhere by the network.

use crate::stream::{done, frame};
use axum::body::Bytes;
use serde_json::{Value, json};
use std::collections::HashMap;

/// A stateful SSE-to-SSE translator.
pub trait Translate: Send {
    fn feed(&mut self, bytes: &[u8]) -> Vec<Bytes>;
}

/// Complete `data:` payloads from a byte stream.
#[derive(Default)]
struct Lines(String);

impl Lines {
    fn data(&mut self, bytes: &[u8]) -> Vec<String> {
        self.0.push_str(&String::from_utf8_lossy(bytes));
        let mut out = Vec::new();
        while let Some(end) = self.0.find('\n') {
            let line: String = self.0.drain(..=end).collect();
            if let Some(data) = line.trim().strip_prefix("data:") {
                out.push(data.trim().to_string());
            }
        }
        out
    }
}

/// Anthropic events → OpenAI chunks.
pub struct AnthropicToOpenAi {
    lines: Lines,
    id: String,
    model: String,
    /// Anthropic content-block index → OpenAI tool-call index.
    tools: HashMap<u64, usize>,
    input_tokens: u64,
}

impl AnthropicToOpenAi {
    pub fn new(id: &str, model: &str) -> Self {
        Self {
            lines: Lines::default(),
            id: id.into(),
            model: model.into(),
            tools: HashMap::new(),
            input_tokens: 0,
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Bytes {
        frame(
            &json!({"id": self.id, "object": "chat.completion.chunk", "model": self.model,
                      "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}),
        )
    }
}

impl Translate for AnthropicToOpenAi {
    fn feed(&mut self, bytes: &[u8]) -> Vec<Bytes> {
        let mut out = Vec::new();
        for data in self.lines.data(bytes) {
            let Ok(event) = serde_json::from_str::<Value>(&data) else {
                continue;
            };
            match event["type"].as_str() {
                Some("message_start") => {
                    self.input_tokens = event["message"]["usage"]["input_tokens"]
                        .as_u64()
                        .unwrap_or(0);
                    out.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
                }
                Some("content_block_start") if event["content_block"]["type"] == "tool_use" => {
                    let index = self.tools.len();
                    self.tools
                        .insert(event["index"].as_u64().unwrap_or(0), index);
                    let block = &event["content_block"];
                    out.push(self.chunk(
                        json!({"tool_calls": [{"index": index, "id": block["id"], "type": "function",
                                               "function": {"name": block["name"], "arguments": ""}}]}),
                        None,
                    ));
                }
                Some("content_block_delta") => {
                    let delta = &event["delta"];
                    if delta["type"] == "text_delta" {
                        out.push(self.chunk(json!({"content": delta["text"]}), None));
                    } else if delta["type"] == "input_json_delta" {
                        let index = self
                            .tools
                            .get(&event["index"].as_u64().unwrap_or(0))
                            .copied()
                            .unwrap_or(0);
                        out.push(self.chunk(
                            json!({"tool_calls": [{"index": index, "function": {"arguments": delta["partial_json"]}}]}),
                            None,
                        ));
                    }
                }
                Some("message_delta") => {
                    let finish = match event["delta"]["stop_reason"].as_str() {
                        Some("max_tokens") => "length",
                        Some("tool_use") => "tool_calls",
                        _ => "stop",
                    };
                    let output = event["usage"]["output_tokens"].as_u64().unwrap_or(0);
                    out.push(self.chunk(json!({}), Some(finish)));
                    // As OpenAI closes a stream asked for usage; clients that did not
                    // ask have it removed on the way out (see `DropUsage`).
                    out.push(crate::stream::usage_chunk(
                        &self.id,
                        &self.model,
                        crate::trail::now_secs(),
                        self.input_tokens,
                        output,
                    ));
                }
                Some("message_stop") => out.push(done()),
                _ => {}
            }
        }
        out
    }
}

/// OpenAI chunks without the usage chunk that closes a stream asked for usage: what an
/// OpenAI client that did not ask for it gets (clients often read `choices[0]` of
/// every chunk, and that chunk has no choices).
#[derive(Default)]
pub struct DropUsage {
    lines: Lines,
}

impl Translate for DropUsage {
    fn feed(&mut self, bytes: &[u8]) -> Vec<Bytes> {
        // Most chunks are whole frames without usage: passed on as they came, in one
        // piece (re-framing every chunk put a copy and more wake-ups on each stream).
        if self.lines.0.is_empty()
            && bytes.ends_with(b"\n")
            && !bytes.windows(7).any(|w| w == b"\"usage\"")
        {
            return vec![Bytes::copy_from_slice(bytes)];
        }
        self.lines
            .data(bytes)
            .into_iter()
            .filter(|data| !is_usage_chunk(data))
            .map(|data| Bytes::from(format!("data: {data}\n\n")))
            .collect()
    }
}

fn is_usage_chunk(data: &str) -> bool {
    data.contains("\"usage\"")
        && serde_json::from_str::<Value>(data).is_ok_and(|chunk| {
            chunk["usage"].is_object() && chunk["choices"].as_array().is_some_and(|c| c.is_empty())
        })
}

/// OpenAI chunks → Anthropic events.
pub struct OpenAiToAnthropic {
    lines: Lines,
    id: String,
    model: String,
    started: bool,
    /// The Anthropic block open now, if any: (index, is_text, OpenAI tool index).
    open: Option<(u64, bool, Option<u64>)>,
    next_block: u64,
    stop_reason: &'static str,
    usage: (u64, u64),
    finished: bool,
}

impl OpenAiToAnthropic {
    pub fn new(id: &str, model: &str) -> Self {
        Self {
            lines: Lines::default(),
            id: id.into(),
            model: model.into(),
            started: false,
            open: None,
            next_block: 0,
            stop_reason: "end_turn",
            usage: (0, 0),
            finished: false,
        }
    }

    fn event(name: &str, data: Value) -> Bytes {
        Bytes::from(format!(
            "event: {name}\n{}",
            String::from_utf8_lossy(&frame(&data))
        ))
    }

    fn close_block(&mut self, out: &mut Vec<Bytes>) {
        if let Some((index, _, _)) = self.open.take() {
            out.push(Self::event(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": index}),
            ));
        }
    }

    fn open_block(
        &mut self,
        out: &mut Vec<Bytes>,
        block: Value,
        text: bool,
        tool: Option<u64>,
    ) -> u64 {
        self.close_block(out);
        let index = self.next_block;
        self.next_block += 1;
        self.open = Some((index, text, tool));
        out.push(Self::event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": block}),
        ));
        index
    }

    fn finish(&mut self, out: &mut Vec<Bytes>) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.close_block(out);
        out.push(Self::event(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": self.stop_reason, "stop_sequence": null},
                   "usage": {"output_tokens": self.usage.1}}),
        ));
        out.push(Self::event("message_stop", json!({"type": "message_stop"})));
    }
}

impl Translate for OpenAiToAnthropic {
    fn feed(&mut self, bytes: &[u8]) -> Vec<Bytes> {
        let mut out = Vec::new();
        for data in self.lines.data(bytes) {
            if data == "[DONE]" {
                self.finish(&mut out);
                continue;
            }
            let Ok(chunk) = serde_json::from_str::<Value>(&data) else {
                continue;
            };
            if !self.started {
                self.started = true;
                out.push(Self::event(
                    "message_start",
                    json!({"type": "message_start", "message": {"id": self.id, "type": "message",
                        "role": "assistant", "model": self.model, "content": [], "stop_reason": null,
                        "stop_sequence": null, "usage": {"input_tokens": 0, "output_tokens": 0}}}),
                ));
            }
            if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
                self.usage = (
                    u["prompt_tokens"].as_u64().unwrap_or(0),
                    u["completion_tokens"].as_u64().unwrap_or(0),
                );
            }
            let choice = &chunk["choices"][0];
            let delta = &choice["delta"];
            if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
                let index = match self.open {
                    Some((index, true, _)) => index,
                    _ => self.open_block(&mut out, json!({"type": "text", "text": ""}), true, None),
                };
                out.push(Self::event(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}),
                ));
            }
            for call in delta["tool_calls"].as_array().into_iter().flatten() {
                let tool = call["index"].as_u64().unwrap_or(0);
                let index = match self.open {
                    Some((index, false, Some(t))) if t == tool => index,
                    _ => self.open_block(
                        &mut out,
                        json!({"type": "tool_use", "id": call["id"], "name": call["function"]["name"], "input": {}}),
                        false,
                        Some(tool),
                    ),
                };
                if let Some(args) = call["function"]["arguments"]
                    .as_str()
                    .filter(|a| !a.is_empty())
                {
                    out.push(Self::event(
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": index,
                               "delta": {"type": "input_json_delta", "partial_json": args}}),
                    ));
                }
            }
            match choice["finish_reason"].as_str() {
                Some("length") => self.stop_reason = "max_tokens",
                Some("tool_calls") => self.stop_reason = "tool_use",
                Some(_) => self.stop_reason = "end_turn",
                None => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(t: &mut dyn Translate, input: &str) -> String {
        // Split the input at awkward places, as a network would.
        input
            .as_bytes()
            .chunks(5)
            .flat_map(|c| t.feed(c))
            .map(|b| String::from_utf8_lossy(&b).to_string())
            .collect()
    }

    #[test]
    fn anthropic_events_become_openai_chunks() {
        let events = [
            json!({"type": "message_start", "message": {"usage": {"input_tokens": 7}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "t", "name": "f"}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"a\":1}"}}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 4}}),
            json!({"type": "message_stop"}),
        ];
        let input: String = events
            .iter()
            .map(|e| format!("event: x\ndata: {e}\n\n"))
            .collect();
        let out = run(&mut AnthropicToOpenAi::new("id", "m"), &input);
        let mut tally = crate::stream::StreamTally::default();
        tally.feed(out.as_bytes());
        assert_eq!(tally.content, "Hi");
        assert_eq!(
            (tally.prompt_tokens, tally.completion_tokens),
            (Some(7), Some(4))
        );
        assert!(
            out.contains("\"finish_reason\":\"tool_calls\"")
                && out.contains("\"arguments\":\"{\\\"a\\\":1}\""),
            "{out}"
        );
        assert!(out.ends_with("data: [DONE]\n\n"));
    }

    /// A client that did not ask for usage gets every chunk but the usage chunk, with
    /// frames split anywhere on the way in.
    #[test]
    fn usage_chunks_are_dropped_for_clients_that_did_not_ask() {
        let text =
            json!({"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": null}]});
        let finish = json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
        let usage = json!({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}});
        let input = format!("data: {text}\n\ndata: {finish}\n\ndata: {usage}\n\ndata: [DONE]\n\n");
        let out = run(&mut DropUsage::default(), &input);
        let expected = format!("data: {text}\n\ndata: {finish}\n\ndata: [DONE]\n\n");
        assert_eq!(out, expected);
        // Frames arriving whole (the usual case) take the pass-through path.
        let mut whole = DropUsage::default();
        let out: String = [
            format!("data: {text}\n\n"),
            format!("data: {finish}\n\ndata: {usage}\n\n"),
            "data: [DONE]\n\n".to_string(),
        ]
        .iter()
        .flat_map(|frame| whole.feed(frame.as_bytes()))
        .map(|b| String::from_utf8_lossy(&b).to_string())
        .collect();
        assert_eq!(out, expected);
    }

    #[test]
    fn openai_chunks_become_anthropic_events() {
        let chunks = [
            json!({"choices": [{"delta": {"role": "assistant", "content": ""}}]}),
            json!({"choices": [{"delta": {"content": "Hel"}}]}),
            json!({"choices": [{"delta": {"content": "lo"}}]}),
            json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": ""}}]}}]}),
            json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}, "finish_reason": "tool_calls"}],
                   "usage": {"prompt_tokens": 3, "completion_tokens": 2}}),
        ];
        let input: String = chunks
            .iter()
            .map(|c| format!("data: {c}\n\n"))
            .collect::<String>()
            + "data: [DONE]\n\n";
        let out = run(&mut OpenAiToAnthropic::new("msg", "m"), &input);
        let names: Vec<&str> = out
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert!(
            out.contains("\"stop_reason\":\"tool_use\"") && out.contains("\"output_tokens\":2"),
            "{out}"
        );
    }
}
