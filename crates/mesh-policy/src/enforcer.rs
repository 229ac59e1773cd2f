//! The enforcer every service holds: the policy set in force, decisions for the
//! enforcement points, the `policy_decision` provenance event each decision leaves, and
//! hot reload that never replaces a good policy set with a broken one.
//!
//! Decisions are evaluated in the process that enforces them, the way OPA runs as a
//! library or sidecar: a decision costs microseconds, not a network round trip, and a
//! point keeps working while port 5002 is busy. Every process loads the same bundle.

use crate::bundle::PolicyLocation;
use crate::decision::{Decision, PolicyContext, apply_mask, redact, strip_credentials};
use crate::engine::CompiledPolicies;
use crate::{Point, PolicyError};
use mesh_service::{ApiError, Readiness};
use mesh_store::Store;
use mesh_types::time::Timestamp;
use mesh_types::{EventDraft, PolicyAction};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::watch;
use uuid::Uuid;

/// The rule every enforcement point evaluates.
pub const DECISION_RULE: &str = "data.mesh.decision";
pub const MASK_RULE: &str = "data.system.log.mask";

/// The policy set in force and the last attempt to replace it, for `/readyz` and
/// `GET /api/v1/policy/status`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    pub revision: String,
    pub origin: String,
    pub modules: Vec<String>,
    #[serde(with = "mesh_types::time::rfc3339_micros")]
    pub loaded_at: Timestamp,
    pub last_error: Option<String>,
}

pub struct Enforcer {
    current: RwLock<Arc<CompiledPolicies>>,
    location: PolicyLocation,
    status: Mutex<PolicyStatus>,
    store: Store,
    readiness: Readiness,
}

/// Who a decision is about, for the provenance event and the graph's `SUBJECT_TO` edge.
#[derive(Debug, Clone, Default)]
pub struct Actor {
    /// Principal or agent name recorded as the event's actor.
    pub name: String,
    pub agent: Option<(Uuid, String)>,
    pub task: Option<Uuid>,
}

impl Actor {
    pub fn named(name: &str) -> Self {
        Actor {
            name: name.to_string(),
            ..Actor::default()
        }
    }
}

/// A decision before it is logged; see [`Enforcer::judge`].
pub struct Judgement {
    pub point: Point,
    pub decision: Decision,
    /// The input after redaction, when the decision asked for any.
    pub redacted: Option<Value>,
    pub original: Value,
    pub eval_ns: u64,
    pub policies: Arc<CompiledPolicies>,
}

/// One decision as the decision log records it.
pub struct DecisionRecord {
    /// The enforcement point, or `data_api` for a query of OPA's Data API.
    pub point: String,
    /// The document evaluated, as OPA writes it (`mesh/decision`).
    pub path: String,
    pub decision_id: Uuid,
    pub result: Value,
    pub input: Value,
    pub eval_ns: u64,
}

/// A decision, the (possibly redacted) policy input, and the event recording it.
pub struct Verdict {
    pub decision: Decision,
    /// The policy input after the decision's redactions: points read their payload back
    /// out of it.
    pub input: Value,
    pub audit: EventDraft,
}

impl Verdict {
    pub fn permits(&self) -> bool {
        self.decision.permits()
    }

    /// The resource attributes after redaction, read back as the point's own type;
    /// `original` when the decision asked for no redaction.
    pub fn redacted_attributes<T: serde::de::DeserializeOwned>(
        &self,
        original: T,
    ) -> Result<T, ApiError> {
        if self.decision.action != PolicyAction::AllowWithRedactions {
            return Ok(original);
        }
        serde_json::from_value(self.input["resource"]["attributes"].clone()).map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "policy_denied",
                format!("denied by policy: the redactions left an invalid request ({e})"),
            )
        })
    }

    /// The 403 a refused request gets: the policy's reason, and for escalations the
    /// target who may approve.
    pub fn refusal(&self) -> ApiError {
        let d = &self.decision;
        match d.action {
            PolicyAction::EscalateToHuman => ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "approval_required",
                format!(
                    "needs human approval ({}): {}",
                    d.escalation_target.as_deref().unwrap_or("an operator"),
                    d.reason
                ),
            ),
            _ => ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "policy_denied",
                format!("denied by policy: {}", d.reason),
            ),
        }
    }
}

impl Enforcer {
    /// Loads and compiles the policy set; a broken set at start-up is an error (there is
    /// no previous good set to keep).
    pub fn start(
        location: PolicyLocation,
        store: Store,
        readiness: Readiness,
    ) -> Result<Arc<Self>, PolicyError> {
        let compiled = CompiledPolicies::compile(location.load()?)?;
        let status = status_of(&compiled, None);
        readiness.set_detail("policy", json!(status));
        Ok(Arc::new(Self {
            current: RwLock::new(Arc::new(compiled)),
            location,
            status: Mutex::new(status),
            store,
            readiness,
        }))
    }

