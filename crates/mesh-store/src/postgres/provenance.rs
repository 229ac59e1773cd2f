use super::PgStore;
use super::rows::get;
use crate::{ProvenanceLog, Result, StoredCheckpoint};
use async_trait::async_trait;
use deadpool_postgres::Transaction;
use mesh_types::provenance::ChainHead;
use mesh_types::{EventDraft, PreparedDraft, ProvenanceEvent};
use tokio_postgres::Row;
use uuid::Uuid;

pub(crate) const EVENT_COLUMNS: &str =
    "seq, id, ts, action, actor, task_id, subject_type, subject_id, payload, prev_hash, hash";

/// Seals and appends `drafts` inside the caller's transaction. `FOR UPDATE` on the head
/// row makes every other appender wait until this transaction ends, so the chain
/// cannot fork however many processes write.
pub(crate) async fn append_in_tx(
    tx: &Transaction<'_>,
    drafts: Vec<EventDraft>,
) -> Result<Vec<ProvenanceEvent>> {
    append_after(tx, async { Ok(()) }, drafts).await
}

/// [`append_in_tx`] after `write`, the transaction's last other statement, sent in the
/// same round trip as the read of the head: one round trip fewer for a claim or a
/// completion to wait through. PostgreSQL runs a connection's statements in order, so
/// the head is not locked before `write` has run.
pub(crate) async fn append_after(
    tx: &Transaction<'_>,
    write: impl std::future::Future<Output = Result<()>>,
    drafts: Vec<EventDraft>,
) -> Result<Vec<ProvenanceEvent>> {
    if drafts.is_empty() {
        write.await?;
        return Ok(Vec::new());
    }
    // Everything of the seal that does not need the head is done before locking it:
    // every other appender waits while this transaction holds the head.
    let drafts: Vec<PreparedDraft> = drafts.into_iter().map(PreparedDraft::from).collect();
    let head = tx
        .prepare_cached("SELECT count, last_hash FROM provenance_head WHERE id = 1 FOR UPDATE")
        .await?;
    let ((), row) = futures_util::future::try_join(write, async {
        tx.query_one(&head, &[]).await.map_err(Into::into)
    })
    .await?;
    let mut head = ChainHead {
        count: get(&row, 0)?,
        last_hash: get(&row, 1)?,
    };
    let now = mesh_types::time::now();
    let mut sealed = Vec::with_capacity(drafts.len());
    let mut payloads = Vec::with_capacity(drafts.len());
    for draft in drafts {
        let (event, payload_json) =
            ProvenanceEvent::seal_prepared(draft, head.count + 1, &head.last_hash, now);
        head.count = event.seq;
        head.last_hash = event.hash.clone();
        sealed.push(event);
        payloads.push(payload_json);
    }
    let advance = tx
        .prepare_cached("UPDATE provenance_head SET count = $1, last_hash = $2 WHERE id = 1")
        .await?;
    // Pipelined: the events and the head's advance go out together, one round trip
    // while the head is held (either order is right: this transaction holds the head).
    futures_util::future::try_join(insert_events(tx, &sealed, &payloads), async {
        tx.execute(&advance, &[&head.count, &head.last_hash])
            .await
            .map_err(Into::into)
    })
    .await?;
    Ok(sealed)
}

/// All of a transaction's events in one statement (columns as arrays, `UNNEST`ed):
/// one round trip instead of one per event, while the head's row lock is held.
/// `payloads` are the events' payloads as the canonical JSON their hashes were computed
/// over (sent as text and cast, so they are not serialised again while the head is held).
async fn insert_events(
    tx: &Transaction<'_>,
    events: &[ProvenanceEvent],
    payloads: &[String],
) -> Result<()> {
    fn column<'a, T>(
        events: &'a [ProvenanceEvent],
        f: impl Fn(&'a ProvenanceEvent) -> T,
    ) -> Vec<T> {
        events.iter().map(f).collect()
    }
    let insert = tx
        .prepare_cached(&format!(
            "INSERT INTO provenance_events ({EVENT_COLUMNS})
             SELECT * FROM UNNEST($1::bigint[], $2::uuid[], $3::timestamptz[], $4::text[],
               $5::text[], $6::uuid[], $7::text[], $8::text[], $9::text[]::json[], $10::text[], $11::text[])"
        ))
        .await?;
    tx.execute(
        &insert,
        &[
            &column(events, |e| e.seq),
            &column(events, |e| e.id),
            &column(events, |e| e.timestamp),
            &column(events, |e| e.action.as_str()),
            &column(events, |e| e.actor.as_str()),
            &column(events, |e| e.task_id),
            &column(events, |e| e.subject_type.as_str()),
            &column(events, |e| e.subject_id.as_deref()),
            &payloads,
            &column(events, |e| e.prev_hash.as_str()),
            &column(events, |e| e.hash.as_str()),
        ],
    )
    .await?;
    Ok(())
}

pub(crate) fn event_from_row(row: &Row) -> Result<ProvenanceEvent> {
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

    async fn event(&self, id: Uuid) -> Result<Option<ProvenanceEvent>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {EVENT_COLUMNS} FROM provenance_events WHERE id = $1"),
                &[&id],
            )
            .await?;
        row.as_ref().map(event_from_row).transpose()
    }

    async fn event_hashes(&self, after: i64, limit: u32) -> Result<Vec<(i64, String)>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT seq, hash FROM provenance_events WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&after, &i64::from(limit)],
            )
            .await?;
        rows.iter().map(|r| Ok((get(r, 0)?, get(r, 1)?))).collect()
    }

    async fn add_checkpoint(&self, checkpoint: &StoredCheckpoint) -> Result<bool> {
        let client = self.client().await?;
        let added = client
            .execute(
                "INSERT INTO provenance_checkpoints (tree_size, root_hash, note)
                 VALUES ($1, $2, $3) ON CONFLICT (tree_size) DO NOTHING",
                &[
                    &checkpoint.tree_size,
                    &checkpoint.root_hash,
                    &checkpoint.note,
                ],
            )
            .await?;
        Ok(added == 1)
    }

    async fn checkpoints_after(&self, after: i64, limit: u32) -> Result<Vec<StoredCheckpoint>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT tree_size, root_hash, note FROM provenance_checkpoints
                 WHERE tree_size > $1 ORDER BY tree_size LIMIT $2",
                &[&after, &i64::from(limit)],
            )
            .await?;
        rows.iter().map(checkpoint_from_row).collect()
    }

    async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT tree_size, root_hash, note FROM provenance_checkpoints
                 ORDER BY tree_size DESC LIMIT 1",
                &[],
            )
            .await?;
        row.as_ref().map(checkpoint_from_row).transpose()
    }
}

fn checkpoint_from_row(row: &Row) -> Result<StoredCheckpoint> {
    Ok(StoredCheckpoint {
        tree_size: get(row, 0)?,
        root_hash: get(row, 1)?,
        note: get(row, 2)?,
    })
}
