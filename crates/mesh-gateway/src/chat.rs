//! OpenAI Chat Completions shapes: what the ingress accepts and returns. Requests are
//! read leniently (SDKs send many optional fields); only what the gateway uses is typed.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Message>,
    #[serde(default, alias = "max_completion_tokens")]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub stream: Option<bool>,
    /// Everything else the client sent, passed through untouched.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatRequest {
    /// Whether a streaming client asked for the usage chunk that closes OpenAI streams
    /// (`stream_options.include_usage`).
    pub fn wants_stream_usage(&self) -> bool {
        self.extra
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    /// A string, or an array of content parts (`{"type": "text", "text": …}`).
    #[serde(default)]
    pub content: Value,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Message {
    /// The message's text, parts joined.
    pub fn text(&self) -> String {
        match &self.content {
            Value::String(s) => s.clone(),
            Value::Array(parts) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        }
    }
}

/// What a provider produced.
#[derive(Debug, Clone)]
pub struct Completion {
    pub content: String,
    /// The provider's message fields besides `role` and `content` (`tool_calls`,
    /// `refusal`, …), passed to the client unchanged.
    pub extra: Map<String, Value>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub finish_reason: &'static str,
}

impl Completion {
    /// Reads a provider's `chat.completion` reply.
    pub fn from_openai(reply: &Value) -> Option<Self> {
        let choice = reply.get("choices")?.get(0)?;
        let message = choice.get("message")?.as_object()?;
        let content = match message.get("content") {
            Some(Value::String(s)) => s.clone(),
            // A tool call has no content.
            Some(Value::Null) | None if message.contains_key("tool_calls") => String::new(),
            Some(Value::Null) => String::new(),
            _ => return None,
        };
        let extra: Map<String, Value> = message
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "role" | "content"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let usage = reply.get("usage");
        let count = |k: &str| {
            usage
                .and_then(|u| u.get(k))
                .and_then(Value::as_u64)
                .unwrap_or(0)
        };
        let finish_reason = match choice.get("finish_reason").and_then(Value::as_str) {
            Some("length") => "length",
            Some("tool_calls") => "tool_calls",
            Some("content_filter") => "content_filter",
            _ => "stop",
        };
        Some(Completion {
            content,
            extra,
            prompt_tokens: count("prompt_tokens"),
            completion_tokens: count("completion_tokens"),
            finish_reason,
        })
    }

    /// The `chat.completion` object OpenAI clients expect.
    pub fn to_openai(&self, id: &str, model: &str, created: i64) -> Value {
        let mut message = json!({"role": "assistant", "content": self.content});
        for (k, v) in &self.extra {
            message[k] = v.clone();
        }
        if self.content.is_empty() && self.extra.contains_key("tool_calls") {
            message["content"] = Value::Null;
        }
        json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{
                "index": 0,
                "message": message,
                "finish_reason": self.finish_reason,
            }],
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens,
            },
        })
    }
}
