//! Between A2A and the mesh: a mesh agent's Agent Card, a mesh task seen as an A2A
//! task, and message parts as task input or output.
//!
//! Parts and JSON values map both ways by one rule, so a value survives the trip: a
//! lone `data` part is its value; parts that are all text are `{"text": joined}`;
//! anything else is `{"parts": [...]}` as A2A writes them.

use crate::card::{AgentCapabilities, AgentCard, AgentInterface, AgentSkill};
use crate::card::{JSONRPC_BINDING, PROTOCOL_VERSION};
use crate::model::{Artifact, Message, Part, Role, Task, TaskState, TaskStatus};
use mesh_types::time::Timestamp;
use mesh_types::{Agent, TaskStatus as MeshStatus};
use serde_json::{Value, json};

/// Key in a mesh task's metadata under which what A2A needs to answer for it is kept.
pub const METADATA_KEY: &str = "a2a";

/// The JSON value a message's parts stand for.
pub fn parts_to_value(parts: &[Part]) -> Value {
    if let [part] = parts
        && part.contents() == 1
        && let Some(data) = &part.data
    {
        return data.clone();
    }
    if !parts.is_empty() && parts.iter().all(|p| p.text.is_some() && p.contents() == 1) {
        let text: Vec<&str> = parts.iter().filter_map(|p| p.text.as_deref()).collect();
        return json!({"text": text.join("\n")});
    }
    json!({"parts": parts})
}

/// The parts that stand for a JSON value: the inverse of [`parts_to_value`].
pub fn value_to_parts(value: &Value) -> Vec<Part> {
    if let Some(obj) = value.as_object()
        && obj.len() == 1
    {
        if let Some(Value::String(text)) = obj.get("text") {
            return vec![Part::text(text.clone())];
        }
        if let Some(parts) = obj.get("parts")
            && let Ok(parts) = serde_json::from_value::<Vec<Part>>(parts.clone())
            && !parts.is_empty()
        {
            return parts;
        }
    }
    vec![Part::data(value.clone())]
}

