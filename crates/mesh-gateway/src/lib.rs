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

pub use chat::{ChatRequest, Completion, Message};
pub use providers::{Provider, ProviderConfig, resolve_secret};
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

    pub async fn chat(
        &self,
        caller: &Principal,
        call: CallContext,
        mut request: ChatRequest,
    ) -> Result<Value, ApiError> {
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
        if request.stream == Some(true) {
            return Err(ApiError::invalid(
                "stream",
                "stream: streaming is not served by this gateway yet; send stream=false",
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
        let started = Instant::now();
        let outcome = provider.complete(&self.http, &request).await;
        let latency_ms = started.elapsed().as_millis() as u64;
        let completion = match outcome {
            Ok(c) => c,
            Err(err) => {
                // The decision stands in the log even when the provider failed.
                let failed = EventDraft::new("model_call_failed", &caller.name, "model", Some(request.model.clone()))
                    .payload(json!({"provider": provider.name, "model": request.model, "error": err.message, "latencyMs": latency_ms}));
                self.ctx
                    .store
                    .provenance
                    .append(vec![verdict.audit, failed])
                    .await?;
                return Err(err);
            }
        };
        let call_id = Uuid::now_v7();
        let created = mesh_types::time::now().timestamp();
        let reply = completion.to_openai(
            &format!("chatcmpl-{}", call_id.simple()),
            &request.model,
            created,
        );
        let actor_name = agent
            .as_ref()
            .map(|a| a.name.clone())
            .unwrap_or_else(|| caller.name.clone());
        let mut event = EventDraft::new(
            "model_call",
            &actor_name,
            "model",
            Some(request.model.clone()),
        )
        .payload(json!({
            "modelCallId": call_id,
            "provider": provider.name,
            "model": request.model,
            "tokensIn": completion.prompt_tokens,
            "tokensOut": completion.completion_tokens,
            "latencyMs": latency_ms,
            "agentId": agent.as_ref().map(|a| a.id),
            "agentName": agent.as_ref().map(|a| a.name.clone()),
            "outputSha256": mesh_types::canonical::sha256_hex(&json!(completion.content)),
            "redacted": verdict.decision.action == mesh_types::PolicyAction::AllowWithRedactions,
        }));
        if let Some(task) = call.task_id {
            event = event.task(task);
        }
        self.ctx
            .store
            .provenance
            .append(vec![verdict.audit, event])
            .await?;
        Ok(reply)
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
