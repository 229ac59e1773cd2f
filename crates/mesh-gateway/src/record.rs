//! After a model call: the failure the client hears, and the call's provenance — the
//! policy decisions and the `model_call` (or `model_call_failed`) event, queued
//! together for the log, with the prompt and response archived.

use crate::Gateway;
use crate::providers::Provider;
use crate::resilience::{CallError, Failure};
use crate::trail::{Caller, Hashes, Trail, Usage};
use mesh_service::ApiError;

impl Gateway {
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
        self.count_failure(&trail, &error);
        if let Err(e) = self.record(caller, trail, None, Some(&error.message)).await {
            return e;
        }
        error
    }

    /// The GenAI duration metric of a call no provider served, when one was tried:
    /// the last provider tried, with the mesh's error code as `error.type`.
    fn count_failure(&self, trail: &Trail, error: &ApiError) {
        let Some(tried) = trail.attempts.last() else {
            return;
        };
        let Some(provider) = tried["provider"]
            .as_str()
            .and_then(|name| self.providers.iter().find(|p| p.name == name))
        else {
            return;
        };
        let model = tried["model"]
            .as_str()
            .or(trail.first_choice.as_deref())
            .unwrap_or(&trail.requested);
        mesh_telemetry::metrics::record_chat(mesh_telemetry::metrics::ChatCall {
            service: mesh_service::ServiceName::RoutingGateway.as_str(),
            provider: provider.genai_name(),
            request_model: &trail.requested,
            response_model: model,
            error_type: Some(&error.code),
            duration: trail.started.elapsed(),
            tokens: None,
        });
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
