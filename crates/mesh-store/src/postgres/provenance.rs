use super::PgStore;
use super::rows::get;
use crate::traits::subtree_index;
use crate::{ProvenanceLog, Result, StoreError, StoredCheckpoint, StoredSubtree};
use async_trait::async_trait;
use deadpool_postgres::Transaction;
use mesh_types::provenance::ChainHead;
use mesh_types::{EventDraft, ProvenanceEvent, ServerSealed};
use tokio_postgres::Row;
use uuid::Uuid;

pub(crate) const EVENT_COLUMNS: &str =
    "seq, id, ts, action, actor, task_id, subject_type, subject_id, payload, prev_hash, hash";

/// Seals and appends `drafts` inside the caller's transaction. The server chains them
/// (`mesh_append_events`, migration 16): it locks the head row `FOR UPDATE`, so every
/// other appender waits until this transaction ends and the chain cannot fork however
/// many processes write.
///
/// Everything but the chaining is done here, before the head is locked: each event's
/// id, timestamp and canonical JSON but for its place in the log. When the mesh read
/// the head and sent the sealed events back, the lock also waited for the mesh's turn
/// to run on a busy machine, and backends spent more time waiting for it than running.
pub(crate) async fn append_in_tx(
    tx: &Transaction<'_>,
    drafts: Vec<EventDraft>,
) -> Result<Vec<ProvenanceEvent>> {
    if drafts.is_empty() {
        return Ok(Vec::new());
    }
    let parts = server_parts(drafts);
    let append = tx.prepare_cached(APPEND).await?;
    let row = tx
        .query_one(&append, &append_params(&parts).as_refs())
        .await?;
    sealed_from(parts, &row)
}

const APPEND: &str = "SELECT first_prev, head_count, hashes
     FROM mesh_append_events($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

/// Each draft written out but for its place in the log. The timestamp is taken before
/// the head is locked, so events of concurrent transactions may follow each other in
/// the log a little out of timestamp order; an event never precedes one its
/// transaction could see.
fn server_parts(drafts: Vec<EventDraft>) -> Vec<ServerSealed> {
    let now = mesh_types::time::now();
    drafts
        .into_iter()
        .map(|d| ServerSealed::new(d, now))
        .collect()
}

/// `mesh_append_events`'s arguments: the events' columns as arrays.
struct AppendParams<'a> {
    ids: Vec<Uuid>,
    timestamps: Vec<mesh_types::time::Timestamp>,
    actions: Vec<&'a str>,
    actors: Vec<&'a str>,
    task_ids: Vec<Option<Uuid>>,
    subject_types: Vec<&'a str>,
    subject_ids: Vec<Option<&'a str>>,
    payloads: Vec<&'a str>,
    heads: Vec<&'a [u8]>,
    tails: Vec<&'a [u8]>,
}

impl AppendParams<'_> {
    fn as_refs(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 10] {
        [
            &self.ids,
            &self.timestamps,
            &self.actions,
            &self.actors,
            &self.task_ids,
            &self.subject_types,
            &self.subject_ids,
            &self.payloads,
            &self.heads,
            &self.tails,
        ]
    }
}

fn append_params(parts: &[ServerSealed]) -> AppendParams<'_> {
    fn column<'a, T>(parts: &'a [ServerSealed], f: impl Fn(&'a ServerSealed) -> T) -> Vec<T> {
        parts.iter().map(f).collect()
    }
    AppendParams {
        ids: column(parts, |p| p.id),
        timestamps: column(parts, |p| p.timestamp),
        actions: column(parts, |p| p.draft.action.as_str()),
        actors: column(parts, |p| p.draft.actor.as_str()),
        task_ids: column(parts, |p| p.draft.task_id),
        subject_types: column(parts, |p| p.draft.subject_type.as_str()),
        subject_ids: column(parts, |p| p.draft.subject_id.as_deref()),
        payloads: column(parts, |p| p.payload_json.as_str()),
        heads: column(parts, |p| p.head.as_bytes()),
        tails: column(parts, |p| p.tail.as_bytes()),
    }
}

/// The events, placed where the server's answer says.
fn sealed_from(parts: Vec<ServerSealed>, row: &Row) -> Result<Vec<ProvenanceEvent>> {
    let mut prev: String = get(row, 0)?;
    let head_count: i64 = get(row, 1)?;
    let hashes: Vec<String> = get(row, 2)?;
    if hashes.len() != parts.len() {
        return Err(crate::StoreError::Corrupt(format!(
            "the log's append returned {} hashes for {} events",
            hashes.len(),
            parts.len()
        )));
    }
    let mut sealed = Vec::with_capacity(parts.len());
    for ((part, hash), seq) in parts.into_iter().zip(hashes).zip(head_count + 1..) {
        let next = hash.clone();
        sealed.push(part.into_event(seq, std::mem::replace(&mut prev, next), hash));
    }
    Ok(sealed)
}

