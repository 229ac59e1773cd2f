//! The seed's graph as a W3C PROV-JSON document (the 2013 member submission): agents
//! are `prov:SoftwareAgent`s; tasks, model calls, tool calls and policy decisions are
//! activities; outputs are entities. The relationships map as follows (the table in
//! docs/ARCHITECTURE.md, "Provenance log", says the same):
//!
//! | seed | PROV-JSON |
//! |------|-----------|
//! | `(task)-[:ASSIGNED_TO]->(agent)` | `wasAssociatedWith` task, agent, `prov:role` `mesh:assignee` |
//! | `(task)-[:SPAWNED]->(sub)` | `wasInformedBy` informed sub, informant task |
//! | `(agent)-[:INVOKED]->(modelCall)` | `wasAssociatedWith` call, agent |
//! | `(agent)-[:CALLED]->(toolCall)` | `wasAssociatedWith` call, agent |
//! | `(agent)-[:SUBJECT_TO]->(decision)` | `wasAssociatedWith` decision, agent, `prov:role` `mesh:subject` |
//! | `(modelCall)-[:PRODUCED]->(output)` | `wasGeneratedBy` output, call |
//! | `(task)-[:REVIEWED_BY]->(critic)` | `wasAssociatedWith` task, critic, `prov:role` `mesh:critic` |
//!
//! and, from the task each call or decision names: a call `wasInformedBy` its task, and
//! a task `wasInformedBy` each policy decision about it.

use crate::{Node, TaskProvenance};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};

/// The namespace of the mesh's own qualified names.
pub const MESH_NAMESPACE: &str = "urn:agentic-mesh:";

/// The PROV-JSON document for one task's graph.
pub fn document(p: &TaskProvenance) -> Value {
    let mut doc = Doc::default();
    let names: HashMap<&str, String> = p
        .graph
        .nodes
        .iter()
        .map(|n| (n.id.as_str(), qualified_name(n)))
        .collect();
    for node in &p.graph.nodes {
        doc.add_node(node, &names[node.id.as_str()]);
    }
    for edge in &p.graph.edges {
        let (Some(from), Some(to)) = (names.get(edge.from.as_str()), names.get(edge.to.as_str()))
        else {
            continue;
        };
        match edge.kind {
            "ASSIGNED_TO" => doc.associated(from, to, Some("mesh:assignee")),
            "REVIEWED_BY" => doc.associated(from, to, Some("mesh:critic")),
            "INVOKED" | "CALLED" => doc.associated(to, from, None),
            "SUBJECT_TO" => doc.associated(to, from, Some("mesh:subject")),
            "SPAWNED" => doc.informed(to, from),
            "PRODUCED" => doc.relation(
                "wasGeneratedBy",
                json!({"prov:entity": to, "prov:activity": from}),
            ),
            _ => {}
        }
    }
    // Calls and decisions name their task; link them to it when it is in the graph.
    for node in &p.graph.nodes {
        let Some(task) = node
            .properties
            .get("task_id")
            .and_then(Value::as_str)
            .and_then(|t| names.get(t))
        else {
            continue;
        };
        let me = &names[node.id.as_str()];
        match node.label {
            "ModelCall" | "ToolCall" => doc.informed(me, task),
            "PolicyDecision" => doc.informed(task, me),
            _ => {}
        }
    }
    doc.finish()
}

fn qualified_name(node: &Node) -> String {
    let kind = match node.label {
        "Task" => "task",
        "Agent" => "agent",
        "ModelCall" => "model-call",
        "ToolCall" => "tool-call",
        "PolicyDecision" => "policy-decision",
        "Output" => "output",
        _ => "node",
    };
    format!("mesh:{kind}-{}", node.id)
}

fn qname(value: &str) -> Value {
    json!({"$": value, "type": "xsd:QName"})
}

#[derive(Default)]
struct Doc {
    sections: BTreeMap<&'static str, Map<String, Value>>,
    relations: usize,
}

impl Doc {
    fn add_node(&mut self, node: &Node, name: &str) {
        let (section, prov_type) = match node.label {
            "Agent" => ("agent", "prov:SoftwareAgent"),
            "Output" => ("entity", "mesh:Output"),
            "Task" => ("activity", "mesh:Task"),
            "ModelCall" => ("activity", "mesh:ModelCall"),
            "ToolCall" => ("activity", "mesh:ToolCall"),
            "PolicyDecision" => ("activity", "mesh:PolicyDecision"),
            _ => ("entity", "mesh:Node"),
        };
        let mut attrs = Map::new();
        attrs.insert("prov:type".into(), qname(prov_type));
        if let Value::Object(props) = &node.properties {
            for (key, value) in props {
                match (key.as_str(), value) {
                    (_, Value::Null) | ("task_id", _) => {}
                    ("created_at", Value::String(t)) => {
                        attrs.insert("prov:startTime".into(), json!(t));
                    }
                    ("name", Value::String(n)) => {
                        attrs.insert("prov:label".into(), json!(n));
                        attrs.insert("mesh:name".into(), json!(n));
                    }
                    // PROV-JSON attribute values are literals: nested JSON goes as text.
                    (_, Value::Object(_) | Value::Array(_)) => {
                        attrs.insert(format!("mesh:{key}"), json!(value.to_string()));
                    }
                    _ => {
                        attrs.insert(format!("mesh:{key}"), value.clone());
                    }
                }
            }
        }
        self.sections
            .entry(section)
            .or_default()
            .insert(name.to_string(), Value::Object(attrs));
    }

    fn associated(&mut self, activity: &str, agent: &str, role: Option<&str>) {
        let mut rel = json!({"prov:activity": activity, "prov:agent": agent});
        if let Some(role) = role {
            rel["prov:role"] = qname(role);
        }
        self.relation("wasAssociatedWith", rel);
    }

    fn informed(&mut self, informed: &str, informant: &str) {
        self.relation(
            "wasInformedBy",
            json!({"prov:informed": informed, "prov:informant": informant}),
        );
    }

    /// Relations are identified by blank nodes, numbered in document order.
    fn relation(&mut self, kind: &'static str, attrs: Value) {
        self.relations += 1;
        let id = format!("_:r{}", self.relations);
        self.sections.entry(kind).or_default().insert(id, attrs);
    }

    fn finish(self) -> Value {
        let mut doc = Map::new();
        doc.insert("prefix".into(), json!({"mesh": MESH_NAMESPACE}));
        for (section, entries) in self.sections {
            doc.insert(section.into(), Value::Object(entries));
        }
        Value::Object(doc)
    }
}
