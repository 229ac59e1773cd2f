//! One model call, whole or streamed: the provider chain (the requested model, then
//! fallbacks), each candidate admitted first (`admission.rs`: policy, rate limit,
//! budget), retries with backoff on transient failures and the circuit breakers; the
//! outcome is recorded by `record.rs`.

use crate::admission::Admission;
use crate::budget::{self, Reservation};
use crate::chat::{ChatRequest, Completion};
use crate::providers::{Provider, Upstream};
use crate::resilience::{CallError, Failure, backoff};
use crate::routing::{AUTO, Strategy};
use crate::trail::{Trail, Usage, now_secs, spend};
use crate::{Gateway, spans, stream};
use mesh_service::ApiError;
use mesh_store::Spend;
use mesh_types::Principal;
use serde_json::{Value, json};
use std::sync::Arc;
use uuid::Uuid;

/// Mesh context a caller may attach to a model call (as `x-mesh-*` headers).
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    pub agent_id: Option<Uuid>,
    pub task_id: Option<Uuid>,
    pub data_classification: Option<String>,
    /// For `model: "auto"`: how to choose, the latency objective, and what routing
    /// rules match on.
    pub strategy: Option<Strategy>,
    pub slo_ms: Option<f64>,
    pub task_type: Option<String>,
    pub risk_tier: Option<mesh_types::RiskTier>,
}

/// How the chain ended for a streaming call.
enum Opened {
    Whole(Completion, Provider, String),
    Relay(reqwest::Response, Provider, String, Option<Reservation>),
}

/// The protocol a client speaks, which its stream must be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OpenAI chunks; `usage`: the client asked for the closing usage chunk
    /// (`stream_options.include_usage`), which is sent only when asked for.
    OpenAi {
        usage: bool,
    },
    Anthropic,
}

/// A finished call: the completion, the model that produced it, the reply id.
pub struct Completed {
    pub completion: Completion,
    pub model: String,
    pub id: String,
}

impl Gateway {
    /// A non-streaming call: the `chat.completion` object.
    pub async fn chat(
        &self,
        principal: &Principal,
        call: CallContext,
        request: ChatRequest,
    ) -> Result<Value, ApiError> {
        let done = self.complete(principal, call, request).await?;
        Ok(done.completion.to_openai(&done.id, &done.model, now_secs()))
    }

    /// A whole call, whatever the client's protocol: what answered, and as what.
    pub async fn complete(
        &self,
        principal: &Principal,
        call: CallContext,
        request: ChatRequest,
    ) -> Result<Completed, ApiError> {
        let span = spans::open(self.ctx.name.as_str(), &request.model);
        mesh_telemetry::within(
            span.context(),
            self.complete_in(span, principal, call, request),
        )
        .await
    }

    async fn complete_in(
        &self,
        span: mesh_telemetry::Span,
        principal: &Principal,
        call: CallContext,
        request: ChatRequest,
    ) -> Result<Completed, ApiError> {
        let caller = match self.caller(principal, call, &request).await {
            Ok(caller) => caller,
            Err(err) => {
                spans::refused(span, &err);
                return Err(err);
            }
        };
        let mut trail = Trail::new(&request, caller.call.data_classification.as_deref());
        trail.span = span;
        let mut last_error = None;
        let auto = request.model == AUTO;
        let plan = self
            .plan(&caller, &request, &mut trail)
            .map_err(|e| trail.failing(e))?;
        if let Some(strategy @ (Strategy::DefensiveMultiModel | Strategy::Consensus)) =
            trail.strategy
        {
            return self
                .ensemble(&caller, &request, trail, plan, strategy)
                .await;
        }
        for (i, (provider, model)) in plan.into_iter().enumerate() {
            let (request, reservation) = match self
                .admit(
                    &caller,
                    i == 0,
                    auto,
                    &provider,
                    &model,
                    &request,
                    &mut trail,
                )
                .await
                .map_err(|e| trail.failing(e))?
            {
                Admission::Go(request, reservation) => (request, reservation),
                Admission::Skip => continue,
                Admission::Stop(err) => return Err(self.fail(&caller, trail, err).await),
            };
            let outcome = self
                .attempt(&provider, &mut trail, || {
                    provider.complete(&self.http, &request)
                })
                .await;
            let used = outcome
                .as_ref()
                .map(|c| spend(&provider, &Usage::from(c)))
                .unwrap_or_default();
            budget::settle(&self.ctx.store, reservation, used).await;
            match outcome {
                Ok(completion) => {
                    let id = trail.reply_id();
                    self.record(
                        &caller,
                        trail,
                        Some((&provider, &model, Usage::from(&completion))),
                        None,
                    )
                    .await?;
                    return Ok(Completed {
                        completion,
                        model,
                        id,
                    });
                }
                Err(err) => last_error = Some(err),
            }
            if matches!(
                last_error,
                Some(CallError {
                    failure: Failure::Rejected(_),
                    ..
                })
            ) {
                break;
            }
        }
        Err(self.give_up(&caller, trail, last_error).await)
    }

