use super::SqliteStore;
use super::provenance::{EVENT_COLUMNS, event_from_row as provenance_event, record_in_tx};
use super::rows::{fmt_ts, json, to_json, ts, uuid};
use crate::{BusStore, GroupRead, Outgoing, Result};
use async_trait::async_trait;
use mesh_types::EventDraft;
use mesh_types::bus::{BusEvent, Delivery};
use mesh_types::time::Timestamp;
use rusqlite::{Connection, OptionalExtension, Row, params};

fn event_from_row(row: &Row<'_>) -> rusqlite::Result<BusEvent> {
    Ok(BusEvent {
        topic: row.get(0)?,
        offset: row.get::<_, i64>(1)?.to_string(),
        id: uuid(row, 2)?,
        timestamp: ts(row, 3)?,
        payload: json(row, 4)?,
    })
}

/// Where a topic's events live. A lifecycle topic is the provenance log's events of
/// one action, its offsets log positions: the log is the bus, with no copy to write.
/// Any other topic holds what clients published, numbered 1, 2, 3….
enum Source {
    Log(&'static str),
    Published,
}

fn source(topic: &str) -> Source {
    match mesh_types::bus::action_for_topic(topic) {
        Some(action) => Source::Log(action),
        None => Source::Published,
    }
}

fn logged(topic: &str, event: mesh_types::ProvenanceEvent) -> BusEvent {
    mesh_types::bus::lifecycle_event(topic.to_string(), event.seq.to_string(), event)
}

fn load(conn: &Connection, topic: &str, seq: i64) -> Result<BusEvent> {
    Ok(match source(topic) {
        Source::Log(action) => logged(
            topic,
            conn.prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM provenance_events WHERE seq = ?1 AND action = ?2"
            ))?
            .query_row(params![seq, action], provenance_event)?,
        ),
        Source::Published => conn
            .prepare_cached(
                "SELECT topic, seq, id, ts, payload FROM bus_events WHERE topic = ?1 AND seq = ?2",
            )?
            .query_row(params![topic, seq], event_from_row)?,
    })
}

fn events_after(conn: &Connection, topic: &str, after: i64, limit: u32) -> Result<Vec<BusEvent>> {
    Ok(match source(topic) {
        Source::Log(action) => conn
            .prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM provenance_events WHERE action = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
            ))?
            .query_map(params![action, after, limit], provenance_event)?
            .map(|e| e.map(|e| logged(topic, e)))
            .collect::<rusqlite::Result<Vec<_>>>()?,
        Source::Published => conn
            .prepare_cached(
                "SELECT topic, seq, id, ts, payload FROM bus_events WHERE topic = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )?
            .query_map(params![topic, after, limit], event_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?,
    })
}

