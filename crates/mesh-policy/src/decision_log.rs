//! Decisions asked of port 5002 (OPA's Data API, `/api/v1/evaluate`) are logged like
//! OPA logs them: buffered and written in batches, so a decision never waits for a
//! commit. The buffer is bounded; when it is full, callers wait (backpressure) rather
//! than decisions being dropped. Decisions taken at enforcement points do not come
//! here: they are written in the same transaction as the change they allowed.

use mesh_store::Store;
use mesh_types::{EventDraft, ProvenanceEvent};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const BUFFER: usize = 16_384;
const BATCH: usize = 512;
/// How long a batch waits for more events after its first.
const LINGER: std::time::Duration = std::time::Duration::from_millis(2);

/// A batching provenance writer. Events logged in one call stay in one transaction.
#[derive(Clone)]
pub struct DecisionLogger {
    tx: mpsc::Sender<Vec<EventDraft>>,
}

impl DecisionLogger {
    /// Starts the writer. It runs until every logger clone is dropped (the servers
    /// holding them have stopped), writes what is still buffered, and finishes: await
    /// the handle before exiting so no logged decision is left behind.
    pub fn spawn(store: Store) -> (Self, JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<Vec<EventDraft>>(BUFFER);
        let writer = tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = first;
                // A commit costs the writer far more than an event does, so events that
                // arrive within LINGER of the first share its commit (nobody waits on
                // it: callers only queue). The writer sleeps through the linger instead
                // of waiting on the channel: a sender then only queues, where waking
                // this task for every event cost a thread wake-up per model call.
                tokio::time::sleep(LINGER).await;
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(events) => batch.extend(events),
                        Err(_) => break,
                    }
                }
                if let Err(e) = store.provenance.append(batch).await {
                    tracing::error!(error = %e, "decision log batch lost");
                }
            }
        });
        (Self { tx }, writer)
    }

    pub async fn log(&self, event: EventDraft) {
        self.log_all(vec![event]).await;
    }

    /// Queues events to be written in the same transaction.
    pub async fn log_all(&self, events: Vec<EventDraft>) {
        if self.tx.send(events).await.is_err() {
            tracing::warn!("provenance writer stopped; events not logged");
        }
    }
}

/// A `policy_decision` event in OPA's decision-log shape.
pub fn opa_entry(event: &ProvenanceEvent) -> Value {
    let p = &event.payload;
    let field = |k: &str| p.get(k).cloned().unwrap_or(Value::Null);
    json!({
        "decision_id": field("decisionId"),
        "path": field("path"),
        "input": field("input"),
        "result": field("result"),
        "bundles": {"mesh": {"revision": field("revision")}},
        "timestamp": mesh_types::time::format(&event.timestamp),
        "metrics": field("metrics"),
        "labels": {"point": field("point"), "actor": event.actor},
        "seq": event.seq,
    })
}
