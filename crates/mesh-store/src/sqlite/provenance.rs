use super::SqliteStore;
use super::rows::{fmt_ts, json, opt_uuid, ts, uuid};
use crate::traits::subtree_index;
use crate::{ProvenanceLog, Result, StoreError, StoredCheckpoint, StoredSubtree};
use async_trait::async_trait;
use mesh_types::provenance::ChainHead;
use mesh_types::{EventDraft, PreparedDraft, ProvenanceEvent};
use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};
use uuid::Uuid;

pub(crate) const EVENT_COLUMNS: &str =
    "seq, id, ts, action, actor, task_id, subject_type, subject_id, payload, prev_hash, hash";

/// Seals and appends `drafts` inside the caller's write transaction. The immediate
/// transaction holds SQLite's write lock, so the head read here cannot go stale.
pub(crate) fn append_in_tx<D: Into<PreparedDraft>>(
    tx: &Transaction<'_>,
    drafts: Vec<D>,
) -> Result<Vec<ProvenanceEvent>> {
    let mut sealed = Vec::with_capacity(drafts.len());
    insert_sealed(tx, drafts, ProvenanceEvent::seal_prepared, |e| {
        sealed.push(e)
    })?;
    Ok(sealed)
}

/// [`append_in_tx`] for a write that does not return the events: they are not built
/// whole (a detached draft's payload is not parsed back).
pub(crate) fn record_in_tx<D: Into<PreparedDraft>>(
    tx: &Transaction<'_>,
    drafts: Vec<D>,
) -> Result<()> {
    insert_sealed(tx, drafts, ProvenanceEvent::seal_for_store, drop)
}

type Seal = fn(PreparedDraft, i64, &str, mesh_types::time::Timestamp) -> (ProvenanceEvent, String);

fn insert_sealed<D: Into<PreparedDraft>>(
    tx: &Transaction<'_>,
    drafts: Vec<D>,
    seal: Seal,
    mut sealed: impl FnMut(ProvenanceEvent),
) -> Result<()> {
    if drafts.is_empty() {
        return Ok(());
    }
    let mut head = read_head(tx)?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO provenance_events (seq, id, ts, action, actor, task_id, subject_type, subject_id, payload, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    let now = mesh_types::time::now();
    for draft in drafts {
        let (event, payload_json) = seal(draft.into(), head.count + 1, &head.last_hash, now);
        insert.execute(params![
            event.seq,
            event.id.to_string(),
            fmt_ts(&event.timestamp),
            event.action,
            event.actor,
            event.task_id.map(|t| t.to_string()),
            event.subject_type,
            event.subject_id,
            payload_json,
            event.prev_hash,
            event.hash,
        ])?;
        head.count = event.seq;
        head.last_hash = event.hash.clone();
        sealed(event);
    }
    tx.prepare_cached("UPDATE provenance_head SET count = ?1, last_hash = ?2 WHERE id = 1")?
        .execute(params![head.count, head.last_hash])?;
    Ok(())
}

/// Prepares drafts before they are handed to the writer thread, so the part of their
/// sealing that does not need the log's head runs on the caller's thread.
pub(crate) fn prepare(drafts: Vec<EventDraft>) -> Vec<PreparedDraft> {
    drafts.into_iter().map(PreparedDraft::from).collect()
}

/// [`prepare`] for a write that records the events without returning them: their
/// payload values are freed here too (see [`PreparedDraft::detach`]).
pub(crate) fn prepare_detached(drafts: Vec<EventDraft>) -> Vec<PreparedDraft> {
    drafts
        .into_iter()
        .map(|d| PreparedDraft::from(d).detach())
        .collect()
}

fn read_head(conn: &Connection) -> Result<ChainHead> {
    conn.prepare_cached("SELECT count, last_hash FROM provenance_head WHERE id = 1")?
        .query_row([], |r| {
            Ok(ChainHead {
                count: r.get(0)?,
                last_hash: r.get(1)?,
            })
        })
        .map_err(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => {
                StoreError::Corrupt("the provenance head row is missing".into())
            }
            other => other.into(),
        })
}

pub(crate) fn event_from_row(row: &Row<'_>) -> rusqlite::Result<ProvenanceEvent> {
    Ok(ProvenanceEvent {
        seq: row.get(0)?,
        id: uuid(row, 1)?,
        timestamp: ts(row, 2)?,
        action: row.get(3)?,
        actor: row.get(4)?,
        task_id: opt_uuid(row, 5)?,
        subject_type: row.get(6)?,
        subject_id: row.get(7)?,
        payload: json(row, 8)?,
        prev_hash: row.get(9)?,
        hash: row.get(10)?,
    })
}