    /// A streaming call: SSE frames for the client. Failover works until the first
    /// byte; a relayed stream's `ModelCall` is recorded when the stream ends. The
    /// ensemble strategies hold as for a whole call (see `ensemble_stream.rs`).
    pub async fn chat_stream(
        self: &Arc<Self>,
        principal: &Principal,
        call: CallContext,
        request: ChatRequest,
        client: Protocol,
    ) -> Result<axum::body::Body, ApiError> {
        let span = spans::open(self.ctx.name.as_str(), &request.model);
        let parent = span.context();
        mesh_telemetry::within(
            parent,
            self.chat_stream_in(span, principal, call, request, client),
        )
        .await
    }

    async fn chat_stream_in(
        self: &Arc<Self>,
        span: mesh_telemetry::Span,
        principal: &Principal,
        call: CallContext,
        request: ChatRequest,
        client: Protocol,
    ) -> Result<axum::body::Body, ApiError> {
        let caller = match self.caller(principal, call, &request).await {
            Ok(caller) => caller,
            Err(err) => {
                spans::refused(span, &err);
                return Err(err);
            }
        };
        let mut trail = Trail::new(&request, caller.call.data_classification.as_deref());
        trail.span = span;
        let mut last_error = None;
        let mut opened = None;
        let auto = request.model == AUTO;
        let plan = self
            .plan(&caller, &request, &mut trail)
            .map_err(|e| trail.failing(e))?;
        match trail.strategy {
            Some(Strategy::DefensiveMultiModel) => {
                return self
                    .race_streams(&caller, &request, trail, plan, client)
                    .await;
            }
            // The vote needs every reply whole, so the chosen one is streamed after.
            Some(Strategy::Consensus) => {
                let done = self
                    .ensemble(&caller, &request, trail, plan, Strategy::Consensus)
                    .await?;
                return Ok(stream::whole(
                    &done.completion,
                    &done.id,
                    &done.model,
                    client,
                ));
            }
            _ => {}
        }
        for (i, (provider, model)) in plan.into_iter().enumerate() {
            let (request, reservation) = match self
                .admit(
                    &caller,
                    i == 0,
                    auto,
                    &provider,
                    &model,
                    &request,
                    &mut trail,
                )
                .await
                .map_err(|e| trail.failing(e))?
            {
                Admission::Go(request, reservation) => (request, reservation),
                Admission::Skip => continue,
                Admission::Stop(err) => return Err(self.fail(&caller, trail, err).await),
            };
            match self
                .attempt(&provider, &mut trail, || {
                    provider.open_stream(&self.http, &request)
                })
                .await
            {
                Ok(Upstream::Whole(c)) => {
                    let used = spend(&provider, &Usage::from(&c));
                    budget::settle(&self.ctx.store, reservation, used).await;
                    opened = Some(Opened::Whole(c, provider, model));
                }
                Ok(Upstream::Relay(r)) => {
                    opened = Some(Opened::Relay(r, provider, model, reservation))
                }
                Err(err) => {
                    budget::settle(&self.ctx.store, reservation, Spend::default()).await;
                    last_error = Some(err);
                }
            }
            if opened.is_some()
                || matches!(
                    last_error,
                    Some(CallError {
                        failure: Failure::Rejected(_),
                        ..
                    })
                )
            {
                break;
            }
        }
        match opened {
            None => Err(self.give_up(&caller, trail, last_error).await),
            Some(Opened::Whole(completion, provider, model)) => {
                let body = stream::whole(&completion, &trail.reply_id(), &model, client);
                self.record(
                    &caller,
                    trail,
                    Some((&provider, &model, Usage::from(&completion))),
                    None,
                )
                .await?;
                Ok(body)
            }
            Some(Opened::Relay(response, provider, model, reservation)) => {
                let actor = caller.actor();
                let relayed = stream::Relayed {
                    provider,
                    model,
                    reservation,
                    client,
                };
                let bytes = futures_util::StreamExt::boxed(response.bytes_stream());
                Ok(self.relay(bytes, relayed, trail, actor))
            }
        }
    }

    /// Up to the provider's `max_attempts` tries while failures are transient, with
    /// jittered backoff between them; the breaker sees each outcome and, once open,
    /// stops calls before they are made.
    async fn attempt<T, F, Fut>(
        &self,
        provider: &Provider,
        trail: &mut Trail,
        call: F,
    ) -> Result<T, CallError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, CallError>>,
    {
        let mut last = None;
        for attempt in 0..provider.max_attempts {
            if !provider.breaker.allow() {
                let err = CallError {
                    failure: Failure::Transient,
                    message: format!("provider {}: circuit breaker open", provider.name),
                };
                trail
                    .attempts
                    .push(json!({"provider": provider.name, "error": err.message}));
                return Err(err);
            }
            match call().await {
                Ok(value) => {
                    provider.breaker.success();
                    return Ok(value);
                }
                Err(err) => {
                    if !matches!(err.failure, Failure::Rejected(_)) {
                        provider.breaker.failure();
                    }
                    trail.attempts.push(json!({"provider": provider.name, "attempt": attempt + 1, "error": err.message}));
                    let retry =
                        err.failure == Failure::Transient && attempt + 1 < provider.max_attempts;
                    last = Some(err);
                    if !retry {
                        break;
                    }
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
        Err(last.unwrap_or(CallError {
            failure: Failure::Transient,
            message: format!("provider {}: no attempt made", provider.name),
        }))
    }
}
