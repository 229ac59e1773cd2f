//! The Merkle tree over the provenance log, rebuilt from the events' hashes: signing
//! checkpoints, inclusion and consistency proofs. Plain functions over the store, so
//! the service, the CLI (straight against the store) and the benchmark share them.

use mesh_store::{ProvenanceLog, StoreError, StoredCheckpoint, StoredSubtree};
use mesh_types::checkpoint::{Checkpoint, NoteSigner};
use mesh_types::merkle::{self, Frontier, Hash, STORED_LEVEL_STEP, Subtree};
use mesh_types::proof::{self, ConsistencyProof, INCLUSION_FORMAT, InclusionProof};
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
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

/// Extends `tree` with the leaves of events `tree.size()+1 ..= size`, storing the
/// roots of the perfect subtrees it completes on the way (what proofs are built
/// from). A root stored earlier that the events no longer hash to means the log was
/// rewritten: that is an error, and nothing is signed.
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
        let mut completed = Vec::new();
        for (seq, hash) in batch {
            check_seq(seq, tree.size())?;
            let leaf = proof::leaf_of(&hash).map_err(|e| TreeError::Conflict(e.0))?;
            tree.push_reporting(leaf, &mut completed);
        }
        store_subtrees(log, completed).await?;
    }
    Ok(())
}

async fn store_subtrees(
    log: &dyn ProvenanceLog,
    completed: Vec<(Subtree, Hash)>,
) -> Result<(), TreeError> {
    let rows: Vec<StoredSubtree> = completed
        .iter()
        .map(|(t, root)| StoredSubtree::new(*t, root))
        .collect();
    // Named by the earliest events it covers, whatever order the store answers in.
    let differing = log.add_subtrees(&rows).await?;
    let Some(stored) = differing
        .into_iter()
        .min_by_key(|t| (t.index << t.level, t.level))
    else {
        return Ok(());
    };
    let ours = rows
        .iter()
        .find(|r| r.level == stored.level && r.index == stored.index)
        .map_or("?", |r| r.hash.as_str());
    let leaves = Subtree {
        level: stored.level,
        index: stored.index,
    }
    .leaves();
    Err(TreeError::Conflict(format!(
        "events {}..={} hash to {ours} but their stored root is {}: the log was rewritten (run `mesh provenance verify`)",
        leaves.start + 1,
        leaves.end,
        stored.hash
    )))
}

/// The leaf hashes of events `range.start + 1 ..= range.end`.
async fn leaves(log: &dyn ProvenanceLog, range: Range<u64>) -> Result<Vec<Hash>, TreeError> {
    let mut out = Vec::with_capacity(usize::try_from(range.end - range.start).unwrap_or(0));
    let mut next = range.start;
    while next < range.end {
        let left = range.end - next;
        let batch = log
            .event_hashes(to_i64(next)?, u32::try_from(left).unwrap_or(PAGE).min(PAGE))
            .await?;
        if batch.is_empty() {
            return Err(TreeError::Conflict(format!(
                "the log holds {next} events, fewer than {}",
                range.end
            )));
        }
        for (seq, hash) in batch {
            check_seq(seq, next)?;
            out.push(proof::leaf_of(&hash).map_err(|e| TreeError::Conflict(e.0))?);
            next += 1;
        }
    }
    Ok(out)
}

/// The proof a list of ranges names (see `merkle::inclusion_ranges`), each range's
/// root assembled from its perfect pieces.
async fn proof_from_store(
    log: &dyn ProvenanceLog,
    ranges: Vec<Range<u64>>,
) -> Result<Vec<Hash>, TreeError> {
    let mut proof = Vec::with_capacity(ranges.len());
    for range in ranges {
        let mut roots = Vec::new();
        for piece in merkle::perfect_pieces(range) {
            roots.push(perfect_root(log, piece, true).await?);
        }
        proof.push(merkle::fold_right(&roots));
    }
    Ok(proof)
}

type Boxed<'a, T> = Pin<Box<dyn Future<Output = Result<T, TreeError>> + Send + 'a>>;

/// The root of a perfect subtree: stored, or folded from the level below it that is
/// stored (at most 2^7 roots), or from the leaves. A stored root that is missing
/// (a log older than the subtree store, not yet followed by a checkpointer) is
/// computed the same way from further down, so the answer never depends on it.
/// `look_up`: false when the caller already knows it is not stored.
fn perfect_root(log: &dyn ProvenanceLog, subtree: Subtree, look_up: bool) -> Boxed<'_, Hash> {
    Box::pin(async move {
        let Subtree { level, index } = subtree;
        let stored_level = level > 0 && level.is_multiple_of(STORED_LEVEL_STEP);
        if look_up
            && stored_level
            && let Some(stored) = log.subtrees(level, index, 1).await?.into_iter().next()
        {
            return parse_hash(&stored.hash);
        }
        let below = if level.is_multiple_of(STORED_LEVEL_STEP) {
            level.saturating_sub(STORED_LEVEL_STEP)
        } else {
            level - level % STORED_LEVEL_STEP
        };
        let (first, count) = (index << (level - below), 1u64 << (level - below));
        let roots = if below == 0 {
            leaves(log, first..first + count).await?
        } else {
            let mut stored = log
                .subtrees(below, first, count)
                .await?
                .into_iter()
                .peekable();
            let mut roots = Vec::with_capacity(count as usize);
            for i in first..first + count {
                match stored.next_if(|s| s.index == i) {
                    Some(s) => roots.push(parse_hash(&s.hash)?),
                    None => roots.push(
                        perfect_root(
                            log,
                            Subtree {
                                level: below,
                                index: i,
                            },
                            false,
                        )
                        .await?,
                    ),
                }
            }
            roots
        };
        Ok(merkle::root(&roots))
    })
}

fn parse_hash(text: &str) -> Result<Hash, TreeError> {
    let bytes = hex::decode(text)
        .map_err(|e| TreeError::Conflict(format!("a stored subtree root is not hex: {e}")))?;
    bytes
        .try_into()
        .map_err(|_| TreeError::Conflict("a stored subtree root is not 32 bytes".into()))
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
    let ranges = merkle::inclusion_ranges(index, size)
        .ok_or_else(|| TreeError::Conflict(format!("event {id} is outside the tree")))?;
    let path = proof_from_store(log, ranges).await?;
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
/// assembled from the stored tree: a statement about the two signed trees. A log
/// rewritten since is caught by `verify`, by the checkpointer (which refuses to sign
/// over a stored root the events no longer hash to) and by the rewritten events'
/// inclusion proofs.
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
    let ranges = merkle::consistency_ranges(from, to)
        .ok_or_else(|| TreeError::Conflict("no consistency proof for those sizes".into()))?;
    let path = proof_from_store(log, ranges).await?;
    Ok(ConsistencyProof {
        from_size: from,
        to_size: to,
        from_checkpoint: first.note,
        to_checkpoint: second.note,
        proof: proof::encode_path(&path),
    })
}
