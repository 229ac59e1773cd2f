//! routing-gateway (port 5001): the OpenAI-compatible model ingress. Every model call
//! passes the `model.call` policy point (the decision may mask what the prompt carries
//! before it reaches the provider) and leaves a `ModelCall` in provenance, linked from
//! the calling agent.
//!
//! This is the gateway's first slice: the built-in `sim` provider and OpenAI-compatible
//! upstreams, non-streaming text completions, one provider per model. Streaming, tool
//! calls, the Anthropic API, routing strategies, failover, rate limits and budgets are
//! the routing-gateway issue's remaining work.

mod chat;
mod providers;
mod routes;
mod sim;
mod stream;

pub use chat::{ChatRequest, Completion, Message};
pub use providers::{Provider, ProviderConfig, Upstream, resolve_secret};
pub use routes::router;

use mesh_policy::{Actor, Enforcer, Point, Resource, inputs};
use mesh_service::{ApiError, ServiceContext};
use mesh_types::{Agent, EventDraft, Principal};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

pub struct Gateway {
    ctx: ServiceContext,
    policy: Arc<Enforcer>,
    providers: Vec<Provider>,
    http: reqwest::Client,
}

/// A call that passed its policy point, about to be sent.
struct Prepared {
    provider: Provider,
    request: ChatRequest,
    actor: String,
    agent: Option<(Uuid, String)>,
    task: Option<Uuid>,
    verdict: mesh_policy::Verdict,
    call_id: Uuid,
}

impl Prepared {
    fn reply_id(&self) -> String {
        format!("chatcmpl-{}", self.call_id.simple())
    }
}

/// What a call used, for its `ModelCall` record.
struct Usage {
    tokens_in: u64,
    tokens_out: u64,
    text: String,
}

impl From<&Completion> for Usage {
    fn from(c: &Completion) -> Self {
        Usage {
            tokens_in: c.prompt_tokens,
            tokens_out: c.completion_tokens,
            text: c.content.clone(),
        }
    }
}

fn now_secs() -> i64 {
    mesh_types::time::now().timestamp()
}

/// Mesh context a caller may attach to a model call (as `x-mesh-*` headers).
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    pub agent_id: Option<Uuid>,
    pub task_id: Option<Uuid>,
    pub data_classification: Option<String>,
}

impl Gateway {
    /// A gateway serving `sim` and the configured providers; a model served by two
    /// providers is refused (routing between them is not built yet).
    pub fn new(
        ctx: ServiceContext,
        policy: Arc<Enforcer>,
        configured: Vec<Provider>,
    ) -> Result<Arc<Self>, String> {
        let mut providers = vec![Provider::sim()];
        for p in configured {
            if providers.iter().any(|q| q.name == p.name) {
                return Err(format!(
                    "[[gateway.providers]]: two providers are named {}",
                    p.name
                ));
            }
            if let Some(model) = p
                .models
                .iter()
                .find(|m| providers.iter().any(|q| q.models.contains(m)))
            {
                return Err(format!(
                    "[[gateway.providers]] {}: model {model} is already served",
                    p.name
                ));
            }
            providers.push(p);
        }
        Ok(Arc::new(Self {
            ctx,
            policy,
            providers,
            http: reqwest::Client::builder()
                .tcp_nodelay(true)
                .build()
                .map_err(|e| e.to_string())?,
        }))
    }

    pub fn context(&self) -> &ServiceContext {
        &self.ctx
    }

    /// The models this gateway serves, as `(id, provider)`.
    pub fn models(&self) -> Vec<(&str, &str)> {
        self.providers
            .iter()
            .flat_map(|p| p.models.iter().map(move |m| (m.as_str(), p.name.as_str())))
            .collect()
    }

