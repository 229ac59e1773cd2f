//! Anthropic's Messages API, both ways: the `/v1/messages` ingress (an Anthropic SDK
//! pointed at the gateway reaches every provider) and `kind = "anthropic"` upstreams
//! (OpenAI-shaped clients reach Claude). Requests are translated into the gateway's
//! OpenAI shape and back — text, system prompts, tools and tool results, stop reasons
//! and usage.

use crate::chat::{ChatRequest, Completion, Message};
use crate::stream::frame;
use axum::body::Bytes;
use mesh_service::ApiError;
use serde_json::{Map, Value, json};

/// `POST /v1/messages` body → the gateway's request.
pub fn to_chat(body: Value) -> Result<ChatRequest, ApiError> {
    let Value::Object(mut body) = body else {
        return Err(ApiError::invalid("body", "the body must be a JSON object"));
    };
    let model = body
        .remove("model")
        .and_then(|m| m.as_str().map(str::to_string))
        .ok_or_else(|| ApiError::invalid("model", "model: required"))?;
    let max_tokens = body
        .remove("max_tokens")
        .and_then(|m| m.as_u64())
        .ok_or_else(|| {
            ApiError::invalid("max_tokens", "max_tokens: required, a positive integer")
        })?;
    let mut messages = Vec::new();
    if let Some(system) = body.remove("system") {
        messages.push(message("system", json!(blocks_text(&system))));
    }
    let turns = body
        .remove("messages")
        .and_then(|m| m.as_array().cloned())
        .ok_or_else(|| ApiError::invalid("messages", "messages: required, an array"))?;
    for (i, turn) in turns.iter().enumerate() {
        let role = turn["role"].as_str().unwrap_or_default();
        if !matches!(role, "user" | "assistant") {
            return Err(ApiError::invalid(
                format!("messages[{i}].role"),
                format!("messages[{i}].role: `user` or `assistant`"),
            ));
        }
        messages.extend(turn_to_openai(role, &turn["content"]));
    }
    let mut extra = Map::new();
    for key in ["temperature", "top_p", "metadata"] {
        if let Some(v) = body.remove(key) {
            extra.insert(key.into(), v);
        }
    }
    if let Some(stop) = body.remove("stop_sequences") {
        extra.insert("stop".into(), stop);
    }
    if let Some(Value::Array(tools)) = body.remove("tools") {
        let tools: Vec<Value> = tools
            .iter()
            .map(|t| {
                json!({"type": "function", "function": {
                    "name": t["name"], "description": t.get("description"), "parameters": t["input_schema"],
                }})
            })
            .collect();
        extra.insert("tools".into(), json!(tools));
    }
    if let Some(choice) = body.remove("tool_choice") {
        let (choice, parallel) = tool_choice_to_openai(&choice)?;
        extra.insert("tool_choice".into(), choice);
        if let Some(parallel) = parallel {
            extra.insert("parallel_tool_calls".into(), json!(parallel));
        }
    }
    Ok(ChatRequest {
        model,
        messages,
        max_tokens: u32::try_from(max_tokens).ok(),
        stream: body.remove("stream").and_then(|s| s.as_bool()),
        extra,
    })
}

/// Anthropic's `tool_choice` as OpenAI's, with `parallel_tool_calls` when
/// `disable_parallel_tool_use` is given.
fn tool_choice_to_openai(choice: &Value) -> Result<(Value, Option<bool>), ApiError> {
    let invalid = || {
        ApiError::invalid(
            "tool_choice",
            "tool_choice: {\"type\": \"auto\" | \"any\" | \"none\"} or {\"type\": \"tool\", \"name\": …}",
        )
    };
    let openai = match choice.get("type").and_then(Value::as_str) {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => {
            let name = choice
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(invalid)?;
            json!({"type": "function", "function": {"name": name}})
        }
        _ => return Err(invalid()),
    };
    let parallel = choice
        .get("disable_parallel_tool_use")
        .and_then(Value::as_bool)
        .map(|disabled| !disabled);
    Ok((openai, parallel))
}

