//! The task queue's vocabulary: leases, retry backoff, and the provenance events of
//! queue transitions. Pure: stores call these inside their transactions.

use crate::provenance::EventDraft;
use crate::task::Task;
use crate::time::{Timestamp, rfc3339_micros};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// A claimed task. The token fences every later call for this attempt: once the lease
/// expires and the task is claimed again, the old token is refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    pub task: Task,
    pub lease_token: Uuid,
    pub attempt: i32,
    #[serde(with = "rfc3339_micros")]
    pub lease_expires_at: Timestamp,
}

/// Who claims, for what, and for how long.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimRequest {
    pub agent_id: Uuid,
    pub agent_name: String,
    /// Task types the agent handles; a task is claimable if its type is among them.
    pub task_types: Vec<String>,
    pub limit: u32,
    pub lease_ms: i64,
    pub now: Timestamp,
    /// Seconds of waiting that add one point of priority, so old low-priority tasks
    /// eventually outrank a stream of new high-priority ones.
    pub ageing_secs: i64,
}

/// What a failed attempt led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailOutcome {
    /// Back in the queue, claimable from `Task::available_at`.
    Retrying,
    /// Out of attempts (or not retryable): status `failed`, listed as a dead letter.
    DeadLettered,
}

/// Exponential backoff with full jitter, capped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub base_ms: i64,
    pub max_ms: i64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base_ms: 500,
            max_ms: 60_000,
        }
    }
}

impl RetryPolicy {
    /// Delay before retrying after failed attempt number `attempt` (1-based): uniform in
    /// `[cap/2, cap]` where `cap = min(max, base * 2^(attempt-1))`. The "random" part
    /// is a hash of the task and attempt, so every store computes the same delay and
    /// tasks failing together still spread out.
    pub fn backoff_ms(&self, task_id: Uuid, attempt: i32) -> i64 {
        let exp = attempt.clamp(1, 31) - 1;
        let cap = self
            .base_ms
            .saturating_mul(1i64 << exp)
            .min(self.max_ms)
            .max(1);
        let digest = Sha256::digest(format!("{task_id}/{attempt}").as_bytes());
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&digest[..8]);
        let unit = (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64;
        cap / 2 + ((cap - cap / 2) as f64 * unit) as i64
    }
}

fn task_event(action: &str, actor: &str, task: &Task) -> EventDraft {
    EventDraft::new(action, actor, "task", Some(task.id.to_string())).task(task.id)
}

/// `task_assigned`: the claim that gives `agent` this attempt (an `ASSIGNED_TO` edge).
pub fn assigned_event(lease: &Lease, agent_name: &str) -> EventDraft {
    task_event("task_assigned", agent_name, &lease.task).payload(json!({
        "agentId": lease.task.leased_by,
        "agentName": agent_name,
        "attempt": lease.attempt,
        "leaseExpiresAt": crate::time::format(&lease.lease_expires_at),
    }))
}

pub fn completed_event(task: &Task, agent: Option<Uuid>, actor: &str) -> EventDraft {
    task_event("task_completed", actor, task).payload(json!({
        "agentId": agent,
        "attempt": task.attempts,
        "outputSha256": task.output.as_ref().map(crate::canonical::sha256_hex),
    }))
}

/// `task_retry_scheduled` or `task_failed` (dead letter), after a failed attempt.
pub fn failed_event(
    task: &Task,
    outcome: FailOutcome,
    agent: Option<Uuid>,
    actor: &str,
) -> EventDraft {
    let action = match outcome {
        FailOutcome::Retrying => "task_retry_scheduled",
        FailOutcome::DeadLettered => "task_failed",
    };
    task_event(action, actor, task).payload(json!({
        "agentId": agent,
        "attempt": task.attempts,
        "maxAttempts": task.max_attempts,
        "reason": task.last_error,
        "availableAt": (outcome == FailOutcome::Retrying).then(|| crate::time::format(&task.available_at)),
        "deadLettered": outcome == FailOutcome::DeadLettered,
    }))
}

pub fn waiting_event(task: &Task, unfinished: i64, actor: &str) -> EventDraft {
    task_event("task_waiting", actor, task).payload(json!({"unfinishedSubtasks": unfinished}))
}

pub fn resumed_event(task: &Task) -> EventDraft {
    task_event("task_resumed", "system", task).payload(json!({"reason": "all subtasks finished"}))
}

pub fn yield_requested_event(victim: &Task, critical: &Task) -> EventDraft {
    task_event("task_yield_requested", "system", victim).payload(json!({
        "agentId": victim.leased_by,
        "forTask": critical.id,
        "forPriority": critical.priority,
    }))
}

pub fn yielded_event(task: &Task, agent: Option<Uuid>, actor: &str) -> EventDraft {
    task_event("task_yielded", actor, task)
        .payload(json!({"agentId": agent, "attemptRefunded": true}))
}

