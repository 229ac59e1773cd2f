//! Projects provenance events onto the seed's graph model.

use mesh_types::ProvenanceEvent;
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Node {
    pub id: String,
    pub label: &'static str,
    pub properties: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Edge {
    pub from: String,
    pub to: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskProvenance {
    pub task_id: Uuid,
    pub timeline: Vec<Value>,
    pub graph: Graph,
}

#[derive(Default)]
struct Builder {
    nodes: BTreeMap<String, Node>,
    edges: Vec<Edge>,
}

impl Builder {
    fn node(&mut self, id: String, label: &'static str, properties: Value) {
        let entry = self.nodes.entry(id.clone()).or_insert_with(|| Node {
            id,
            label,
            properties: json!({}),
        });
        // Later events refine earlier ones (e.g. a task's status).
        if let (Some(into), Value::Object(from)) = (entry.properties.as_object_mut(), properties) {
            for (k, v) in from {
                if !v.is_null() {
                    into.insert(k, v);
                }
            }
        }
    }

    fn edge(&mut self, from: String, to: String, kind: &'static str) {
        let edge = Edge { from, to, kind };
        if !self.edges.contains(&edge) {
            self.edges.push(edge);
        }
    }
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(|x| match x {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    })
}

/// Registers the agent named in an event's payload, if any, and returns its node id.
fn agent_of(b: &mut Builder, e: &ProvenanceEvent) -> Option<String> {
    let id = text(&e.payload, "agentId")?;
    b.node(
        id.clone(),
        "Agent",
        json!({"id": id, "name": text(&e.payload, "agentName"), "role": text(&e.payload, "agentRole")}),
    );
    Some(id)
}

/// The status a task-lifecycle action leaves the task in.
fn status_after(action: &str) -> Option<&'static str> {
    Some(match action {
        "task_created" => "pending",
        "task_queued"
        | "task_resumed"
        | "task_retry_scheduled"
        | "task_requeued"
        | "task_yielded" => "queued",
        "task_waiting" => "pending",
        "task_started" | "task_assigned" => "running",
        "task_needs_approval" => "needs_approval",
        "task_completed" => "completed",
        "task_failed" => "failed",
        "task_cancelled" => "cancelled",
        _ => return None,
    })
}

pub fn project_task(task_id: Uuid, events: &[ProvenanceEvent]) -> TaskProvenance {
    let mut b = Builder::default();
    let mut timeline = Vec::with_capacity(events.len());
    for e in events {
        timeline.push(timeline_entry(e));
        apply(&mut b, e);
    }
    // The root exists even if its creation event predates the events we were given.
    let root = task_id.to_string();
    b.node(root.clone(), "Task", json!({"id": root}));
    TaskProvenance {
        task_id,
        timeline,
        graph: Graph {
            nodes: b.nodes.into_values().collect(),
            edges: b.edges,
        },
    }
}

/// The nodes and edges one event contributes, each edge's ends among the nodes (so a
/// consumer that sees only this event, such as the live projection, can merge them).
pub fn project_events(events: &[ProvenanceEvent]) -> Graph {
    let mut b = Builder::default();
    for e in events {
        apply(&mut b, e);
    }
    Graph {
        nodes: b.nodes.into_values().collect(),
        edges: b.edges,
    }
}

fn apply(b: &mut Builder, e: &ProvenanceEvent) {
    let Some(task) = e.task_id.map(|t| t.to_string()) else {
        return;
    };
    if let Some(status) = status_after(&e.action) {
        let mut props = json!({"id": task, "status": status});
        if e.action == "task_created" {
            props["type"] = e.payload.get("type").cloned().unwrap_or(Value::Null);
            props["created_at"] = json!(mesh_types::time::format(&e.timestamp));
        }
        b.node(task.clone(), "Task", props);
    }
    let id = e.id.to_string();
    match e.action.as_str() {
        "subtask_created" => {
            if let Some(child) = text(&e.payload, "subtaskId") {
                b.node(task.clone(), "Task", json!({"id": task}));
                b.node(child.clone(), "Task", json!({"id": child}));
                b.edge(task, child, "SPAWNED");
            }
        }
        "task_assigned" => {
            if let Some(agent) = agent_of(b, e) {
                b.node(task.clone(), "Task", json!({"id": task}));
                b.edge(task, agent, "ASSIGNED_TO");
            }
        }
        "task_reviewed" => {
            if let Some(agent) = agent_of(b, e) {
                b.node(task.clone(), "Task", json!({"id": task}));
                b.edge(task, agent, "REVIEWED_BY");
            }
        }
        "model_call" => {
            let call = text(&e.payload, "modelCallId").unwrap_or(id);
            b.node(
                call.clone(),
                "ModelCall",
                json!({
                    "id": call,
                    "provider": e.payload.get("provider"),
                    "model": e.payload.get("model"),
                    "tokens_in": e.payload.get("tokensIn"),
                    "tokens_out": e.payload.get("tokensOut"),
                    "latency_ms": e.payload.get("latencyMs"),
                    "task_id": task,
                }),
            );
            if let Some(agent) = agent_of(b, e) {
                b.edge(agent, call.clone(), "INVOKED");
            }
            if let Some(output) = text(&e.payload, "outputSha256") {
                b.node(output.clone(), "Output", json!({"sha256": output}));
                b.edge(call, output, "PRODUCED");
            }
        }
        "tool_call" => {
            let call = text(&e.payload, "toolCallId").unwrap_or(id);
            b.node(
                call.clone(),
                "ToolCall",
                json!({
                    "id": call,
                    "tool_name": e.payload.get("toolName"),
                    "success": e.payload.get("success"),
                    "latency_ms": e.payload.get("latencyMs"),
                    "task_id": task,
                }),
            );
            if let Some(agent) = agent_of(b, e) {
                b.edge(agent, call, "CALLED");
            }
        }
        "policy_decision" => {
            let decision = text(&e.payload, "decisionId").unwrap_or(id);
            b.node(
                decision.clone(),
                "PolicyDecision",
                json!({
                    "id": decision,
                    "action": e.payload.get("action"),
                    "reason": e.payload.get("reason"),
                    "task_id": task,
                }),
            );
            if let Some(agent) = agent_of(b, e) {
                b.edge(agent, decision, "SUBJECT_TO");
            }
        }
        _ => {}
    }
}

/// `{eventId, timestamp, agent, action, …payload}` as in the seed's example.
fn timeline_entry(e: &ProvenanceEvent) -> Value {
    let mut entry = Map::new();
    if let Value::Object(payload) = &e.payload {
        for (k, v) in payload {
            entry.insert(k.clone(), v.clone());
        }
    }
    entry.insert("eventId".into(), json!(e.id));
    entry.insert("seq".into(), json!(e.seq));
    entry.insert(
        "timestamp".into(),
        json!(mesh_types::time::format(&e.timestamp)),
    );
    entry.insert("agent".into(), json!(e.actor));
    entry.insert("action".into(), json!(e.action));
    entry.insert("taskId".into(), json!(e.task_id));
    entry.insert("hash".into(), json!(e.hash));
    Value::Object(entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_types::EventDraft;
    use mesh_types::provenance::GENESIS_HASH;

    #[test]
    fn projects_the_seed_graph_model() {
        let task = Uuid::now_v7();
        let child = Uuid::now_v7();
        let agent = Uuid::now_v7();
        let drafts = vec![
            EventDraft::new("task_created", "alice", "task", None).task(task).payload(json!({"type": "code_refactor"})),
            EventDraft::new("task_queued", "alice", "task", None).task(task),
            EventDraft::new("subtask_created", "planner", "task", None).task(task).payload(json!({"subtaskId": child})),
            EventDraft::new("task_assigned", "system", "task", None).task(child).payload(json!({"agentId": agent, "agentName": "coder"})),
            EventDraft::new("model_call", "coder", "task", None).task(child).payload(json!({"agentId": agent, "provider": "sim", "model": "m", "tokensIn": 10, "tokensOut": 5, "latencyMs": 3, "outputSha256": "ab"})),
            EventDraft::new("tool_call", "coder", "task", None).task(child).payload(json!({"agentId": agent, "toolName": "grep", "success": true})),
            EventDraft::new("policy_decision", "policy", "task", None).task(child).payload(json!({"agentId": agent, "action": "allow", "reason": "ok"})),
            EventDraft::new("task_reviewed", "critic", "task", None).task(task).payload(json!({"agentId": agent})),
        ];
        let events: Vec<_> = drafts
            .into_iter()
            .enumerate()
            .map(|(i, d)| {
                ProvenanceEvent::seal(d, i as i64 + 1, GENESIS_HASH, mesh_types::time::now())
            })
            .collect();
        let p = project_task(task, &events);
        assert_eq!(p.timeline.len(), 8);
        assert_eq!(p.timeline[2]["subtaskId"], json!(child));
        assert_eq!(p.timeline[0]["agent"], "alice");
        let labels: Vec<_> = p.graph.nodes.iter().map(|n| n.label).collect();
        for label in [
            "Task",
            "Agent",
            "ModelCall",
            "ToolCall",
            "PolicyDecision",
            "Output",
        ] {
            assert!(labels.contains(&label), "{label} missing from {labels:?}");
        }
        let kinds: Vec<_> = p.graph.edges.iter().map(|e| e.kind).collect();
        for kind in [
            "SPAWNED",
            "ASSIGNED_TO",
            "INVOKED",
            "CALLED",
            "SUBJECT_TO",
            "PRODUCED",
            "REVIEWED_BY",
        ] {
            assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
        }
        let root = p
            .graph
            .nodes
            .iter()
            .find(|n| n.id == task.to_string())
            .unwrap();
        assert_eq!(root.properties["status"], "queued");
        assert_eq!(root.properties["type"], "code_refactor");
    }
}
