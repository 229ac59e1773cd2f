//! events-bus (port 5006): topics with publish, replay from an offset, consumer groups
//! with at-least-once delivery, and Server-Sent Events streams.
//!
//! Backends by URL: none (embedded, in the mesh store: SQLite or PostgreSQL), `memory://`
//! (explicitly non-durable), `redis://` (Redis Streams), `nats://` (NATS JetStream). Task,
//! agent and tool lifecycle topics are the mesh's own: the embedded bus reads them from
//! the provenance log itself, and an external bus is fed by a relay that tails the log
//! from a stored cursor, so no transition is lost when that bus is down: it is published
//! late, never not at all. The bus never writes the mesh's other tables.

mod backend;
mod core;
mod memory;
mod nats_jetstream;
mod redis_streams;
mod relay;
mod routes;

pub use backend::{EventBus, StoreBus};
pub use core::{AckBody, EventsBus, GroupReadBody};
pub use memory::MemoryBus;
pub use nats_jetstream::NatsBus;
pub use redis_streams::RedisBus;
pub use relay::{RELAY_CURSOR, relay_once, spawn_relay};
pub use routes::router;

use mesh_service::ApiError;
use mesh_store::Store;
use std::sync::Arc;

/// Opens the bus named by `url`: `None` for the embedded bus in `store`, `memory://`,
/// `redis://HOST:PORT[/DB][?prefix=NAME]` or `nats://HOST:PORT[?prefix=NAME]`. An
/// unreachable backend is an error naming it.
pub async fn open(url: Option<&str>, store: &Store) -> Result<Arc<dyn EventBus>, ApiError> {
    match url {
        None => Ok(Arc::new(StoreBus::new(store.clone()))),
        Some("memory://") => Ok(Arc::new(MemoryBus::new(store.provenance.clone()))),
        Some(u) if u.starts_with("redis://") => Ok(Arc::new(
            RedisBus::connect(u, store.provenance.clone()).await?,
        )),
        Some(u) if u.starts_with("nats://") => Ok(Arc::new(
            NatsBus::connect(u, store.provenance.clone()).await?,
        )),
        Some(other) => Err(ApiError::internal(format!(
            "bus `{other}`: expected memory://, redis://HOST:PORT or nats://HOST:PORT (leave it unset for the embedded bus)"
        ))),
    }
}
