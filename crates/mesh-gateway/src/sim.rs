//! `sim`: the built-in offline provider. Deterministic replies derived from the prompt,
//! token counts by whitespace, so demos and tests run with no model and no network.
//! It is a provider like any other, selected by model name.
//!
//! A [`Script`] (the fixture file `fixtures/sim-script.toml`, embedded; `[gateway]
//! sim_script` overrides it) gives scripted replies for prompts it recognises — how the
//! built-in planner, coder and critic get parseable answers offline. Anything else
//! gets the hashed filler — or, when the request's tools or `response_format` call for
//! it, a tool call or JSON shaped by their schemas (see `sim_shapes`).

use crate::chat::{ChatRequest, Completion};
use crate::sim_shapes;
use serde::Deserialize;
use serde_json::{Map, json};
use sha2::{Digest, Sha256};

pub const PROVIDER: &str = "sim";

/// The models `sim` serves.
pub const MODELS: &[&str] = &["sim-small", "sim-large"];

/// The script compiled into the binary.
pub const EMBEDDED_SCRIPT: &str = include_str!("../../../fixtures/sim-script.toml");

const WORDS: &[&str] = &[
    "plan", "review", "agent", "result", "task", "check", "policy", "trace", "model", "tool",
    "answer", "safe", "done", "next", "step", "data",
];

/// Scripted replies: the first rule whose every `when` text occurs in the prompt answers.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    #[serde(default, rename = "reply")]
    rules: Vec<ScriptRule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptRule {
    /// Texts that must all occur in the prompt (system and user messages joined).
    when: Vec<String>,
    /// The reply; `{{line:PREFIX}}` is replaced by the rest of the first prompt line
    /// starting with PREFIX, so a scripted answer can echo what it was asked.
    text: String,
}

impl Script {
    /// Parses a script file's text; `name` is for the error.
    pub fn parse(name: &str, text: &str) -> Result<Self, String> {
        let script: Script = toml::from_str(text).map_err(|e| format!("sim script {name}: {e}"))?;
        if let Some(rule) = script.rules.iter().find(|r| r.when.is_empty()) {
            return Err(format!(
                "sim script {name}: a [[reply]] needs at least one `when` text (reply {:?})",
                rule.text.chars().take(40).collect::<String>()
            ));
        }
        Ok(script)
    }

    /// The script built into the binary.
    pub fn embedded() -> Self {
        Self::parse("(embedded)", EMBEDDED_SCRIPT).unwrap_or_default()
    }

    fn answer(&self, prompt: &str) -> Option<String> {
        let rule = self
            .rules
            .iter()
            .find(|r| r.when.iter().all(|w| prompt.contains(w.as_str())))?;
        Some(fill(&rule.text, prompt))
    }
}

/// Replaces each `{{line:PREFIX}}` with the rest of the prompt's first line that starts
/// with PREFIX (empty if none).
fn fill(text: &str, prompt: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{line:") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 7..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let prefix = &after[..end];
        let found = prompt
            .lines()
            .find_map(|l| l.trim_start().strip_prefix(prefix))
            .unwrap_or_default()
            .trim();
        out.push_str(found);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// A reply that depends only on the model, the messages and the script.
pub fn complete(request: &ChatRequest, script: &Script) -> Completion {
    let prompt: String = request
        .messages
        .iter()
        .map(|m| m.text())
        .collect::<Vec<_>>()
        .join("\n");
    let prompt_tokens = prompt.split_whitespace().count() as u64;
    if let Some(text) = script.answer(&prompt) {
        return Completion {
            completion_tokens: text.split_whitespace().count() as u64,
            content: text,
            extra: Default::default(),
            prompt_tokens,
            finish_reason: "stop",
        };
    }
    let digest = Sha256::digest(format!("{}\n{prompt}", request.model).as_bytes());
    let filler: Vec<&str> = digest
        .iter()
        .map(|b| WORDS[usize::from(*b) % WORDS.len()])
        .collect();
    if let Some(function) = sim_shapes::chosen_tool(request) {
        let arguments = sim_shapes::arguments(function, &mut sim_shapes::Filler::new(&filler));
        let call = json!({
            "id": format!("call_{}", hex::encode(&digest[..12])),
            "type": "function",
            "function": {"name": function["name"], "arguments": arguments.to_string()},
        });
        let mut extra = Map::new();
        extra.insert("tool_calls".into(), json!([call]));
        return Completion {
            content: String::new(),
            extra,
            prompt_tokens,
            completion_tokens: tokens_of(&call.to_string()),
            finish_reason: "tool_calls",
        };
    }
    if let Some(value) = sim_shapes::json_reply(request, &mut sim_shapes::Filler::new(&filler)) {
        let content = value.to_string();
        return Completion {
            completion_tokens: tokens_of(&content),
            content,
            extra: Default::default(),
            prompt_tokens,
            finish_reason: "stop",
        };
    }
    let length = if request.model == "sim-large" { 24 } else { 12 };
    let limit = request
        .max_tokens
        .map(|m| m as usize)
        .unwrap_or(length)
        .clamp(1, length);
    let words: Vec<&str> = (0..limit).map(|i| filler[i % filler.len()]).collect();
    Completion {
        content: format!("[sim] {}", words.join(" ")),
        extra: Default::default(),
        prompt_tokens,
        completion_tokens: limit as u64 + 1,
        finish_reason: if limit < length { "length" } else { "stop" },
    }
}

/// Structured output counted as text: about four characters a token.
fn tokens_of(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Message;

    fn ask(text: &str) -> ChatRequest {
        ChatRequest {
            model: "sim-small".into(),
            messages: vec![Message {
                role: "user".into(),
                content: serde_json::Value::String(text.into()),
                extra: Default::default(),
            }],
            max_tokens: None,
            stream: None,
            extra: Default::default(),
        }
    }

    #[test]
    fn the_first_rule_whose_texts_all_occur_answers() {
        let script = Script::parse(
            "t.toml",
            r#"
            [[reply]]
            when = ["critic", "round 1"]
            text = "REJECT"
            [[reply]]
            when = ["critic"]
            text = "APPROVE {{line:Step:}}"
            "#,
        )
        .unwrap();
        assert_eq!(complete(&ask("critic, round 1"), &script).content, "REJECT");
        assert_eq!(
            complete(&ask("critic\n  Step: rename foo\nround 2"), &script).content,
            "APPROVE rename foo"
        );
        assert!(
            complete(&ask("someone else"), &script)
                .content
                .starts_with("[sim] ")
        );
    }

    #[test]
    fn the_embedded_script_parses_and_rules_need_a_condition() {
        assert!(Script::parse("(embedded)", EMBEDDED_SCRIPT).is_ok());
        let err = Script::parse("x.toml", "[[reply]]\nwhen = []\ntext = \"hi\"").unwrap_err();
        assert!(err.contains("x.toml") && err.contains("when"), "{err}");
        assert!(Script::parse("y.toml", "[[reply]]\ntext = 1").is_err());
    }
}
