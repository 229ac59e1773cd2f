//! Republishes task, agent and tool lifecycle events from the provenance log onto an
//! external bus's topics (`task_completed` → `task.completed`). The embedded bus needs
//! no relay: it reads those topics from the log itself. The relay's position is a bus
//! cursor that moves in the same publish as the events it covers, so a crash repeats at
//! most the last batch (consumers drop duplicates by event id: the provenance event's
//! id).

use crate::core::EventsBus;
use mesh_service::ApiError;
use mesh_store::Outgoing;
use mesh_types::bus::{lifecycle_event, topic_for_action};
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
    let moved = events.len();
    let outgoing: Vec<Outgoing> = events
        .into_iter()
        .filter_map(|e| {
            let topic = topic_for_action(&e.action)?;
            let event = lifecycle_event(topic, String::new(), e);
            Some(Outgoing {
                topic: event.topic,
                id: event.id,
                payload: event.payload,
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
    Ok(moved)
}

/// Runs the relay until `shutdown` fires, for a bus that needs one (`None` for the
/// embedded bus).
pub fn spawn_relay(
    bus: Arc<EventsBus>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    if bus.bus.reads_lifecycle_from_log() {
        return None;
    }
    Some(tokio::spawn(async move {
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
    }))
}

impl EventsBus {
    /// The provenance position up to which lifecycle events are on the bus: the log's
    /// head for the embedded bus (a committed event is on it already), else the relay's.
    pub async fn lifecycle_position(&self) -> Result<i64, ApiError> {
        if self.bus.reads_lifecycle_from_log() {
            Ok(self.ctx.store.provenance.head().await?.count)
        } else {
            self.bus.cursor(RELAY_CURSOR).await
        }
    }
}
