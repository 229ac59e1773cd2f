//! Republishes task, agent and tool lifecycle events from the provenance log onto bus
//! topics (`task_completed` → `task.completed`). The relay's position is a bus cursor
//! that moves in the same publish as the events it covers, so a crash repeats at most
//! the last batch (consumers drop duplicates by event id: the provenance event's id).

use crate::core::EventsBus;
use mesh_service::ApiError;
use mesh_store::Outgoing;
use mesh_types::bus::topic_for_action;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

pub const RELAY_CURSOR: &str = "provenance-relay";
const BATCH: u32 = 500;
const IDLE_WAIT: Duration = Duration::from_millis(100);

/// Relays one batch; returns how many provenance events it moved past.
pub async fn relay_once(bus: &EventsBus) -> Result<usize, ApiError> {
    let after = bus.bus.cursor(RELAY_CURSOR).await?;
    let events = bus.ctx.store.provenance.events_after(after, BATCH).await?;
    let Some(last) = events.last().map(|e| e.seq) else {
        return Ok(0);
    };
    let outgoing: Vec<Outgoing> = events
        .iter()
        .filter_map(|e| {
            let topic = topic_for_action(&e.action)?;
            Some(Outgoing {
                topic,
                id: e.id,
                payload: json!({
                    "provenanceSeq": e.seq,
                    "action": e.action,
                    "actor": e.actor,
                    "taskId": e.task_id,
                    "subjectType": e.subject_type,
                    "subjectId": e.subject_id,
                    "timestamp": mesh_types::time::format(&e.timestamp),
                    "data": e.payload,
                }),
            })
        })
        .collect();
    let published = !outgoing.is_empty();
    bus.bus
        .publish(outgoing, vec![], Some((RELAY_CURSOR.to_string(), last)))
        .await?;
    if published {
        bus.published.notify_waiters();
    }
    Ok(events.len())
}

/// Runs the relay until `shutdown` fires.
pub fn spawn_relay(
    bus: Arc<EventsBus>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let wait = match relay_once(&bus).await {
                Ok(n) if n as u32 >= BATCH => Duration::ZERO,
                Ok(_) => IDLE_WAIT,
                Err(err) => {
                    tracing::warn!(error = %err, "provenance relay failed; retrying");
                    IDLE_WAIT * 10
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
        }
    })
}
