//! `mesh provenance public-key | proof | consistency | verify-proof`. The first three
//! read the store directly (whether or not the mesh runs); `verify-proof` reads only
//! the two files it is given.

use super::{load_config, open_store};
use crate::cli::{GlobalArgs, ProofCommand};
use crate::config::Overrides;
use crate::output;
use anyhow::{Context, Result};
use mesh_provenance::tree;
use mesh_types::checkpoint::NoteVerifier;
use mesh_types::proof::{ConsistencyProof, InclusionProof};
use std::path::Path;
use std::process::ExitCode;

pub async fn run(g: &GlobalArgs, cmd: ProofCommand) -> Result<ExitCode> {
    if let ProofCommand::VerifyProof { file, public_key } = &cmd {
        return verify_file(g, file, public_key);
    }
    let config = load_config(g, Overrides::default())?;
    let store = open_store(&config).await?;
    let signer = crate::checkpoints::load_signer(&config, &store)?;
    let log = store.provenance.as_ref();
    match cmd {
        ProofCommand::PublicKey => {
            println!("{}", signer.verifier_key());
        }
        ProofCommand::Proof { event_id } => {
            output::json(&tree::inclusion(log, event_id, Some(&signer)).await?)?;
        }
        ProofCommand::Consistency { from, to } => {
            output::json(&tree::consistency(log, from, to).await?)?;
        }
        ProofCommand::VerifyProof { .. } => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// Either kind of proof file, told apart by its fields.
fn verify_file(g: &GlobalArgs, file: &Path, key_file: &Path) -> Result<ExitCode> {
    let key_text = std::fs::read_to_string(key_file)
        .with_context(|| format!("cannot read the public key file {}", key_file.display()))?;
    let key = NoteVerifier::parse(&key_text)
        .map_err(|e| anyhow::anyhow!("{} is not a log public key: {e}", key_file.display()))?;
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the proof file {}", file.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{} is not JSON: {e}", file.display()))?;
    let verdict = if value.get("inclusionPath").is_some() {
        serde_json::from_value::<InclusionProof>(value)
            .map_err(|e| anyhow::anyhow!("{} is not an inclusion proof: {e}", file.display()))?
            .verify(&key)
            .map(|ok| {
                format!(
                    "verified: event {} is leaf {} of the {}-event log {}, signed by its key",
                    ok.event_id, ok.leaf_index, ok.tree_size, ok.origin
                )
            })
    } else {
        let proof = serde_json::from_value::<ConsistencyProof>(value).map_err(|e| {
            anyhow::anyhow!(
                "{} is neither an inclusion nor a consistency proof: {e}",
                file.display()
            )
        })?;
        proof.verify(&key).map(|()| {
            format!(
                "verified: the {}-event log extends the {}-event log, both signed by {}",
                proof.to_size,
                proof.from_size,
                key.name()
            )
        })
    };
    match verdict {
        Ok(message) => {
            if g.json {
                output::json(&serde_json::json!({"ok": true, "message": message}))?;
            } else {
                println!("{message}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            if g.json {
                output::json(&serde_json::json!({"ok": false, "error": e.to_string()}))?;
            }
            eprintln!("proof rejected: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