    /// A non-streaming call: the `chat.completion` object.
    pub async fn chat(
        &self,
        caller: &Principal,
        call: CallContext,
        request: ChatRequest,
    ) -> Result<Value, ApiError> {
        let prepared = self.prepare(caller, call, request).await?;
        let started = Instant::now();
        let outcome = prepared
            .provider
            .complete(&self.http, &prepared.request)
            .await;
        let latency_ms = started.elapsed().as_millis() as u64;
        match outcome {
            Ok(completion) => {
                let reply =
                    completion.to_openai(&prepared.reply_id(), &prepared.request.model, now_secs());
                let usage = Usage::from(&completion);
                self.record(prepared, Ok(usage), latency_ms).await?;
                Ok(reply)
            }
            Err(err) => {
                self.record(prepared, Err(err.message.clone()), latency_ms)
                    .await?;
                Err(err)
            }
        }
    }

    /// A streaming call: SSE frames for the client. The `ModelCall` is recorded when the
    /// stream ends, with what passed through it.
    pub async fn chat_stream(
        self: &Arc<Self>,
        caller: &Principal,
        call: CallContext,
        request: ChatRequest,
    ) -> Result<axum::body::Body, ApiError> {
        let prepared = self.prepare(caller, call, request).await?;
        let started = Instant::now();
        let upstream = match prepared
            .provider
            .open_stream(&self.http, &prepared.request)
            .await
        {
            Ok(upstream) => upstream,
            Err(err) => {
                let latency_ms = started.elapsed().as_millis() as u64;
                self.record(prepared, Err(err.message.clone()), latency_ms)
                    .await?;
                return Err(err);
            }
        };
        match upstream {
            Upstream::Whole(completion) => {
                let frames = stream::chunks(
                    &completion,
                    &prepared.reply_id(),
                    &prepared.request.model,
                    now_secs(),
                );
                let latency_ms = started.elapsed().as_millis() as u64;
                self.record(prepared, Ok(Usage::from(&completion)), latency_ms)
                    .await?;
                Ok(axum::body::Body::from_stream(futures_util::stream::iter(
                    frames.into_iter().map(Ok::<_, std::convert::Infallible>),
                )))
            }
            Upstream::Relay(response) => Ok(self.relay(prepared, response, started)),
        }
    }