/// A human's answer to a task a policy escalated: `task_approved` (now queued) or
/// `task_rejected` (now cancelled).
pub fn approval_event(task: &Task, approved: bool, actor: &str, note: Option<&str>) -> EventDraft {
    let action = if approved {
        "task_approved"
    } else {
        "task_rejected"
    };
    task_event(action, actor, task).payload(json!({"decidedBy": actor, "note": note}))
}

pub fn requeued_event(task: &Task, actor: &str) -> EventDraft {
    task_event("task_requeued", actor, task).payload(json!({"from": "dead_letter"}))
}

pub fn lease_extended_payload(lease: &Lease) -> serde_json::Value {
    json!({"leaseExpiresAt": crate::time::format(&lease.lease_expires_at)})
}

/// Reason recorded when a task's lease runs out (its agent crashed or hung).
pub const LEASE_EXPIRED: &str = "lease_expired";
/// Reason recorded when a task was not started before its deadline.
pub const SLO_TIMEOUT: &str = "slo_timeout";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let p = RetryPolicy {
            base_ms: 100,
            max_ms: 1_000,
        };
        let id = Uuid::now_v7();
        for attempt in 1..=10 {
            let cap = (100i64 << (attempt - 1)).min(1_000);
            let d = p.backoff_ms(id, attempt);
            assert!(
                d >= cap / 2 && d <= cap,
                "attempt {attempt}: {d} not in [{}, {cap}]",
                cap / 2
            );
            assert_eq!(d, p.backoff_ms(id, attempt), "deterministic");
        }
        let spread: std::collections::HashSet<i64> =
            (0..20).map(|_| p.backoff_ms(Uuid::now_v7(), 3)).collect();
        assert!(spread.len() > 10, "jitter spreads tasks: {spread:?}");
        assert!(p.backoff_ms(id, 1_000) <= 1_000);
    }
}

/// Why a lease-fenced call was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseError {
    /// The task is not running (finished, re-queued or cancelled).
    NotRunning(crate::enums::TaskStatus),
    /// The token is not the current lease's: the lease expired and the task moved on.
    StaleToken,
}

impl std::fmt::Display for LeaseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeaseError::NotRunning(status) => write!(f, "the task is {status}, not running"),
            LeaseError::StaleToken => {
                f.write_str("stale lease token: the lease expired and the task was taken back")
            }
        }
    }
}

/// The queue's state machine. Stores load a row, apply one of these, and save it; the
/// rules live here, once.
impl Task {
    /// Checks that `token` is the current lease of a running task.
    pub fn check_lease(&self, current: Option<Uuid>, token: Uuid) -> Result<(), LeaseError> {
        if self.status != crate::enums::TaskStatus::Running {
            return Err(LeaseError::NotRunning(self.status));
        }
        if current != Some(token) {
            return Err(LeaseError::StaleToken);
        }
        Ok(())
    }

    /// Claims a queued task for `agent` under a new token.
    pub fn claim(mut self, agent: Uuid, now: Timestamp, lease_ms: i64) -> Lease {
        self.status = crate::enums::TaskStatus::Running;
        self.attempts += 1;
        self.yield_requested = false;
        self.leased_by = Some(agent);
        let expires = now + crate::time::millis(lease_ms);
        self.lease_expires_at = Some(expires);
        self.started_at = Some(self.started_at.unwrap_or(now));
        self.updated_at = now;
        Lease {
            attempt: self.attempts,
            task: self,
            // Version 7: the token carries the time it was minted, so the queue can
            // tell how long the current attempt has run without another column.
            lease_token: Uuid::now_v7(),
            lease_expires_at: expires,
        }
    }

    pub fn extend_lease(&mut self, now: Timestamp, lease_ms: i64) -> Timestamp {
        let expires = now + crate::time::millis(lease_ms);
        self.lease_expires_at = Some(expires);
        self.updated_at = now;
        expires
    }

    pub fn complete(&mut self, output: Option<serde_json::Value>, now: Timestamp) {
        self.status = crate::enums::TaskStatus::Completed;
        self.output = output;
        self.completed_at = Some(now);
        self.updated_at = now;
        self.release();
    }

    /// Ends the current attempt in failure: back to the queue after a backoff while
    /// attempts remain and the failure is retryable, else dead-lettered.
    pub fn fail(
        &mut self,
        reason: &str,
        retryable: bool,
        now: Timestamp,
        policy: &RetryPolicy,
    ) -> FailOutcome {
        self.last_error = Some(reason.to_string());
        self.last_failed_agent = self.leased_by.or(self.last_failed_agent);
        self.updated_at = now;
        self.release();
        if retryable && self.attempts < self.max_attempts {
            self.status = crate::enums::TaskStatus::Queued;
            self.available_at =
                now + crate::time::millis(policy.backoff_ms(self.id, self.attempts));
            FailOutcome::Retrying
        } else {
            self.status = crate::enums::TaskStatus::Failed;
            self.completed_at = Some(now);
            FailOutcome::DeadLettered
        }
    }

