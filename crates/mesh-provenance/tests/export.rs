//! Exports of a task's provenance, checked against the structure the W3C PROV-JSON
//! submission defines (a JSON Schema written from it, `fixtures/prov-json.schema.json`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use mesh_provenance::export::{ExportFormat, render};
use mesh_provenance::project_task;
use mesh_types::provenance::GENESIS_HASH;
use mesh_types::{EventDraft, ProvenanceEvent};
use serde_json::{Value, json};
use uuid::Uuid;

struct Flow {
    task: Uuid,
    child: Uuid,
    coder: Uuid,
    critic: Uuid,
    events: Vec<ProvenanceEvent>,
}

/// A task that spawns a subtask, assigned to a coder who calls a model and a tool
/// under a policy decision, then reviewed by a critic.
fn flow() -> Flow {
    let (task, child, coder, critic) = (
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
    );
    let drafts = vec![
        EventDraft::new("task_created", "alice", "task", None).task(task).payload(json!({"type": "code_refactor"})),
        EventDraft::new("policy_decision", "policy", "task", None).task(task).payload(json!({"decisionId": "d-1", "action": "allow", "reason": "it's fine"})),
        EventDraft::new("subtask_created", "planner", "task", None).task(task).payload(json!({"subtaskId": child})),
        EventDraft::new("task_created", "planner", "task", None).task(child).payload(json!({"type": "implement"})),
        EventDraft::new("task_assigned", "system", "task", None).task(child).payload(json!({"agentId": coder, "agentName": "coder", "agentRole": "coder"})),
        EventDraft::new("model_call", "coder", "task", None).task(child).payload(json!({"agentId": coder, "modelCallId": "m-1", "provider": "sim", "model": "sim-small", "tokensIn": 10, "tokensOut": 5, "latencyMs": 3, "outputSha256": "ab12"})),
        EventDraft::new("tool_call", "coder", "task", None).task(child).payload(json!({"agentId": coder, "toolCallId": "t-1", "toolName": "grep", "success": true})),
        EventDraft::new("policy_decision", "policy", "task", None).task(child).payload(json!({"agentId": coder, "decisionId": "d-2", "action": "allow"})),
        EventDraft::new("task_completed", "coder", "task", None).task(child),
        EventDraft::new("task_reviewed", "critic", "task", None).task(task).payload(json!({"agentId": critic, "agentName": "critic"})),
    ];
    let mut prev = GENESIS_HASH.to_string();
    let events = drafts
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            let e = ProvenanceEvent::seal(d, i as i64 + 1, &prev, mesh_types::time::now());
            prev = e.hash.clone();
            e
        })
        .collect();
    Flow {
        task,
        child,
        coder,
        critic,
        events,
    }
}

fn prov_json(f: &Flow) -> Value {
    let p = project_task(f.task, &f.events);
    serde_json::from_str(&render(ExportFormat::ProvJson, &p, &f.events).unwrap()).unwrap()
}

fn schema() -> jsonschema::Validator {
    let text = include_str!("fixtures/prov-json.schema.json");
    jsonschema::validator_for(&serde_json::from_str(text).unwrap()).unwrap()
}

fn errors(v: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    v.iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// Which section each relation's PROV attributes must point into.
const ENDPOINTS: &[(&str, &str, &str)] = &[
    ("wasGeneratedBy", "prov:entity", "entity"),
    ("wasGeneratedBy", "prov:activity", "activity"),
    ("used", "prov:activity", "activity"),
    ("used", "prov:entity", "entity"),
    ("wasInformedBy", "prov:informed", "activity"),
    ("wasInformedBy", "prov:informant", "activity"),
    ("wasAssociatedWith", "prov:activity", "activity"),
    ("wasAssociatedWith", "prov:agent", "agent"),
    ("actedOnBehalfOf", "prov:delegate", "agent"),
    ("actedOnBehalfOf", "prov:responsible", "agent"),
];

fn dangling(doc: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for (relation, attr, section) in ENDPOINTS {
        for (id, rel) in doc[relation].as_object().into_iter().flatten() {
            if let Some(target) = rel.get(*attr).and_then(Value::as_str)
                && doc[section].get(target).is_none()
            {
                out.push(format!("{relation} {id}: {attr} {target} is no {section}"));
            }
        }
    }
    out
}

fn relation<'a>(doc: &'a Value, kind: &str, a: (&str, &str), b: (&str, &str)) -> Option<&'a Value> {
    doc[kind]
        .as_object()?
        .values()
        .find(|r| r[a.0] == a.1 && r[b.0] == b.1)
}