    /// Passes an upstream stream through chunk by chunk, tallying it for provenance.
    fn relay(
        self: &Arc<Self>,
        prepared: Prepared,
        response: reqwest::Response,
        started: Instant,
    ) -> axum::body::Body {
        use futures_util::StreamExt;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<axum::body::Bytes, std::io::Error>>(64);
        let gateway = self.clone();
        tokio::spawn(async move {
            let mut tally = stream::StreamTally::default();
            let mut bytes = response.bytes_stream();
            let mut error = None;
            while let Some(chunk) = bytes.next().await {
                match chunk {
                    Ok(chunk) => {
                        tally.feed(&chunk);
                        if tx.send(Ok(chunk)).await.is_err() {
                            error = Some("the client disconnected mid-stream".to_string());
                            break;
                        }
                    }
                    Err(e) => {
                        error = Some(format!(
                            "provider {}: stream broke: {e}",
                            prepared.provider.name
                        ));
                        let _ = tx.send(Err(std::io::Error::other(e))).await;
                        break;
                    }
                }
            }
            let usage = Usage {
                tokens_in: tally.prompt_tokens.unwrap_or(0),
                // Without a usage frame, count content chunks (about a token each).
                tokens_out: tally.completion_tokens.unwrap_or(tally.chunks),
                text: tally.content,
            };
            let outcome = error.map_or(Ok(usage), Err);
            let latency_ms = started.elapsed().as_millis() as u64;
            if let Err(e) = gateway.record(prepared, outcome, latency_ms).await {
                tracing::error!(error = %e.message, "could not record a streamed model call");
            }
        });
        axum::body::Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }))
    }

    /// Checks the request, finds the provider, and asks `model.call` (whose
    /// redactions replace the messages before they leave).
    async fn prepare(
        &self,
        caller: &Principal,
        call: CallContext,
        mut request: ChatRequest,
    ) -> Result<Prepared, ApiError> {
        let Some(provider) = self
            .providers
            .iter()
            .find(|p| p.models.contains(&request.model))
        else {
            let known: Vec<&str> = self.models().into_iter().map(|(m, _)| m).collect();
            return Err(ApiError::not_found(format!(
                "model `{}` does not exist; known models: {}",
                request.model,
                known.join(", ")
            ))
            .with_field("model"));
        };
        if request.messages.is_empty() {
            return Err(ApiError::invalid(
                "messages",
                "messages: at least one message is required",
            ));
        }
        let agent = match call.agent_id {
            Some(id) => Some(self.ctx.store.agents.get_agent(id).await?.ok_or_else(|| {
                ApiError::invalid("x-mesh-agent-id", format!("x-mesh-agent-id: no agent {id}"))
            })?),
            None => None,
        };
        let verdict = self
            .decide(caller, &call, agent.as_ref(), &provider.name, &request)
            .await?;
        if let Some(messages) = verdict.input["resource"]["attributes"].get("body")
            && let Ok(messages) = serde_json::from_value(messages.clone())
        {
            request.messages = messages;
        }
        Ok(Prepared {
            provider: provider.clone(),
            request,
            actor: agent
                .as_ref()
                .map(|a| a.name.clone())
                .unwrap_or_else(|| caller.name.clone()),
            agent: agent.map(|a| (a.id, a.name)),
            task: call.task_id,
            verdict,
            call_id: Uuid::now_v7(),
        })
    }

    /// Appends the decision and the call (`model_call`, or `model_call_failed` with the
    /// error) in one write.
    async fn record(
        &self,
        prepared: Prepared,
        outcome: Result<Usage, String>,
        latency_ms: u64,
    ) -> Result<(), ApiError> {
        let p = prepared;
        let redacted = p.verdict.decision.action == mesh_types::PolicyAction::AllowWithRedactions;
        let mut payload = json!({
            "modelCallId": p.call_id,
            "provider": p.provider.name,
            "model": p.request.model,
            "latencyMs": latency_ms,
            "agentId": p.agent.as_ref().map(|a| a.0),
            "agentName": p.agent.as_ref().map(|a| a.1.clone()),
            "redacted": redacted,
            "stream": p.request.stream == Some(true),
        });
        let action = match outcome {
            Ok(usage) => {
                payload["tokensIn"] = json!(usage.tokens_in);
                payload["tokensOut"] = json!(usage.tokens_out);
                payload["outputSha256"] =
                    json!(mesh_types::canonical::sha256_hex(&json!(usage.text)));
                "model_call"
            }
            Err(error) => {
                payload["error"] = json!(error);
                "model_call_failed"
            }
        };
        let mut event = EventDraft::new(action, &p.actor, "model", Some(p.request.model.clone()))
            .payload(payload);
        if let Some(task) = p.task {
            event = event.task(task);
        }
        self.ctx
            .store
            .provenance
            .append(vec![p.verdict.audit, event])
            .await?;
        Ok(())
    }

    async fn decide(
        &self,
        caller: &Principal,
        call: &CallContext,
        agent: Option<&Agent>,
        provider: &str,
        request: &ChatRequest,
    ) -> Result<mesh_policy::Verdict, ApiError> {
        let subject = match agent {
            Some(a) => inputs::agent(a),
            None => inputs::principal(caller),
        };
        let resource = Resource {
            kind: Some("model".into()),
            id: Some(request.model.clone()),
            classification: Some(
                call.data_classification
                    .clone()
                    .unwrap_or_else(|| "internal".into()),
            ),
            attributes: json!({
                "provider": provider,
                "model": request.model,
                "body": request.messages,
            }),
        };
        let actor = Actor {
            name: agent
                .map(|a| a.name.clone())
                .unwrap_or_else(|| caller.name.clone()),
            agent: agent.map(|a| (a.id, a.name.clone())),
            task: call.task_id,
        };
        let ctx = inputs::context(subject, resource, self.ctx.name.as_str());
        self.policy.admit(Point::ModelCall, ctx, &actor).await
    }
}