    /// Parks a running task until its subtasks finish: `pending`, lease released, the
    /// output so far kept (a claim of a task with an output is a resumption).
    pub fn wait_for_children(&mut self, output: serde_json::Value, now: Timestamp) {
        self.status = crate::enums::TaskStatus::Pending;
        // Parking is progress, not a failed attempt: a task that resumes many times
        // (a flow going through its stages) must not run out of attempts by doing so.
        self.attempts = (self.attempts - 1).max(0);
        self.output = Some(output);
        self.updated_at = now;
        self.release();
    }

    /// Back to the queue once every subtask has finished.
    pub fn resume(&mut self, now: Timestamp) {
        self.status = crate::enums::TaskStatus::Queued;
        self.available_at = now;
        self.updated_at = now;
    }

    /// A queued task whose deadline passed before it started.
    pub fn miss_deadline(&mut self, now: Timestamp) {
        self.status = crate::enums::TaskStatus::Failed;
        self.last_error = Some(SLO_TIMEOUT.to_string());
        self.completed_at = Some(now);
        self.updated_at = now;
    }

    /// Hands a running task back to the queue at the scheduler's request: the attempt
    /// does not count, and any agent may take it up again.
    pub fn yield_back(&mut self, now: Timestamp) {
        self.status = crate::enums::TaskStatus::Queued;
        self.attempts = (self.attempts - 1).max(0);
        self.available_at = now;
        self.yield_requested = false;
        self.updated_at = now;
        self.release();
    }

    /// Puts a dead letter back in the queue with fresh attempts.
    /// A human approved a task parked in `needs_approval`: it joins the queue now.
    pub fn approve(&mut self, now: Timestamp) {
        self.status = crate::enums::TaskStatus::Queued;
        self.available_at = now;
        self.updated_at = now;
    }

    /// A human rejected a parked task: it ends cancelled, with the reason kept.
    pub fn reject(&mut self, now: Timestamp, reason: String) {
        self.status = crate::enums::TaskStatus::Cancelled;
        self.last_error = Some(reason);
        self.completed_at = Some(now);
        self.updated_at = now;
    }

    pub fn requeue(&mut self, now: Timestamp) {
        self.status = crate::enums::TaskStatus::Queued;
        self.attempts = 0;
        self.available_at = now;
        self.completed_at = None;
        self.updated_at = now;
    }

    fn release(&mut self) {
        self.leased_by = None;
        self.lease_expires_at = None;
        self.yield_requested = false;
    }
}

#[cfg(test)]
mod transitions {
    use super::*;
    use crate::enums::TaskStatus;

    fn task(max_attempts: i32) -> Task {
        let new: crate::task::NewTask =
            serde_json::from_value(json!({"type": "t", "input": {}})).unwrap();
        new.into_task(Uuid::now_v7(), "default", max_attempts, crate::time::now())
    }

    #[test]
    fn claim_fail_retry_then_dead_letter() {
        let policy = RetryPolicy::default();
        let now = crate::time::now();
        let a = Uuid::now_v7();
        let lease = task(2).claim(a, now, 1_000);
        assert_eq!((lease.task.status, lease.attempt), (TaskStatus::Running, 1));
        let mut t = lease.task.clone();
        assert_eq!(
            t.check_lease(Some(lease.lease_token), lease.lease_token),
            Ok(())
        );
        assert_eq!(
            t.check_lease(Some(Uuid::new_v4()), lease.lease_token),
            Err(LeaseError::StaleToken)
        );
        assert_eq!(t.fail("boom", true, now, &policy), FailOutcome::Retrying);
        assert_eq!(t.status, TaskStatus::Queued);
        assert_eq!(t.last_failed_agent, Some(a));
        assert!(t.available_at > now);
        let mut t = t.claim(Uuid::now_v7(), now, 1_000).task;
        assert_eq!(
            t.fail("boom again", true, now, &policy),
            FailOutcome::DeadLettered
        );
        assert_eq!(
            (t.status, t.last_error.as_deref()),
            (TaskStatus::Failed, Some("boom again"))
        );
        t.requeue(now);
        assert_eq!((t.status, t.attempts), (TaskStatus::Queued, 0));
        let mut once = task(3).claim(a, now, 1_000).task;
        assert_eq!(
            once.fail("bad input", false, now, &policy),
            FailOutcome::DeadLettered
        );
        assert_eq!(
            once.check_lease(None, Uuid::new_v4()),
            Err(LeaseError::NotRunning(TaskStatus::Failed))
        );
    }
}
