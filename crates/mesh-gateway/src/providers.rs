//! Model providers: the built-in `sim` and any OpenAI-compatible Chat Completions API
//! (OpenAI, vLLM, Ollama, llama.cpp's server, most hosts), configured by
//! `[[gateway.providers]]`. Credentials are `secret://NAME` references resolved from the
//! mounted-secrets directory, never values in the config file.

use crate::anthropic;
use crate::chat::{ChatRequest, Completion};
use crate::resilience::{Breaker, CallError, Failure};
use crate::sim;
use mesh_service::SecretDir;
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;
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
    /// Tries per call before failing over (timeouts and transient errors), default 3.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// A model of another provider to fail over to when this one is down.
    #[serde(default)]
    pub fallback_model: Option<String>,
    /// Failures in a row that open the circuit breaker (default 5), and how long it
    /// stays open before a probe (default 10 s).
    #[serde(default)]
    pub breaker_failures: Option<u32>,
    #[serde(default)]
    pub breaker_cooldown_ms: Option<u64>,
    /// Price per 1,000 input and output tokens (routing ranks on their sum).
    #[serde(default)]
    pub input_per_1k: Option<f64>,
    #[serde(default)]
    pub output_per_1k: Option<f64>,
    /// How good the answers are, 0 to 1, as the operator judges (`max_quality` ranks
    /// on it; default 0.5).
    #[serde(default)]
    pub quality: Option<f64>,
    /// `kind = "sim"` only: added latency, and a failure (`timeout`, `429`, `5xx` or
    /// `garbage`) on every `fail_every`-th call (every call when 1) — for demos and
    /// drills of retries, failover and breakers without a real provider.
    #[serde(default)]
    pub latency_ms: Option<u64>,
    #[serde(default)]
    pub failure: Option<String>,
    #[serde(default)]
    pub fail_every: Option<u64>,
    /// `kind = "openai"` only: how the server takes a JSON Schema for the reply.
    /// `json_schema` (default: OpenAI, vLLM, llama.cpp's `llama-server`, Ollama) sends
    /// `response_format` as the client wrote it; `json_object_schema` rewrites
    /// `{"type": "json_schema", "json_schema": {"schema": S}}` to `{"type":
    /// "json_object", "schema": S}` (llama-cpp-python's server); `json_object` to plain
    /// JSON mode, for servers with no schemas.
    #[serde(default)]
    pub structured_output: Option<String>,
}

/// How an OpenAI-compatible server takes `response_format` with a JSON Schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaDialect {
    /// `json_schema`, as OpenAI defines it.
    Native,
    /// `json_object` with a `schema` beside the type.
    InJsonObject,
    /// `json_object` alone: JSON, no schema.
    JsonModeOnly,
}

impl SchemaDialect {
    fn parse(at: &str, value: Option<&str>) -> Result<Self, String> {
        match value {
            None | Some("json_schema") => Ok(Self::Native),
            Some("json_object_schema") => Ok(Self::InJsonObject),
            Some("json_object") => Ok(Self::JsonModeOnly),
            Some(other) => Err(format!(
                "{at}: structured_output `{other}` is not one of json_schema, json_object_schema, json_object"
            )),
        }
    }

    /// `response_format` as this server takes it.
    fn rewrite<'a>(self, format: &'a Value) -> std::borrow::Cow<'a, Value> {
        use std::borrow::Cow;
        if self == Self::Native || format.get("type").and_then(Value::as_str) != Some("json_schema")
        {
            return Cow::Borrowed(format);
        }
        match (self, format.pointer("/json_schema/schema")) {
            (Self::InJsonObject, Some(schema)) => {
                Cow::Owned(serde_json::json!({"type": "json_object", "schema": schema}))
            }
            _ => Cow::Owned(serde_json::json!({"type": "json_object"})),
        }
    }
}

/// How a configured `sim` provider misbehaves.
#[derive(Debug)]
struct SimBehaviour {
    latency: Duration,
    failure: Option<Failure>,
    fail_every: u64,
    calls: std::sync::atomic::AtomicU64,
}

/// What routing knows of a provider's models besides their observed latency.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pricing {
    pub input_per_1k: f64,
    pub output_per_1k: f64,
    pub quality: f64,
}

