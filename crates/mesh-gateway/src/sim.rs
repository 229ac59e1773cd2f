//! `sim`: the built-in offline provider. Deterministic replies derived from the prompt,
//! token counts by whitespace, so demos and tests run with no model and no network.
//! It is a provider like any other, selected by model name.

use crate::chat::{ChatRequest, Completion};
use sha2::{Digest, Sha256};

pub const PROVIDER: &str = "sim";

/// The models `sim` serves.
pub const MODELS: &[&str] = &["sim-small", "sim-large"];

const WORDS: &[&str] = &[
    "plan", "review", "agent", "result", "task", "check", "policy", "trace", "model", "tool",
    "answer", "safe", "done", "next", "step", "data",
];

/// A reply that depends only on the model and the messages.
pub fn complete(request: &ChatRequest) -> Completion {
    let prompt: String = request
        .messages
        .iter()
        .map(|m| m.text())
        .collect::<Vec<_>>()
        .join("\n");
    let digest = Sha256::digest(format!("{}\n{prompt}", request.model).as_bytes());
    let length = if request.model == "sim-large" { 24 } else { 12 };
    let limit = request
        .max_tokens
        .map(|m| m as usize)
        .unwrap_or(length)
        .clamp(1, length);
    let words: Vec<&str> = (0..limit)
        .map(|i| WORDS[usize::from(digest[i % digest.len()]) % WORDS.len()])
        .collect();
    Completion {
        content: format!("[sim] {}", words.join(" ")),
        extra: Default::default(),
        prompt_tokens: prompt.split_whitespace().count() as u64,
        completion_tokens: limit as u64 + 1,
        finish_reason: if limit < length { "length" } else { "stop" },
    }
}
