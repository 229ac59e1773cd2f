//! Part of `verify_chain`: the Merkle roots of stored checkpoints recomputed from the
//! events. The hash chain alone cannot tell a log rewritten from its first altered
//! event onwards (chain and head recomputed) from an honest one; a root signed
//! earlier can.

use crate::{ProvenanceLog, Result, StoredCheckpoint};
use mesh_types::ProvenanceEvent;
use mesh_types::merkle::{Frontier, Hash, Subtree};
use mesh_types::provenance::{Breach, BreachKind};

/// Checkpoints read per round trip.
const BATCH: u32 = 1_000;

pub(crate) struct CheckpointCheck {
    /// Every stored checkpoint, largest first (so the next one is `pop`ped).
    pending: Vec<StoredCheckpoint>,
    tree: Frontier,
    /// Subtrees completed since the last [`Self::check_subtrees`], with their roots
    /// recomputed from the events.
    completed: Vec<(Subtree, Hash)>,
}

impl CheckpointCheck {
    pub(crate) async fn load(log: &dyn ProvenanceLog) -> Result<Self> {
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let batch = log.checkpoints_after(after, BATCH).await?;
            let Some(last) = batch.last() else { break };
            after = last.tree_size;
            all.extend(batch);
        }
        all.reverse();
        Ok(Self {
            pending: all,
            tree: Frontier::new(),
            completed: Vec::new(),
        })
    }

    /// Adds the next event (already checked by the chain verifier) as a leaf.
    pub(crate) fn push(&mut self, event: &ProvenanceEvent) -> Option<Breach> {
        let leaf = mesh_types::proof::leaf_of(&event.hash).ok()?;
        self.tree.push_reporting(leaf, &mut self.completed);
        let size = i64::try_from(self.tree.size()).ok()?;
        while let Some(next) = self.pending.last()
            && next.tree_size <= size
        {
            let root = hex::encode(self.tree.root());
            if next.tree_size == size && next.root_hash != root {
                return Some(Breach {
                    kind: BreachKind::CheckpointMismatch,
                    event_id: Some(event.id),
                    seq: Some(event.seq),
                    message: format!(
                        "the first {size} events no longer hash to the root of checkpoint {size}: the log was rewritten after it was signed"
                    ),
                });
            }
            self.pending.pop();
        }
        None
    }

    /// Compares the subtree roots stored for proofs with those of the events pushed
    /// since the last call; a root not stored is no breach (it is made on demand).
    pub(crate) async fn check_subtrees(
        &mut self,
        log: &dyn ProvenanceLog,
    ) -> Result<Option<Breach>> {
        for (subtree, root) in std::mem::take(&mut self.completed) {
            let stored = log.subtrees(subtree.level, subtree.index, 1).await?;
            let Some(stored) = stored.first() else {
                continue;
            };
            if stored.hash != hex::encode(root) {
                let leaves = subtree.leaves();
                return Ok(Some(Breach {
                    kind: BreachKind::SubtreeMismatch,
                    event_id: None,
                    seq: i64::try_from(leaves.start + 1).ok(),
                    message: format!(
                        "events {}..={} no longer hash to the Merkle root stored over them for proofs: the log was rewritten after it was stored, or the stored root was altered",
                        leaves.start + 1,
                        leaves.end
                    ),
                }));
            }
        }
        Ok(None)
    }

    /// A checkpoint of more events than the log holds means events were removed.
    pub(crate) fn finish(self, count: i64) -> Option<Breach> {
        let beyond = self.pending.first()?;
        Some(Breach {
            kind: BreachKind::CheckpointMismatch,
            event_id: None,
            seq: Some(count),
            message: format!(
                "checkpoint {} signs more events than the {count} the log holds: events were removed",
                beyond.tree_size
            ),
        })
    }
}
