//! Inclusion and consistency proofs of provenance events, as handed to verifiers.
//!
//! The Merkle leaf of an event is `SHA-256(0x00 || its chain hash)`, the 32 raw bytes
//! of `ProvenanceEvent::hash`. That hash already commits to every field of the event
//! (its canonical JSON) and to the event before it, so the leaf needs no second
//! serialisation, the tree can be rebuilt from the events table alone (nothing more
//! is written on the append path), and a verifier holding the event recomputes the
//! leaf from the event's content: an altered event fails its own hash first.

use crate::ProvenanceEvent;
use crate::checkpoint::{Checkpoint, NoteError, NoteVerifier};
use crate::merkle::{self, Hash};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Names the proof file layout, so a file of another kind is refused by name.
pub const INCLUSION_FORMAT: &str = "agentic-mesh/inclusion-proof/v1";

/// The Merkle leaf hash of an event with chain hash `hash` (hex).
pub fn leaf_of(hash: &str) -> Result<Hash, NoteError> {
    hex::decode(hash)
        .ok()
        .and_then(|b| <Hash>::try_from(b).ok())
        .map(|data| merkle::leaf_hash(&data))
        .ok_or_else(|| NoteError(format!("`{hash}` is not a 32-byte hex event hash")))
}

fn decode_path(path: &[String]) -> Result<Vec<Hash>, NoteError> {
    path.iter()
        .map(|h| {
            hex::decode(h)
                .ok()
                .and_then(|b| <Hash>::try_from(b).ok())
                .ok_or_else(|| NoteError(format!("proof hash `{h}` is not 32 bytes of hex")))
        })
        .collect()
}

pub fn encode_path(path: &[Hash]) -> Vec<String> {
    path.iter().map(hex::encode).collect()
}

/// Everything needed to check offline that an event is in the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InclusionProof {
    pub format: String,
    /// The event itself: verification recomputes its hash and leaf from its content.
    pub event: ProvenanceEvent,
    /// `event.seq - 1`: leaves are numbered from zero.
    pub leaf_index: u64,
    pub tree_size: u64,
    /// Sibling hashes (hex), leaf to root, as RFC 9162 `PATH` orders them.
    pub inclusion_path: Vec<String>,
    /// The signed checkpoint (C2SP signed note) of `tree_size` the path leads to.
    pub checkpoint: String,
}

/// What a verified proof shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifiedInclusion {
    pub event_id: Uuid,
    pub leaf_index: u64,
    pub tree_size: u64,
    pub origin: String,
}

impl InclusionProof {
    /// Checks the proof with the log's key alone: the checkpoint's signature and
    /// origin, the event's hash over its content, and the path to the signed root.
    pub fn verify(&self, key: &NoteVerifier) -> Result<VerifiedInclusion, NoteError> {
        if self.format != INCLUSION_FORMAT {
            return Err(NoteError(format!(
                "`{}` is not a proof format this verifier knows ({INCLUSION_FORMAT})",
                self.format
            )));
        }
        let checkpoint: Checkpoint = key.open(&self.checkpoint)?;
        if checkpoint.size != self.tree_size {
            return Err(NoteError(format!(
                "the proof is for a tree of {} events but its checkpoint signs {}",
                self.tree_size, checkpoint.size
            )));
        }
        let event = &self.event;
        if event.compute_hash() != event.hash {
            return Err(NoteError(format!(
                "event {} was altered: its content does not match its hash",
                event.id
            )));
        }
        if u64::try_from(event.seq - 1).ok() != Some(self.leaf_index) {
            return Err(NoteError(format!(
                "event {} has seq {} and cannot be leaf {}",
                event.id, event.seq, self.leaf_index
            )));
        }
        let leaf = leaf_of(&event.hash)?;
        let path = decode_path(&self.inclusion_path)?;
        if !merkle::verify_inclusion(
            self.leaf_index,
            self.tree_size,
            &leaf,
            &path,
            &checkpoint.root,
        ) {
            return Err(NoteError(format!(
                "event {} is not leaf {} of the signed tree of {} events: the inclusion path does not lead to its root",
                event.id, self.leaf_index, self.tree_size
            )));
        }
        Ok(VerifiedInclusion {
            event_id: event.id,
            leaf_index: self.leaf_index,
            tree_size: self.tree_size,
            origin: checkpoint.origin,
        })
    }
}

/// A consistency proof between two signed checkpoints of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsistencyProof {
    pub from_size: u64,
    pub to_size: u64,
    pub from_checkpoint: String,
    pub to_checkpoint: String,
    /// RFC 9162 `PROOF(from, D[to])`, hex.
    pub proof: Vec<String>,
}

impl ConsistencyProof {
    /// Checks both signatures and that the later tree extends the earlier one.
    pub fn verify(&self, key: &NoteVerifier) -> Result<(), NoteError> {
        let from = key.open(&self.from_checkpoint)?;
        let to = key.open(&self.to_checkpoint)?;
        if (from.size, to.size) != (self.from_size, self.to_size) {
            return Err(NoteError(
                "the checkpoints' sizes are not the ones the proof names".into(),
            ));
        }
        let path = decode_path(&self.proof)?;
        if !merkle::verify_consistency(from.size, to.size, &from.root, &to.root, &path) {
            return Err(NoteError(format!(
                "the tree of {} events does not extend the tree of {}: the log was rewritten",
                to.size, from.size
            )));
        }
        Ok(())
    }
}
