//! The embedded events bus's storage: topics with dense sequences, consumer groups that
//! hand each event to one member and take back what is not acknowledged in time, and
//! named cursors.

use crate::Result;
use async_trait::async_trait;
use mesh_types::EventDraft;
use mesh_types::bus::{BusEvent, Delivery};
use mesh_types::time::Timestamp;
use serde_json::Value;
use uuid::Uuid;

/// An event to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub topic: String,
    pub id: Uuid,
    pub payload: Value,
}

/// Who reads for a consumer group, and how long a delivery may stay unacknowledged
/// before another member gets it.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupRead {
    pub topic: String,
    pub group: String,
    pub consumer: String,
    pub limit: u32,
    pub now: Timestamp,
    pub visibility_ms: i64,
}

#[async_trait]
pub trait BusStore: Send + Sync {
    /// Appends events in one transaction, with `audit` in the provenance log and, if
    /// given, a named cursor moved to a new position (for relays: exactly the events
    /// of one batch are published with the cursor that covers them).
    async fn publish(
        &self,
        events: Vec<Outgoing>,
        now: Timestamp,
        audit: Vec<EventDraft>,
        cursor: Option<(String, i64)>,
    ) -> Result<Vec<BusEvent>>;
    /// Up to `limit` events with offset greater than `after`, in order.
    async fn read(&self, topic: &str, after: i64, limit: u32) -> Result<Vec<BusEvent>>;
    /// Redelivers this group's events unacknowledged for `visibility_ms`, then hands out
    /// new ones. A new group starts at the beginning of the topic.
    async fn read_group(&self, read: &GroupRead) -> Result<Vec<Delivery>>;
    /// Acknowledges deliveries; returns how many were pending.
    async fn ack(&self, topic: &str, group: &str, offsets: &[i64]) -> Result<u64>;
    /// A named cursor's position (0 if never set).
    async fn cursor(&self, name: &str) -> Result<i64>;
}
