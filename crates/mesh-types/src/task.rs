//! Tasks: the unit of work the mesh schedules, as in the seed's `tasks` table.

use crate::enums::{DataClassification, RiskTier, TaskStatus};
use crate::time::{Timestamp, rfc3339_micros};
use crate::validate::{FieldError, text};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// A stored task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    pub id: Uuid,
    pub parent_id: Option<Uuid>,
    #[serde(rename = "type")]
    pub task_type: String,
    pub status: TaskStatus,
    pub priority: i32,
    pub input: Value,
    pub output: Option<Value>,
    pub metadata: Value,
    pub risk_tier: RiskTier,
    pub data_classification: DataClassification,
    /// Tenant of the principal that submitted the task.
    pub tenant: String,
    #[serde(with = "rfc3339_micros")]
    pub created_at: Timestamp,
    #[serde(with = "rfc3339_micros")]
    pub updated_at: Timestamp,
    #[serde(default, with = "optional_micros")]
    pub started_at: Option<Timestamp>,
    #[serde(default, with = "optional_micros")]
    pub completed_at: Option<Timestamp>,
    /// Claims so far; the task is dead-lettered when a failure uses the last one.
    pub attempts: i32,
    pub max_attempts: i32,
    /// Not claimable before this (retry backoff).
    #[serde(with = "rfc3339_micros")]
    pub available_at: Timestamp,
    /// Must have started by this time, or it fails with reason `slo_timeout`.
    #[serde(default, with = "optional_micros")]
    pub deadline: Option<Timestamp>,
    pub idempotency_key: Option<String>,
    /// The agent holding the current lease.
    pub leased_by: Option<Uuid>,
    #[serde(default, with = "optional_micros")]
    pub lease_expires_at: Option<Timestamp>,
    /// The agent whose attempt last failed; a retry prefers another.
    pub last_failed_agent: Option<Uuid>,
    /// Why the last attempt failed, or why the task was dead-lettered.
    pub last_error: Option<String>,
    /// A critical task waits for this one's agent: its worker should hand it back.
    #[serde(default)]
    pub yield_requested: bool,
}

/// Body of `POST /api/v1/tasks`: the seed's fields plus the risk and data labels that
/// routing and policy act on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewTask {
    #[serde(rename = "type")]
    pub task_type: String,
    pub input: Value,
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub risk_tier: Option<RiskTier>,
    #[serde(default)]
    pub data_classification: Option<DataClassification>,
    #[serde(default)]
    pub parent_id: Option<Uuid>,
    /// A task must have started by then, or it fails with reason `slo_timeout`.
    #[serde(default, with = "optional_micros")]
    pub deadline: Option<Timestamp>,
    /// Resubmitting with the same key (per tenant) returns the first task.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

pub const MAX_TASK_TYPE_LEN: usize = 64;
pub const MAX_PRIORITY: i32 = 1_000;

impl NewTask {
    pub fn validate(&self) -> Result<(), FieldError> {
        text("type", &self.task_type, MAX_TASK_TYPE_LEN)?;
        if self.input.is_null() {
            return Err(FieldError::new("input", "must not be null"));
        }
        if let Some(metadata) = &self.metadata
            && !metadata.is_object()
        {
            return Err(FieldError::new("metadata", "must be a JSON object"));
        }
        if !(-MAX_PRIORITY..=MAX_PRIORITY).contains(&self.priority) {
            return Err(FieldError::new(
                "priority",
                format!("must be between -{MAX_PRIORITY} and {MAX_PRIORITY}"),
            ));
        }
        if let Some(key) = &self.idempotency_key {
            crate::validate::text("idempotencyKey", key, 128)?;
        }
        Ok(())
    }

    /// The task as first stored: queued, with the labels' defaults applied.
    pub fn into_task(self, id: Uuid, tenant: &str, max_attempts: i32, now: Timestamp) -> Task {
        Task {
            id,
            parent_id: self.parent_id,
            task_type: self.task_type,
            status: TaskStatus::Queued,
            priority: self.priority,
            input: self.input,
            output: None,
            metadata: self
                .metadata
                .unwrap_or_else(|| Value::Object(Default::default())),
            risk_tier: self.risk_tier.unwrap_or_default(),
            data_classification: self.data_classification.unwrap_or_default(),
            tenant: tenant.to_string(),
            created_at: now,
            updated_at: now,
            started_at: None,
            completed_at: None,
            attempts: 0,
            max_attempts: max_attempts.max(1),
            available_at: now,
            deadline: self.deadline,
            idempotency_key: self.idempotency_key,
            leased_by: None,
            lease_expires_at: None,
            last_failed_agent: None,
            last_error: None,
            yield_requested: false,
        }
    }
}

/// Filters of `GET /api/v1/tasks`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    pub status: Option<TaskStatus>,
    pub task_type: Option<String>,
    pub parent_id: Option<Uuid>,
    /// Only tasks of this tenant; `None` means every tenant (admins).
    pub tenant: Option<String>,
}

/// What the queue knows that bears on when a new task will finish.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueStats {
    /// Tasks queued or running that a new task of this priority would wait behind.
    pub ahead: u64,
    /// Mean run time of recently completed tasks of this type, if any completed.
    pub mean_duration_ms: Option<f64>,
    /// How many completed tasks the mean is over.
    pub samples: u64,
}

pub(crate) mod optional_micros {
    use crate::time::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ts: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
        match ts {
            Some(ts) => s.serialize_str(&crate::time::format(ts)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
        // Accept any RFC 3339 offset; keep microseconds like every stored timestamp.
        use chrono::SubsecRound;
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| {
            chrono::DateTime::parse_from_rfc3339(&t)
                .map(|t| t.with_timezone(&chrono::Utc).trunc_subsecs(6))
                .map_err(serde::de::Error::custom)
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn seed_example_body_parses_with_defaults() {
        let body = json!({
            "type": "code_refactor",
            "input": { "spec": "...", "target": "src/foo.ts" },
            "priority": 1,
            "metadata": { "requester": "user@example.com" }
        });
        let new: NewTask = serde_json::from_value(body).unwrap();
        new.validate().unwrap();
        let task = new.into_task(Uuid::now_v7(), "default", 3, crate::time::now());
        assert_eq!(task.risk_tier, RiskTier::Low);
        assert_eq!(task.data_classification, DataClassification::Internal);
        let out = serde_json::to_value(&task).unwrap();
        assert_eq!(out["type"], "code_refactor");
        assert_eq!(out["riskTier"], "low");
        assert_eq!(out["dataClassification"], "internal");
        assert!(out["createdAt"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn bad_bodies_name_the_field() {
        let unknown =
            serde_json::from_value::<NewTask>(json!({"type":"t","input":{},"riskTier":"extreme"}));
        assert!(unknown.unwrap_err().to_string().contains("extreme"));
        let extra = serde_json::from_value::<NewTask>(json!({"type":"t","input":{},"prio":1}));
        assert!(extra.unwrap_err().to_string().contains("prio"));
        let blank: NewTask = serde_json::from_value(json!({"type":" ","input":{}})).unwrap();
        assert_eq!(blank.validate().unwrap_err().field, "type");
        let meta: NewTask =
            serde_json::from_value(json!({"type":"t","input":{},"metadata":[1]})).unwrap();
        assert_eq!(meta.validate().unwrap_err().field, "metadata");
        let null: NewTask = serde_json::from_value(json!({"type":"t","input":null})).unwrap();
        assert_eq!(null.validate().unwrap_err().field, "input");
    }
}
