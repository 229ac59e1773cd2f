//! Decisions asked of port 5002 (OPA's Data API, `/api/v1/evaluate`) are logged like
//! OPA logs them: buffered and written in batches, so a decision never waits for a
//! commit. The buffer is bounded; when it is full, callers wait (backpressure) rather
//! than decisions being dropped. Decisions taken at enforcement points do not come
//! here: they are written in the same transaction as the change they allowed.

use mesh_store::Store;
use mesh_types::{EventDraft, ProvenanceEvent};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

const BUFFER: usize = 16_384;
const BATCH: usize = 512;

#[derive(Clone)]
pub struct DecisionLogger {
    tx: mpsc::Sender<EventDraft>,
}

impl DecisionLogger {
    /// Starts the writer; on shutdown it writes what is buffered, then stops.
    pub fn spawn(store: Store, mut shutdown: watch::Receiver<bool>) -> Self {
        let (tx, mut rx) = mpsc::channel::<EventDraft>(BUFFER);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            loop {
                let stopping = tokio::select! {
                    got = rx.recv() => match got {
                        Some(event) => { batch.push(event); false }
                        None => true,
                    },
                    _ = shutdown.wait_for(|s| *s) => true,
                };
                while batch.len() < BATCH
                    && let Ok(event) = rx.try_recv()
                {
                    batch.push(event);
                }
                if !batch.is_empty() {
                    let events = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                    if let Err(e) = store.provenance.append(events).await {
                        tracing::error!(error = %e, "decision log batch lost");
                    }
                }
                if stopping && rx.is_empty() {
                    return;
                }
            }
        });
        Self { tx }
    }

    pub async fn log(&self, event: EventDraft) {
        if self.tx.send(event).await.is_err() {
            tracing::warn!("decision logger stopped; decision not logged");
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
