//! What a call carries while it runs and leaves behind: the caller, the usage, and the
//! trail of decisions and failed attempts that becomes its `ModelCall` record.

use crate::budget;
use crate::call::CallContext;
use crate::chat::{ChatRequest, Completion};
use crate::providers::Provider;
use mesh_policy::Actor;
use mesh_service::ApiError;
use mesh_store::Spend;
use mesh_types::{Agent, EventDraft, Principal};
use serde_json::{Value, json};
use std::time::Instant;
use uuid::Uuid;

/// Who is calling, resolved once for the whole chain.
pub(crate) struct Caller<'a> {
    pub principal: &'a Principal,
    pub agent: Option<Agent>,
    pub call: CallContext,
}

impl Caller<'_> {
    pub fn actor(&self) -> Actor {
        Actor {
            name: self.name(),
            agent: self.agent.as_ref().map(|a| (a.id, a.name.clone())),
            task: self.call.task_id,
        }
    }

    pub fn name(&self) -> String {
        self.agent
            .as_ref()
            .map(|a| a.name.clone())
            .unwrap_or_else(|| self.principal.name.clone())
    }
}

/// What a call used, for its `ModelCall` record.
pub(crate) struct Usage {
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub text: String,
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

/// The call as it is recorded: every decision taken and every failed attempt, then
/// the provider that answered (if one did).
pub(crate) struct Trail {
    pub call_id: Uuid,
    pub started: Instant,
    /// The same moment on the wall clock: the event's own timestamp is when the log
    /// appended it, which for batched records is after the call ended.
    started_at: mesh_types::time::Timestamp,
    pub decisions: Vec<EventDraft>,
    pub attempts: Vec<Value>,
    pub redacted: bool,
    pub stream: bool,
    pub requested: String,
    /// The model tried first (the routing choice for `auto`): serving another is a
    /// failover.
    pub first_choice: Option<String>,
    /// A candidate was passed over because its budget could not cover the call.
    pub degraded: bool,
    /// A candidate was passed over because it was at its rate limit.
    pub degraded_for_load: bool,
    /// The 402 to answer if every candidate was over budget.
    pub budget_error: Option<ApiError>,
    /// For `auto` calls, the strategy routing chose.
    pub strategy: Option<crate::Strategy>,
    /// For ensemble strategies: who was asked and how they agreed.
    pub ensemble: Option<Value>,
    /// The call's OpenTelemetry span (inert when telemetry is off).
    pub span: mesh_telemetry::Span,
    /// The messages as sent (after any redaction): archived, and hashed in the event.
    pub prompt: Value,
    /// The data's classification (`x-mesh-data-classification`), for the archive.
    pub classification: String,
}

/// The SHA-256 of the prompt and the response as archived, when they were.
#[derive(Default)]
pub(crate) struct Hashes {
    pub prompt: Option<String>,
    pub response: Option<String>,
}

/// What a call's usage costs at `provider`'s prices.
pub(crate) fn spend(provider: &Provider, usage: &Usage) -> Spend {
    Spend {
        tokens: (usage.tokens_in + usage.tokens_out) as i64,
        cost_micros: budget::cost_micros(provider, usage.tokens_in, usage.tokens_out),
    }
}

impl Trail {
    pub fn new(request: &ChatRequest, classification: Option<&str>) -> Self {
        Trail {
            call_id: Uuid::now_v7(),
            started: Instant::now(),
            started_at: mesh_types::time::now(),
            decisions: Vec::new(),
            attempts: Vec::new(),
            redacted: false,
            stream: request.stream == Some(true),
            requested: request.model.clone(),
            first_choice: None,
            degraded: false,
            degraded_for_load: false,
            budget_error: None,
            strategy: None,
            ensemble: None,
            span: mesh_telemetry::Span::none(),
            prompt: json!(request.messages),
            classification: classification.unwrap_or("internal").to_string(),
        }
    }

    /// Queues the prompt and the response for the archive. They are archived as the
    /// canonical JSON whose SHA-256 the event carries (`promptSha256`,
    /// `responseSha256`), so a hash in provenance names exactly the archived bytes.
    /// Returns their hashes, so the event does not serialise and hash them again.
    pub fn archive(&self, archive: &mesh_archive::Archive, usage: Option<&Usage>) -> Hashes {
        let canonical = |v: &Value| mesh_types::canonical::to_string(v).into_bytes();
        Hashes {
            prompt: Some(archive.submit(&self.classification, canonical(&self.prompt))),
            response: usage
                .map(|usage| archive.submit(&self.classification, canonical(&json!(usage.text)))),
        }
    }

    pub fn reply_id(&self) -> String {
        format!("chatcmpl-{}", self.call_id.simple())
    }

    pub fn event(
        &self,
        actor: &str,
        agent: Option<(Uuid, String)>,
        task: Option<Uuid>,
        served: Option<(&Provider, &str, &Usage)>,
        error: Option<&str>,
        hashes: Hashes,
    ) -> EventDraft {
        let mut payload = json!({
            "modelCallId": self.call_id,
            "requestedModel": self.requested,
            "startedAt": mesh_types::time::format(&self.started_at),
            "latencyMs": self.started.elapsed().as_millis() as u64,
            "agentId": agent.as_ref().map(|a| a.0),
            "agentName": agent.as_ref().map(|a| a.1.clone()),
            "redacted": self.redacted,
            "stream": self.stream,
            "failedAttempts": self.attempts,
            "degradedForBudget": self.degraded,
            "degradedForLoad": self.degraded_for_load,
            "promptSha256": hashes
                .prompt
                .unwrap_or_else(|| mesh_types::canonical::sha256_hex(&self.prompt)),
        });
        if let Some(ensemble) = &self.ensemble {
            payload["ensemble"] = ensemble.clone();
        }
        let action = match (&served, error) {
            (Some((provider, model, usage)), None) => {
                payload["provider"] = json!(provider.name);
                payload["model"] = json!(model);
                payload["cost"] = json!(
                    budget::cost_micros(provider, usage.tokens_in, usage.tokens_out) as f64
                        / 1_000_000.0
                );
                payload["failover"] = json!(self.first_choice.as_deref() != Some(*model));
                payload["tokensIn"] = json!(usage.tokens_in);
                payload["tokensOut"] = json!(usage.tokens_out);
                let response = hashes
                    .response
                    .unwrap_or_else(|| mesh_types::canonical::sha256_hex(&json!(usage.text)));
                payload["responseSha256"] = json!(response);
                // The name the record had before archives: the same hash.
                payload["outputSha256"] = json!(response);
                "model_call"
            }
            (served, error) => {
                if let Some((provider, model, _)) = served {
                    payload["provider"] = json!(provider.name);
                    payload["model"] = json!(model);
                }
                payload["error"] = json!(error);
                "model_call_failed"
            }
        };
        let mut event =
            EventDraft::new(action, actor, "model", Some(self.requested.clone())).payload(payload);
        if let Some(task) = task {
            event = event.task(task);
        }
        event
    }
}

pub(crate) fn now_secs() -> i64 {
    mesh_types::time::now().timestamp()
}