/// OpenAI's `tool_choice` and `parallel_tool_calls` as Anthropic's `tool_choice`;
/// `None` when neither is set or the choice is not one Anthropic has.
fn tool_choice_to_anthropic(choice: Option<&Value>, parallel: Option<&Value>) -> Option<Value> {
    let mut out = match choice {
        Some(Value::String(c)) if c == "auto" => json!({"type": "auto"}),
        Some(Value::String(c)) if c == "required" => json!({"type": "any"}),
        Some(Value::String(c)) if c == "none" => json!({"type": "none"}),
        Some(Value::Object(c)) => {
            json!({"type": "tool", "name": c.get("function")?.get("name")?.as_str()?})
        }
        Some(_) => return None,
        None if parallel.is_some() => json!({"type": "auto"}),
        None => return None,
    };
    if let Some(parallel) = parallel.and_then(Value::as_bool)
        && out["type"] != "none"
    {
        out["disable_parallel_tool_use"] = json!(!parallel);
    }
    Some(out)
}

fn message(role: &str, content: Value) -> Message {
    Message {
        role: role.into(),
        content,
        extra: Map::new(),
    }
}

/// The text of a string or of an array of content blocks.
fn blocks_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter(|b| b["type"] == "text")
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// One Anthropic turn as OpenAI messages: tool results become `tool` messages, tool
/// uses become the assistant's `tool_calls`.
fn turn_to_openai(role: &str, content: &Value) -> Vec<Message> {
    let blocks = content.as_array().cloned().unwrap_or_default();
    let mut out = Vec::new();
    for b in blocks.iter().filter(|b| b["type"] == "tool_result") {
        let mut m = message("tool", json!(blocks_text(&b["content"])));
        m.extra
            .insert("tool_call_id".into(), b["tool_use_id"].clone());
        out.push(m);
    }
    let text = blocks_text(content);
    let calls: Vec<Value> = blocks
        .iter()
        .filter(|b| b["type"] == "tool_use")
        .map(|b| {
            json!({"id": b["id"], "type": "function",
                   "function": {"name": b["name"], "arguments": b["input"].to_string()}})
        })
        .collect();
    if !text.is_empty() || !calls.is_empty() || out.is_empty() {
        let mut m = message(
            role,
            if text.is_empty() && !calls.is_empty() {
                Value::Null
            } else {
                json!(text)
            },
        );
        if !calls.is_empty() {
            m.extra.insert("tool_calls".into(), json!(calls));
        }
        out.push(m);
    }
    out
}

fn stop_reason(finish: &str) -> &'static str {
    match finish {
        "length" => "max_tokens",
        "tool_calls" => "tool_use",
        _ => "end_turn",
    }
}

/// The content blocks of a completion: its text, then its tool calls as `tool_use`.
fn content_blocks(c: &Completion) -> Vec<Value> {
    let mut blocks = Vec::new();
    if !c.content.is_empty() {
        blocks.push(json!({"type": "text", "text": c.content}));
    }
    for call in c
        .extra
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let input: Value = call["function"]["arguments"]
            .as_str()
            .and_then(|a| serde_json::from_str(a).ok())
            .unwrap_or_else(|| json!({}));
        blocks.push(json!({"type": "tool_use", "id": call["id"], "name": call["function"]["name"], "input": input}));
    }
    blocks
}

/// A completion as Anthropic's `message` object.
pub fn to_message(c: &Completion, id: &str, model: &str) -> Value {
    json!({
        "id": id, "type": "message", "role": "assistant", "model": model,
        "content": content_blocks(c),
        "stop_reason": stop_reason(c.finish_reason), "stop_sequence": null,
        "usage": {"input_tokens": c.prompt_tokens, "output_tokens": c.completion_tokens},
    })
}

