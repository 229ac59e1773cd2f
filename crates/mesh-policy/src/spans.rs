//! The `apply_guardrail` span of each enforced decision: the point, what the policy
//! decided, and the decision id its `policy_decision` event carries.

use crate::decision::{Decision, POLICY_ERROR};
use crate::{Actor, Point, PolicyContext};
use mesh_telemetry::{Kind, Span, semconv};

/// Opens the span before evaluation, in the service that enforces the point.
pub(crate) fn start(point: Point, ctx: &PolicyContext) -> Span {
    if !mesh_telemetry::enabled() {
        return Span::none();
    }
    let service = ctx.environment["service"].as_str().unwrap_or("mesh");
    Span::start(
        service,
        semconv::APPLY_GUARDRAIL,
        point.as_str(),
        Kind::Internal,
    )
}

pub(crate) fn finish(mut span: Span, point: Point, decision: &Decision, actor: &Actor) {
    if !span.is_recording() {
        return;
    }
    span.set(semconv::POLICY_POINT, point.as_str());
    span.set(semconv::POLICY_ACTION, decision.action.as_str());
    span.set(semconv::POLICY_REASON, decision.reason.as_str());
    span.set(semconv::PROVENANCE_ACTION, "policy_decision");
    span.set(semconv::PROVENANCE_REF, decision.decision_id.to_string());
    if let Some((id, name)) = &actor.agent {
        span.set(semconv::AGENT_ID, id.to_string());
        span.set(semconv::AGENT_NAME, name.as_str());
    }
    span.set_opt(semconv::TASK_ID, actor.task.map(|t| t.to_string()));
    // A refusal is the guardrail working; only a failed evaluation is an error.
    if decision.reason == POLICY_ERROR {
        span.fail(
            POLICY_ERROR,
            "the policy could not be evaluated (failed closed)",
        );
    }
}
