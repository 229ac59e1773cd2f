use super::PgStore;
use super::provenance::{EVENT_COLUMNS, append_in_tx, event_from_row as provenance_event};
use super::rows::get;
use crate::{BusStore, GroupRead, Outgoing, Result};
use async_trait::async_trait;
use mesh_types::EventDraft;
use mesh_types::bus::{BusEvent, Delivery};
use mesh_types::time::Timestamp;
use tokio_postgres::Row;

fn event_from_row(row: &Row) -> Result<BusEvent> {
    Ok(BusEvent {
        topic: get(row, 0)?,
        offset: get::<i64>(row, 1)?.to_string(),
        id: get(row, 2)?,
        timestamp: get(row, 3)?,
        payload: get(row, 4)?,
    })
}

/// A lifecycle topic is the provenance log's events of one action, its offsets log
/// positions: the log is the bus, with no copy to write. Any other topic holds what
/// clients published, numbered 1, 2, 3….
fn logged(topic: &str, row: &Row) -> Result<BusEvent> {
    let event = provenance_event(row)?;
    Ok(mesh_types::bus::lifecycle_event(
        topic.to_string(),
        event.seq.to_string(),
        event,
    ))
}

#[async_trait]
impl BusStore for PgStore {
    async fn publish(
        &self,
        events: Vec<Outgoing>,
        now: Timestamp,
        audit: Vec<EventDraft>,
        cursor: Option<(String, i64)>,
    ) -> Result<Vec<BusEvent>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // One sequence bump per topic for all its events (topics in name order, so two
        // publishers never wait on each other's topic rows crosswise), then every event
        // in one insert: a relay batch is a handful of round trips, not two per event.
        let mut per_topic: std::collections::BTreeMap<&str, i64> = Default::default();
        for e in &events {
            *per_topic.entry(e.topic.as_str()).or_default() += 1;
        }
        let mut next_seq = std::collections::HashMap::new();
        for (topic, count) in per_topic {
            // The upsert row-locks the topic, so its sequence has no gaps or duplicates.
            let last: i64 = tx
                .query_one(
                    "INSERT INTO bus_topics (topic, last_seq) VALUES ($1, $2)
                     ON CONFLICT (topic) DO UPDATE SET last_seq = bus_topics.last_seq + $2 RETURNING last_seq",
                    &[&topic, &count],
                )
                .await?
                .get(0);
            next_seq.insert(topic.to_string(), last - count + 1);
        }
        let mut seqs = Vec::with_capacity(events.len());
        for e in &events {
            let next = next_seq.get_mut(&e.topic).ok_or_else(|| {
                crate::StoreError::Backend(format!("no sequence for topic {}", e.topic))
            })?;
            seqs.push(*next);
            *next += 1;
        }
        if !events.is_empty() {
            let topics: Vec<&str> = events.iter().map(|e| e.topic.as_str()).collect();
            let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.id).collect();
            let payloads: Vec<&serde_json::Value> = events.iter().map(|e| &e.payload).collect();
            tx.execute(
                "INSERT INTO bus_events (topic, seq, id, ts, payload)
                 SELECT t, s, i, $4, p FROM UNNEST($1::text[], $2::bigint[], $3::uuid[], $5::jsonb[]) AS u(t, s, i, p)",
                &[&topics, &seqs, &ids, &now, &payloads],
            )
            .await?;
        }
        let published: Vec<BusEvent> = events
            .into_iter()
            .zip(seqs)
            .map(|(e, seq)| BusEvent {
                topic: e.topic,
                offset: seq.to_string(),
                id: e.id,
                timestamp: now,
                payload: e.payload,
            })
            .collect();
        if let Some((name, position)) = cursor {
            tx.execute(
                "INSERT INTO bus_cursors (name, position) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET position = excluded.position",
                &[&name, &position],
            )
            .await?;
        }
        append_in_tx(&tx, audit).await?;
        tx.commit().await?;
        Ok(published)
    }

    async fn read(&self, topic: &str, after: i64, limit: u32) -> Result<Vec<BusEvent>> {
        let client = self.client().await?;
        let limit = i64::from(limit);
        match mesh_types::bus::action_for_topic(topic) {
            Some(action) => client
                .query(
                    &format!("SELECT {EVENT_COLUMNS} FROM provenance_events WHERE action = $1 AND seq > $2 ORDER BY seq LIMIT $3"),
                    &[&action, &after, &limit],
                )
                .await?
                .iter()
                .map(|row| logged(topic, row))
                .collect(),
            None => client
                .query(
                    "SELECT topic, seq, id, ts, payload FROM bus_events WHERE topic = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                    &[&topic, &after, &limit],
                )
                .await?
                .iter()
                .map(event_from_row)
                .collect(),
        }
    }

    async fn read_group(&self, r: &GroupRead) -> Result<Vec<Delivery>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let expired_before = r.now - mesh_types::time::millis(r.visibility_ms);
        tx.execute(
            "INSERT INTO bus_groups (topic, group_name, delivered_seq) VALUES ($1, $2, 0) ON CONFLICT DO NOTHING",
            &[&r.topic, &r.group],
        )
        .await?;
        // One reader of a group at a time: the group row is the lock.
        let delivered: i64 = tx
            .query_one(
                "SELECT delivered_seq FROM bus_groups WHERE topic = $1 AND group_name = $2 FOR UPDATE",
                &[&r.topic, &r.group],
            )
            .await?
            .get(0);
        let reclaimed = tx
            .query(
                "UPDATE bus_pending SET consumer = $4, delivered_at = $5, deliveries = deliveries + 1
                 WHERE topic = $1 AND group_name = $2 AND seq IN (
                   SELECT seq FROM bus_pending WHERE topic = $1 AND group_name = $2 AND delivered_at < $3
                   ORDER BY seq LIMIT $6)
                 RETURNING seq, deliveries",
                &[&r.topic, &r.group, &expired_before, &r.consumer, &r.now, &i64::from(r.limit)],
            )
            .await?;
        let mut out: Vec<(i64, u32)> = reclaimed
            .iter()
            .map(|row| Ok((get::<i64>(row, 0)?, get::<i32>(row, 1)?.max(0) as u32)))
            .collect::<Result<_>>()?;
        let room = r.limit.saturating_sub(out.len() as u32);
        if room > 0 {
            // A lifecycle topic's events are the log's events of its action.
            let (source, key) = match mesh_types::bus::action_for_topic(&r.topic) {
                Some(action) => ("provenance_events WHERE action = $7", action),
                None => ("bus_events WHERE topic = $7", r.topic.as_str()),
            };
            let fresh = tx
                .query(
                    &format!(
                        "INSERT INTO bus_pending (topic, group_name, seq, consumer, delivered_at, deliveries)
                         SELECT $1, $2, seq, $4, $5, 1 FROM {source} AND seq > $3 ORDER BY seq LIMIT $6
                         RETURNING seq"
                    ),
                    &[&r.topic, &r.group, &delivered, &r.consumer, &r.now, &i64::from(room), &key],
                )
                .await?;
            let seqs: Vec<i64> = fresh.iter().map(|row| get(row, 0)).collect::<Result<_>>()?;
            if let Some(last) = seqs.iter().max() {
                tx.execute(
                    "UPDATE bus_groups SET delivered_seq = $3 WHERE topic = $1 AND group_name = $2",
                    &[&r.topic, &r.group, last],
                )
                .await?;
            }
            out.extend(seqs.into_iter().map(|s| (s, 1)));
        }
        out.sort_unstable();
        let seqs: Vec<i64> = out.iter().map(|(s, _)| *s).collect();
        let events = match mesh_types::bus::action_for_topic(&r.topic) {
            Some(action) => tx
                .query(
                    &format!("SELECT {EVENT_COLUMNS} FROM provenance_events WHERE action = $1 AND seq = ANY($2) ORDER BY seq"),
                    &[&action, &seqs],
                )
                .await?
                .iter()
                .map(|row| logged(&r.topic, row))
                .collect::<Result<Vec<_>>>()?,
            None => tx
                .query(
                    "SELECT topic, seq, id, ts, payload FROM bus_events WHERE topic = $1 AND seq = ANY($2) ORDER BY seq",
                    &[&r.topic, &seqs],
                )
                .await?
                .iter()
                .map(event_from_row)
                .collect::<Result<Vec<_>>>()?,
        };
        tx.commit().await?;
        Ok(events
            .into_iter()
            .zip(out)
            .map(|(event, (_, deliveries))| Delivery { event, deliveries })
            .collect())
    }

    async fn ack(&self, topic: &str, group: &str, offsets: &[i64]) -> Result<u64> {
        let client = self.client().await?;
        let offsets = offsets.to_vec();
        Ok(client
            .execute(
                "DELETE FROM bus_pending WHERE topic = $1 AND group_name = $2 AND seq = ANY($3)",
                &[&topic, &group, &offsets],
            )
            .await?)
    }

    async fn cursor(&self, name: &str) -> Result<i64> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT position FROM bus_cursors WHERE name = $1", &[&name])
            .await?;
        Ok(row.map(|r| get::<i64>(&r, 0)).transpose()?.unwrap_or(0))
    }
}
