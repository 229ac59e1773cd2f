//! The Merkle tree over the provenance log, rebuilt from the events' hashes: signing
//! checkpoints, inclusion and consistency proofs. Plain functions over the store, so
//! the service, the CLI (straight against the store) and the benchmark share them.

use mesh_store::{ProvenanceLog, StoreError, StoredCheckpoint};
use mesh_types::checkpoint::{Checkpoint, NoteSigner};
use mesh_types::merkle::{self, Frontier, Hash};
use mesh_types::proof::{self, ConsistencyProof, INCLUSION_FORMAT, InclusionProof};
use uuid::Uuid;

/// Leaves read per round trip.
const PAGE: u32 = 10_000;

#[derive(Debug)]
pub enum TreeError {
    Store(StoreError),
    NotFound(String),
    /// The request is valid but the log cannot answer it yet (or any more).
    Conflict(String),
}

impl From<StoreError> for TreeError {
    fn from(e: StoreError) -> Self {
        TreeError::Store(e)
    }
}

impl std::fmt::Display for TreeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TreeError::Store(e) => write!(f, "{e}"),
            TreeError::NotFound(m) | TreeError::Conflict(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for TreeError {}

/// Extends `tree` with the leaves of events `tree.size()+1 ..= size`.
pub async fn extend(
    log: &dyn ProvenanceLog,
    tree: &mut Frontier,
    size: u64,
) -> Result<(), TreeError> {
    while tree.size() < size {
        let after = to_i64(tree.size())?;
        let want = u32::try_from(size - tree.size()).unwrap_or(PAGE).min(PAGE);
        let batch = log.event_hashes(after, want).await?;
        if batch.is_empty() {
            return Err(TreeError::Conflict(format!(
                "the log holds {} events, fewer than {size}",
                tree.size()
            )));
        }
        for (seq, hash) in batch {
            check_seq(seq, tree.size())?;
            tree.push(proof::leaf_of(&hash).map_err(|e| TreeError::Conflict(e.0))?);
        }
    }
    Ok(())
}

/// The leaf hashes of the first `size` events.
pub async fn leaves(log: &dyn ProvenanceLog, size: u64) -> Result<Vec<Hash>, TreeError> {
    let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    while (out.len() as u64) < size {
        let left = size - out.len() as u64;
        let batch = log
            .event_hashes(
                out.len() as i64,
                u32::try_from(left).unwrap_or(PAGE).min(PAGE),
            )
            .await?;
        if batch.is_empty() {
            return Err(TreeError::Conflict(format!(
                "the log holds {} events, fewer than {size}",
                out.len()
            )));
        }
        for (seq, hash) in batch {
            check_seq(seq, out.len() as u64)?;
            out.push(proof::leaf_of(&hash).map_err(|e| TreeError::Conflict(e.0))?);
        }
    }
    Ok(out)
}

/// Leaves are numbered by `seq`; a gap would shift every later leaf.
fn check_seq(seq: i64, before: u64) -> Result<(), TreeError> {
    if u64::try_from(seq).ok() != Some(before + 1) {
        return Err(TreeError::Conflict(format!(
            "event seq {seq} follows {before} events: the log has a gap (run `mesh provenance verify`)"
        )));
    }
    Ok(())
}

fn to_i64(n: u64) -> Result<i64, TreeError> {
    i64::try_from(n).map_err(|_| TreeError::Conflict(format!("tree size {n} is too large")))
}

/// Signs and stores the checkpoint of `tree` (one per tree size: if another process
/// stored this size first, its root must be ours, else the log forked).
pub async fn publish(
    log: &dyn ProvenanceLog,
    signer: &NoteSigner,
    tree: &Frontier,
) -> Result<StoredCheckpoint, TreeError> {
    let root = tree.root();
    let note = signer.sign(&Checkpoint {
        origin: signer.name().to_string(),
        size: tree.size(),
        root,
    });
    let stored = StoredCheckpoint {
        tree_size: to_i64(tree.size())?,
        root_hash: hex::encode(root),
        note,
    };
    if log.add_checkpoint(&stored).await? {
        return Ok(stored);
    }
    let existing = checkpoint_at(log, tree.size()).await?;
    if existing.root_hash != stored.root_hash {
        return Err(TreeError::Conflict(format!(
            "checkpoint {} is stored with root {} but the events hash to {}: the log was rewritten",
            tree.size(),
            existing.root_hash,
            stored.root_hash
        )));
    }
    Ok(existing)
}

/// The stored checkpoint of exactly `size` events.
pub async fn checkpoint_at(
    log: &dyn ProvenanceLog,
    size: u64,
) -> Result<StoredCheckpoint, TreeError> {
    let after = to_i64(size)? - 1;
    let next = log.checkpoints_after(after, 1).await?.into_iter().next();
    if let Some(found) = next.as_ref().filter(|c| c.tree_size == after + 1) {
        return Ok(found.clone());
    }
    // Checkpoint sizes follow the signing cadence, so a caller guessing one needs to
    // hear which exist.
    let nearest = match (next, log.latest_checkpoint().await?) {
        (Some(next), Some(latest)) => format!(
            "; the next one is of {} events, the latest of {}",
            next.tree_size, latest.tree_size
        ),
        (None, Some(latest)) => format!("; the latest is of {} events", latest.tree_size),
        (_, None) => "; none has been signed yet".to_string(),
    };
    Err(TreeError::NotFound(format!(
        "there is no checkpoint of {size} events{nearest}"
    )))
}

/// The proof that event `id` is in the log, against the latest checkpoint. When no
/// checkpoint covers the event yet and `signer` is given, one is made of the whole log.
pub async fn inclusion(
    log: &dyn ProvenanceLog,
    id: Uuid,
    signer: Option<&NoteSigner>,
) -> Result<InclusionProof, TreeError> {
    let event = log
        .event(id)
        .await?
        .ok_or_else(|| TreeError::NotFound(format!("no provenance event {id}")))?;
    let latest = log.latest_checkpoint().await?;
    let checkpoint = match (latest, signer) {
        (Some(c), _) if c.tree_size >= event.seq => c,
        (_, Some(signer)) => {
            let head = log.head().await?;
            let mut tree = Frontier::new();
            extend(log, &mut tree, u64::try_from(head.count).unwrap_or(0)).await?;
            publish(log, signer, &tree).await?
        }
        (_, None) => {
            return Err(TreeError::Conflict(format!(
                "event {id} is newer than the latest signed checkpoint; retry in a second"
            )));
        }
    };
    let size = u64::try_from(checkpoint.tree_size).unwrap_or(0);
    let index = u64::try_from(event.seq - 1).unwrap_or(0);
    let leaves = leaves(log, size).await?;
    let path = usize::try_from(index)
        .ok()
        .and_then(|i| merkle::inclusion_proof(&leaves, i))
        .ok_or_else(|| TreeError::Conflict(format!("event {id} is outside the tree")))?;
    Ok(InclusionProof {
        format: INCLUSION_FORMAT.to_string(),
        event,
        leaf_index: index,
        tree_size: size,
        inclusion_path: proof::encode_path(&path),
        checkpoint: checkpoint.note,
    })
}

/// The consistency proof between the stored checkpoints of `from` and `to` events,
/// computed from the events as they are now: on a rewritten log it fails to verify
/// against the signed roots.
pub async fn consistency(
    log: &dyn ProvenanceLog,
    from: u64,
    to: u64,
) -> Result<ConsistencyProof, TreeError> {
    if from == 0 || from > to {
        return Err(TreeError::NotFound(format!(
            "no consistency proof from {from} to {to}: sizes must satisfy 0 < from <= to"
        )));
    }
    let first = checkpoint_at(log, from).await?;
    let second = checkpoint_at(log, to).await?;
    let leaves = leaves(log, to).await?;
    let path = usize::try_from(from)
        .ok()
        .and_then(|m| merkle::consistency_proof(&leaves, m))
        .ok_or_else(|| TreeError::Conflict("no consistency proof for those sizes".into()))?;
    Ok(ConsistencyProof {
        from_size: from,
        to_size: to,
        from_checkpoint: first.note,
        to_checkpoint: second.note,
        proof: proof::encode_path(&path),
    })
}
