//! `[archive]`: opening the payload archive for the gateway, the tool registry and
//! the provenance service, and saying in `/readyz` whether it is on and why not.

use crate::compose::Cores;
use crate::config::Config;
use anyhow::Result;
use mesh_archive::{Archive, KeyOrigin, Overflow, Sealer};
use mesh_service::{Readiness, SecretDir};
use mesh_store::Store;
use serde_json::json;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// How often payloads spooled during a store outage are retried.
pub const REPLAY_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Under the data directory: sealed payloads waiting for a remote store.
const SPOOL_DIR: &str = "archive-spool";

/// How often expired payloads are swept (when a retention is configured).
pub const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// The archive and its writer, or `None` when archiving is off. A bad `[archive]`
/// is an error; a shared store without a mounted key only turns archiving off (no
/// process may invent a key the others cannot read), as with checkpoint signing.
pub fn open(
    config: &Config,
    store: &Store,
    readiness: &Readiness,
) -> Result<Option<(Arc<Archive>, JoinHandle<()>)>> {
    open_with(config, store, readiness, true)
}

/// The archive as configured, to read from (the CLI): its key must exist already —
/// with none, nothing can have been archived, and none is made.
pub fn open_existing(config: &Config, store: &Store) -> Result<Arc<Archive>> {
    if !config.archive.enabled {
        anyhow::bail!("payload archiving is off here ([archive] enabled = false)");
    }
    match open_with(config, store, &Readiness::default(), false)? {
        Some((archive, _writer)) => Ok(archive),
        None => anyhow::bail!(
            "no archive key is mounted ([secrets] dir, [archive] key): payloads cannot be read"
        ),
    }
}

fn open_with(
    config: &Config,
    store: &Store,
    readiness: &Readiness,
    may_generate_key: bool,
) -> Result<Option<(Arc<Archive>, JoinHandle<()>)>> {
    let settings = &config.archive;
    if !settings.enabled {
        readiness.set_detail(
            "archive",
            json!({"enabled": false, "reason": "[archive] enabled = false"}),
        );
        return Ok(None);
    }
    let secrets = config.secrets_dir.clone().map(SecretDir::new);
    let generate_in = (store.backend == "sqlite").then_some(config.data_dir.as_path());
    let found = if may_generate_key {
        mesh_archive::config::load_key(settings, secrets.as_ref(), generate_in)
    } else {
        mesh_archive::config::existing_key(settings, secrets.as_ref(), generate_in)
            .map_err(|reason| format!("{reason}; nothing can have been archived here"))
    };
    let (key, origin) = match found {
        Ok(found) => found,
        Err(reason) if generate_in.is_none() => {
            tracing::warn!(%reason, "payload archiving is off");
            readiness.set_detail("archive", json!({"enabled": false, "reason": reason}));
            return Ok(None);
        }
        Err(reason) => anyhow::bail!("[archive]: {reason}"),
    };
    let previous = mesh_archive::config::load_previous_keys(settings, secrets.as_ref())
        .map_err(anyhow::Error::msg)?;
    let sealer = Sealer::from_hex(&key)
        .map_err(|e| anyhow::anyhow!("[archive] key: {e}"))?
        .with_previous(&previous)
        .map_err(|e| anyhow::anyhow!("[archive] previous_keys: {e}"))?;
    let key_id = sealer.key_id();
    if let KeyOrigin::Generated(path) = &origin {
        tracing::warn!(path = %path.display(), "generated an archive encryption key; keep it, or mount your own");
    }
    let (object_store, location) =
        mesh_archive::config::object_store(settings, &config.data_dir, secrets.as_ref())
            .map_err(anyhow::Error::msg)?;
    let spool = spool_for(&location, &config.data_dir)?;
    let overflow = match location.strip_prefix("file://") {
        Some(dir) => Overflow::into_store(dir.into()),
        None => Overflow::into_spool(config.data_dir.join(SPOOL_DIR)),
    };
    let (archive, writer) = Archive::spawn(
        object_store,
        spool,
        location,
        sealer,
        settings,
        Some(overflow),
    );
    readiness.set_detail(
        "archive",
        json!({
            "enabled": true,
            "location": archive.location(),
            "keyId": key_id,
            "previousKeys": previous.len(),
        }),
    );
    Ok(Some((archive, writer)))
}

/// A remote store gets a spool in the data directory: payloads it cannot take during
/// an outage wait there (sealed) and are replayed when it returns. A local directory
/// needs none — if it cannot be written, neither could a spool beside it.
fn spool_for(
    location: &str,
    data_dir: &std::path::Path,
) -> Result<Option<Arc<dyn mesh_archive::ObjectStore>>> {
    if location.starts_with("file://") {
        return Ok(None);
    }
    let spool = mesh_archive::local_spool(&data_dir.join(SPOOL_DIR)).map_err(anyhow::Error::msg)?;
    Ok(Some(spool))
}

/// Opens the archive when this process runs a service that records or serves payloads,
/// hands it to them, and starts its retention sweep; its writer is flushed with the
/// other log writers on drain.
pub fn attach(
    cores: &mut Cores,
    config: &Config,
    store: &Store,
    readiness: &Readiness,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    if cores.gateway.is_none() && cores.tools.is_none() && cores.provenance.is_none() {
        return Ok(());
    }
    let Some((archive, writer)) = open(config, store, readiness)? else {
        return Ok(());
    };
    cores.log_writers.push(writer);
    if let Some(gateway) = &cores.gateway {
        gateway.set_archive(archive.clone());
    }
    if let Some(tools) = &cores.tools {
        tools.set_archive(archive.clone());
    }
    if let Some(provenance) = &cores.provenance {
        provenance.set_archive(archive.clone());
    }
    mesh_archive::spawn_replayer(archive.clone(), REPLAY_EVERY, stop.clone());
    mesh_archive::spawn_sweeper(archive, SWEEP_EVERY, stop);
    Ok(())
}