#[test]
fn prov_json_follows_the_submissions_structure_and_maps_the_seed_graph() {
    let f = flow();
    let doc = prov_json(&f);
    let v = schema();
    assert_eq!(errors(&v, &doc), Vec::<String>::new(), "{doc:#}");
    assert_eq!(dangling(&doc), Vec::<String>::new());

    let task = format!("mesh:task-{}", f.task);
    let child = format!("mesh:task-{}", f.child);
    let coder = format!("mesh:agent-{}", f.coder);
    let critic = format!("mesh:agent-{}", f.critic);
    assert_eq!(doc["prefix"]["mesh"], "urn:agentic-mesh:");
    assert_eq!(doc["agent"][&coder]["prov:type"]["$"], "prov:SoftwareAgent");
    assert_eq!(doc["agent"][&coder]["prov:label"], "coder");
    assert_eq!(doc["activity"][&task]["prov:type"]["$"], "mesh:Task");
    assert_eq!(doc["activity"][&task]["mesh:type"], "code_refactor");
    assert!(doc["activity"][&task]["prov:startTime"].is_string());
    assert_eq!(doc["activity"][&child]["mesh:status"], "completed");
    for call in [
        "mesh:model-call-m-1",
        "mesh:tool-call-t-1",
        "mesh:policy-decision-d-2",
    ] {
        assert!(doc["activity"][call].is_object(), "{call} missing");
    }
    assert_eq!(doc["entity"]["mesh:output-ab12"]["mesh:sha256"], "ab12");
    // ASSIGNED_TO, REVIEWED_BY (role critic), INVOKED, CALLED, SUBJECT_TO
    let assoc = |act: &str, agent: &str| {
        relation(
            &doc,
            "wasAssociatedWith",
            ("prov:activity", act),
            ("prov:agent", agent),
        )
        .unwrap_or_else(|| panic!("no wasAssociatedWith {act} {agent}"))
    };
    assert_eq!(assoc(&child, &coder)["prov:role"]["$"], "mesh:assignee");
    assert_eq!(assoc(&task, &critic)["prov:role"]["$"], "mesh:critic");
    assoc("mesh:model-call-m-1", &coder);
    assoc("mesh:tool-call-t-1", &coder);
    assert_eq!(
        assoc("mesh:policy-decision-d-2", &coder)["prov:role"]["$"],
        "mesh:subject"
    );
    // SPAWNED: the child is informed by its parent; calls by their task; tasks by
    // the decisions about them.
    let informed = |a: &str, b: &str| {
        relation(
            &doc,
            "wasInformedBy",
            ("prov:informed", a),
            ("prov:informant", b),
        )
        .is_some()
    };
    assert!(informed(&child, &task));
    assert!(informed("mesh:model-call-m-1", &child));
    assert!(informed(&task, "mesh:policy-decision-d-1"));
    // PRODUCED
    assert!(
        relation(
            &doc,
            "wasGeneratedBy",
            ("prov:entity", "mesh:output-ab12"),
            ("prov:activity", "mesh:model-call-m-1")
        )
        .is_some()
    );
}

#[test]
fn the_schema_and_the_endpoint_check_reject_what_the_submission_does_not_allow() {
    let f = flow();
    let v = schema();
    let mut doc = prov_json(&f);
    let (_, rel) = doc["wasInformedBy"]
        .as_object_mut()
        .unwrap()
        .iter_mut()
        .next()
        .unwrap();
    rel.as_object_mut().unwrap().remove("prov:informant");
    assert!(
        !errors(&v, &doc).is_empty(),
        "a relation without a required role passed"
    );

    let mut doc = prov_json(&f);
    doc["activities"] = json!({});
    assert!(!errors(&v, &doc).is_empty(), "an unknown section passed");

    let mut doc = prov_json(&f);
    doc["agent"]["not a qname"] = json!({});
    assert!(
        !errors(&v, &doc).is_empty(),
        "an identifier that is no qualified name passed"
    );

    let mut doc = prov_json(&f);
    let task = format!("mesh:task-{}", f.task);
    doc["activity"][&task]["prov:startTime"] = json!("yesterday");
    assert!(
        !errors(&v, &doc).is_empty(),
        "a startTime that is no xsd:dateTime passed"
    );

    let mut doc = prov_json(&f);
    doc["agent"].as_object_mut().unwrap().clear();
    assert!(
        !dangling(&doc).is_empty(),
        "associations with missing agents passed"
    );
}

#[test]
fn cypher_export_merges_every_node_and_seed_relationship() {
    let f = flow();
    let p = project_task(f.task, &f.events);
    let text = render(ExportFormat::Cypher, &p, &f.events).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("MERGE ") && l.ends_with(';')),
        "{text}"
    );
    assert_eq!(
        lines.iter().filter(|l| !l.contains(")-[:")).count(),
        p.graph.nodes.len()
    );
    for kind in [
        "ASSIGNED_TO",
        "SPAWNED",
        "INVOKED",
        "CALLED",
        "SUBJECT_TO",
        "PRODUCED",
        "REVIEWED_BY",
    ] {
        assert!(
            text.contains(&format!("-[:{kind}]->")),
            "{kind} missing:\n{text}"
        );
    }
    assert!(text.contains(&format!(
        "MERGE (a:Task {{id: '{}'}}) MERGE (b:Agent {{id: '{}'}}) MERGE (a)-[:ASSIGNED_TO]->(b);",
        f.child, f.coder
    )));
    // The quote in the decision's reason is escaped, not a way out of the literal.
    assert!(text.contains(r"n.reason = 'it\'s fine'"), "{text}");
}

#[test]
fn jsonl_export_is_the_task_trees_events_one_per_line() {
    let f = flow();
    let p = project_task(f.task, &f.events);
    let text = render(ExportFormat::Jsonl, &p, &f.events).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), f.events.len());
    assert_eq!(lines[0]["action"], "task_created");
    assert_eq!(lines[9]["action"], "task_reviewed");
    assert_eq!(lines[4]["hash"], json!(f.events[4].hash));
    assert!(
        "xml"
            .parse::<ExportFormat>()
            .unwrap_err()
            .contains("prov-json")
    );
}
