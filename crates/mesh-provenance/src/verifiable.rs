//! The verifiable log as the service offers it: public key, proofs, and the checks of
//! signed checkpoints that `verify` adds to the hash chain's.

use crate::tree::{self, TreeError};
use crate::{ProvenanceService, VerifyReport};
use mesh_service::ApiError;
use mesh_types::checkpoint::{NoteSigner, NoteVerifier};
use mesh_types::proof::{ConsistencyProof, InclusionProof};
use mesh_types::provenance::{Breach, BreachKind};
use std::sync::Arc;
use uuid::Uuid;

impl From<TreeError> for ApiError {
    fn from(e: TreeError) -> Self {
        match e {
            TreeError::Store(e) => e.into(),
            TreeError::NotFound(m) => ApiError::not_found(m),
            TreeError::Conflict(m) => ApiError::conflict(m),
        }
    }
}

impl ProvenanceService {
    /// Gives the service its checkpoint key (once; later calls are ignored).
    pub fn set_signer(&self, signer: Arc<NoteSigner>) {
        let _ = self.signer.set(signer);
    }

    pub fn signer(&self) -> Option<&Arc<NoteSigner>> {
        self.signer.get()
    }

    fn require_signer(&self) -> Result<&Arc<NoteSigner>, ApiError> {
        self.signer.get().ok_or_else(|| {
            ApiError::unavailable(
                "no_signing_key",
                "checkpoints are off: no provenance signing key is mounted ([checkpoints] signing_key in [secrets] dir)",
            )
        })
    }

    /// The C2SP verifier key of the log, as `GET /provenance/public-key` serves it.
    pub fn public_key(&self) -> Result<String, ApiError> {
        Ok(self.require_signer()?.verifier_key())
    }

    pub async fn inclusion_proof(&self, id: Uuid) -> Result<InclusionProof, ApiError> {
        let log = self.ctx.store.provenance.as_ref();
        Ok(tree::inclusion(log, id, self.signer.get().map(|s| s.as_ref())).await?)
    }

    /// A consistency proof between two stored checkpoints, checked before it is served:
    /// if the stored tree (its subtree roots, or the events where none is stored) no
    /// longer matches the signed roots, the answer is a 409 saying so.
    pub async fn consistency_proof(
        &self,
        from: u64,
        to: u64,
    ) -> Result<ConsistencyProof, ApiError> {
        let proof = tree::consistency(self.ctx.store.provenance.as_ref(), from, to).await?;
        let verifier = NoteVerifier::parse(&self.public_key()?)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        proof
            .verify(&verifier)
            .map_err(|e| ApiError::conflict(e.to_string()))?;
        Ok(proof)
    }

    /// The chain and checkpoint roots (`mesh_store::verify_chain`), then every stored
    /// checkpoint's signature by this log's key.
    pub(crate) async fn verify_signatures(
        &self,
        report: &mut VerifyReport,
    ) -> Result<(), ApiError> {
        let Some(signer) = self.signer.get() else {
            return Ok(());
        };
        let verifier = NoteVerifier::parse(&signer.verifier_key())
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let log = self.ctx.store.provenance.as_ref();
        let mut after = 0;
        loop {
            let batch = log.checkpoints_after(after, 1_000).await?;
            let Some(last) = batch.last() else { break };
            after = last.tree_size;
            for c in &batch {
                let signed = verifier.open(&c.note).map(|cp| {
                    i64::try_from(cp.size).ok() == Some(c.tree_size)
                        && hex::encode(cp.root) == c.root_hash
                });
                if signed != Ok(true) {
                    report.ok = false;
                    report.breach = Some(Breach {
                        kind: BreachKind::CheckpointMismatch,
                        event_id: None,
                        seq: Some(c.tree_size),
                        message: match signed {
                            Err(e) => format!("checkpoint {}: {e}", c.tree_size),
                            Ok(_) => format!(
                                "checkpoint {}'s stored size or root differs from what its note signs",
                                c.tree_size
                            ),
                        },
                    });
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}
