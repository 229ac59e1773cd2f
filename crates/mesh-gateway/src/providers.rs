//! Model providers: the built-in `sim` and any OpenAI-compatible Chat Completions API
//! (OpenAI, vLLM, Ollama, llama.cpp's server, most hosts), configured by
//! `[[gateway.providers]]`. Credentials are `secret://NAME` references resolved from the
//! mounted-secrets directory, never values in the config file.

use crate::chat::{ChatRequest, Completion};
use crate::sim;
use mesh_service::ApiError;
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// `[[gateway.providers]]` as written in the config file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub name: String,
    /// `openai` (any OpenAI-compatible API) or `sim`.
    pub kind: String,
    /// E.g. `https://api.openai.com/v1` or `http://127.0.0.1:8089/v1`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// `secret://NAME`: sent as the bearer token.
    #[serde(default)]
    pub api_key: Option<String>,
    /// Model names served through this provider.
    pub models: Vec<String>,
    /// Per-request timeout.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// A provider ready to call.
#[derive(Debug, Clone)]
pub struct Provider {
    pub name: String,
    pub models: Vec<String>,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Sim,
    OpenAi {
        base_url: String,
        api_key: Option<String>,
        timeout: Duration,
    },
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

impl Provider {
    pub fn sim() -> Self {
        Provider {
            name: sim::PROVIDER.into(),
            models: sim::MODELS.iter().map(|m| m.to_string()).collect(),
            kind: Kind::Sim,
        }
    }

    /// Checks a configured provider and resolves its credential from `secrets_dir`.
    pub fn from_config(
        config: &ProviderConfig,
        secrets_dir: Option<&Path>,
    ) -> Result<Self, String> {
        let at = format!("[[gateway.providers]] {}", config.name);
        if config.models.is_empty() {
            return Err(format!("{at}: models must name at least one model"));
        }
        let kind = match config.kind.as_str() {
            "sim" => Kind::Sim,
            "openai" => {
                let base_url = config
                    .base_url
                    .clone()
                    .ok_or_else(|| format!("{at}: base_url is required for kind = \"openai\""))?;
                if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
                    return Err(format!("{at}: base_url must be an http:// or https:// URL"));
                }
                let api_key = config
                    .api_key
                    .as_deref()
                    .map(|r| {
                        resolve_secret(r, secrets_dir).map_err(|e| format!("{at}: api_key: {e}"))
                    })
                    .transpose()?;
                Kind::OpenAi {
                    base_url: base_url.trim_end_matches('/').to_string(),
                    api_key,
                    timeout: config
                        .timeout_ms
                        .map(Duration::from_millis)
                        .unwrap_or(DEFAULT_TIMEOUT),
                }
            }
            other => {
                return Err(format!(
                    "{at}: unknown kind `{other}` (expected openai or sim)"
                ));
            }
        };
        Ok(Provider {
            name: config.name.clone(),
            models: config.models.clone(),
            kind,
        })
    }

    /// Sends a non-streaming chat request and reads the completion.
    pub async fn complete(
        &self,
        http: &reqwest::Client,
        request: &ChatRequest,
    ) -> Result<Completion, ApiError> {
        match &self.kind {
            Kind::Sim => Ok(sim::complete(request)),
            Kind::OpenAi {
                base_url,
                api_key,
                timeout,
            } => {
                let mut body =
                    serde_json::to_value(request).map_err(|e| ApiError::internal(e.to_string()))?;
                body["stream"] = Value::Bool(false);
                let mut call = http
                    .post(format!("{base_url}/chat/completions"))
                    .json(&body)
                    .timeout(*timeout);
                if let Some(key) = api_key {
                    call = call.bearer_auth(key);
                }
                let failed = |detail: String| self.failed(detail);
                let resp = call.send().await.map_err(|e| failed(e.to_string()))?;
                let status = resp.status();
                let bytes = resp.bytes().await.map_err(|e| failed(e.to_string()))?;
                if !status.is_success() {
                    let detail = String::from_utf8_lossy(&bytes)
                        .chars()
                        .take(300)
                        .collect::<String>();
                    return Err(failed(format!("HTTP {status}: {detail}")));
                }
                let reply: Value = serde_json::from_slice(&bytes)
                    .map_err(|e| failed(format!("answered something that is not JSON ({e})")))?;
                Completion::from_openai(&reply)
                    .ok_or_else(|| failed("answered JSON that is not a chat completion".into()))
            }
        }
    }
}

/// An open streaming call.
pub enum Upstream {
    /// A provider that answers at once (`sim`): the whole completion, sent as frames.
    Whole(Completion),
    /// An upstream SSE response, relayed as it arrives.
    Relay(reqwest::Response),
}

impl Provider {
    /// Starts a streaming call. Errors before the first byte (refused connection, an
    /// HTTP error status) come back here, while the client can still be told.
    pub async fn open_stream(
        &self,
        http: &reqwest::Client,
        request: &ChatRequest,
    ) -> Result<Upstream, ApiError> {
        match &self.kind {
            Kind::Sim => Ok(Upstream::Whole(sim::complete(request))),
            Kind::OpenAi {
                base_url,
                api_key,
                timeout,
            } => {
                let mut body =
                    serde_json::to_value(request).map_err(|e| ApiError::internal(e.to_string()))?;
                body["stream"] = Value::Bool(true);
                // No overall timeout on a stream; the connect and first byte are bounded.
                let mut call = http
                    .post(format!("{base_url}/chat/completions"))
                    .json(&body);
                if let Some(key) = api_key {
                    call = call.bearer_auth(key);
                }
                let resp = tokio::time::timeout(*timeout, call.send())
                    .await
                    .map_err(|_| self.failed("no response before the timeout".into()))?
                    .map_err(|e| self.failed(e.to_string()))?;
                if !resp.status().is_success() {
                    let status = resp.status();
                    let detail: String = resp
                        .text()
                        .await
                        .unwrap_or_default()
                        .chars()
                        .take(300)
                        .collect();
                    return Err(self.failed(format!("HTTP {status}: {detail}")));
                }
                Ok(Upstream::Relay(resp))
            }
        }
    }

    fn failed(&self, detail: String) -> ApiError {
        ApiError::new(
            axum::http::StatusCode::BAD_GATEWAY,
            "provider_failed",
            format!("provider {}: {detail}", self.name),
        )
    }
}

/// `secret://NAME` → the contents of `NAME` in the secrets directory.
pub fn resolve_secret(reference: &str, secrets_dir: Option<&Path>) -> Result<String, String> {
    let name = reference
        .strip_prefix("secret://")
        .ok_or("credentials are given as secret://NAME, never as values in the config file")?;
    let dir = secrets_dir.ok_or("no secret store is configured ([secrets] dir)")?;
    let valid = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !valid {
        return Err(format!("`{name}` is not a secret name"));
    }
    std::fs::read_to_string(dir.join(name))
        .map(|v| v.trim_end_matches(['\n', '\r']).to_string())
        .map_err(|e| format!("secret {name}: {e}"))
}
