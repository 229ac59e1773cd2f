//! routing-gateway (port 5001): the OpenAI-compatible model ingress. Every model call
//! passes the `model.call` policy point (the decision may mask what the prompt carries
//! before it reaches the provider) and leaves a `ModelCall` in provenance, linked from
//! the calling agent.
//!
//! This is the gateway's first slice: the built-in `sim` provider, non-streaming calls.
//! Upstream providers, routing strategies, failover, rate limits and budgets are the
//! routing-gateway issue's.

mod chat;
mod routes;
mod sim;

pub use chat::{ChatRequest, Completion, Message};
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
}

/// Mesh context a caller may attach to a model call (as `x-mesh-*` headers).
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    pub agent_id: Option<Uuid>,
    pub task_id: Option<Uuid>,
    pub data_classification: Option<String>,
}

impl Gateway {
    pub fn new(ctx: ServiceContext, policy: Arc<Enforcer>) -> Arc<Self> {
        Arc::new(Self { ctx, policy })
    }

    pub fn context(&self) -> &ServiceContext {
        &self.ctx
    }

    /// The models this gateway serves, as `(id, provider)`.
    pub fn models(&self) -> Vec<(&'static str, &'static str)> {
        sim::MODELS.iter().map(|m| (*m, sim::PROVIDER)).collect()
    }

    pub async fn chat(
        &self,
        caller: &Principal,
        call: CallContext,
        mut request: ChatRequest,
    ) -> Result<Value, ApiError> {
        if !sim::MODELS.contains(&request.model.as_str()) {
            return Err(ApiError::not_found(format!(
                "model `{}` does not exist; known models: {}",
                request.model,
                sim::MODELS.join(", ")
            ))
            .with_field("model"));
        }
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
        let verdict = self.decide(caller, &call, agent.as_ref(), &request).await?;
        if let Some(messages) = verdict.input["resource"]["attributes"].get("body")
            && let Ok(messages) = serde_json::from_value(messages.clone())
        {
            request.messages = messages;
        }
        let started = Instant::now();
        let completion = sim::complete(&request);
        let latency_ms = started.elapsed().as_millis() as u64;
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
            "provider": sim::PROVIDER,
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
                "provider": sim::PROVIDER,
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