/// A2A timestamps: ISO 8601 in UTC with milliseconds.
pub fn timestamp(ts: &Timestamp) -> String {
    ts.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

pub fn state_of(status: MeshStatus) -> TaskState {
    match status {
        MeshStatus::Pending | MeshStatus::Queued | MeshStatus::NeedsApproval => {
            TaskState::Submitted
        }
        MeshStatus::Running => TaskState::Working,
        MeshStatus::Completed => TaskState::Completed,
        MeshStatus::Failed => TaskState::Failed,
        MeshStatus::Cancelled => TaskState::Canceled,
    }
}

/// A mesh task as an A2A task: its state, its output as the one artifact once it
/// completed, and why it failed or waits in the status message.
pub fn task_from_mesh(task: &mesh_types::Task) -> Task {
    let id = task.id.to_string();
    let context_id = task
        .metadata
        .get(METADATA_KEY)
        .and_then(|a| a.get("contextId"))
        .and_then(Value::as_str)
        .map_or_else(|| id.clone(), str::to_string);
    let note = match task.status {
        MeshStatus::Failed | MeshStatus::Cancelled => task.last_error.clone(),
        MeshStatus::NeedsApproval => Some("waiting for a human's approval".to_string()),
        _ => None,
    };
    let message = note.map(|text| {
        let mut m = Message::new(format!("{id}-status"), Role::Agent, vec![Part::text(text)]);
        m.context_id = Some(context_id.clone());
        m.task_id = Some(id.clone());
        m
    });
    let artifacts = match (&task.status, &task.output) {
        (MeshStatus::Completed, Some(output)) => vec![Artifact {
            artifact_id: format!("{id}-output"),
            name: Some("output".into()),
            description: None,
            parts: value_to_parts(output),
            metadata: None,
        }],
        _ => Vec::new(),
    };
    Task {
        id,
        context_id: Some(context_id),
        status: TaskStatus {
            state: state_of(task.status),
            message,
            timestamp: Some(timestamp(&task.updated_at)),
        },
        artifacts,
        history: Vec::new(),
        metadata: Some(json!({"meshTaskType": task.task_type, "meshStatus": task.status})),
    }
}

/// The Agent Card the mesh serves for one of its agents: one skill per capability
/// (a task type it takes), reached over JSON-RPC at `rpc_url` with a mesh API key.
pub fn card_for(agent: &Agent, rpc_url: &str) -> AgentCard {
    let mut skills: Vec<AgentSkill> = agent
        .capabilities
        .iter()
        .map(|cap| AgentSkill {
            id: cap.clone(),
            name: cap.clone(),
            description: format!("Tasks of type `{cap}`"),
            tags: vec![cap.clone(), agent.role.to_string()],
            examples: Vec::new(),
            input_modes: Vec::new(),
            output_modes: Vec::new(),
        })
        .collect();
    if skills.is_empty() {
        // A card must list a skill; an agent declaring none still has its role.
        skills.push(AgentSkill {
            id: agent.role.to_string(),
            name: agent.role.to_string(),
            description: format!("The work of a {} agent", agent.role),
            tags: vec![agent.role.to_string()],
            examples: Vec::new(),
            input_modes: Vec::new(),
            output_modes: Vec::new(),
        });
    }
    let modes = vec!["application/json".to_string(), "text/plain".to_string()];
    AgentCard {
        name: agent.name.clone(),
        description: format!(
            "{} agent of an Agentic Mesh ({} risk tier); messages become mesh tasks",
            agent.role, agent.risk_tier
        ),
        supported_interfaces: vec![AgentInterface {
            url: rpc_url.to_string(),
            protocol_binding: JSONRPC_BINDING.into(),
            tenant: None,
            protocol_version: PROTOCOL_VERSION.into(),
        }],
        provider: None,
        version: agent.version.clone(),
        documentation_url: None,
        capabilities: AgentCapabilities {
            streaming: Some(true),
            push_notifications: Some(false),
            extensions: Vec::new(),
            extended_agent_card: Some(false),
        },
        security_schemes: Some(json!({
            "meshApiKey": {"httpAuthSecurityScheme": {
                "scheme": "Bearer",
                "description": "An Agentic Mesh API key (`mesh keys create`)",
            }}
        })),
        security_requirements: vec![json!({"schemes": {"meshApiKey": {"list": []}}})],
        default_input_modes: modes.clone(),
        default_output_modes: modes,
        skills,
        signatures: Vec::new(),
        icon_url: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_survive_the_trip_through_parts() {
        for value in [
            json!({"spec": "refactor", "n": [1, 2]}),
            json!({"text": "hello"}),
            json!("just a string"),
            json!({"parts": [{"url": "https://x/y.png"}, {"text": "see"}]}),
        ] {
            assert_eq!(parts_to_value(&value_to_parts(&value)), value, "{value}");
        }
        let texts = [Part::text("a"), Part::text("b")];
        assert_eq!(parts_to_value(&texts), json!({"text": "a\nb"}));
    }

    #[test]
    fn a_mesh_task_reads_as_an_a2a_task() {
        let new: mesh_types::NewTask = serde_json::from_value(json!({
            "type": "echo", "input": {"x": 1},
            "metadata": {"a2a": {"contextId": "ctx-1"}}
        }))
        .unwrap();
        let mut task = new.into_task(uuid::Uuid::now_v7(), "default", 3, mesh_types::time::now());
        let queued = task_from_mesh(&task);
        assert_eq!(queued.status.state, TaskState::Submitted);
        assert_eq!(queued.context_id.as_deref(), Some("ctx-1"));
        assert!(queued.artifacts.is_empty());
        task.status = MeshStatus::Completed;
        task.output = Some(json!({"echo": {"x": 1}}));
        let done = task_from_mesh(&task);
        assert_eq!(done.status.state, TaskState::Completed);
        assert_eq!(
            parts_to_value(&done.artifacts[0].parts),
            json!({"echo": {"x": 1}})
        );
        task.status = MeshStatus::Failed;
        task.last_error = Some("boom".into());
        let failed = task_from_mesh(&task);
        let why = failed.status.message.unwrap();
        assert_eq!(why.parts[0].text.as_deref(), Some("boom"));
        assert!(failed.status.timestamp.unwrap().ends_with('Z'));
    }

    #[test]
    fn a_served_card_parses_with_the_cards_own_checks() {
        let new: mesh_types::NewAgent = serde_json::from_value(json!({
            "name": "coder-1", "version": "1.0.0", "role": "coder", "riskTier": "medium",
            "capabilities": ["code_refactor", "code_review"]
        }))
        .unwrap();
        let agent = new.into_agent(uuid::Uuid::now_v7(), mesh_types::time::now());
        let card = card_for(&agent, "http://127.0.0.1:5000/a2a/agents/x");
        let bytes = serde_json::to_vec(&card).unwrap();
        let parsed = crate::parse_card(&bytes).unwrap();
        assert_eq!(parsed, card);
        let skills: Vec<&str> = parsed.skills.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(skills, ["code_refactor", "code_review"]);
        assert_eq!(
            parsed.jsonrpc_interface().unwrap().url,
            "http://127.0.0.1:5000/a2a/agents/x"
        );
        let mut bare = agent.clone();
        bare.capabilities.clear();
        let bytes = serde_json::to_vec(&card_for(&bare, "http://h/a2a/agents/y")).unwrap();
        assert_eq!(crate::parse_card(&bytes).unwrap().skills[0].id, "coder");
    }
}
