use super::PgStore;
use super::rows::get;
use crate::{ProvenanceLog, Result};
use async_trait::async_trait;
use deadpool_postgres::Transaction;
use mesh_types::provenance::ChainHead;
use mesh_types::{EventDraft, ProvenanceEvent};
use tokio_postgres::Row;
use uuid::Uuid;

const EVENT_COLUMNS: &str =
    "seq, id, ts, action, actor, task_id, subject_type, subject_id, payload, prev_hash, hash";

/// Seals and appends `drafts` inside the caller's transaction. `FOR UPDATE` on the head
/// row makes every other appender wait until this transaction ends, so the chain
/// cannot fork however many processes write.
pub(crate) async fn append_in_tx(
    tx: &Transaction<'_>,
    drafts: Vec<EventDraft>,
) -> Result<Vec<ProvenanceEvent>> {
    if drafts.is_empty() {
        return Ok(Vec::new());
    }
    let row = tx
        .query_one(
            "SELECT count, last_hash FROM provenance_head WHERE id = 1 FOR UPDATE",
            &[],
        )
        .await?;
    let mut head = ChainHead {
        count: get(&row, 0)?,
        last_hash: get(&row, 1)?,
    };
    let insert = tx
        .prepare_cached(&format!(
            "INSERT INTO provenance_events ({EVENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        ))
        .await?;
    let now = mesh_types::time::now();
    let mut sealed = Vec::with_capacity(drafts.len());
    for draft in drafts {
        let event = ProvenanceEvent::seal(draft, head.count + 1, &head.last_hash, now);
        tx.execute(
            &insert,
            &[
                &event.seq,
                &event.id,
                &event.timestamp,
                &event.action,
                &event.actor,
                &event.task_id,
                &event.subject_type,
                &event.subject_id,
                &event.payload,
                &event.prev_hash,
                &event.hash,
            ],
        )
        .await?;
        head.count = event.seq;
        head.last_hash = event.hash.clone();
        sealed.push(event);
    }
    tx.execute(
        "UPDATE provenance_head SET count = $1, last_hash = $2 WHERE id = 1",
        &[&head.count, &head.last_hash],
    )
    .await?;
    Ok(sealed)
}

fn event_from_row(row: &Row) -> Result<ProvenanceEvent> {
    Ok(ProvenanceEvent {
        seq: get(row, 0)?,
        id: get(row, 1)?,
        timestamp: get(row, 2)?,
        action: get(row, 3)?,
        actor: get(row, 4)?,
        task_id: get(row, 5)?,
        subject_type: get(row, 6)?,
        subject_id: get(row, 7)?,
        payload: get(row, 8)?,
        prev_hash: get(row, 9)?,
        hash: get(row, 10)?,
    })
}

#[async_trait]
impl ProvenanceLog for PgStore {
    async fn append(&self, drafts: Vec<EventDraft>) -> Result<Vec<ProvenanceEvent>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let events = append_in_tx(&tx, drafts).await?;
        tx.commit().await?;
        Ok(events)
    }

    async fn head(&self) -> Result<ChainHead> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT count, last_hash FROM provenance_head WHERE id = 1",
                &[],
            )
            .await?
            .ok_or_else(|| {
                crate::StoreError::Corrupt("the provenance head row is missing".into())
            })?;
        Ok(ChainHead {
            count: get(&row, 0)?,
            last_hash: get(&row, 1)?,
        })
    }

    async fn events_after(&self, after: i64, limit: u32) -> Result<Vec<ProvenanceEvent>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM provenance_events WHERE seq > $1 ORDER BY seq LIMIT $2"
                ),
                &[&after, &i64::from(limit)],
            )
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn events_with_action(
        &self,
        action: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<ProvenanceEvent>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM provenance_events
                     WHERE action = $1 AND seq > $2 ORDER BY seq LIMIT $3"
                ),
                &[&action, &after, &i64::from(limit)],
            )
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn events_for_task(&self, task_id: Uuid) -> Result<Vec<ProvenanceEvent>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM provenance_events WHERE task_id = $1 ORDER BY seq"
                ),
                &[&task_id],
            )
            .await?;
        rows.iter().map(event_from_row).collect()
    }
}
