//! One model call: the policy decision, the provider chain (the requested model, then
//! fallbacks), retries with backoff on transient failures, the circuit breakers, and
//! the `ModelCall` record.

use crate::budget::{self, Reservation};
use crate::chat::{ChatRequest, Completion};
use crate::providers::{Provider, Upstream};
use crate::resilience::{CallError, Failure, backoff};
use crate::routing::{AUTO, RouteRequest, Strategy};
use crate::trail::{Caller, Hashes, Trail, Usage, now_secs, spend};
use crate::{Gateway, spans, stream};
use mesh_policy::{Point, Resource, Verdict, inputs};
use mesh_service::ApiError;
use mesh_store::Spend;
use mesh_types::{Agent, PolicyAction, Principal};
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
    OpenAi,
    Anthropic,
}

/// A finished call: the completion, the model that produced it, the reply id.
pub struct Completed {
    pub completion: Completion,
    pub model: String,
    pub id: String,
}

/// What the policy and the budgets say about one candidate.
pub(crate) enum Admission {
    /// Call it with this request (redactions applied), holding this reservation.
    Go(ChatRequest, Option<Reservation>),
    /// Try the next candidate.
    Skip,
    /// Answer the client with this error.
    Stop(ApiError),
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

    async fn caller<'a>(
        &self,
        principal: &'a Principal,
        call: CallContext,
        request: &ChatRequest,
    ) -> Result<Caller<'a>, ApiError> {
        if request.model != AUTO && self.provider_of(&request.model).is_none() {
            let known: Vec<&str> = self.models().into_iter().map(|(m, _)| m).collect();
            return Err(ApiError::not_found(format!(
                "model `{}` does not exist; known models: {}",
                request.model,
                known.join(", ")
            ))
            .with_field("model"));
        }
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
        // Limits first: a call over its rate costs no policy decision and no record.
        if let Some(limiter) = &self.limiter {
            let agent_key = agent.as_ref().map(|a| a.id.to_string());
            // An `auto` call's model bucket is taken per candidate in `admit`.
            let model = (request.model != AUTO).then_some(request.model.as_str());
            let buckets =
                limiter.buckets(&principal.key_id.to_string(), agent_key.as_deref(), model);
            limiter.acquire(&buckets).await?;
        }
        if let Some(agent) = &agent
            && !self.agent_breaker(agent.id).allow()
        {
            let mut err = ApiError::unavailable(
                "agent_circuit_open",
                format!(
                    "agent {}'s model calls keep failing; its circuit breaker is open",
                    agent.name
                ),
            );
            err.retry_after_secs = Some(self.agent_breaker.cooldown().as_secs().max(1));
            return Err(err);
        }
        Ok(Caller {
            principal,
            agent,
            call,
        })
    }

    /// The models to try, in order: for `auto`, the routing decision's ranking (the
    /// decision recorded with the call); otherwise [`Gateway::chain`].
    fn plan(
        &self,
        caller: &Caller<'_>,
        request: &ChatRequest,
        trail: &mut Trail,
    ) -> Result<Vec<(Provider, String)>, ApiError> {
        let plan = self.plan_models(caller, request, trail)?;
        trail.first_choice = plan.first().map(|(_, m)| m.clone());
        Ok(plan)
    }

    fn plan_models(
        &self,
        caller: &Caller<'_>,
        request: &ChatRequest,
        trail: &mut Trail,
    ) -> Result<Vec<(Provider, String)>, ApiError> {
        if request.model != AUTO {
            return Ok(self.chain(&request.model, caller.agent.as_ref()));
        }
        let route = RouteRequest {
            data_classification: caller
                .call
                .data_classification
                .as_deref()
                .and_then(|c| c.parse().ok()),
            strategy: caller.call.strategy,
            task_type: caller.call.task_type.clone(),
            risk_tier: caller.call.risk_tier,
            slo_ms: caller.call.slo_ms,
            ..RouteRequest::default()
        };
        let decision = self.route(caller.principal, &route)?;
        trail.strategy = Some(decision.strategy);
        trail
            .decisions
            .push(self.route_event(caller.principal, &decision, &route));
        Ok(decision
            .ranking
            .iter()
            .filter_map(|m| self.provider_of(m).map(|p| (p.clone(), m.clone())))
            .collect())
    }

    /// The requested model's provider, then the calling agent's fallback (when the
    /// request is for its preferred model), then the provider's own fallback; each
    /// provider once.
    fn chain(&self, model: &str, agent: Option<&Agent>) -> Vec<(Provider, String)> {
        let mut models = vec![model.to_string()];
        if let Some(pref) = agent.and_then(|a| a.model_preference.as_ref())
            && pref.model == model
            && let Some(fallback) = &pref.fallback_model
        {
            models.push(fallback.clone());
        }
        if let Some(fallback) = self
            .provider_of(model)
            .and_then(|p| p.fallback_model.clone())
        {
            models.push(fallback);
        }
        let mut chain: Vec<(Provider, String)> = Vec::new();
        for m in models {
            if let Some(p) = self.provider_of(&m)
                && !chain.iter().any(|(q, _)| q.name == p.name)
            {
                chain.push((p.clone(), m));
            }
        }
        chain
    }

    /// `model.call` for one candidate, then its budget reservation. The first
    /// candidate's refusal is the answer; a fallback the policy refuses (say, not
    /// approved for the data) is skipped. A candidate over budget is the answer (402)
    /// unless the gateway is choosing (`auto`): then it degrades to the next one.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn admit(
        &self,
        caller: &Caller<'_>,
        first: bool,
        auto: bool,
        provider: &Provider,
        model: &str,
        request: &ChatRequest,
        trail: &mut Trail,
    ) -> Result<Admission, ApiError> {
        let subject = match &caller.agent {
            Some(a) => inputs::agent(a),
            None => inputs::principal(caller.principal),
        };
        let resource = Resource {
            kind: Some("model".into()),
            id: Some(model.to_string()),
            classification: Some(
                caller
                    .call
                    .data_classification
                    .clone()
                    .unwrap_or_else(|| "internal".into()),
            ),
            attributes: json!({"provider": provider.name, "model": model, "body": request.messages}),
        };
        let ctx = inputs::context(subject, resource, self.ctx.name.as_str());
        let verdict: Verdict = self.policy.enforce(Point::ModelCall, ctx, &caller.actor());
        if !verdict.permits() {
            if first && !auto {
                return Err(self.policy.refuse(verdict).await);
            }
            trail.attempts.push(
                json!({"provider": provider.name, "model": model, "error": verdict.decision.reason}),
            );
            trail.decisions.push(verdict.audit);
            return Ok(Admission::Skip);
        }
        let mut out = request.clone();
        out.model = model.to_string();
        // Only a redacting decision changes the input; otherwise the messages (and the
        // prompt the trail made of them) are the client's, and are not read back.
        if verdict.decision.action == PolicyAction::AllowWithRedactions {
            if let Some(messages) = verdict.input["resource"]["attributes"].get("body")
                && let Ok(messages) = serde_json::from_value(messages.clone())
            {
                out.messages = messages;
            }
            trail.redacted = true;
            // What is archived and hashed is what left for the provider, redactions
            // applied.
            trail.prompt = json!(out.messages);
        } else if trail.redacted {
            // An earlier candidate's redactions do not apply to this one's request.
            trail.prompt = json!(out.messages);
        }
        trail.decisions.push(verdict.audit);
        // Under load, a routed call passes over a model at its rate limit.
        if auto
            && let Some(limiter) = &self.limiter
            && !limiter.try_model(model).await?
        {
            trail.attempts.push(json!({"provider": provider.name, "model": model, "error": "model rate limit reached"}));
            trail.degraded_for_load = true;
            return Ok(Admission::Skip);
        }
        let reservation = match self
            .budgets
            .reserve(
                &self.ctx.store,
                caller.principal,
                caller.agent.as_ref(),
                caller.call.task_id,
                provider,
                &out,
            )
            .await
        {
            Ok(reservation) => reservation,
            Err(err) => {
                trail
                    .attempts
                    .push(json!({"provider": provider.name, "model": model, "error": err.message}));
                if auto {
                    trail.degraded = true;
                    trail.budget_error = Some(err);
                    return Ok(Admission::Skip);
                }
                return Ok(Admission::Stop(err));
            }
        };
        Ok(Admission::Go(out, reservation))
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

    /// Records the failed call and says why: a refusal by the provider keeps its 4xx;
    /// everything else is a 502 naming the providers tried.
    pub(crate) async fn give_up(
        &self,
        caller: &Caller<'_>,
        trail: Trail,
        last: Option<CallError>,
    ) -> ApiError {
        if last.is_some()
            && let Some(agent) = &caller.agent
        {
            self.agent_breaker(agent.id).failure();
        }
        let error = match &last {
            Some(CallError {
                failure: Failure::Rejected(status),
                message,
            }) => ApiError::new(
                axum::http::StatusCode::from_u16(*status)
                    .unwrap_or(axum::http::StatusCode::BAD_REQUEST),
                "provider_rejected",
                message.clone(),
            ),
            Some(CallError { message, .. }) => ApiError::new(
                axum::http::StatusCode::BAD_GATEWAY,
                "provider_failed",
                message.clone(),
            ),
            None if trail.degraded_for_load && trail.budget_error.is_none() => {
                ApiError::rate_limited("every eligible model is at its rate limit", 1)
            }
            None => trail.budget_error.clone().unwrap_or_else(|| {
                ApiError::new(
                    axum::http::StatusCode::BAD_GATEWAY,
                    "provider_failed",
                    "no provider could take the call",
                )
            }),
        };
        self.fail(caller, trail, error).await
    }

    /// Records the call as failed with `error`, and returns it.
    pub(crate) async fn fail(
        &self,
        caller: &Caller<'_>,
        mut trail: Trail,
        error: ApiError,
    ) -> ApiError {
        trail.span.fail(&error.code, &error.message);
        if let Err(e) = self.record(caller, trail, None, Some(&error.message)).await {
            return e;
        }
        error
    }

    /// Queues the decisions and the call (`model_call` with what answered, or
    /// `model_call_failed`) for the provenance log, together. Like OPA's decision logs,
    /// they are written in batches and the reply does not wait for the commit: a model
    /// call takes far longer than the write, but a synchronous commit would put an fsync
    /// on every call's path. The buffer is flushed before the process exits; a crash
    /// loses at most what was queued in the last moments.
    pub(crate) async fn record(
        &self,
        caller: &Caller<'_>,
        mut trail: Trail,
        served: Option<(&Provider, &str, Usage)>,
        error: Option<&str>,
    ) -> Result<(), ApiError> {
        let agent = caller.agent.as_ref().map(|a| (a.id, a.name.clone()));
        trail.finish_span(
            agent.as_ref(),
            caller.call.task_id,
            served.as_ref().map(|(p, m, u)| (*p, *m, u)),
            error,
        );
        if let Some((_, model, _)) = &served {
            self.latency
                .observe(model, trail.started.elapsed().as_secs_f64() * 1000.0);
            if let Some(agent) = &caller.agent {
                self.agent_breaker(agent.id).success();
            }
        }
        let hashes = match self.archive.get() {
            // A failed call's event names no response, so none is archived.
            Some(archive) => {
                let response = served.as_ref().filter(|_| error.is_none());
                trail.archive(archive, response.map(|(_, _, u)| u))
            }
            None => Hashes::default(),
        };
        let event = trail.event(
            &caller.name(),
            caller.agent.as_ref().map(|a| (a.id, a.name.clone())),
            caller.call.task_id,
            served.as_ref().map(|(p, m, u)| (*p, *m, u)),
            error,
            hashes,
        );
        let mut events = trail.decisions;
        events.push(event);
        self.records.log_all(events).await;
        Ok(())
    }
}
