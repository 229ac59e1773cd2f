//! `[checkpoints]`: the signed checkpoints of the provenance log — its origin, where
//! the signing key comes from, how often checkpoints are signed — and loading the key.

use crate::config::Config;
use anyhow::Result;
use mesh_provenance::checkpointer::CheckpointPolicy;
use mesh_provenance::signing::{DEFAULT_KEY_SECRET, DEFAULT_ORIGIN, KeyOrigin, KeySource};
use mesh_service::SecretDir;
use mesh_store::Store;
use mesh_types::checkpoint::NoteSigner;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointsFileConfig {
    /// First line of every checkpoint and the key's name; one per log.
    pub origin: Option<String>,
    /// Secret (in `[secrets] dir`) holding the Ed25519 key.
    pub signing_key: Option<String>,
    pub every_events: Option<u64>,
    pub every_ms: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct CheckpointSettings {
    pub origin: String,
    pub secret_name: String,
    pub policy: CheckpointPolicy,
}

pub fn resolve(file: CheckpointsFileConfig) -> CheckpointSettings {
    let defaults = CheckpointPolicy::default();
    CheckpointSettings {
        origin: file.origin.unwrap_or_else(|| DEFAULT_ORIGIN.to_string()),
        secret_name: file
            .signing_key
            .unwrap_or_else(|| DEFAULT_KEY_SECRET.to_string()),
        policy: CheckpointPolicy {
            every_events: file.every_events.unwrap_or(defaults.every_events).max(1),
            every: file
                .every_ms
                .map(|ms| Duration::from_millis(ms.max(10)))
                .unwrap_or(defaults.every),
        },
    }
}

fn source(config: &Config, store: &Store) -> KeySource {
    let settings = &config.checkpoints;
    KeySource {
        origin: settings.origin.clone(),
        secrets: config.secrets_dir.clone().map(SecretDir::new),
        secret_name: settings.secret_name.clone(),
        generate_in: (store.backend == "sqlite").then(|| config.data_dir.clone()),
    }
}

/// The signing key if one exists (for checking checkpoints' signatures), never made.
pub fn existing_signer(config: &Config, store: &Store) -> Result<Option<Arc<NoteSigner>>> {
    Ok(source(config, store)
        .load_existing()
        .map_err(anyhow::Error::msg)?
        .map(Arc::new))
}

/// The signing key: the mounted secret, else (on the embedded SQLite store only) the
/// key kept in the data directory, generated there the first time.
pub fn load_signer(config: &Config, store: &Store) -> Result<Arc<NoteSigner>> {
    let settings = &config.checkpoints;
    let (signer, from) = source(config, store).load().map_err(anyhow::Error::msg)?;
    match from {
        KeyOrigin::Secret(name) => {
            tracing::info!(secret = %name, "provenance checkpoints signed with the mounted key")
        }
        KeyOrigin::DataDir(path) => {
            tracing::info!(path = %path.display(), "provenance checkpoints signed with the data directory's key")
        }
        KeyOrigin::Generated(path) => tracing::warn!(
            path = %path.display(),
            public_key = %signer.verifier_key(),
            "generated a provenance signing key (no secret `{}` mounted); keep it, or mount your own",
            settings.secret_name
        ),
    }
    Ok(Arc::new(signer))
}