/// A provider ready to call.
#[derive(Debug, Clone)]
pub struct Provider {
    pub name: String,
    pub models: Vec<String>,
    pub max_attempts: u32,
    pub fallback_model: Option<String>,
    /// Shared by every clone: one breaker per provider.
    pub breaker: Arc<Breaker>,
    pub pricing: Pricing,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    /// Misbehaviour (configured sim providers only) and the scripted replies.
    Sim(Option<Arc<SimBehaviour>>, Arc<sim::Script>),
    /// `endpoint` is `{base_url}/chat/completions`, parsed once.
    OpenAi {
        endpoint: reqwest::Url,
        api_key: Option<String>,
        timeout: Duration,
        schemas: SchemaDialect,
    },
    /// Anthropic's Messages API; requests and replies are translated. `endpoint` is
    /// `{base_url}/messages`.
    Anthropic {
        endpoint: reqwest::Url,
        api_key: Option<String>,
        timeout: Duration,
    },
}

/// The Messages API version the translation speaks.
const ANTHROPIC_VERSION: &str = "2023-06-01";
/// Anthropic requires `max_tokens`; used when an OpenAI-shaped request has none.
const ANTHROPIC_DEFAULT_MAX_TOKENS: u32 = 4096;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_ATTEMPTS: u32 = 3;
const DEFAULT_BREAKER_FAILURES: u32 = 5;
const DEFAULT_BREAKER_COOLDOWN: Duration = Duration::from_secs(10);

impl Provider {
    pub fn sim() -> Self {
        Provider {
            name: sim::PROVIDER.into(),
            models: sim::MODELS.iter().map(|m| m.to_string()).collect(),
            max_attempts: 1,
            fallback_model: None,
            breaker: Arc::new(Breaker::new(
                DEFAULT_BREAKER_FAILURES,
                DEFAULT_BREAKER_COOLDOWN,
            )),
            // Free and, being canned text, of the lowest quality.
            pricing: Pricing {
                input_per_1k: 0.0,
                output_per_1k: 0.0,
                quality: 0.0,
            },
            kind: Kind::Sim(None, Arc::new(sim::Script::embedded())),
        }
    }

    /// Gives a `sim` provider these scripted replies (other kinds are unchanged).
    pub fn script(&mut self, script: Arc<sim::Script>) {
        if let Kind::Sim(_, current) = &mut self.kind {
            *current = script;
        }
    }