fn offsets_after(conn: &Connection, topic: &str, after: i64, limit: u32) -> Result<Vec<i64>> {
    let (sql, key) = match source(topic) {
        Source::Log(action) => (
            "SELECT seq FROM provenance_events WHERE action = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            action,
        ),
        Source::Published => (
            "SELECT seq FROM bus_events WHERE topic = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            topic,
        ),
    };
    Ok(conn
        .prepare_cached(sql)?
        .query_map(params![key, after, limit], |row| row.get(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?)
}

#[async_trait]
impl BusStore for SqliteStore {
    async fn publish(
        &self,
        events: Vec<Outgoing>,
        now: Timestamp,
        audit: Vec<EventDraft>,
        cursor: Option<(String, i64)>,
    ) -> Result<Vec<BusEvent>> {
        self.write(move |tx| {
            let mut published = Vec::with_capacity(events.len());
            for e in events {
                let seq: i64 = tx.prepare_cached("INSERT INTO bus_topics (topic, last_seq) VALUES (?1, 1)
                     ON CONFLICT (topic) DO UPDATE SET last_seq = last_seq + 1 RETURNING last_seq")?.query_row(params![e.topic],
                    |r| r.get(0),)?;
                tx.prepare_cached("INSERT INTO bus_events (topic, seq, id, ts, payload) VALUES (?1, ?2, ?3, ?4, ?5)")?.execute(params![e.topic, seq, e.id.to_string(), fmt_ts(&now), to_json(&e.payload)],)?;
                published.push(BusEvent { topic: e.topic, offset: seq.to_string(), id: e.id, timestamp: now, payload: e.payload });
            }
            if let Some((name, position)) = cursor {
                tx.prepare_cached("INSERT INTO bus_cursors (name, position) VALUES (?1, ?2)
                     ON CONFLICT (name) DO UPDATE SET position = excluded.position")?.execute(params![name, position],)?;
            }
            record_in_tx(tx, audit)?;
            Ok(published)
        })
        .await
    }

    async fn read(&self, topic: &str, after: i64, limit: u32) -> Result<Vec<BusEvent>> {
        let topic = topic.to_string();
        self.read(move |conn| events_after(conn, &topic, after, limit))
            .await
    }

    async fn read_group(&self, read: &GroupRead) -> Result<Vec<Delivery>> {
        let r = read.clone();
        self.write(move |tx| {
            let now = fmt_ts(&r.now);
            let expired_before = fmt_ts(&(r.now - mesh_types::time::millis(r.visibility_ms)));
            tx.prepare_cached("INSERT INTO bus_groups (topic, group_name, delivered_seq) VALUES (?1, ?2, 0) ON CONFLICT DO NOTHING")?.execute(params![r.topic, r.group],)?;
            let mut out: Vec<(i64, u32)> = Vec::new();
            {
                let mut stmt = tx.prepare(
                    "UPDATE bus_pending SET consumer = ?4, delivered_at = ?5, deliveries = deliveries + 1
                     WHERE topic = ?1 AND group_name = ?2 AND seq IN (
                       SELECT seq FROM bus_pending WHERE topic = ?1 AND group_name = ?2 AND delivered_at < ?3
                       ORDER BY seq LIMIT ?6)
                     RETURNING seq, deliveries",
                )?;
                let rows = stmt.query_map(params![r.topic, r.group, expired_before, r.consumer, now, r.limit], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, u32>(1)?))
                })?;
                for row in rows {
                    out.push(row?);
                }
            }
            let room = r.limit.saturating_sub(out.len() as u32);
            if room > 0 {
                let delivered: i64 = tx.prepare_cached("SELECT delivered_seq FROM bus_groups WHERE topic = ?1 AND group_name = ?2")?.query_row(params![r.topic, r.group],
                    |row| row.get(0),)?;
                let fresh = offsets_after(tx, &r.topic, delivered, room)?;
                for seq in &fresh {
                    tx.prepare_cached("INSERT INTO bus_pending (topic, group_name, seq, consumer, delivered_at, deliveries) VALUES (?1, ?2, ?3, ?4, ?5, 1)")?.execute(params![r.topic, r.group, seq, r.consumer, now],)?;
                    out.push((*seq, 1));
                }
                if let Some(last) = fresh.last() {
                    tx.prepare_cached("UPDATE bus_groups SET delivered_seq = ?3 WHERE topic = ?1 AND group_name = ?2")?.execute(params![r.topic, r.group, last],)?;
                }
            }
            out.sort_unstable();
            out.into_iter()
                .map(|(seq, deliveries)| Ok(Delivery { event: load(tx, &r.topic, seq)?, deliveries }))
                .collect()
        })
        .await
    }

    async fn ack(&self, topic: &str, group: &str, offsets: &[i64]) -> Result<u64> {
        let (topic, group, offsets) = (topic.to_string(), group.to_string(), offsets.to_vec());
        self.write(move |tx| {
            let mut acked = 0;
            for seq in offsets {
                acked += tx
                    .prepare_cached(
                        "DELETE FROM bus_pending WHERE topic = ?1 AND group_name = ?2 AND seq = ?3",
                    )?
                    .execute(params![topic, group, seq])? as u64;
            }
            Ok(acked)
        })
        .await
    }

    async fn cursor(&self, name: &str) -> Result<i64> {
        let name = name.to_string();
        self.read(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT position FROM bus_cursors WHERE name = ?1",
                    params![name],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or(0))
        })
        .await
    }
}
