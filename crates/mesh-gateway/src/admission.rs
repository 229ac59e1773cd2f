//! Before a model call: who is calling, which provider/model candidates the route
//! gives, and whether each candidate may be called — the `model.call` policy decision
//! (with its redactions), the model's rate limit and the budgets' reservation.

use crate::Gateway;
use crate::budget::Reservation;
use crate::call::CallContext;
use crate::chat::ChatRequest;
use crate::providers::Provider;
use crate::routing::{AUTO, RouteRequest};
use crate::trail::{Caller, Trail};
use mesh_policy::{Point, Resource, Verdict, inputs};
use mesh_service::ApiError;
use mesh_types::{Agent, PolicyAction, Principal};
use serde_json::json;

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
    /// Who is calling (the principal, and the agent the call names, if any), after
    /// the model check, the rate limits and the agent's breaker.
    pub(crate) async fn caller<'a>(
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
    pub(crate) fn plan(
        &self,
        caller: &Caller<'_>,
        request: &ChatRequest,
        trail: &mut Trail,
    ) -> Result<Vec<(Provider, String)>, ApiError> {
        let plan = self.plan_models(caller, request, trail)?;
        trail.first_choice = plan.first().map(|(_, m)| m.clone());
        Ok(plan)
    }

    pub(crate) fn plan_models(
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
    pub(crate) fn chain(&self, model: &str, agent: Option<&Agent>) -> Vec<(Provider, String)> {
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
}