    /// Checks a configured provider and resolves its credential from the secret store.
    pub fn from_config(
        config: &ProviderConfig,
        secrets: Option<&SecretDir>,
    ) -> Result<Self, String> {
        let at = format!("[[gateway.providers]] {}", config.name);
        if config.models.is_empty() {
            return Err(format!("{at}: models must name at least one model"));
        }
        let kind = match config.kind.as_str() {
            "sim" => {
                let failure = match config.failure.as_deref() {
                    None | Some("none") => None,
                    Some("timeout") | Some("429") | Some("5xx") => Some(Failure::Transient),
                    Some("garbage") => Some(Failure::Garbage),
                    Some(other) => {
                        return Err(format!(
                            "{at}: failure `{other}` is not one of none, timeout, 429, 5xx, garbage"
                        ));
                    }
                };
                Kind::Sim(
                    Some(Arc::new(SimBehaviour {
                        latency: Duration::from_millis(config.latency_ms.unwrap_or(0)),
                        failure,
                        fail_every: config.fail_every.unwrap_or(1).max(1),
                        calls: std::sync::atomic::AtomicU64::new(0),
                    })),
                    Arc::new(sim::Script::embedded()),
                )
            }
            "openai" | "anthropic" => {
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
                        SecretDir::resolve(secrets, r).map_err(|e| format!("{at}: api_key: {e}"))
                    })
                    .transpose()?;
                let base_url = base_url.trim_end_matches('/').to_string();
                let timeout = config
                    .timeout_ms
                    .map(Duration::from_millis)
                    .unwrap_or(DEFAULT_TIMEOUT);
                let schemas = SchemaDialect::parse(&at, config.structured_output.as_deref())?;
                if config.kind == "anthropic" && config.structured_output.is_some() {
                    return Err(format!(
                        "{at}: structured_output applies to kind = \"openai\" only"
                    ));
                }
                let endpoint = |path: &str| {
                    reqwest::Url::parse(&format!("{base_url}/{path}"))
                        .map_err(|e| format!("{at}: base_url: {e}"))
                };
                if config.kind == "anthropic" {
                    Kind::Anthropic {
                        endpoint: endpoint("messages")?,
                        api_key,
                        timeout,
                    }
                } else {
                    Kind::OpenAi {
                        endpoint: endpoint("chat/completions")?,
                        api_key,
                        timeout,
                        schemas,
                    }
                }
            }
            other => {
                return Err(format!(
                    "{at}: unknown kind `{other}` (expected openai, anthropic or sim)"
                ));
            }
        };
        Ok(Provider {
            name: config.name.clone(),
            models: config.models.clone(),
            max_attempts: config.max_attempts.unwrap_or(DEFAULT_ATTEMPTS).clamp(1, 10),
            fallback_model: config.fallback_model.clone(),
            breaker: Arc::new(Breaker::new(
                config.breaker_failures.unwrap_or(DEFAULT_BREAKER_FAILURES),
                config
                    .breaker_cooldown_ms
                    .map(Duration::from_millis)
                    .unwrap_or(DEFAULT_BREAKER_COOLDOWN),
            )),
            pricing: Pricing {
                input_per_1k: non_negative(&at, "input_per_1k", config.input_per_1k)?,
                output_per_1k: non_negative(&at, "output_per_1k", config.output_per_1k)?,
                quality: match config.quality {
                    Some(q) if (0.0..=1.0).contains(&q) => q,
                    Some(_) => return Err(format!("{at}: quality must be between 0 and 1")),
                    None => 0.5,
                },
            },
            kind,
        })
    }

    /// Sends a non-streaming chat request and reads the completion.
    pub async fn complete(
        &self,
        http: &reqwest::Client,
        request: &ChatRequest,
    ) -> Result<Completion, CallError> {
        let resp = match self.send(http, request, false).await? {
            Sent::Sim(completion) => return Ok(completion),
            Sent::Http(resp) => resp,
        };
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| self.error(Failure::Transient, e.to_string()))?;
        let reply: Value = serde_json::from_slice(&bytes).map_err(|e| {
            self.error(
                Failure::Garbage,
                format!("answered something that is not JSON ({e})"),
            )
        })?;
        let completion = match self.kind {
            Kind::Anthropic { .. } => anthropic::from_message(&reply),
            _ => Completion::from_openai(&reply),
        };
        completion.ok_or_else(|| {
            self.error(
                Failure::Garbage,
                "answered JSON that is not a chat completion".into(),
            )
        })
    }

    /// Starts a streaming call. Errors before the first byte (refused connection, an
    /// HTTP error status) come back here, while the client can still be told and
    /// another provider tried. An Anthropic upstream's events are relayed as they are;
    /// the relay translates them (see [`Provider::speaks_anthropic`]).
    pub async fn open_stream(
        &self,
        http: &reqwest::Client,
        request: &ChatRequest,
    ) -> Result<Upstream, CallError> {
        Ok(match self.send(http, request, true).await? {
            Sent::Sim(completion) => Upstream::Whole(completion),
            Sent::Http(resp) => Upstream::Relay(resp),
        })
    }

    /// `gen_ai.provider.name`: the API this provider speaks (an OpenAI-compatible
    /// server counts as `openai`; the configured name goes in `mesh.provider`).
    pub(crate) fn genai_name(&self) -> &'static str {
        match self.kind {
            Kind::Sim(..) => "mesh.sim",
            Kind::OpenAi { .. } => "openai",
            Kind::Anthropic { .. } => "anthropic",
        }
    }

    /// Sends the request and checks the status. The timeout bounds the wait for the
    /// response head; a whole (non-streamed) body is bounded by the client timeout too.
    async fn send(
        &self,
        http: &reqwest::Client,
        request: &ChatRequest,
        stream: bool,
    ) -> Result<Sent, CallError> {
        self.send_in(http, request, stream, None).await
    }

    /// [`Self::send`], with `dialect` replacing the configured schema dialect.
    async fn send_in(
        &self,
        http: &reqwest::Client,
        request: &ChatRequest,
        stream: bool,
        dialect: Option<SchemaDialect>,
    ) -> Result<Sent, CallError> {
        let (call, timeout) = match &self.kind {
            Kind::Sim(behaviour, script) => {
                if let Some(b) = behaviour {
                    tokio::time::sleep(b.latency).await;
                    let n = b.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    if let Some(failure) = &b.failure
                        && n % b.fail_every == 0
                    {
                        let what = match failure {
                            Failure::Garbage => "answered something that is not JSON (simulated)",
                            _ => "HTTP 503 (simulated)",
                        };
                        return Err(self.error(failure.clone(), what.into()));
                    }
                }
                return Ok(Sent::Sim(sim::complete(request, script)));
            }
            Kind::OpenAi {
                endpoint,
                api_key,
                timeout,
                schemas,
            } => {
                // Written straight from the request (no intermediate JSON tree).
                let outgoing = Outgoing {
                    request,
                    stream,
                    schemas: dialect.unwrap_or(*schemas),
                };
                let body = serde_json::to_vec(&outgoing)
                    .map_err(|e| self.error(Failure::Garbage, e.to_string()))?;
                let mut call = http
                    .post(endpoint.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body);
                if let Some(key) = api_key {
                    call = call.bearer_auth(key);
                }
                (call, *timeout)
            }
            Kind::Anthropic {
                endpoint,
                api_key,
                timeout,
            } => {
                let mut body = anthropic::from_chat(request, ANTHROPIC_DEFAULT_MAX_TOKENS);
                body["stream"] = Value::Bool(stream);
                let mut call = http
                    .post(endpoint.clone())
                    .header("anthropic-version", ANTHROPIC_VERSION)
                    .json(&body);
                if let Some(key) = api_key {
                    call = call.header("x-api-key", key);
                }
                (call, *timeout)
            }
        };
        let call = if stream { call } else { call.timeout(timeout) };
        let resp = tokio::time::timeout(timeout, call.send())
            .await
            .map_err(|_| self.error(Failure::Transient, "no response before the timeout".into()))?
            .map_err(|e| self.error(Failure::Transient, e.to_string()))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let bytes = resp.bytes().await.unwrap_or_default();
            if dialect.is_none() && self.refused_schema(request, status, &bytes) {
                tracing::warn!(
                    provider = %self.name,
                    "the provider refused response_format json_schema; asking again as json_object \
                     with the schema (set structured_output = \"json_object_schema\" to ask so at once)"
                );
                let again = self.send_in(http, request, stream, Some(SchemaDialect::InJsonObject));
                return Box::pin(again).await;
            }
            return Err(self.status_error(status, &bytes));
        }
        Ok(Sent::Http(resp))
    }

    /// Whether an OpenAI-compatible server refused a `json_schema` response format it
    /// was sent as configured (llama-cpp-python's server answers 422 naming it).
    fn refused_schema(
        &self,
        request: &ChatRequest,
        status: reqwest::StatusCode,
        body: &[u8],
    ) -> bool {
        let sent_schema = matches!(
            self.kind,
            Kind::OpenAi {
                schemas: SchemaDialect::Native,
                ..
            }
        ) && request
            .extra
            .get("response_format")
            .and_then(|f| f.get("type"))
            .and_then(Value::as_str)
            == Some("json_schema");
        sent_schema
            && matches!(status.as_u16(), 400 | 422)
            && String::from_utf8_lossy(body).contains("response_format")
    }

    /// Whether this provider's streams are Anthropic events (else OpenAI chunks).
    pub fn speaks_anthropic(&self) -> bool {
        matches!(self.kind, Kind::Anthropic { .. })
    }

    fn error(&self, failure: Failure, detail: String) -> CallError {
        CallError {
            failure,
            message: format!("provider {}: {detail}", self.name),
        }
    }

    /// 5xx and 429 are the provider's trouble (transient); other statuses refuse the
    /// request itself.
    fn status_error(&self, status: reqwest::StatusCode, body: &[u8]) -> CallError {
        let detail: String = String::from_utf8_lossy(body).chars().take(300).collect();
        let failure = if status.is_server_error() || status.as_u16() == 429 {
            Failure::Transient
        } else {
            Failure::Rejected(status.as_u16())
        };
        self.error(failure, format!("HTTP {status}: {detail}"))
    }
}

