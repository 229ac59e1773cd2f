//! `nats://`: NATS JetStream. One stream per mesh (`MESH_<PREFIX>`) holding subjects
//! `<prefix>.events.<topic>` and `<prefix>.cursors.<name>`; offsets are stream
//! sequences. Consumer groups are durable pull consumers with explicit acks whose ack
//! wait is the visibility window, so the server redelivers what is not acknowledged.
//! Event ids are sent as `Nats-Msg-Id`, so a relay that republishes after a crash is
//! deduplicated by the server within its duplicate window.
//!
//! Acknowledging by offset needs the delivered message: a bus process remembers the
//! deliveries it handed out, so an ack must reach the process that read the event (an
//! ack elsewhere acknowledges nothing and the event is redelivered — at least once).

use crate::backend::{EventBus, numeric_offset, server_and_prefix, unavailable};
use async_nats::jetstream::{self, consumer::AckPolicy, consumer::DeliverPolicy, consumer::pull};
use async_trait::async_trait;
use futures_util::StreamExt;
use mesh_service::ApiError;
use mesh_store::{GroupRead, Outgoing, ProvenanceLog};
use mesh_types::EventDraft;
use mesh_types::bus::{BusEvent, Delivery};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an ephemeral replay consumer lingers after use.
const REPLAY_CONSUMER_TTL: Duration = Duration::from_secs(30);

type Key = (String, String, u64);

pub struct NatsBus {
    js: jetstream::Context,
    stream: jetstream::stream::Stream,
    prefix: String,
    display: String,
    log: Arc<dyn ProvenanceLog>,
    /// Deliveries handed out and not yet acknowledged, by (topic, group, sequence).
    pending: Mutex<HashMap<Key, jetstream::Message>>,
}

impl NatsBus {
    /// Connects to `url` (`nats://HOST:PORT[?prefix=NAME]`) and makes sure the stream
    /// exists.
    pub async fn connect(url: &str, log: Arc<dyn ProvenanceLog>) -> Result<Self, ApiError> {
        let (base, prefix) = server_and_prefix(url)?;
        let display = base.clone();
        let client = tokio::time::timeout(CONNECT_TIMEOUT, async_nats::connect(base.as_str()))
            .await
            .map_err(|_| unavailable(&display, "no answer within 5 s"))?
            .map_err(|e| unavailable(&display, e))?;
        let js = jetstream::new(client);
        let name: String = format!("MESH_{prefix}")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        let stream = js
            .get_or_create_stream(jetstream::stream::Config {
                name,
                subjects: vec![format!("{prefix}.events.>"), format!("{prefix}.cursors.>")],
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable(&display, e))?;
        Ok(Self {
            js,
            stream,
            prefix,
            display,
            log,
            pending: Mutex::default(),
        })
    }

    fn subject(&self, topic: &str) -> String {
        format!("{}.events.{topic}", self.prefix)
    }

    fn event(
        &self,
        topic: &str,
        message: &async_nats::Message,
        sequence: u64,
    ) -> Result<BusEvent, ApiError> {
        let header = |name: &str| {
            message
                .headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_string())
        };
        let bad = || ApiError::internal(format!("unreadable message {sequence} in topic {topic}"));
        Ok(BusEvent {
            topic: topic.to_string(),
            offset: sequence.to_string(),
            id: header("Nats-Msg-Id")
                .and_then(|v| v.parse().ok())
                .ok_or_else(bad)?,
            timestamp: header("Mesh-Timestamp")
                .and_then(|v| chrono::DateTime::parse_from_rfc3339(&v).ok())
                .map(|t| t.with_timezone(&chrono::Utc))
                .ok_or_else(bad)?,
            payload: serde_json::from_slice(&message.payload).map_err(|_| bad())?,
        })
    }
}

