//! Events on the events bus: topics, offsets, and what a consumer group is handed.

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

/// The bus topic a provenance action is republished on, if any: task and agent
/// lifecycle events (`task_completed` → `task.completed`; an attempt's start,
/// `task_assigned`, is `task.started`).
pub fn topic_for_action(action: &str) -> Option<String> {
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
    }
}