fn non_negative(at: &str, field: &str, value: Option<f64>) -> Result<f64, String> {
    match value {
        Some(v) if v.is_finite() && v >= 0.0 => Ok(v),
        Some(_) => Err(format!("{at}: {field} must be a non-negative number")),
        None => Ok(0.0),
    }
}

/// A chat request as sent upstream: the client's, with `stream` set as the gateway
/// calls it and, on a stream, usage asked for.
struct Outgoing<'a> {
    request: &'a ChatRequest,
    stream: bool,
    schemas: SchemaDialect,
}

impl serde::Serialize for Outgoing<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let r = self.request;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("model", &r.model)?;
        map.serialize_entry("messages", &r.messages)?;
        if let Some(max) = r.max_tokens {
            map.serialize_entry("max_tokens", &max)?;
        }
        map.serialize_entry("stream", &self.stream)?;
        if self.stream {
            // Always asked for, whatever the client asked: the call is accounted from
            // it (the relay removes it for a client that did not ask).
            let mut options = match r.extra.get("stream_options") {
                Some(serde_json::Value::Object(o)) => o.clone(),
                _ => serde_json::Map::new(),
            };
            options.insert("include_usage".into(), serde_json::Value::Bool(true));
            map.serialize_entry("stream_options", &options)?;
        }
        for (k, v) in &r.extra {
            // `stream_options` is refused without `stream` (OpenAI answers 400).
            if !matches!(
                k.as_str(),
                "model" | "messages" | "max_tokens" | "stream" | "stream_options"
            ) {
                if k == "response_format" {
                    map.serialize_entry(k, &self.schemas.rewrite(v))?;
                } else {
                    map.serialize_entry(k, v)?;
                }
            }
        }
        map.end()
    }
}

