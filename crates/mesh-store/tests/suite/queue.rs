use super::tasks::new_task;
use super::{Harness, event};
use mesh_store::StoreError;
use mesh_types::queue::{ClaimRequest, FailOutcome, Lease, RetryPolicy};
use mesh_types::task::TaskFilter;
use mesh_types::time::Timestamp;
use mesh_types::{PageRequest, TaskStatus};
use serde_json::json;
use std::collections::HashSet;
use uuid::Uuid;

const LEASE_MS: i64 = 1_000;

fn request(agent: Uuid, types: &[&str], limit: u32, now: Timestamp) -> ClaimRequest {
    ClaimRequest {
        agent_id: agent,
        agent_name: format!("agent-{}", &agent.to_string()[..8]),
        task_types: types.iter().map(|t| t.to_string()).collect(),
        limit,
        lease_ms: LEASE_MS,
        now,
        ageing_secs: 60,
    }
}

pub async fn claim_one(h: &Harness, task_type: &str, now: Timestamp) -> Option<Lease> {
    h.store
        .queue
        .claim(&request(Uuid::now_v7(), &[task_type], 1, now))
        .await
        .unwrap()
        .pop()
}

fn later(now: Timestamp, ms: i64) -> Timestamp {
    now + chrono::Duration::milliseconds(ms)
}

pub async fn claims_follow_types_priority_and_limit(h: &Harness) {
    let s = &h.store;
    let low = new_task("a", 0, None);
    let high = new_task("a", 9, None);
    let mid = new_task("a", 5, None);
    let other = new_task("b", 100, None);
    for t in [&low, &high, &mid, &other] {
        s.tasks.insert_task(t, vec![]).await.unwrap();
    }
    let now = mesh_types::time::now();
    let agent = Uuid::now_v7();
    let got = s
        .queue
        .claim(&request(agent, &["a"], 2, now))
        .await
        .unwrap();
    let ids: Vec<_> = got.iter().map(|l| l.task.id).collect();
    assert_eq!(ids, vec![high.id, mid.id]);
    assert!(got.iter().all(|l| l.attempt == 1
        && l.task.status == TaskStatus::Running
        && l.task.leased_by == Some(agent)));
    let none = s
        .queue
        .claim(&request(agent, &["nothing-matches"], 5, now))
        .await
        .unwrap();
    assert!(none.is_empty());
    let none = s.queue.claim(&request(agent, &[], 5, now)).await.unwrap();
    assert!(none.is_empty());
    let timeline = s.provenance.events_for_task(high.id).await.unwrap();
    let assigned = timeline
        .iter()
        .find(|e| e.action == "task_assigned")
        .unwrap();
    assert_eq!(assigned.payload["agentId"], serde_json::json!(agent));
}

pub async fn old_low_priority_tasks_age_past_new_ones(h: &Harness) {
    let s = &h.store;
    let now = mesh_types::time::now();
    let mut old = new_task("aged", 0, None);
    old.available_at = later(now, -600_000); // waited ten minutes
    let fresh = new_task("aged", 5, None);
    s.tasks.insert_task(&old, vec![]).await.unwrap();
    s.tasks.insert_task(&fresh, vec![]).await.unwrap();
    // One point per minute of waiting: 0 + 10 beats 5 + 0.
    let first = s
        .queue
        .claim(&request(Uuid::now_v7(), &["aged"], 1, now))
        .await
        .unwrap();
    assert_eq!(first[0].task.id, old.id);
}

pub async fn stale_lease_tokens_are_refused(h: &Harness) {
    let s = &h.store;
    let task = new_task("fenced", 0, None);
    s.tasks.insert_task(&task, vec![]).await.unwrap();
    let now = mesh_types::time::now();
    let lease = claim_one(h, "fenced", now).await.unwrap();
    let head = s.provenance.head().await.unwrap();
    let wrong = s
        .queue
        .complete_task(task.id, Uuid::new_v4(), None, now, "x")
        .await;
    assert!(matches!(wrong, Err(StoreError::Conflict(_))), "{wrong:?}");
    let wrong = s
        .queue
        .fail_task(
            task.id,
            Uuid::new_v4(),
            "x",
            true,
            now,
            RetryPolicy::default(),
            "x",
        )
        .await;
    assert!(matches!(wrong, Err(StoreError::Conflict(_))));
    let wrong = s
        .queue
        .extend_lease(task.id, Uuid::new_v4(), now, LEASE_MS)
        .await;
    assert!(matches!(wrong, Err(StoreError::Conflict(_))));
    assert_eq!(
        s.provenance.head().await.unwrap(),
        head,
        "refused calls write nothing"
    );
    assert_eq!(
        s.tasks.get_task(task.id).await.unwrap().unwrap().status,
        TaskStatus::Running
    );
    let extended = s
        .queue
        .extend_lease(task.id, lease.lease_token, later(now, 500), LEASE_MS)
        .await
        .unwrap();
    assert_eq!(extended.lease_expires_at, later(now, 1_500));
    let missing = s
        .queue
        .complete_task(Uuid::now_v7(), lease.lease_token, None, now, "x")
        .await;
    assert!(matches!(missing, Err(StoreError::NotFound(_))));
}

