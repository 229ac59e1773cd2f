use crate::backend::EventBus;
use mesh_service::{ApiError, Caller, ServiceContext};
use mesh_store::{GroupRead, Outgoing};
use mesh_types::EventDraft;
use mesh_types::bus::{BusEvent, Delivery, validate_name};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;
use tokio::sync::Notify;
use uuid::Uuid;

pub const MAX_READ: u32 = 1_000;
const DEFAULT_VISIBILITY_MS: i64 = 30_000;

/// The bus service's core.
pub struct EventsBus {
    pub(crate) ctx: ServiceContext,
    pub(crate) bus: Arc<dyn EventBus>,
    /// Woken on every publish from this process, so local streams see events at once.
    pub(crate) published: Notify,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupReadBody {
    pub consumer: String,
    #[serde(default)]
    pub limit: Option<u32>,
    /// How long a delivery may stay unacknowledged before another member gets it.
    #[serde(default)]
    pub visibility_ms: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AckBody {
    pub offsets: Vec<String>,
}

impl EventsBus {
    pub fn new(ctx: ServiceContext, bus: Arc<dyn EventBus>) -> Arc<Self> {
        Arc::new(Self {
            ctx,
            bus,
            published: Notify::new(),
        })
    }

    pub fn context(&self) -> &ServiceContext {
        &self.ctx
    }

    pub fn backend(&self) -> &Arc<dyn EventBus> {
        &self.bus
    }

    pub async fn publish(
        &self,
        caller: &Caller,
        topic: &str,
        payload: Value,
    ) -> Result<BusEvent, ApiError> {
        validate_name("topic", topic)?;
        if let Some(action) = mesh_types::bus::action_for_topic(topic) {
            return Err(ApiError::invalid(
                "topic",
                format!(
                    "topic: `{topic}` carries the mesh's own `{action}` events from the provenance log; publish to a topic of your own"
                ),
            ));
        }
        let id = Uuid::now_v7();
        let audit = EventDraft::new(
            "event_published",
            caller.actor(),
            "topic",
            Some(topic.to_string()),
        )
        .payload(json!({
            "eventId": id,
            "payloadSha256": mesh_types::canonical::sha256_hex(&payload),
            "keyId": caller.principal.key_id,
        }));
        let mut published = self
            .bus
            .publish(
                vec![Outgoing {
                    topic: topic.to_string(),
                    id,
                    payload,
                }],
                vec![audit],
                None,
            )
            .await?;
        self.published.notify_waiters();
        published
            .pop()
            .ok_or_else(|| ApiError::internal("the bus returned no event"))
    }

    pub async fn read(
        &self,
        topic: &str,
        after: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Vec<BusEvent>, ApiError> {
        validate_name("topic", topic)?;
        self.bus
            .read(topic, after, limit.unwrap_or(100).clamp(1, MAX_READ))
            .await
    }

    pub async fn read_group(
        &self,
        topic: &str,
        group: &str,
        body: GroupReadBody,
    ) -> Result<Vec<Delivery>, ApiError> {
        validate_name("topic", topic)?;
        validate_name("group", group)?;
        validate_name("consumer", &body.consumer)?;
        let visibility_ms = body.visibility_ms.unwrap_or(DEFAULT_VISIBILITY_MS);
        if !(1..=86_400_000).contains(&visibility_ms) {
            return Err(ApiError::invalid(
                "visibilityMs",
                "visibilityMs: must be between 1 and 86400000",
            ));
        }
        let read = GroupRead {
            topic: topic.to_string(),
            group: group.to_string(),
            consumer: body.consumer,
            limit: body.limit.unwrap_or(10).clamp(1, MAX_READ),
            now: mesh_types::time::now(),
            visibility_ms,
        };
        self.bus.read_group(&read).await
    }

    pub async fn ack(&self, topic: &str, group: &str, body: AckBody) -> Result<u64, ApiError> {
        validate_name("topic", topic)?;
        validate_name("group", group)?;
        self.bus.ack(topic, group, &body.offsets).await
    }
}