    pub fn current(&self) -> Arc<CompiledPolicies> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn status(&self) -> PolicyStatus {
        match self.status.lock() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Loads the location again. A set that fails to load or compile is refused: the
    /// previous one stays in force, and the error shows in `/readyz` and provenance.
    pub async fn reload(&self) -> Result<String, PolicyError> {
        let loaded = self.location.load().and_then(CompiledPolicies::compile);
        let (event, outcome) = match loaded {
            Ok(compiled) => {
                let revision = compiled.revision().to_string();
                let status = status_of(&compiled, None);
                if let Ok(mut current) = self.current.write() {
                    *current = Arc::new(compiled);
                }
                self.publish(status.clone());
                let event = EventDraft::new("policy_loaded", "system", "policy", Some(revision.clone()))
                    .payload(json!({"revision": revision, "origin": status.origin, "modules": status.modules}));
                (event, Ok(revision))
            }
            Err(err) => {
                let mut status = self.status();
                status.last_error = Some(err.to_string());
                self.publish(status.clone());
                tracing::error!(error = %err, "policy set refused; the previous set stays in force");
                let event = EventDraft::new("policy_rejected", "system", "policy", Some(status.revision.clone()))
                    .payload(json!({"error": err.to_string(), "origin": self.location.describe(), "keptRevision": status.revision}));
                (event, Err(err))
            }
        };
        if let Err(e) = self.store.provenance.append(vec![event]).await {
            tracing::error!(error = %e, "could not record the policy reload");
        }
        outcome
    }

    fn publish(&self, status: PolicyStatus) {
        self.readiness.set_detail("policy", json!(status));
        if let Ok(mut s) = self.status.lock() {
            *s = status;
        }
    }

    /// Evaluates the decision rule for `ctx`. Never fails: an evaluation error or a
    /// malformed decision is a deny with reason `policy_error` (fail closed).
    pub fn decide(&self, ctx: &PolicyContext) -> (Decision, u64, Arc<CompiledPolicies>) {
        match serde_json::to_value(ctx) {
            Ok(input) => self.decide_input(&input),
            Err(e) => (Decision::policy_error(&e.to_string()), 0, self.current()),
        }
    }

    fn decide_input(&self, input: &Value) -> (Decision, u64, Arc<CompiledPolicies>) {
        let (decision, eval_ns, policies, _) = self.decide_rego(input);
        (decision, eval_ns, policies)
    }

    /// [`Self::decide_input`], also returning the input as the engine's value, so the
    /// decision log's mask can be evaluated on it without converting it again.
    fn decide_rego(
        &self,
        input: &Value,
    ) -> (Decision, u64, Arc<CompiledPolicies>, Option<regorus::Value>) {
        let policies = self.current();
        let value = match regorus::Value::deserialize(input) {
            Ok(v) => v,
            Err(e) => return (Decision::policy_error(&e.to_string()), 0, policies, None),
        };
        // A cheap clone: the engine's values share their contents.
        match policies.eval_rule(DECISION_RULE, value.clone()) {
            Ok(eval) => match Decision::from_policy(eval.value) {
                Ok(decision) => (decision, eval.eval_ns, policies, Some(value)),
                Err(e) => (
                    Decision::policy_error(&e),
                    eval.eval_ns,
                    policies,
                    Some(value),
                ),
            },
            Err(e) => (
                Decision::policy_error(&e.to_string()),
                0,
                policies,
                Some(value),
            ),
        }
    }

    /// What a point acts on: the decision for `ctx` at `point` and the policy input
    /// with the decision's redactions applied (the original input is returned too, for
    /// the decision log).
    pub fn judge(&self, point: Point, ctx: PolicyContext) -> Judgement {
        self.judge_rego(point, ctx).0
    }

    /// [`Self::judge`], with the input as the engine's value.
    fn judge_rego(
        &self,
        point: Point,
        mut ctx: PolicyContext,
    ) -> (Judgement, Option<regorus::Value>) {
        ctx.action = point.as_str().to_string();
        let original = serde_json::to_value(&ctx).unwrap_or(Value::Null);
        let (mut decision, eval_ns, policies, rego_input) = self.decide_rego(&original);
        let mut input = None;
        if decision.action == PolicyAction::AllowWithRedactions {
            let mut redacted = original.clone();
            match redact(&mut redacted, &decision.redactions) {
                Ok(()) => input = Some(redacted),
                Err(e) => decision = Decision::policy_error(&e),
            }
        }
        let judgement = Judgement {
            point,
            decision,
            redacted: input,
            original,
            eval_ns,
            policies,
        };
        (judgement, rego_input)
    }

    /// Decides `ctx` at `point`, applies any redactions to the input, and drafts the
    /// `policy_decision` event. The caller appends the event: with its own write when
    /// the point permits, alone when it refuses.
    pub fn enforce(&self, point: Point, ctx: PolicyContext, actor: &Actor) -> Verdict {
        let span = crate::spans::start(point, &ctx);
        let (j, rego_input) = self.judge_rego(point, ctx);
        crate::spans::finish(span, point, &j.decision, actor);
        let record = DecisionRecord {
            point: j.point.as_str().to_string(),
            path: opa_path(DECISION_RULE),
            decision_id: j.decision.decision_id,
            result: json!(j.decision),
            input: j.original.clone(),
            eval_ns: j.eval_ns,
        };
        let audit = self.audit_event_from(record, rego_input, &j.policies, actor);
        Verdict {
            decision: j.decision,
            input: j.redacted.unwrap_or(j.original),
            audit,
        }
    }

    /// For points that either go ahead or refuse: the verdict when the policy permits
    /// (its event to be written with the change), else the recorded refusal. An
    /// escalation here is a refusal naming who may approve.
    pub async fn admit(
        &self,
        point: Point,
        ctx: PolicyContext,
        actor: &Actor,
    ) -> Result<Verdict, ApiError> {
        let verdict = self.enforce(point, ctx, actor);
        if verdict.permits() {
            Ok(verdict)
        } else {
            Err(self.refuse(verdict).await)
        }
    }

    /// For points that create something a caller describes (an agent, a tool): the
    /// caller is the subject, the new object's fields the resource's attributes. Returns
    /// the object as the policy left it (redactions applied) and the decision's event.
    pub async fn admit_new<T>(
        &self,
        point: Point,
        kind: &str,
        caller: &mesh_types::Principal,
        service: &str,
        new: T,
    ) -> Result<(T, EventDraft), ApiError>
    where
        T: Serialize + serde::de::DeserializeOwned,
    {
        let resource = crate::Resource {
            kind: Some(kind.to_string()),
            id: None,
            classification: None,
            attributes: serde_json::to_value(&new).unwrap_or_default(),
        };
        let ctx = crate::inputs::context(crate::inputs::principal(caller), resource, service);
        let verdict = self
            .admit(point, ctx, &crate::inputs::principal_actor(caller))
            .await?;
        let new = verdict.redacted_attributes(new)?;
        Ok((new, verdict.audit))
    }

    /// Records a refusal and returns the 403 to send.
    pub async fn refuse(&self, verdict: Verdict) -> ApiError {
        let error = verdict.refusal();
        if let Err(e) = self.store.provenance.append(vec![verdict.audit]).await {
            tracing::error!(error = %e, "could not record a policy refusal");
            return ApiError::from(e);
        }
        error
    }

    /// The `policy_decision` event, carrying what OPA's decision log carries: the path,
    /// the input masked through `data.system.log.mask`, the result, the revision.
    pub fn audit_event(
        &self,
        record: DecisionRecord,
        policies: &CompiledPolicies,
        actor: &Actor,
    ) -> EventDraft {
        self.audit_event_from(record, None, policies, actor)
    }

    /// [`Self::audit_event`], given the input as the engine already holds it (from the
    /// decision), when there is one: the mask is then evaluated without converting the
    /// input a second time.
    fn audit_event_from(
        &self,
        record: DecisionRecord,
        rego_input: Option<regorus::Value>,
        policies: &CompiledPolicies,
        actor: &Actor,
    ) -> EventDraft {
        let DecisionRecord {
            point,
            path,
            decision_id,
            result,
            input,
            eval_ns,
        } = record;
        let mut input = input;
        let stripped = strip_credentials(&mut input);
        let field = |name: &str| result.get(name).cloned().unwrap_or(Value::Null);
        let (action, reason) = (field("action"), field("reason"));
        // Built by moving the values in: `json!` would copy input and result, and this
        // runs for every decision, inside the claim's write transaction for task.assign.
        let mut logged = Value::Object(
            [("input".to_string(), input), ("result".to_string(), result)]
                .into_iter()
                .collect(),
        );
        if policies.has_mask
            && let Some(masking_input) = masking_input(&logged, rego_input.filter(|_| !stripped))
            && let Ok(mask) = policies.eval_rule(MASK_RULE, masking_input)
            && let Some(mask) = mask.value
        {
            apply_mask(&mut logged, &mask);
        }
        let mut take = |name: &str| logged.get_mut(name).map(Value::take).unwrap_or(Value::Null);
        let (input, result) = (take("input"), take("result"));
        let mut payload = json!({
            "decisionId": decision_id,
            "point": point,
            "action": action,
            "reason": reason,
            "path": path,
            "revision": policies.revision(),
            "metrics": {"timer_rego_eval_ns": eval_ns},
        });
        payload["input"] = input;
        payload["result"] = result;
        if let Some((id, name)) = &actor.agent {
            payload["agentId"] = json!(id);
            payload["agentName"] = json!(name);
        }
        let mut event = EventDraft::new(
            "policy_decision",
            &actor.name,
            "policy_decision",
            Some(decision_id.to_string()),
        )
        .payload(payload);
        if let Some(task) = actor.task {
            event = event.task(task);
        }
        event
    }
}

/// The mask rule's input, `{input, result}`: built around the engine's copy of the
/// input when the decision made one (and no credential was stripped from the logged
/// input since), else converted whole.
fn masking_input(logged: &Value, input: Option<regorus::Value>) -> Option<regorus::Value> {
    let Some(input) = input else {
        return regorus::Value::deserialize(logged).ok();
    };
    let mut object = regorus::Value::new_object();
    let map = object.as_object_mut().ok()?;
    map.insert(regorus::Value::from("input"), input);
    map.insert(
        regorus::Value::from("result"),
        regorus::Value::deserialize(&logged["result"]).ok()?,
    );
    Some(object)
}

/// `data.mesh.decision` → `mesh/decision`, the form OPA's decision logs use.
pub fn opa_path(rule: &str) -> String {
    rule.trim_start_matches("data.").replace('.', "/")
}

fn status_of(compiled: &CompiledPolicies, last_error: Option<String>) -> PolicyStatus {
    PolicyStatus {
        revision: compiled.revision().to_string(),
        origin: compiled.source.origin.clone(),
        modules: compiled
            .source
            .modules
            .iter()
            .map(|m| m.path.clone())
            .collect(),
        loaded_at: mesh_types::time::now(),
        last_error,
    }
}

/// Polls the policy location and reloads when its files change. Polling (once per
/// `interval`) needs no platform watcher and sees files replaced on network volumes.
pub fn spawn_reloader(
    enforcer: Arc<Enforcer>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(mut seen) = enforcer.location.fingerprint() else {
        return;
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            let Some(now) = enforcer.location.fingerprint() else {
                return;
            };
            if now != seen {
                seen = now;
                match enforcer.reload().await {
                    Ok(revision) => tracing::info!(%revision, "policy set reloaded"),
                    Err(err) => tracing::warn!(error = %err, "policy reload refused"),
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Resource;

    fn tool_call(attributes: Value) -> PolicyContext {
        let subject = json!({"type": "agent", "id": "a1", "name": "coder", "riskTier": "low"});
        let resource = Resource {
            kind: Some("tool".into()),
            id: Some("files".into()),
            classification: Some("internal".into()),
            attributes,
        };
        crate::inputs::context(subject, resource, "tool-registry")
    }

    /// The default bundle's mask drops a tool call's body from the decision log,
    /// whether the mask sees the engine's copy of the input (the usual path) or a fresh
    /// conversion (when credentials were stripped from the logged input first).
    #[tokio::test]
    async fn decision_logs_are_masked_on_both_paths() {
        let dir = tempfile::tempdir().unwrap();
        let store = mesh_store::open(None, dir.path()).await.unwrap();
        let enforcer =
            Enforcer::start(PolicyLocation::Embedded, store, Readiness::default()).unwrap();
        let actor = Actor::named("coder");
        let plain = enforcer.enforce(
            Point::ToolCall,
            tool_call(json!({"body": "ann@example.com", "path": "/tmp/x"})),
            &actor,
        );
        let logged = &plain.audit.payload["input"]["resource"]["attributes"];
        assert_eq!(
            logged,
            &json!({"path": "/tmp/x"}),
            "{}",
            plain.audit.payload
        );
        let with_key = enforcer.enforce(
            Point::ToolCall,
            tool_call(json!({"body": "ann@example.com", "path": "/tmp/x", "apiKey": "k"})),
            &actor,
        );
        let logged = &with_key.audit.payload["input"]["resource"]["attributes"];
        assert_eq!(
            logged,
            &json!({"path": "/tmp/x"}),
            "{}",
            with_key.audit.payload
        );
        assert_eq!(
            plain.audit.payload["result"]["action"],
            json!(plain.decision.action)
        );
    }
}
