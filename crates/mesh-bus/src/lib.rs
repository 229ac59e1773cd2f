//! events-bus (port 5006): topics with publish, replay from an offset, consumer groups
//! with at-least-once delivery, and Server-Sent Events streams.
//!
//! Backends by URL: none (embedded, in the mesh store: SQLite or PostgreSQL), `memory://`
//! (explicitly non-durable), `redis://` (Redis Streams). Task, agent and tool lifecycle
//! events reach the bus through a relay that tails the provenance log from a stored
//! cursor, so no transition is lost when the bus is down: it is published late, never
//! not at all. The bus never writes the mesh's other tables.

mod backend;
mod core;
mod memory;
mod redis_streams;
mod relay;
mod routes;

pub use backend::{EventBus, StoreBus};
pub use core::{AckBody, EventsBus, GroupReadBody};
pub use memory::MemoryBus;
pub use redis_streams::RedisBus;
pub use relay::{RELAY_CURSOR, relay_once, spawn_relay};
pub use routes::router;

use mesh_service::ApiError;
use mesh_store::Store;
use std::sync::Arc;

/// Opens the bus named by `url`: `None` for the embedded bus in `store`, `memory://`, or
/// `redis://HOST:PORT[/DB][?prefix=NAME]`. An unreachable backend is an error naming it.
pub async fn open(url: Option<&str>, store: &Store) -> Result<Arc<dyn EventBus>, ApiError> {
    match url {
        None => Ok(Arc::new(StoreBus::new(store.clone()))),
        Some("memory://") => Ok(Arc::new(MemoryBus::new(store.provenance.clone()))),
        Some(u) if u.starts_with("redis://") => Ok(Arc::new(
            RedisBus::connect(u, store.provenance.clone()).await?,
        )),
        Some(u) if u.starts_with("nats://") => Err(ApiError::internal(format!(
            "bus `{u}`: the NATS JetStream backend is not built yet; use the embedded bus, memory:// or redis://"
        ))),
        Some(other) => Err(ApiError::internal(format!(
            "bus `{other}`: expected memory:// or redis://HOST:PORT (leave it unset for the embedded bus)"
        ))),
    }
}
