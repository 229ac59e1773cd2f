//! The bus abstraction every backend implements, and the embedded one: the mesh's own
//! store (SQLite or PostgreSQL), where a publish and its provenance event share one
//! transaction.

use async_trait::async_trait;
use mesh_service::ApiError;
use mesh_store::{GroupRead, Outgoing, Store};
use mesh_types::EventDraft;
use mesh_types::bus::{BusEvent, Delivery};

#[async_trait]
pub trait EventBus: Send + Sync {
    /// `embedded`, `memory`, `redis` or `nats`.
    fn kind(&self) -> &'static str;
    /// Whether lifecycle topics are read straight from the provenance log (the
    /// embedded bus, which lives in the same store); other backends are fed by the
    /// relay.
    fn reads_lifecycle_from_log(&self) -> bool {
        false
    }
    /// Publishes in order; `audit` goes to the provenance log and `cursor` (a relay's
    /// position) moves with the batch — atomically where the backend allows.
    async fn publish(
        &self,
        events: Vec<Outgoing>,
        audit: Vec<EventDraft>,
        cursor: Option<(String, i64)>,
    ) -> Result<Vec<BusEvent>, ApiError>;
    /// Events after `after` (exclusive; `None` = from the start), in order.
    async fn read(
        &self,
        topic: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<BusEvent>, ApiError>;
    async fn read_group(&self, read: &GroupRead) -> Result<Vec<Delivery>, ApiError>;
    async fn ack(&self, topic: &str, group: &str, offsets: &[String]) -> Result<u64, ApiError>;
    async fn cursor(&self, name: &str) -> Result<i64, ApiError>;
}

/// Offsets of the embedded and memory backends are positive integers.
pub(crate) fn numeric_offset(field: &str, offset: &str) -> Result<i64, ApiError> {
    offset
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| {
            ApiError::invalid(
                field,
                format!("{field}: `{offset}` is not an offset of this bus"),
            )
        })
}

/// The embedded default: the mesh store.
pub struct StoreBus {
    store: Store,
}

impl StoreBus {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

#[async_trait]
impl EventBus for StoreBus {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn reads_lifecycle_from_log(&self) -> bool {
        true
    }

    async fn publish(
        &self,
        events: Vec<Outgoing>,
        audit: Vec<EventDraft>,
        cursor: Option<(String, i64)>,
    ) -> Result<Vec<BusEvent>, ApiError> {
        Ok(self
            .store
            .bus
            .publish(events, mesh_types::time::now(), audit, cursor)
            .await?)
    }

    async fn read(
        &self,
        topic: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<BusEvent>, ApiError> {
        let after = after
            .map(|a| numeric_offset("after", a))
            .transpose()?
            .unwrap_or(0);
        Ok(self.store.bus.read(topic, after, limit).await?)
    }

    async fn read_group(&self, read: &GroupRead) -> Result<Vec<Delivery>, ApiError> {
        Ok(self.store.bus.read_group(read).await?)
    }

    async fn ack(&self, topic: &str, group: &str, offsets: &[String]) -> Result<u64, ApiError> {
        let offsets = offsets
            .iter()
            .map(|o| numeric_offset("offsets", o))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.store.bus.ack(topic, group, &offsets).await?)
    }

    async fn cursor(&self, name: &str) -> Result<i64, ApiError> {
        Ok(self.store.bus.cursor(name).await?)
    }
}

/// An external backend is unreachable or refused a command.
pub(crate) fn unavailable(display: &str, err: impl std::fmt::Display) -> ApiError {
    ApiError::unavailable("bus_unavailable", format!("events bus at {display}: {err}"))
}

/// Splits `scheme://host:port[?prefix=NAME]` into the server URL and the key prefix
/// (default `mesh`) that lets several meshes share one server.
pub(crate) fn server_and_prefix(url: &str) -> Result<(String, String), ApiError> {
    let (base, prefix) = match url.split_once("?prefix=") {
        Some((base, prefix)) => (base, prefix),
        None => (url, "mesh"),
    };
    mesh_types::bus::validate_name("prefix", prefix)
        .map_err(|e| ApiError::internal(format!("bus `{url}`: {e}")))?;
    Ok((base.to_string(), prefix.to_string()))
}