pub async fn failures_retry_with_backoff_then_dead_letter(h: &Harness) {
    let s = &h.store;
    let mut task = new_task("flaky", 0, None);
    task.max_attempts = 2;
    s.tasks.insert_task(&task, vec![]).await.unwrap();
    let policy = RetryPolicy {
        base_ms: 1_000,
        max_ms: 10_000,
    };
    let now = mesh_types::time::now();
    let lease = claim_one(h, "flaky", now).await.unwrap();
    let (queued, outcome) = s
        .queue
        .fail_task(
            task.id,
            lease.lease_token,
            "timeout",
            true,
            now,
            policy,
            "w",
        )
        .await
        .unwrap();
    assert_eq!(
        (outcome, queued.status),
        (FailOutcome::Retrying, TaskStatus::Queued)
    );
    let delay = (queued.available_at - now).num_milliseconds();
    assert!((500..=1_000).contains(&delay), "backoff {delay} ms");
    assert!(
        claim_one(h, "flaky", now).await.is_none(),
        "not claimable during backoff"
    );
    let retry = claim_one(h, "flaky", later(now, 1_001)).await.unwrap();
    assert_eq!(retry.attempt, 2);
    let (dead, outcome) = s
        .queue
        .fail_task(
            task.id,
            retry.lease_token,
            "timeout again",
            true,
            later(now, 1_100),
            policy,
            "w",
        )
        .await
        .unwrap();
    assert_eq!(
        (outcome, dead.status),
        (FailOutcome::DeadLettered, TaskStatus::Failed)
    );
    assert_eq!(dead.last_error.as_deref(), Some("timeout again"));
    let letters = s
        .tasks
        .list_tasks(
            &TaskFilter {
                status: Some(TaskStatus::Failed),
                ..Default::default()
            },
            &PageRequest::new(None, None),
        )
        .await
        .unwrap();
    assert!(letters.items.iter().any(|t| t.id == task.id));
    let back = s
        .queue
        .requeue_task(task.id, later(now, 2_000), "op")
        .await
        .unwrap();
    assert_eq!((back.status, back.attempts), (TaskStatus::Queued, 0));
    assert!(matches!(
        s.queue.requeue_task(task.id, now, "op").await,
        Err(StoreError::Conflict(_))
    ));
    let actions: Vec<String> = s
        .provenance
        .events_for_task(task.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    for want in [
        "task_assigned",
        "task_retry_scheduled",
        "task_failed",
        "task_requeued",
    ] {
        assert!(
            actions.iter().any(|a| a == want),
            "{want} missing from {actions:?}"
        );
    }
    // A non-retryable failure dead-letters at once.
    let fatal = new_task("fatal", 0, None);
    s.tasks.insert_task(&fatal, vec![]).await.unwrap();
    let t = mesh_types::time::now();
    let lease = claim_one(h, "fatal", t).await.unwrap();
    let (_, outcome) = s
        .queue
        .fail_task(
            fatal.id,
            lease.lease_token,
            "bad input",
            false,
            t,
            policy,
            "w",
        )
        .await
        .unwrap();
    assert_eq!(outcome, FailOutcome::DeadLettered);
}

pub async fn expired_leases_go_to_another_agent(h: &Harness) {
    let s = &h.store;
    let crashed = Uuid::now_v7();
    let survivor = Uuid::now_v7();
    let orphan = new_task("work", 0, None);
    s.tasks.insert_task(&orphan, vec![]).await.unwrap();
    let now = mesh_types::time::now();
    let lease = s
        .queue
        .claim(&request(crashed, &["work"], 1, now))
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert!(
        s.queue
            .reap_expired_leases(later(now, 500), RetryPolicy::default())
            .await
            .unwrap()
            .is_empty()
    );
    let policy = RetryPolicy {
        base_ms: 1,
        max_ms: 1,
    };
    let reaped = s
        .queue
        .reap_expired_leases(later(now, LEASE_MS + 1), policy)
        .await
        .unwrap();
    assert_eq!(reaped.len(), 1);
    assert_eq!(reaped[0].0.last_error.as_deref(), Some("lease_expired"));
    assert_eq!(reaped[0].0.last_failed_agent, Some(crashed));
    let stale = s
        .queue
        .complete_task(
            orphan.id,
            lease.lease_token,
            None,
            later(now, LEASE_MS + 2),
            "late",
        )
        .await;
    assert!(
        matches!(stale, Err(StoreError::Conflict(_))),
        "the crashed agent's token is dead"
    );
    // A fresh task beside it: the crashed agent is offered the fresh one first.
    let fresh = new_task("work", 0, None);
    s.tasks.insert_task(&fresh, vec![]).await.unwrap();
    let t = later(now, LEASE_MS + 10);
    let again = s
        .queue
        .claim(&request(crashed, &["work"], 1, t))
        .await
        .unwrap();
    assert_eq!(again[0].task.id, fresh.id);
    let other = s
        .queue
        .claim(&request(survivor, &["work"], 1, t))
        .await
        .unwrap();
    assert_eq!((other[0].task.id, other[0].attempt), (orphan.id, 2));
}

/// A failed attempt's agent leaves the retry to others for a while, then may take it
/// again if nobody did (it may be the only agent able to).
pub async fn retries_wait_for_another_agent_first(h: &Harness) {
    let s = &h.store;
    let failed_by = Uuid::now_v7();
    let task = new_task("solo", 0, None);
    s.tasks.insert_task(&task, vec![]).await.unwrap();
    let now = mesh_types::time::now();
    let lease = s
        .queue
        .claim(&request(failed_by, &["solo"], 1, now))
        .await
        .unwrap()
        .pop()
        .unwrap();
    let policy = RetryPolicy {
        base_ms: 1,
        max_ms: 1,
    };
    let (retried, _) = s
        .queue
        .fail_task(
            task.id,
            lease.lease_token,
            "boom",
            true,
            now,
            policy,
            "agent",
        )
        .await
        .unwrap();
    let open = retried.available_at;
    let soon = s
        .queue
        .claim(&request(failed_by, &["solo"], 1, later(open, 10)))
        .await
        .unwrap();
    assert!(soon.is_empty(), "left for another agent at first");
    let grace = mesh_store::RETRY_ELSEWHERE_MS;
    let eventually = s
        .queue
        .claim(&request(failed_by, &["solo"], 1, later(open, grace + 10)))
        .await
        .unwrap();
    assert_eq!(eventually[0].task.id, task.id, "nobody else came");
}

pub async fn missed_deadlines_fail_with_slo_timeout(h: &Harness) {
    let s = &h.store;
    let now = mesh_types::time::now();
    let mut late = new_task("slo", 0, None);
    late.deadline = Some(later(now, 1_000));
    let mut roomy = new_task("slo", 0, None);
    roomy.deadline = Some(later(now, 60_000));
    s.tasks.insert_task(&late, vec![]).await.unwrap();
    s.tasks.insert_task(&roomy, vec![]).await.unwrap();
    let after = later(now, 2_000);
    let failed = s.queue.expire_deadlines(after).await.unwrap();
    assert_eq!(
        failed.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![late.id]
    );
    assert_eq!(failed[0].last_error.as_deref(), Some("slo_timeout"));
    assert_eq!(failed[0].status, TaskStatus::Failed);
    let claimed = claim_one(h, "slo", after).await.unwrap();
    assert_eq!(claimed.task.id, roomy.id);
}

pub async fn idempotency_keys_return_the_first_task(h: &Harness) {
    let s = &h.store;
    let mut first = new_task("idem", 0, None);
    first.idempotency_key = Some("order-42".into());
    let stored = s
        .tasks
        .insert_task(&first, vec![event("task_created")])
        .await
        .unwrap();
    assert_eq!(stored.id, first.id);
    let head = s.provenance.head().await.unwrap();
    let mut again = new_task("idem", 0, None);
    again.idempotency_key = Some("order-42".into());
    let stored = s
        .tasks
        .insert_task(&again, vec![event("task_created")])
        .await
        .unwrap();
    assert_eq!(stored.id, first.id, "same key, same task");
    assert!(s.tasks.get_task(again.id).await.unwrap().is_none());
    assert_eq!(
        s.provenance.head().await.unwrap(),
        head,
        "nothing new written"
    );
    let mut elsewhere = new_task("idem", 0, None);
    elsewhere.idempotency_key = Some("order-42".into());
    elsewhere.tenant = "other".into();
    let stored = s.tasks.insert_task(&elsewhere, vec![]).await.unwrap();
    assert_eq!(stored.id, elsewhere.id, "keys are per tenant");
}

pub async fn concurrent_claims_never_lease_a_task_twice(h: &Harness) {
    for i in 0..60 {
        h.store
            .tasks
            .insert_task(&new_task("race", i % 4, None), vec![])
            .await
            .unwrap();
    }
    let mut claimers = Vec::new();
    for _ in 0..4 {
        let store = h.store.clone();
        claimers.push(tokio::spawn(async move {
            let agent = Uuid::now_v7();
            let mut mine = Vec::new();
            loop {
                let got = store
                    .queue
                    .claim(&request(agent, &["race"], 3, mesh_types::time::now()))
                    .await
                    .unwrap();
                if got.is_empty() {
                    return mine;
                }
                for lease in got {
                    store
                        .queue
                        .complete_task(
                            lease.task.id,
                            lease.lease_token,
                            None,
                            mesh_types::time::now(),
                            "w",
                        )
                        .await
                        .unwrap();
                    mine.push(lease.task.id);
                }
            }
        }));
    }
    let mut all = Vec::new();
    for c in claimers {
        all.extend(c.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!((all.len(), unique.len()), (60, 60));
    assert!(
        mesh_store::verify_chain(h.store.provenance.as_ref())
            .await
            .unwrap()
            .is_ok()
    );
}

pub async fn parents_resume_when_subtasks_finish(h: &Harness) {
    let s = &h.store;
    let parent = new_task("plan", 0, None);
    s.tasks.insert_task(&parent, vec![]).await.unwrap();
    let lease = claim_one(h, "plan", mesh_types::time::now()).await.unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| new_task("step", 0, Some(parent.id)))
        .collect();
    for c in &children {
        s.tasks.insert_task(c, vec![]).await.unwrap();
    }
    let now = mesh_types::time::now();
    let parked = s
        .queue
        .await_children(
            parent.id,
            lease.lease_token,
            json!({"plan": 1}),
            now,
            "planner",
        )
        .await
        .unwrap();
    assert_eq!(parked.status, TaskStatus::Pending);
    assert!(
        claim_one(h, "plan", now).await.is_none(),
        "a parked parent is not claimable"
    );
    let wrong = s
        .queue
        .await_children(parent.id, lease.lease_token, json!({}), now, "planner")
        .await;
    assert!(
        matches!(wrong, Err(StoreError::Conflict(_))),
        "the lease ended when it parked"
    );

    let step = claim_one(h, "step", mesh_types::time::now()).await.unwrap();
    s.queue
        .complete_task(
            step.task.id,
            step.lease_token,
            Some(json!("done")),
            mesh_types::time::now(),
            "w",
        )
        .await
        .unwrap();
    assert_eq!(
        s.tasks.get_task(parent.id).await.unwrap().unwrap().status,
        TaskStatus::Pending
    );
    let other = children.iter().find(|c| c.id != step.task.id).unwrap();
    s.tasks
        .cancel_task(
            other.id,
            mesh_types::time::now(),
            std::sync::Arc::new(|t: &mesh_types::Task| event("task_cancelled").task(t.id)),
        )
        .await
        .unwrap();
    let resumed = s.tasks.get_task(parent.id).await.unwrap().unwrap();
    assert_eq!(
        resumed.status,
        TaskStatus::Queued,
        "the last subtask finished"
    );
    let again = claim_one(h, "plan", mesh_types::time::now()).await.unwrap();
    // Parking refunded the first attempt: resuming is not a retry.
    assert_eq!(
        (again.attempt, again.task.output.clone()),
        (1, Some(json!({"plan": 1})))
    );
    let actions: Vec<String> = s
        .provenance
        .events_for_task(parent.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert!(
        actions.contains(&"task_waiting".to_string())
            && actions.contains(&"task_resumed".to_string()),
        "{actions:?}"
    );

    // Subtasks that finished before the parent parked: it goes straight back.
    let quick = new_task("plan2", 0, None);
    s.tasks.insert_task(&quick, vec![]).await.unwrap();
    let lease = claim_one(h, "plan2", mesh_types::time::now())
        .await
        .unwrap();
    let child = new_task("fast", 0, Some(quick.id));
    s.tasks.insert_task(&child, vec![]).await.unwrap();
    let c = claim_one(h, "fast", mesh_types::time::now()).await.unwrap();
    s.queue
        .complete_task(child.id, c.lease_token, None, mesh_types::time::now(), "w")
        .await
        .unwrap();
    let back = s
        .queue
        .await_children(
            quick.id,
            lease.lease_token,
            json!({}),
            mesh_types::time::now(),
            "p",
        )
        .await
        .unwrap();
    assert_eq!(back.status, TaskStatus::Queued);
}

pub async fn critical_tasks_preempt_lower_priority_work(h: &Harness) {
    let s = &h.store;
    let low = new_task("gpu", 1, None);
    s.tasks.insert_task(&low, vec![]).await.unwrap();
    let t0 = mesh_types::time::now();
    let busy = claim_one(h, "gpu", t0).await.unwrap();
    let mut critical = new_task("gpu", 100, None);
    critical.available_at = later(t0, -5_000); // it has been waiting
    s.tasks.insert_task(&critical, vec![]).await.unwrap();
    let now = mesh_types::time::now();
    assert!(
        s.queue
            .request_yields(now, 101, 1_000)
            .await
            .unwrap()
            .is_empty(),
        "not critical at that threshold"
    );
    let asked = s.queue.request_yields(now, 100, 1_000).await.unwrap();
    assert_eq!(asked.len(), 1);
    assert_eq!((asked[0].0.id, asked[0].1.id), (critical.id, low.id));
    assert!(
        s.queue
            .request_yields(now, 100, 1_000)
            .await
            .unwrap()
            .is_empty(),
        "one request per waiting task"
    );
    // The worker learns of it when it extends its lease, and hands the task back.
    let lease = s
        .queue
        .extend_lease(low.id, busy.lease_token, now, LEASE_MS)
        .await
        .unwrap();
    assert!(lease.task.yield_requested);
    let back = s
        .queue
        .yield_task(low.id, busy.lease_token, now, "worker")
        .await
        .unwrap();
    assert_eq!(
        (back.status, back.attempts, back.yield_requested),
        (TaskStatus::Queued, 0, false),
        "no attempt lost"
    );
    let stale = s
        .queue
        .yield_task(low.id, busy.lease_token, now, "worker")
        .await;
    assert!(matches!(stale, Err(StoreError::Conflict(_))));
    let next = claim_one(h, "gpu", mesh_types::time::now()).await.unwrap();
    assert_eq!(next.task.id, critical.id, "the critical task goes first");
    let actions: Vec<String> = s
        .provenance
        .events_for_task(low.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert!(
        actions.contains(&"task_yield_requested".into())
            && actions.contains(&"task_yielded".into()),
        "{actions:?}"
    );
}

/// New work wakes claimers waiting on the queue's signal (on PostgreSQL through
/// LISTEN/NOTIFY, which also reaches other processes).
pub async fn new_work_wakes_waiters(h: &Harness) {
    let signal = h.store.queue.work_signal();
    // The listener may still be connecting: retry until a wake-up arrives.
    for _ in 0..50 {
        let woken = signal.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        h.store
            .tasks
            .insert_task(&new_task("wake", 0, None), vec![])
            .await
            .unwrap();
        if tokio::time::timeout(std::time::Duration::from_millis(200), woken)
            .await
            .is_ok()
        {
            return;
        }
    }
    panic!("no wake-up after 50 enqueues");
}

/// A gate that allows even priorities, recording each decision as an event.
fn even_priorities() -> mesh_store::ClaimGate {
    std::sync::Arc::new(|task: &mesh_types::Task| mesh_store::GateVerdict {
        allow: task.priority % 2 == 0,
        reason: format!("odd priority {}", task.priority),
        audit: Some(
            event("policy_decision")
                .task(task.id)
                .payload(json!({"priority": task.priority})),
        ),
    })
}

async fn decisions(h: &Harness) -> Vec<serde_json::Value> {
    h.store
        .provenance
        .events_with_action("policy_decision", 0, 1_000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.payload)
        .collect()
}

/// A gated claim leases only what its gate allows, says why it passed over the rest,
/// and records every decision it acted on.
pub async fn gated_claims_lease_what_the_gate_allows(h: &Harness) {
    let s = &h.store;
    for priority in 0..6 {
        s.tasks
            .insert_task(&new_task("gated", priority, None), vec![])
            .await
            .unwrap();
    }
    let gate = even_priorities();
    let req = request(Uuid::now_v7(), &["gated"], 10, mesh_types::time::now());
    let outcome = s.queue.claim_gated(&req, Some(&gate)).await.unwrap();
    let mut leased: Vec<i32> = outcome.leases.iter().map(|l| l.task.priority).collect();
    leased.sort();
    assert_eq!(leased, [0, 2, 4]);
    let mut refused = outcome.refused.clone();
    refused.sort();
    assert_eq!(
        refused,
        ["odd priority 1", "odd priority 3", "odd priority 5"]
    );
    assert_eq!(decisions(h).await.len(), 6, "one decision per task decided");
    // The refused tasks are still queued for an agent the gate allows.
    let queued = s
        .tasks
        .list_tasks(
            &TaskFilter {
                status: Some(TaskStatus::Queued),
                task_type: Some("gated".into()),
                ..Default::default()
            },
            &PageRequest::new(None, None),
        )
        .await
        .unwrap();
    assert_eq!(queued.items.len(), 3);
    // A limit stops the deciding too: one lease, and no decision beyond it.
    for _ in 0..2 {
        s.tasks
            .insert_task(&new_task("gated-2", 2, None), vec![])
            .await
            .unwrap();
    }
    let one = request(Uuid::now_v7(), &["gated-2"], 1, mesh_types::time::now());
    let outcome = s.queue.claim_gated(&one, Some(&gate)).await.unwrap();
    assert_eq!((outcome.leases.len(), decisions(h).await.len()), (1, 7));
}

/// Concurrent gated claims lease each task once, with one recorded decision per lease.
pub async fn concurrent_gated_claims_decide_each_task_once(h: &Harness) {
    for i in 0..60 {
        h.store
            .tasks
            .insert_task(&new_task("gated-race", (i % 3) * 2, None), vec![])
            .await
            .unwrap();
    }
    let mut claimers = Vec::new();
    for _ in 0..4 {
        let store = h.store.clone();
        claimers.push(tokio::spawn(async move {
            let gate = even_priorities();
            let agent = Uuid::now_v7();
            let mut mine = Vec::new();
            let mut empty = 0;
            // A claim may come back empty while another holds the rest; ask again.
            while empty < 3 {
                let req = request(agent, &["gated-race"], 4, mesh_types::time::now());
                let got = store.queue.claim_gated(&req, Some(&gate)).await.unwrap();
                if got.leases.is_empty() {
                    empty += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
                mine.extend(got.leases.into_iter().map(|l| l.task.id));
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for c in claimers {
        all.extend(c.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!((all.len(), unique.len()), (60, 60));
    assert_eq!(decisions(h).await.len(), 60);
    assert!(
        mesh_store::verify_chain(h.store.provenance.as_ref())
            .await
            .unwrap()
            .is_ok()
    );
}

/// Parents park while their subtasks finish, all at once and many times over. A
/// finishing subtask resumes its parent, so its transaction takes the parent's row as
/// well as its own and the log's head; a parking parent takes its row and the head.
/// Taken in different orders, two such transactions deadlock (PostgreSQL aborts one).
pub async fn parents_park_while_children_finish(h: &Harness) {
    let s = &h.store;
    for round in 0..5 {
        let mut families = Vec::new();
        for i in 0..6 {
            let (plan, step) = (format!("park-{round}-{i}"), format!("step-{round}-{i}"));
            let parent = new_task(&plan, 0, None);
            s.tasks.insert_task(&parent, vec![]).await.unwrap();
            let lease = claim_one(h, &plan, mesh_types::time::now()).await.unwrap();
            for _ in 0..2 {
                let child = new_task(&step, 0, Some(parent.id));
                s.tasks
                    .insert_task(&child, vec![event("task_created").task(child.id)])
                    .await
                    .unwrap();
            }
            let now = mesh_types::time::now();
            let children = s
                .queue
                .claim(&request(Uuid::now_v7(), &[step.as_str()], 2, now))
                .await
                .unwrap();
            assert_eq!(children.len(), 2);
            families.push((parent.id, lease, children));
        }
        let mut writes = tokio::task::JoinSet::new();
        for (parent, lease, children) in &families {
            let store = s.clone();
            let (parent, token) = (*parent, lease.lease_token);
            writes.spawn(async move {
                let now = mesh_types::time::now();
                store
                    .queue
                    .await_children(parent, token, json!({}), now, "planner")
                    .await
                    .map(drop)
            });
            for child in children {
                let store = s.clone();
                let (id, token) = (child.task.id, child.lease_token);
                writes.spawn(async move {
                    let now = mesh_types::time::now();
                    store
                        .queue
                        .complete_task(id, token, None, now, "worker")
                        .await
                        .map(drop)
                });
            }
        }
        while let Some(done) = writes.join_next().await {
            done.unwrap()
                .unwrap_or_else(|e| panic!("round {round}: a write failed: {e}"));
        }
        for (parent, _, _) in &families {
            assert_eq!(
                s.tasks.get_task(*parent).await.unwrap().unwrap().status,
                TaskStatus::Queued,
                "round {round}: every subtask finished, so the parent is back in the queue"
            );
        }
    }
    assert!(
        mesh_store::verify_chain(s.provenance.as_ref())
            .await
            .unwrap()
            .is_ok()
    );
}

/// Parents are cancelled while their subtasks finish, all at once and many times over.
/// A cancellation takes the parent's row and its subtasks'; a finishing subtask takes
/// its own row and then its parent's. Each completion either lands first or finds its
/// task cancelled (a conflict); nothing else may fail.
pub async fn parents_are_cancelled_while_children_finish(h: &Harness) {
    let s = &h.store;
    for round in 0..5 {
        let mut families = Vec::new();
        for i in 0..6 {
            let step = format!("cancel-step-{round}-{i}");
            let parent = new_task(&format!("cancel-{round}-{i}"), 0, None);
            s.tasks.insert_task(&parent, vec![]).await.unwrap();
            for _ in 0..2 {
                let child = new_task(&step, 0, Some(parent.id));
                s.tasks.insert_task(&child, vec![]).await.unwrap();
            }
            let now = mesh_types::time::now();
            let children = s
                .queue
                .claim(&request(Uuid::now_v7(), &[step.as_str()], 2, now))
                .await
                .unwrap();
            assert_eq!(children.len(), 2);
            families.push((parent.id, children));
        }
        let mut cancels = tokio::task::JoinSet::new();
        let mut completions = tokio::task::JoinSet::new();
        for (parent, children) in &families {
            let (store, parent) = (s.clone(), *parent);
            cancels.spawn(async move {
                let event: mesh_store::EventFor<mesh_types::Task> =
                    std::sync::Arc::new(|t: &mesh_types::Task| event("task_cancelled").task(t.id));
                store
                    .tasks
                    .cancel_task(parent, mesh_types::time::now(), event)
                    .await
                    .map(drop)
            });
            for child in children {
                let store = s.clone();
                let (id, token) = (child.task.id, child.lease_token);
                completions.spawn(async move {
                    let now = mesh_types::time::now();
                    store
                        .queue
                        .complete_task(id, token, None, now, "w")
                        .await
                        .map(drop)
                });
            }
        }
        while let Some(done) = cancels.join_next().await {
            done.unwrap()
                .unwrap_or_else(|e| panic!("round {round}: a cancellation failed: {e}"));
        }
        while let Some(done) = completions.join_next().await {
            match done.unwrap() {
                Ok(()) | Err(StoreError::Conflict(_)) => {}
                Err(e) => panic!("round {round}: a completion failed: {e}"),
            }
        }
        for (parent, _) in &families {
            assert_eq!(
                s.tasks.get_task(*parent).await.unwrap().unwrap().status,
                TaskStatus::Cancelled
            );
        }
    }
    assert!(
        mesh_store::verify_chain(s.provenance.as_ref())
            .await
            .unwrap()
            .is_ok()
    );
}
