//! How the mesh's own objects appear in a policy input, so every enforcement point
//! describes callers, agents and tasks the same way and policies can rely on it:
//!
//! - a caller: `{"kind": "principal", "id", "name", "roles", "tenant"}`
//! - an agent: `{"kind": "agent", "id", "name", "role", "riskTier", "capabilities", "roles": ["agent"]}`
//! - a task: resource `{"type": "task", "id", "classification", "attributes": {"taskType",
//!   "priority", "riskTier", "parentId", "input", "metadata", "tenant"}}`

use crate::decision::{PolicyContext, Resource};
use crate::enforcer::Actor;
use mesh_types::{Agent, Principal, Task};
use serde_json::{Value, json};

pub fn principal(p: &Principal) -> Value {
    json!({"kind": "principal", "id": p.key_id, "name": p.name, "roles": p.roles, "tenant": p.tenant})
}

pub fn agent(a: &Agent) -> Value {
    json!({
        "kind": "agent", "id": a.id, "name": a.name, "role": a.role,
        "riskTier": a.risk_tier, "capabilities": a.capabilities, "roles": ["agent"],
    })
}

/// A task as a resource; `with_payload` adds its `input` and `metadata` (what
/// submission policies inspect and redact; assignment policies do without them).
pub fn task(t: &Task, with_payload: bool) -> Resource {
    let mut attributes = json!({
        "taskType": t.task_type, "priority": t.priority, "riskTier": t.risk_tier,
        "parentId": t.parent_id, "tenant": t.tenant,
    });
    if with_payload {
        attributes["input"] = t.input.clone();
        attributes["metadata"] = t.metadata.clone();
    }
    Resource {
        kind: Some("task".into()),
        id: Some(t.id.to_string()),
        classification: Some(t.data_classification.as_str().into()),
        attributes,
    }
}

/// Where and when: the service asking and the time of asking.
pub fn environment(service: &str) -> Value {
    json!({"service": service, "time": mesh_types::time::format(&mesh_types::time::now())})
}

/// A context with the given parts; the point fills in `action`.
pub fn context(subject: Value, resource: Resource, service: &str) -> PolicyContext {
    PolicyContext {
        action: String::new(),
        subject,
        resource,
        environment: environment(service),
    }
}

/// The actor of a principal's request.
pub fn principal_actor(p: &Principal) -> Actor {
    Actor {
        name: p.name.clone(),
        agent: None,
        task: None,
    }
}
