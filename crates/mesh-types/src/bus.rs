//! Events on the events bus: topics, offsets, and what a consumer group is handed.

use crate::provenance::ProvenanceEvent;
use crate::time::{Timestamp, rfc3339_micros};
use crate::validate::FieldError;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// One published event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BusEvent {
    pub topic: String,
    /// Position in the topic, opaque to consumers: pass it back as `after` to resume.
    /// The embedded backends count 1, 2, 3…; Redis uses stream ids, NATS sequences.
    pub offset: String,
    /// Stable across redeliveries, so consumers can drop duplicates.
    pub id: Uuid,
    #[serde(with = "rfc3339_micros")]
    pub timestamp: Timestamp,
    pub payload: Value,
}

/// An event handed to a consumer group member, with how often it has been handed out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub event: BusEvent,
    /// 1 on first delivery; more when an unacknowledged event was reclaimed.
    pub deliveries: u32,
}

pub const MAX_TOPIC_LEN: usize = 128;

/// Topics and group names: lowercase letters, digits, `.`, `_`, `-`; starting with a
/// letter or digit. Dots separate levels (`task.completed`).
pub fn validate_name(field: &str, name: &str) -> Result<(), FieldError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_TOPIC_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!(
                "`{name}` is not a valid name: use 1–{MAX_TOPIC_LEN} of a-z 0-9 . _ - starting with a letter or digit"
            ),
        ))
    }
}

/// The provenance actions the mesh publishes on the bus: task, agent and tool
/// lifecycle events. Their topics are the mesh's own (publishing to one is refused),
/// and a new lifecycle action reaches the bus only once it is listed here.
pub const LIFECYCLE_ACTIONS: &[&str] = &[
    "task_created",
    "task_queued",
    "task_assigned",
    "task_completed",
    "task_failed",
    "task_retry_scheduled",
    "task_cancelled",
    "task_reviewed",
    "task_needs_approval",
    "task_approved",
    "task_rejected",
    "task_waiting",
    "task_resumed",
    "task_requeued",
    "task_yield_requested",
    "task_yielded",
    "subtask_created",
    "agent_registered",
    "agent_recovered",
    "agent_retired",
    "agent_heartbeat_expired",
    "agent_draining",
    "agent_drained",
    "agent_busy",
    "agent_available",
    "agent_probe_failed",
    "agent_process_exited",
    "agent_spawned",
    "tool_registered",
    "tool_updated",
    "tool_retired",
    "tool_recovered",
    "tool_unhealthy",
    "tool_call",
];

/// `task_completed` → `task.completed`; an attempt's start, `task_assigned`, is
/// `task.started`; `subtask_created` is `task.subtask_created`.
fn lifecycle_topic(action: &str) -> Option<String> {
    if action == "task_assigned" {
        return Some("task.started".to_string());
    }
    let (kind, rest) = action.split_once('_')?;
    match kind {
        "task" | "agent" | "tool" => Some(format!("{kind}.{rest}")),
        "subtask" => Some(format!("task.subtask_{rest}")),
        _ => None,
    }
}

/// The bus topic a provenance action is published on, if it is a lifecycle action.
pub fn topic_for_action(action: &str) -> Option<String> {
    LIFECYCLE_ACTIONS
        .contains(&action)
        .then(|| lifecycle_topic(action))
        .flatten()
}

/// The lifecycle action whose events make up `topic`; `None` for a topic clients
/// publish to. Each lifecycle topic carries exactly one action.
pub fn action_for_topic(topic: &str) -> Option<&'static str> {
    LIFECYCLE_ACTIONS
        .iter()
        .copied()
        .find(|action| lifecycle_topic(action).as_deref() == Some(topic))
}

/// A lifecycle event as the bus delivers it: the provenance event, whose id it keeps
/// (so consumers drop duplicates by it), with the log position in the payload.
pub fn lifecycle_event(topic: String, offset: String, event: ProvenanceEvent) -> BusEvent {
    let payload = serde_json::json!({
        "provenanceSeq": event.seq,
        "action": event.action,
        "actor": event.actor,
        "taskId": event.task_id,
        "subjectType": event.subject_type,
        "subjectId": event.subject_id,
        "timestamp": crate::time::format(&event.timestamp),
        "data": event.payload,
    });
    BusEvent {
        topic,
        offset,
        id: event.id,
        timestamp: event.timestamp,
        payload,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_topics() {
        assert!(validate_name("topic", "task.completed").is_ok());
        assert!(validate_name("topic", "a-b_c.9").is_ok());
        for bad in ["", "Task", ".x", "a b", "a/b", "a*", &"x".repeat(129)] {
            assert!(validate_name("topic", bad).is_err(), "{bad}");
        }
        assert_eq!(
            topic_for_action("task_completed").as_deref(),
            Some("task.completed")
        );
        assert_eq!(
            topic_for_action("task_retry_scheduled").as_deref(),
            Some("task.retry_scheduled")
        );
        assert_eq!(
            topic_for_action("agent_heartbeat_expired").as_deref(),
            Some("agent.heartbeat_expired")
        );
        assert_eq!(topic_for_action("auth_denied"), None);
        assert_eq!(topic_for_action("key_created"), None);
        // Prefixed, but not a lifecycle action: `agent.chat` stays a client topic.
        assert_eq!(topic_for_action("agent_chat"), None);
        assert_eq!(action_for_topic("agent.chat"), None);
        assert_eq!(action_for_topic("task.started"), Some("task_assigned"));
        assert_eq!(
            action_for_topic("task.subtask_created"),
            Some("subtask_created")
        );
    }

    #[test]
    fn every_lifecycle_action_has_its_own_valid_topic() {
        let mut topics = std::collections::HashSet::new();
        for action in LIFECYCLE_ACTIONS {
            let topic = topic_for_action(action).expect(action);
            assert!(validate_name("topic", &topic).is_ok(), "{topic}");
            assert_eq!(action_for_topic(&topic), Some(*action), "{topic}");
            assert!(topics.insert(topic), "two actions share a topic");
        }
    }
}