#[async_trait]
impl ProvenanceLog for SqliteStore {
    async fn append(&self, drafts: Vec<EventDraft>) -> Result<Vec<ProvenanceEvent>> {
        let drafts = prepare(drafts);
        self.write(move |tx| append_in_tx(tx, drafts)).await
    }

    async fn head(&self) -> Result<ChainHead> {
        self.read(read_head).await
    }

    async fn events_after(&self, after: i64, limit: u32) -> Result<Vec<ProvenanceEvent>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM provenance_events WHERE seq > ?1 ORDER BY seq LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![after, limit], event_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn events_with_action(
        &self,
        action: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<ProvenanceEvent>> {
        let action = action.to_string();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM provenance_events
                 WHERE action = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
            ))?;
            let rows = stmt.query_map(params![action, after, limit], event_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn events_for_task(&self, task_id: Uuid) -> Result<Vec<ProvenanceEvent>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM provenance_events WHERE task_id = ?1 ORDER BY seq"
            ))?;
            let rows = stmt.query_map(params![task_id.to_string()], event_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn event(&self, id: Uuid) -> Result<Option<ProvenanceEvent>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM provenance_events WHERE id = ?1"
            ))?;
            Ok(stmt
                .query_row(params![id.to_string()], event_from_row)
                .optional()?)
        })
        .await
    }

    async fn event_hashes(&self, after: i64, limit: u32) -> Result<Vec<(i64, String)>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, hash FROM provenance_events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after, limit], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn add_checkpoint(&self, checkpoint: &StoredCheckpoint) -> Result<bool> {
        let c = checkpoint.clone();
        self.write(move |tx| {
            let added = tx
                .prepare_cached(
                    "INSERT INTO provenance_checkpoints (tree_size, root_hash, note, created_at)
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (tree_size) DO NOTHING",
                )?
                .execute(params![
                    c.tree_size,
                    c.root_hash,
                    c.note,
                    fmt_ts(&mesh_types::time::now())
                ])?;
            Ok(added == 1)
        })
        .await
    }

    async fn checkpoints_after(&self, after: i64, limit: u32) -> Result<Vec<StoredCheckpoint>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT tree_size, root_hash, note FROM provenance_checkpoints
                 WHERE tree_size > ?1 ORDER BY tree_size LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after, limit], checkpoint_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT tree_size, root_hash, note FROM provenance_checkpoints
                     ORDER BY tree_size DESC LIMIT 1",
                )?
                .query_row([], checkpoint_from_row)
                .optional()?)
        })
        .await
    }

    async fn add_subtrees(&self, subtrees: &[StoredSubtree]) -> Result<Vec<StoredSubtree>> {
        if subtrees.is_empty() {
            return Ok(Vec::new());
        }
        let subtrees = subtrees.to_vec();
        self.write(move |tx| {
            let mut insert = tx.prepare_cached(
                "INSERT INTO provenance_subtrees (level, idx, hash) VALUES (?1, ?2, ?3)
                 ON CONFLICT (level, idx) DO NOTHING",
            )?;
            let mut stored = tx.prepare_cached(
                "SELECT hash FROM provenance_subtrees WHERE level = ?1 AND idx = ?2",
            )?;
            let mut differing = Vec::new();
            for t in subtrees {
                let idx = subtree_index(t.index)?;
                if insert.execute(params![t.level, idx, t.hash])? == 0 {
                    let hash: String = stored.query_row(params![t.level, idx], |r| r.get(0))?;
                    if hash != t.hash {
                        differing.push(StoredSubtree { hash, ..t });
                    }
                }
            }
            Ok(differing)
        })
        .await
    }

    async fn subtrees(&self, level: u32, from: u64, count: u64) -> Result<Vec<StoredSubtree>> {
        let (from, to) = (
            subtree_index(from)?,
            subtree_index(from.saturating_add(count))?,
        );
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT idx, hash FROM provenance_subtrees
                 WHERE level = ?1 AND idx >= ?2 AND idx < ?3 ORDER BY idx",
            )?;
            let rows = stmt.query_map(params![level, from, to], |r| {
                Ok(StoredSubtree {
                    level,
                    index: r.get::<_, i64>(0)? as u64,
                    hash: r.get(1)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }
}

fn checkpoint_from_row(row: &Row<'_>) -> rusqlite::Result<StoredCheckpoint> {
    Ok(StoredCheckpoint {
        tree_size: row.get(0)?,
        root_hash: row.get(1)?,
        note: row.get(2)?,
    })
}
