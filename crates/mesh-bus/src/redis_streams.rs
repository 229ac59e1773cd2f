//! `redis://`: Redis Streams. One stream per topic; consumer groups are Redis consumer
//! groups (pending entries reclaimed with XPENDING/XCLAIM once idle past the visibility
//! window); offsets are stream ids. Several mesh processes share topics and groups.

use crate::backend::{EventBus, server_and_prefix, unavailable};
use async_trait::async_trait;
use mesh_service::ApiError;
use mesh_store::{GroupRead, Outgoing, ProvenanceLog};
use mesh_types::EventDraft;
use mesh_types::bus::{BusEvent, Delivery};
use redis::Value;
use redis::aio::ConnectionManager;
use std::sync::Arc;
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct RedisBus {
    conn: ConnectionManager,
    prefix: String,
    display: String,
    log: Arc<dyn ProvenanceLog>,
}

impl RedisBus {
    /// Connects to `url` (`redis://HOST:PORT[/DB][?prefix=NAME]`); keys start with the
    /// prefix (default `mesh`) so several meshes can share one Redis.
    pub async fn connect(url: &str, log: Arc<dyn ProvenanceLog>) -> Result<Self, ApiError> {
        let (base, prefix) = server_and_prefix(url)?;
        let display = base.clone();
        let client = redis::Client::open(base.as_str()).map_err(|e| unavailable(&display, e))?;
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, ConnectionManager::new(client))
            .await
            .map_err(|_| unavailable(&display, "no answer within 5 s"))?
            .map_err(|e| unavailable(&display, e))?;
        Ok(Self {
            conn,
            prefix,
            display,
            log,
        })
    }

    fn stream(&self, topic: &str) -> String {
        format!("{}:stream:{topic}", self.prefix)
    }

    fn cursor_key(&self, name: &str) -> String {
        format!("{}:cursor:{name}", self.prefix)
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, ApiError> {
        let mut conn = self.conn.clone();
        cmd.query_async(&mut conn)
            .await
            .map_err(|e| unavailable(&self.display, e))
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn array(v: &Value) -> &[Value] {
    match v {
        Value::Array(items) => items,
        _ => &[],
    }
}

/// An XRANGE/XREADGROUP entry `[id, [field, value, …]]` as an event of `topic`.
fn entry(topic: &str, v: &Value) -> Result<BusEvent, ApiError> {
    let parts = array(v);
    let bad = || ApiError::internal(format!("unreadable stream entry in topic {topic}"));
    let offset = parts.first().and_then(text).ok_or_else(bad)?;
    let fields = parts.get(1).map(array).ok_or_else(bad)?;
    let mut id = None;
    let mut ts = None;
    let mut payload = None;
    for pair in fields.chunks(2) {
        match (
            pair.first().and_then(text).as_deref(),
            pair.get(1).and_then(text),
        ) {
            (Some("id"), Some(v)) => id = v.parse().ok(),
            (Some("ts"), Some(v)) => {
                ts = chrono::DateTime::parse_from_rfc3339(&v)
                    .ok()
                    .map(|t| t.with_timezone(&chrono::Utc))
            }
            (Some("payload"), Some(v)) => payload = serde_json::from_str(&v).ok(),
            _ => {}
        }
    }
    Ok(BusEvent {
        topic: topic.to_string(),
        offset,
        id: id.ok_or_else(bad)?,
        timestamp: ts.ok_or_else(bad)?,
        payload: payload.ok_or_else(bad)?,
    })
}

#[async_trait]
impl EventBus for RedisBus {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn publish(
        &self,
        events: Vec<Outgoing>,
        audit: Vec<EventDraft>,
        cursor: Option<(String, i64)>,
    ) -> Result<Vec<BusEvent>, ApiError> {
        let now = mesh_types::time::now();
        let stamp = mesh_types::time::format(&now);
        let mut pipe = redis::pipe();
        pipe.atomic();
        for e in &events {
            pipe.cmd("XADD")
                .arg(self.stream(&e.topic))
                .arg("*")
                .arg("id")
                .arg(e.id.to_string())
                .arg("ts")
                .arg(&stamp)
                .arg("payload")
                .arg(e.payload.to_string());
        }
        if let Some((name, position)) = &cursor {
            pipe.cmd("SET")
                .arg(self.cursor_key(name))
                .arg(*position)
                .ignore();
        }
        let mut conn = self.conn.clone();
        let ids: Vec<String> = if events.is_empty() && cursor.is_none() {
            Vec::new()
        } else {
            pipe.query_async(&mut conn)
                .await
                .map_err(|e| unavailable(&self.display, e))?
        };
        if !audit.is_empty() {
            self.log.append(audit).await?;
        }
        Ok(events
            .into_iter()
            .zip(ids)
            .map(|(e, offset)| BusEvent {
                topic: e.topic,
                offset,
                id: e.id,
                timestamp: now,
                payload: e.payload,
            })
            .collect())
    }

    async fn read(
        &self,
        topic: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<BusEvent>, ApiError> {
        let start = match after {
            Some(a) => {
                validate_stream_id(a)?;
                format!("({a}")
            }
            None => "-".to_string(),
        };
        let reply: Value = self
            .query(
                redis::cmd("XRANGE")
                    .arg(self.stream(topic))
                    .arg(start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(limit),
            )
            .await?;
        array(&reply).iter().map(|v| entry(topic, v)).collect()
    }

    async fn read_group(&self, r: &GroupRead) -> Result<Vec<Delivery>, ApiError> {
        let key = self.stream(&r.topic);
        let created: Result<Value, ApiError> = self
            .query(
                redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(&key)
                    .arg(&r.group)
                    .arg("0")
                    .arg("MKSTREAM"),
            )
            .await;
        if let Err(err) = created
            && !err.message.contains("BUSYGROUP")
        {
            return Err(err);
        }
        let mut out = Vec::new();
        // Entries idle past the visibility window go to this consumer.
        let idle: Value = self
            .query(
                redis::cmd("XPENDING")
                    .arg(&key)
                    .arg(&r.group)
                    .arg("IDLE")
                    .arg(r.visibility_ms)
                    .arg("-")
                    .arg("+")
                    .arg(r.limit),
            )
            .await?;
        let mut counts = std::collections::HashMap::new();
        for p in array(&idle) {
            let fields = array(p);
            if let (Some(id), Some(Value::Int(n))) = (fields.first().and_then(text), fields.get(3))
            {
                counts.insert(id, *n as u32);
            }
        }
        if !counts.is_empty() {
            let mut claim = redis::cmd("XCLAIM");
            claim
                .arg(&key)
                .arg(&r.group)
                .arg(&r.consumer)
                .arg(r.visibility_ms);
            for id in counts.keys() {
                claim.arg(id);
            }
            let claimed: Value = self.query(&claim).await?;
            for v in array(&claimed) {
                let event = entry(&r.topic, v)?;
                let deliveries = counts.get(&event.offset).copied().unwrap_or(1) + 1;
                out.push(Delivery { event, deliveries });
            }
        }
        let room = r.limit.saturating_sub(out.len() as u32);
        if room > 0 {
            let fresh: Value = self
                .query(
                    redis::cmd("XREADGROUP")
                        .arg("GROUP")
                        .arg(&r.group)
                        .arg(&r.consumer)
                        .arg("COUNT")
                        .arg(room)
                        .arg("STREAMS")
                        .arg(&key)
                        .arg(">"),
                )
                .await?;
            for stream in array(&fresh) {
                for v in array(stream).get(1).map(array).unwrap_or_default() {
                    out.push(Delivery {
                        event: entry(&r.topic, v)?,
                        deliveries: 1,
                    });
                }
            }
        }
        out.sort_by_key(|d| stream_order(&d.event.offset));
        Ok(out)
    }

    async fn ack(&self, topic: &str, group: &str, offsets: &[String]) -> Result<u64, ApiError> {
        if offsets.is_empty() {
            return Ok(0);
        }
        let mut cmd = redis::cmd("XACK");
        cmd.arg(self.stream(topic)).arg(group);
        for o in offsets {
            validate_stream_id(o)?;
            cmd.arg(o);
        }
        let n: i64 = self.query(&cmd).await?;
        Ok(n.max(0) as u64)
    }

    async fn cursor(&self, name: &str) -> Result<i64, ApiError> {
        let v: Option<i64> = self
            .query(redis::cmd("GET").arg(self.cursor_key(name)))
            .await?;
        Ok(v.unwrap_or(0))
    }
}

fn stream_order(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

fn validate_stream_id(id: &str) -> Result<(), ApiError> {
    let ok = match id.split_once('-') {
        Some((ms, seq)) => ms.parse::<u64>().is_ok() && seq.parse::<u64>().is_ok(),
        None => id.parse::<u64>().is_ok(),
    };
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "offset",
            format!("offset: `{id}` is not a Redis stream id"),
        ))
    }
}