/// A completion as Anthropic's stream of events.
pub fn to_events(c: &Completion, id: &str, model: &str) -> Vec<Bytes> {
    let event = |name: &str, data: Value| {
        Bytes::from(format!(
            "event: {name}\n{}",
            String::from_utf8_lossy(&frame(&data))
        ))
    };
    let mut out = vec![event(
        "message_start",
        json!({"type": "message_start", "message": {
            "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": c.prompt_tokens, "output_tokens": 0}}}),
    )];
    for (index, block) in content_blocks(c).into_iter().enumerate() {
        let (start, delta) = if block["type"] == "text" {
            (
                json!({"type": "text", "text": ""}),
                json!({"type": "text_delta", "text": block["text"]}),
            )
        } else {
            let mut start = block.clone();
            start["input"] = json!({});
            (
                start,
                json!({"type": "input_json_delta", "partial_json": block["input"].to_string()}),
            )
        };
        out.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": start}),
        ));
        out.push(event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index, "delta": delta}),
        ));
        out.push(event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
    }
    out.push(event(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop_reason(c.finish_reason), "stop_sequence": null},
               "usage": {"output_tokens": c.completion_tokens}}),
    ));
    out.push(event("message_stop", json!({"type": "message_stop"})));
    out
}

/// The gateway's request as an Anthropic Messages request (for `kind = "anthropic"`).
pub fn from_chat(request: &ChatRequest, default_max_tokens: u32) -> Value {
    let mut system = Vec::new();
    let mut turns: Vec<Value> = Vec::new();
    for m in &request.messages {
        match m.role.as_str() {
            "system" | "developer" => system.push(m.text()),
            "tool" => turns.push(json!({"role": "user", "content": [{
                "type": "tool_result", "tool_use_id": m.extra.get("tool_call_id"), "content": m.text()}]})),
            role => {
                let mut blocks = Vec::new();
                let text = m.text();
                if !text.is_empty() {
                    blocks.push(json!({"type": "text", "text": text}));
                }
                for call in m.extra.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                    let input: Value = call["function"]["arguments"]
                        .as_str()
                        .and_then(|a| serde_json::from_str(a).ok())
                        .unwrap_or_else(|| json!({}));
                    blocks.push(json!({"type": "tool_use", "id": call["id"], "name": call["function"]["name"], "input": input}));
                }
                let role = if role == "assistant" { "assistant" } else { "user" };
                turns.push(json!({"role": role, "content": blocks}));
            }
        }
    }
    let mut body = json!({
        "model": request.model,
        "max_tokens": request.max_tokens.unwrap_or(default_max_tokens),
        "messages": turns,
    });
    if !system.is_empty() {
        body["system"] = json!(system.join("\n"));
    }
    for key in ["temperature", "top_p"] {
        if let Some(v) = request.extra.get(key) {
            body[key] = v.clone();
        }
    }
    if let Some(stop) = request.extra.get("stop") {
        body["stop_sequences"] = if stop.is_string() {
            json!([stop])
        } else {
            stop.clone()
        };
    }
    if let Some(Value::Array(tools)) = request.extra.get("tools") {
        let tools: Vec<Value> = tools
            .iter()
            .map(|t| json!({"name": t["function"]["name"], "description": t["function"].get("description"),
                            "input_schema": t["function"]["parameters"]}))
            .collect();
        body["tools"] = json!(tools);
        if let Some(choice) = tool_choice_to_anthropic(
            request.extra.get("tool_choice"),
            request.extra.get("parallel_tool_calls"),
        ) {
            body["tool_choice"] = choice;
        }
    }
    body
}