#[async_trait]
impl EventBus for NatsBus {
    fn kind(&self) -> &'static str {
        "nats"
    }

    async fn publish(
        &self,
        events: Vec<Outgoing>,
        audit: Vec<EventDraft>,
        cursor: Option<(String, i64)>,
    ) -> Result<Vec<BusEvent>, ApiError> {
        let now = mesh_types::time::now();
        let stamp = mesh_types::time::format(&now);
        let mut published = Vec::with_capacity(events.len());
        for e in events {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", e.id.to_string().as_str());
            headers.insert("Mesh-Timestamp", stamp.as_str());
            let ack = self
                .js
                .publish_with_headers(
                    self.subject(&e.topic),
                    headers,
                    e.payload.to_string().into(),
                )
                .await
                .map_err(|err| unavailable(&self.display, err))?
                .await
                .map_err(|err| unavailable(&self.display, err))?;
            published.push(BusEvent {
                topic: e.topic,
                offset: ack.sequence.to_string(),
                id: e.id,
                timestamp: now,
                payload: e.payload,
            });
        }
        if let Some((name, position)) = cursor {
            self.js
                .publish(
                    format!("{}.cursors.{name}", self.prefix),
                    position.to_string().into(),
                )
                .await
                .map_err(|err| unavailable(&self.display, err))?
                .await
                .map_err(|err| unavailable(&self.display, err))?;
        }
        if !audit.is_empty() {
            self.log.append(audit).await?;
        }
        Ok(published)
    }

    async fn read(
        &self,
        topic: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<BusEvent>, ApiError> {
        let deliver_policy = match after {
            Some(a) => DeliverPolicy::ByStartSequence {
                start_sequence: numeric_offset("after", a)? as u64 + 1,
            },
            None => DeliverPolicy::All,
        };
        let consumer: jetstream::consumer::PullConsumer = self
            .stream
            .create_consumer(pull::Config {
                filter_subject: self.subject(topic),
                deliver_policy,
                ack_policy: AckPolicy::None,
                inactive_threshold: REPLAY_CONSUMER_TTL,
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable(&self.display, e))?;
        let mut batch = consumer
            .fetch()
            .max_messages(limit as usize)
            .messages()
            .await
            .map_err(|e| unavailable(&self.display, e))?;
        let mut out = Vec::new();
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| unavailable(&self.display, e))?;
            let sequence = message
                .info()
                .map_err(|e| unavailable(&self.display, e))?
                .stream_sequence;
            out.push(self.event(topic, &message.message, sequence)?);
        }
        // Replay consumers are single-use; the inactivity threshold is the safety net.
        let _ = self
            .stream
            .delete_consumer(&consumer.cached_info().name)
            .await;
        Ok(out)
    }

    async fn read_group(&self, r: &GroupRead) -> Result<Vec<Delivery>, ApiError> {
        let name = format!("{}-{}", r.group, r.topic.replace('.', "_"));
        let config = pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: self.subject(&r.topic),
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_millis(r.visibility_ms.max(1) as u64),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        };
        let consumer: jetstream::consumer::PullConsumer = self
            .stream
            .get_or_create_consumer(&name, config)
            .await
            .map_err(|e| unavailable(&self.display, e))?;
        let mut batch = consumer
            .fetch()
            .max_messages(r.limit as usize)
            .messages()
            .await
            .map_err(|e| unavailable(&self.display, e))?;
        let mut out = Vec::new();
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| unavailable(&self.display, e))?;
            let (sequence, delivered) = {
                let info = message.info().map_err(|e| unavailable(&self.display, e))?;
                (info.stream_sequence, info.delivered)
            };
            let event = self.event(&r.topic, &message.message, sequence)?;
            if let Ok(mut pending) = self.pending.lock() {
                pending.insert((r.topic.clone(), r.group.clone(), sequence), message);
            }
            out.push(Delivery {
                event,
                deliveries: delivered.max(1) as u32,
            });
        }
        Ok(out)
    }

    async fn ack(&self, topic: &str, group: &str, offsets: &[String]) -> Result<u64, ApiError> {
        let mut acked = 0;
        for offset in offsets {
            let sequence = numeric_offset("offsets", offset)? as u64;
            let message = self
                .pending
                .lock()
                .ok()
                .and_then(|mut p| p.remove(&(topic.to_string(), group.to_string(), sequence)));
            if let Some(message) = message {
                message
                    .ack()
                    .await
                    .map_err(|e| unavailable(&self.display, e))?;
                acked += 1;
            }
        }
        Ok(acked)
    }

    async fn cursor(&self, name: &str) -> Result<i64, ApiError> {
        match self
            .stream
            .get_last_raw_message_by_subject(&format!("{}.cursors.{name}", self.prefix))
            .await
        {
            Ok(message) => Ok(std::str::from_utf8(&message.payload)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)),
            Err(err)
                if err.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
            {
                Ok(0)
            }
            Err(err) => Err(unavailable(&self.display, err)),
        }
    }
}
