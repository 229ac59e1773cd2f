//! The `chat {model}` span of a model call (OpenTelemetry GenAI conventions): opened
//! when the call starts, so its policy decisions nest under it, and finished with what
//! its `ModelCall` record says — provider, models, tokens, and the `modelCallId` that
//! finds the `model_call` event.

use crate::providers::Provider;
use crate::trail::{Trail, Usage};
use mesh_service::{ApiError, ServiceName};
use mesh_telemetry::{Kind, Span, semconv};
use uuid::Uuid;

/// Opens the call's span as a child of the caller's (an agent's `invoke_agent`).
pub(crate) fn open(service: &str, requested_model: &str) -> Span {
    let mut span = Span::start(service, semconv::CHAT, requested_model, Kind::Client);
    span.set(semconv::REQUEST_MODEL, requested_model);
    span
}

/// A call refused before it had a trail (unknown model, rate limit, open breaker).
pub(crate) fn refused(mut span: Span, error: &ApiError) {
    span.fail(&error.code, &error.message);
}

impl Trail {
    /// Marks the span failed with `error`, for a call that ends before its record (a
    /// policy refusal of the requested model, a routing error); returns the error.
    pub(crate) fn failing(&mut self, error: ApiError) -> ApiError {
        self.span.fail(&error.code, &error.message);
        error
    }

    /// Completes the span with the call's outcome; called once, as the record is made.
    pub(crate) fn finish_span(
        &mut self,
        agent: Option<&(Uuid, String)>,
        task: Option<Uuid>,
        served: Option<(&Provider, &str, &Usage)>,
        error: Option<&str>,
    ) {
        if let Some((provider, model, usage)) = served {
            // The GenAI client metrics; a call that failed before any provider served
            // it is counted by `Gateway::fail`.
            mesh_telemetry::metrics::record_chat(mesh_telemetry::metrics::ChatCall {
                service: ServiceName::RoutingGateway.as_str(),
                provider: provider.genai_name(),
                request_model: &self.requested,
                response_model: model,
                error_type: error.map(|_| "_OTHER"),
                duration: self.started.elapsed(),
                tokens: error
                    .is_none()
                    .then_some((usage.tokens_in, usage.tokens_out)),
            });
        }
        let mut span = std::mem::take(&mut self.span);
        if !span.is_recording() {
            return;
        }
        span.set(semconv::PROVENANCE_REF, self.call_id.to_string());
        span.set(semconv::RESPONSE_ID, self.reply_id());
        if let Some((id, name)) = agent {
            span.set(semconv::AGENT_ID, id.to_string());
            span.set(semconv::AGENT_NAME, name.as_str());
        }
        span.set_opt(semconv::TASK_ID, task.map(|t| t.to_string()));
        if let Some((provider, model, usage)) = served {
            span.set(semconv::PROVIDER, provider.genai_name());
            span.set(semconv::PROVIDER_CONFIG, provider.name.as_str());
            span.set(semconv::RESPONSE_MODEL, model);
            span.set(semconv::INPUT_TOKENS, usage.tokens_in);
            span.set(semconv::OUTPUT_TOKENS, usage.tokens_out);
        }
        match error {
            None => span.set(semconv::PROVENANCE_ACTION, "model_call"),
            Some(message) => {
                span.set(semconv::PROVENANCE_ACTION, "model_call_failed");
                if !span.failed() {
                    // Failed without a mesh error code (a stream that broke).
                    span.fail("_OTHER", message);
                }
            }
        }
    }
}
