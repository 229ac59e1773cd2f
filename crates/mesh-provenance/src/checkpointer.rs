//! The background task that signs checkpoints: at least every `every_events` events or
//! `every` (whichever comes first) while the log grows. Several processes may run it on
//! one PostgreSQL log: each follows the stored checkpoints, a tree size is stored once,
//! and as the root is a function of the events all of them would sign the same one.

use crate::tree::{self, TreeError};
use mesh_store::ProvenanceLog;
use mesh_types::checkpoint::NoteSigner;
use mesh_types::merkle::Frontier;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How often the head is looked at; well under the time bound, and at 25,000
/// events/s about half the event bound.
const POLL: Duration = Duration::from_millis(20);
/// Pause after a failed round.
const RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
pub struct CheckpointPolicy {
    pub every_events: u64,
    pub every: Duration,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        Self {
            every_events: 1_000,
            every: Duration::from_millis(500),
        }
    }
}

pub struct Checkpointer {
    log: Arc<dyn ProvenanceLog>,
    signer: Arc<NoteSigner>,
    policy: CheckpointPolicy,
    tree: Frontier,
    /// Largest checkpoint known (stored by us or another process) and when it was seen.
    latest: u64,
    latest_at: Instant,
}

impl Checkpointer {
    pub fn new(
        log: Arc<dyn ProvenanceLog>,
        signer: Arc<NoteSigner>,
        policy: CheckpointPolicy,
    ) -> Self {
        Self {
            log,
            signer,
            policy,
            tree: Frontier::new(),
            latest: 0,
            latest_at: Instant::now(),
        }
    }

    /// One round: checkpoints due by event count, then by time.
    pub async fn tick(&mut self) -> Result<(), TreeError> {
        self.round(false).await
    }

    /// `last`: sign the rest of the log whatever the time bound says (at shutdown).
    async fn round(&mut self, last: bool) -> Result<(), TreeError> {
        let head = u64::try_from(self.log.head().await?.count).unwrap_or(0);
        if let Some(stored) = self.log.latest_checkpoint().await? {
            let size = u64::try_from(stored.tree_size).unwrap_or(0);
            if size > self.latest {
                self.latest = size;
                self.latest_at = Instant::now();
            }
        }
        while self.latest + self.policy.every_events <= head {
            self.sign_at(self.latest + self.policy.every_events).await?;
        }
        if head > self.latest && (last || self.latest_at.elapsed() >= self.policy.every) {
            self.sign_at(head).await?;
        }
        Ok(())
    }

    async fn sign_at(&mut self, size: u64) -> Result<(), TreeError> {
        if self.tree.size() > size {
            // Another process is ahead of our tree; this size is already signed.
            self.latest = self.latest.max(size);
            return Ok(());
        }
        tree::extend(self.log.as_ref(), &mut self.tree, size).await?;
        tree::publish(self.log.as_ref(), &self.signer, &self.tree).await?;
        self.latest = size;
        self.latest_at = Instant::now();
        Ok(())
    }

    /// Runs until `stop` turns true, signing what is left on the way out.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            let pause = match self.tick().await {
                Ok(()) => POLL,
                Err(e) => {
                    // A broken log or a store outage: say so once a second, not 50 times.
                    tracing::error!(error = %e, "provenance checkpoint failed");
                    RETRY
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        if let Err(e) = self.round(true).await {
            tracing::warn!(error = %e, "final provenance checkpoint failed");
        }
    }
}

/// Spawns the checkpointer until `stop`.
pub fn spawn_checkpointer(
    log: Arc<dyn ProvenanceLog>,
    signer: Arc<NoteSigner>,
    policy: CheckpointPolicy,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(Checkpointer::new(log, signer, policy).run(stop))
}