/// An Anthropic `message` reply as a completion.
pub fn from_message(reply: &Value) -> Option<Completion> {
    let blocks = reply.get("content")?.as_array()?;
    let text = blocks
        .iter()
        .filter(|b| b["type"] == "text")
        .filter_map(|b| b["text"].as_str())
        .collect::<String>();
    let calls: Vec<Value> = blocks
        .iter()
        .filter(|b| b["type"] == "tool_use")
        .map(|b| json!({"id": b["id"], "type": "function", "function": {"name": b["name"], "arguments": b["input"].to_string()}}))
        .collect();
    let mut extra = Map::new();
    if !calls.is_empty() {
        extra.insert("tool_calls".into(), json!(calls));
    }
    let usage = reply.get("usage");
    let count = |k: &str| {
        usage
            .and_then(|u| u.get(k))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    Some(Completion {
        content: text,
        extra,
        prompt_tokens: count("input_tokens"),
        completion_tokens: count("output_tokens"),
        finish_reason: match reply.get("stop_reason").and_then(Value::as_str) {
            Some("max_tokens") => "length",
            Some("tool_use") => "tool_calls",
            _ => "stop",
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_through_the_openai_shape() {
        let anthropic = json!({
            "model": "m", "max_tokens": 64, "system": "be brief", "stop_sequences": ["END"],
            "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Oslo"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "3°C"}]},
            ],
        });
        let chat = to_chat(anthropic).unwrap();
        let roles: Vec<&str> = chat.messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "tool"]);
        assert_eq!(
            chat.messages[2].extra["tool_calls"][0]["function"]["name"],
            "get_weather"
        );
        assert_eq!(chat.extra["tools"][0]["function"]["name"], "get_weather");
        let back = from_chat(&chat, 1024);
        assert_eq!(back["system"], "be brief");
        assert_eq!(back["max_tokens"], 64);
        assert_eq!(back["stop_sequences"], json!(["END"]));
        assert_eq!(
            back["messages"][1]["content"][0]["input"],
            json!({"city": "Oslo"})
        );
        assert_eq!(back["messages"][2]["content"][0]["tool_use_id"], "t1");
        assert!(
            to_chat(json!({"model": "m", "messages": []})).is_err(),
            "max_tokens is required"
        );
    }

    /// Each of Anthropic's tool choices has its OpenAI counterpart and comes back as
    /// it went; parallel tool use travels with it.
    #[test]
    fn tool_choices_translate_both_ways() {
        for (anthropic, openai) in [
            (json!({"type": "auto"}), json!("auto")),
            (json!({"type": "any"}), json!("required")),
            (json!({"type": "none"}), json!("none")),
            (
                json!({"type": "tool", "name": "get_weather"}),
                json!({"type": "function", "function": {"name": "get_weather"}}),
            ),
            (
                json!({"type": "any", "disable_parallel_tool_use": true}),
                json!("required"),
            ),
        ] {
            let chat = to_chat(json!({
                "model": "m", "max_tokens": 8, "tool_choice": anthropic,
                "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
                "messages": [{"role": "user", "content": "weather?"}],
            }))
            .unwrap();
            assert_eq!(chat.extra["tool_choice"], openai, "{anthropic}");
            assert_eq!(from_chat(&chat, 8)["tool_choice"], anthropic);
        }
        let parallel = to_chat(json!({"model": "m", "max_tokens": 8,
            "tool_choice": {"type": "auto", "disable_parallel_tool_use": true},
            "messages": [{"role": "user", "content": "x"}]}))
        .unwrap();
        assert_eq!(parallel.extra["parallel_tool_calls"], json!(false));
        let bad = to_chat(
            json!({"model": "m", "max_tokens": 8, "tool_choice": {"type": "some"},
            "messages": [{"role": "user", "content": "x"}]}),
        );
        assert_eq!(bad.unwrap_err().field.as_deref(), Some("tool_choice"));
    }

    #[test]
    fn replies_translate_with_tool_use_and_usage() {
        let reply = json!({"content": [{"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "t2", "name": "get_weather", "input": {"city": "Rome"}}],
            "stop_reason": "tool_use", "usage": {"input_tokens": 12, "output_tokens": 7}});
        let c = from_message(&reply).unwrap();
        assert_eq!(
            (c.finish_reason, c.prompt_tokens, c.completion_tokens),
            ("tool_calls", 12, 7)
        );
        let message = to_message(&c, "msg_1", "m");
        assert_eq!(message["stop_reason"], "tool_use");
        assert_eq!(message["content"][1]["input"], json!({"city": "Rome"}));
        let events = to_events(&c, "msg_1", "m");
        let text: String = events
            .iter()
            .map(|b| String::from_utf8_lossy(b).to_string())
            .collect();
        assert!(text.starts_with("event: message_start"));
        assert!(
            text.contains("input_json_delta")
                && text.ends_with("data: {\"type\":\"message_stop\"}\n\n")
        );
    }
}
