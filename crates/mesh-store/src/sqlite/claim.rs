//! Gated claims with the deciding done off the writer thread. The candidates are ranked
//! and read on a reader connection and the assignment gate (a policy decision per task)
//! runs on the claimer's own thread; the writer only re-checks each decided task and
//! leases it. The writer is the store's one serial resource, and the gate, the ranking
//! query and the reads were about a third of its time when they ran inside the write.
//!
//! A decision holds only for the version of the task it was made on: the write leases
//! a task only if it is still queued and unchanged since it was read. Claims in this
//! process pass over the tasks another claim is deciding on, so concurrent claimers
//! decide on different tasks instead of racing for the same ones.

use super::SqliteStore;
use super::provenance::record_in_tx;
use super::queue::{Staged, candidate_query, ids, lease, load};
use crate::queue::{self as steps, ClaimGate, ClaimOutcome};
use crate::{Result, StoreError};
use mesh_types::enums::TaskStatus;
use mesh_types::queue::ClaimRequest;
use mesh_types::{PreparedDraft, Task};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// The tasks this process's claims have read and are deciding on.
#[derive(Default)]
pub(crate) struct InFlight(Mutex<HashSet<Uuid>>);

impl InFlight {
    fn snapshot(&self) -> HashSet<Uuid> {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// Tasks one claim holds in [`InFlight`]; released when it ends, however it ends.
struct Reserved {
    set: Arc<InFlight>,
    ids: Vec<Uuid>,
}

impl Reserved {
    /// Reserves those of `tasks` no other claim took since the snapshot was taken.
    fn take(set: Arc<InFlight>, tasks: Vec<Task>) -> (Self, Vec<Task>) {
        let mut mine = Vec::with_capacity(tasks.len());
        if let Ok(mut held) = set.0.lock() {
            mine = tasks.into_iter().filter(|t| held.insert(t.id)).collect();
        }
        let ids = mine.iter().map(|t| t.id).collect();
        (Self { set, ids }, mine)
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        if let Ok(mut held) = self.set.0.lock() {
            for id in &self.ids {
                held.remove(id);
            }
        }
    }
}

pub(crate) async fn claim_gated(
    store: &SqliteStore,
    req: ClaimRequest,
    gate: ClaimGate,
) -> Result<ClaimOutcome> {
    let in_flight = store.in_flight();
    let busy = in_flight.snapshot();
    let fetch = (req.limit + steps::GATE_SLACK) as usize;
    let (sql, args) = candidate_query(&req, fetch + busy.len());
    let candidates: Vec<Task> = store
        .read(move |conn| {
            let mut out = Vec::with_capacity(fetch);
            for id in ids(conn, &sql, args)? {
                if out.len() >= fetch {
                    break;
                }
                if busy.contains(&id) {
                    continue;
                }
                match load(conn, id) {
                    Ok((task, _)) => out.push(task),
                    Err(StoreError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(out)
        })
        .await?;
    let (reserved, tasks) = Reserved::take(in_flight, candidates);
    // Decide in rank order until `limit` tasks may go (refused ones are skipped).
    let mut decided: Vec<(Task, Decided)> = Vec::new();
    let mut allowed = 0;
    for task in tasks {
        if allowed >= req.limit {
            break;
        }
        if steps::left_for_others(&task, &req) {
            continue;
        }
        let verdict = gate(&task);
        allowed += u32::from(verdict.allow);
        // The decision's event is prepared here, off the writer thread.
        let audit = verdict.audit.map(|a| PreparedDraft::from(a).detach());
        decided.push((
            task,
            Decided {
                allow: verdict.allow,
                reason: verdict.reason,
                audit,
            },
        ));
    }
    let reserved_count = reserved.ids.len();
    let outcome = store
        .write(move |tx| {
            let mut out = ClaimOutcome::default();
            let mut staged = Staged::new();
            for (seen, verdict) in decided {
                let task = match load(tx, seen.id) {
                    Ok((task, _)) => task,
                    Err(StoreError::NotFound(_)) => continue,
                    Err(e) => return Err(e),
                };
                if !unchanged(&seen, &task) {
                    continue; // decided on an older version; a later claim decides again
                }
                staged.extend(verdict.audit);
                if !verdict.allow {
                    out.refused.push(verdict.reason);
                    continue;
                }
                lease(tx, task, &req, &mut staged, &mut out)?;
            }
            record_in_tx(tx, staged)?;
            Ok(out)
        })
        .await;
    drop(reserved);
    // Tasks this claim read but did not lease are free again: claimers that passed
    // them over while they were reserved look again.
    if outcome
        .as_ref()
        .is_ok_and(|o| o.leases.len() + o.refused.len() < reserved_count)
    {
        store.signal_work();
    }
    outcome
}

/// A gate's verdict on one task, its event prepared for the write.
struct Decided {
    allow: bool,
    reason: String,
    audit: Option<PreparedDraft>,
}

/// Whether `now` is the version of the task a decision was made on, still claimable.
fn unchanged(seen: &Task, now: &Task) -> bool {
    now.status == TaskStatus::Queued
        && now.updated_at == seen.updated_at
        && now.attempts == seen.attempts
        && now.available_at == seen.available_at
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{GateVerdict, QueueStore};
    use crate::{ProvenanceLog, TaskStore};
    use mesh_types::{EventDraft, NewTask};
    use serde_json::json;

    /// A decision holds for the version of the task it was made on: a task that changes
    /// while its gate decides is not leased, and the stale decision is not recorded.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_task_changed_while_decided_is_not_leased() {
        let (_dir, store) = crate::sqlite::scratch_store().await;
        let new: NewTask = serde_json::from_value(json!({"type": "t", "input": {}})).unwrap();
        let task = new.into_task(Uuid::now_v7(), "acme", 3, mesh_types::time::now());
        store.insert_task(&task, vec![]).await.unwrap();
        // The gate cancels the task it is deciding on (from another thread, as another
        // caller would), then allows it.
        let (writer, runtime) = (store.clone(), tokio::runtime::Handle::current());
        let gate: ClaimGate = Arc::new(move |t: &Task| {
            let (writer, runtime, id) = (writer.clone(), runtime.clone(), t.id);
            std::thread::spawn(move || {
                runtime.block_on(writer.cancel_task(
                    id,
                    mesh_types::time::now(),
                    Arc::new(|t: &Task| {
                        EventDraft::new("task_cancelled", "x", "task", None).task(t.id)
                    }),
                ))
            })
            .join()
            .unwrap()
            .unwrap();
            GateVerdict {
                allow: true,
                reason: String::new(),
                audit: Some(EventDraft::new("policy_decision", "gate", "policy", None)),
            }
        });
        let req = ClaimRequest {
            agent_id: Uuid::now_v7(),
            agent_name: "a".into(),
            task_types: vec!["t".into()],
            limit: 1,
            lease_ms: 1_000,
            now: mesh_types::time::now(),
            ageing_secs: 60,
        };
        let outcome = store.claim_gated(&req, Some(&gate)).await.unwrap();
        assert!(outcome.leases.is_empty(), "a cancelled task was leased");
        let decisions = store
            .events_with_action("policy_decision", 0, 10)
            .await
            .unwrap();
        assert!(decisions.is_empty(), "the stale decision was recorded");
        assert_eq!(
            store.get_task(task.id).await.unwrap().unwrap().status,
            TaskStatus::Cancelled
        );
    }
}