/// [`append_in_tx`] as the transaction's last statement, with its commit: the commit
/// goes out in the same round trip as the append, so the head — held from the append's
/// start until the commit is durable — does not also wait for the mesh to read the
/// append's answer and send `COMMIT`.
///
/// The pipeline is `SELECT mesh_append_events(…); COMMIT; BEGIN`. If the append fails,
/// PostgreSQL ends the aborted transaction at `COMMIT` without applying anything. The
/// trailing `BEGIN` gives the caller's `Transaction` a transaction to end, outside the
/// head's hold, so nothing is left open. The append's statement is prepared before
/// the pipeline starts: one prepared on the way would reach the server after `COMMIT`.
/// `tx` must be a top-level transaction: inside a savepoint, the `COMMIT` would end
/// the enclosing transaction.
pub(crate) async fn append_and_commit(
    tx: Transaction<'_>,
    drafts: Vec<EventDraft>,
) -> Result<Vec<ProvenanceEvent>> {
    if drafts.is_empty() {
        tx.commit().await?;
        return Ok(Vec::new());
    }
    let parts = server_parts(drafts);
    let append = tx.prepare_cached(APPEND).await?;
    let client = tx.client();
    // `join3` polls each future in order on its first poll, and each sends its request
    // then, so the server receives them in this order.
    let (appended, committed, reopened) = futures_util::future::join3(
        async {
            tx.query_one(&append, &append_params(&parts).as_refs())
                .await
        },
        client.batch_execute("COMMIT"),
        client.batch_execute("BEGIN"),
    )
    .await;
    let row = appended?;
    committed?;
    // Durable from here. Ending the empty transaction `BEGIN` opened is housekeeping: a
    // connection it fails on is broken, and the pool drops it.
    if reopened.is_ok()
        && let Err(e) = tx.commit().await
    {
        tracing::warn!(error = %e, "could not end the empty transaction after a commit");
    }
    sealed_from(parts, &row)
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
        append_and_commit(tx, drafts).await
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

    async fn add_subtrees(&self, subtrees: &[StoredSubtree]) -> Result<Vec<StoredSubtree>> {
        if subtrees.is_empty() {
            return Ok(Vec::new());
        }
        let mut levels = Vec::with_capacity(subtrees.len());
        let mut indices = Vec::with_capacity(subtrees.len());
        let mut hashes = Vec::with_capacity(subtrees.len());
        for t in subtrees {
            levels.push(level_i16(t.level)?);
            indices.push(subtree_index(t.index)?);
            hashes.push(t.hash.as_str());
        }
        let client = self.client().await?;
        // The outer query sees the table as it was before the insert: the rows it
        // returns were stored earlier, by this process or another, with another root.
        let rows = client
            .query(
                "WITH given AS (
                   SELECT * FROM UNNEST($1::smallint[], $2::bigint[], $3::text[]) AS g(level, idx, hash)
                 ), added AS (
                   INSERT INTO provenance_subtrees (level, idx, hash)
                   SELECT level, idx, hash FROM given
                   ON CONFLICT (level, idx) DO NOTHING
                 )
                 SELECT s.level, s.idx, s.hash FROM provenance_subtrees s
                 JOIN given g ON s.level = g.level AND s.idx = g.idx
                 WHERE s.hash <> g.hash",
                &[&levels, &indices, &hashes],
            )
            .await?;
        rows.iter().map(subtree_from_row).collect()
    }

    async fn subtrees(&self, level: u32, from: u64, count: u64) -> Result<Vec<StoredSubtree>> {
        let (from, to) = (
            subtree_index(from)?,
            subtree_index(from.saturating_add(count))?,
        );
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT level, idx, hash FROM provenance_subtrees
                 WHERE level = $1 AND idx >= $2 AND idx < $3 ORDER BY idx",
                &[&level_i16(level)?, &from, &to],
            )
            .await?;
        rows.iter().map(subtree_from_row).collect()
    }
}

fn level_i16(level: u32) -> Result<i16> {
    i16::try_from(level)
        .map_err(|_| StoreError::invalid("subtree", format!("level {level} is too large")))
}

fn subtree_from_row(row: &Row) -> Result<StoredSubtree> {
    let level: i16 = get(row, 0)?;
    let index: i64 = get(row, 1)?;
    Ok(StoredSubtree {
        level: level as u32,
        index: index as u64,
        hash: get(row, 2)?,
    })
}

fn checkpoint_from_row(row: &Row) -> Result<StoredCheckpoint> {
    Ok(StoredCheckpoint {
        tree_size: get(row, 0)?,
        root_hash: get(row, 1)?,
        note: get(row, 2)?,
    })
}