enum Sent {
    Sim(Completion),
    Http(reqwest::Response),
}

/// An open streaming call.
pub enum Upstream {
    /// A provider that answers at once (`sim`): the whole completion, sent as frames.
    Whole(Completion),
    /// An upstream SSE response, relayed as it arrives.
    Relay(reqwest::Response),
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn outgoing(format: Value, schemas: SchemaDialect, stream: bool) -> Value {
        let request: ChatRequest = serde_json::from_value(json!({
            "model": "m", "messages": [{"role": "user", "content": "hi"}],
            "response_format": format, "stream_options": {"include_usage": false},
        }))
        .unwrap();
        serde_json::to_value(Outgoing {
            request: &request,
            stream,
            schemas,
        })
        .unwrap()
    }

    /// A JSON Schema reaches each server in the form it takes; other formats and the
    /// default dialect pass untouched. Streams always ask for usage; whole calls never
    /// carry `stream_options`, which servers refuse without `stream`.
    #[test]
    fn requests_go_out_in_the_servers_dialect() {
        let schema = json!({"type": "object", "properties": {"ok": {"type": "boolean"}}});
        let format = json!({"type": "json_schema", "json_schema": {"name": "r", "schema": schema}});
        let sent = |dialect| outgoing(format.clone(), dialect, false)["response_format"].clone();
        assert_eq!(sent(SchemaDialect::Native), format);
        assert_eq!(
            sent(SchemaDialect::InJsonObject),
            json!({"type": "json_object", "schema": schema})
        );
        assert_eq!(
            sent(SchemaDialect::JsonModeOnly),
            json!({"type": "json_object"})
        );
        let plain = json!({"type": "json_object"});
        assert_eq!(
            outgoing(plain.clone(), SchemaDialect::InJsonObject, false)["response_format"],
            plain
        );
        assert!(
            outgoing(plain.clone(), SchemaDialect::Native, false)
                .get("stream_options")
                .is_none()
        );
        assert_eq!(
            outgoing(plain, SchemaDialect::Native, true)["stream_options"],
            json!({"include_usage": true})
        );
        assert!(SchemaDialect::parse("p", Some("xml")).is_err());
    }
}
