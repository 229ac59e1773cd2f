//! Archives of what model and tool calls carried — prompts, responses, tool arguments
//! and outputs — in object storage (a local directory or S3-compatible), under their
//! SHA-256 so a payload sent twice is stored once, encrypted at rest with AES-256-GCM.
//! Provenance events carry only the hashes; this crate keeps the bytes behind them.
//!
//! Writes happen off the request path through one bounded writer; it never blocks a
//! call (a full queue or a failing store is counted in `/metrics`, never silent) and
//! never decides whether a call succeeds.

pub mod config;
mod overflow;
mod seal;

pub use config::{ArchiveConfig, ByClass, KeyOrigin};
pub use object_store::ObjectStore;
pub use overflow::Overflow;
pub use seal::Sealer;

use futures_util::StreamExt;
use mesh_service::metrics::Collector;
use object_store::PutPayload;
use object_store::path::Path as ObjectPath;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Payloads queued for the writer; past this, new ones are counted as lost.
const QUEUE: usize = 4096;
/// Jobs the writer takes from the queue at once.
const BATCH: usize = 256;
/// Objects written side by side.
const WRITERS: usize = 16;
/// How long a batch waits for more payloads after its first.
const LINGER: std::time::Duration = std::time::Duration::from_millis(2);
/// Object names remembered as stored (see `Inner::known`).
const KNOWN: usize = 8192;
/// How long an object is remembered as stored.
const KNOWN_FOR: Duration = Duration::from_secs(60);
/// Classifications, in the order objects are looked up.
const CLASSES: [&str; 4] = ["public", "internal", "confidential", "restricted"];

enum Job {
    Put {
        class: &'static str,
        sha256: String,
        bytes: Vec<u8>,
    },
    Flush(oneshot::Sender<()>),
}

#[derive(Default)]
struct Counters {
    written: AtomicU64,
    deduplicated: AtomicU64,
    hash_only: AtomicU64,
    failed_store: AtomicU64,
    failed_queue: AtomicU64,
    spooled: AtomicU64,
    replayed: AtomicU64,
    overflowed: AtomicU64,
}

struct Inner {
    store: Arc<dyn ObjectStore>,
    /// Objects this process wrote or found already stored, so a payload sent again
    /// costs no round trip to the store. Bounded: cleared when full, when it is a
    /// minute old (another process's retention sweep may have deleted an object since)
    /// and by this process's sweeps.
    known: std::sync::Mutex<Known>,
    /// Where sealed objects wait while a remote store is unreachable (a directory
    /// under the data directory), replayed by [`spawn_replayer`] when it returns.
    spool: Option<Arc<dyn ObjectStore>>,
    sealer: Sealer,
    counters: Counters,
}

/// The archive: cheap to share; dropping the last handle lets the writer finish what
/// is queued and stop.
pub struct Archive {
    inner: Arc<Inner>,
    stored: ByClass<bool>,
    retention: ByClass<Option<u64>>,
    location: String,
    tx: mpsc::Sender<Job>,
    /// For rate-limiting the queue-full log: when this archive was made, and the
    /// second (since then, plus one) of the last such line.
    started: std::time::Instant,
    queue_full_logged: AtomicU64,
    /// Where payloads go, written at once, when the queue is full.
    overflow: Option<Overflow>,
}

/// SHA-256 (hex) of bytes: an archived payload's name.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Archive {
    /// An archive over `store`, and its writer's task (finished once flushed).
    pub fn spawn(
        store: Arc<dyn ObjectStore>,
        spool: Option<Arc<dyn ObjectStore>>,
        location: String,
        sealer: Sealer,
        config: &ArchiveConfig,
        overflow: Option<Overflow>,
    ) -> (Arc<Self>, JoinHandle<()>) {
        let inner = Arc::new(Inner {
            store,
            known: std::sync::Mutex::new(Known {
                since: std::time::Instant::now(),
                names: Default::default(),
            }),
            spool,
            sealer,
            counters: Counters::default(),
        });
        let (tx, mut rx) = mpsc::channel(QUEUE);
        let writer = {
            let inner = inner.clone();
            tokio::spawn(async move {
                // What is queued is taken in batches: the same payload queued twice in
                // a batch (a prompt sent again) is written once, and the batch's writes
                // run side by side, so a store's per-object round trip does not cap
                // the archive at one object per round trip.
                let mut jobs = Vec::with_capacity(BATCH);
                while rx.recv_many(&mut jobs, BATCH).await > 0 {
                    // What arrives within LINGER joins the batch. Sleeping rather than
                    // waiting on the channel means a submit only queues: waking this
                    // task for every payload cost a thread wake-up per model call.
                    tokio::time::sleep(LINGER).await;
                    while jobs.len() < BATCH {
                        match rx.try_recv() {
                            Ok(job) => jobs.push(job),
                            Err(_) => break,
                        }
                    }
                    let mut puts: Vec<(&'static str, String, Vec<u8>)> = Vec::new();
                    let mut flushes = Vec::new();
                    for job in jobs.drain(..) {
                        match job {
                            Job::Put {
                                class,
                                sha256,
                                bytes,
                            } => {
                                if puts.iter().any(|(c, s, _)| *c == class && *s == sha256) {
                                    inner.counters.deduplicated.fetch_add(1, Ordering::Relaxed);
                                } else {
                                    puts.push((class, sha256, bytes));
                                }
                            }
                            Job::Flush(done) => flushes.push(done),
                        }
                    }
                    futures_util::stream::iter(puts)
                        .for_each_concurrent(WRITERS, |(class, sha256, bytes)| {
                            let inner = &inner;
                            async move { inner.put(class, &sha256, bytes).await }
                        })
                        .await;
                    // Everything queued before a flush was in this batch or an earlier one.
                    for done in flushes {
                        let _ = done.send(());
                    }
                }
            })
        };
        let archive = Archive {
            inner,
            stored: config.store,
            retention: config.retention_days,
            location,
            tx,
            started: std::time::Instant::now(),
            queue_full_logged: AtomicU64::new(0),
            overflow,
        };
        (Arc::new(archive), writer)
    }

    /// Where payloads go (`s3://…` or `file://…`), for `/readyz`.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Queues `payload` to be archived under its SHA-256 if its classification is
    /// archived at all, and returns the hash either way (what the event records).
    pub fn submit(&self, classification: &str, payload: Vec<u8>) -> String {
        let sha256 = sha256_hex(&payload);
        let class = CLASSES
            .iter()
            .find(|c| **c == classification)
            .copied()
            .unwrap_or("restricted");
        let counters = &self.inner.counters;
        if !self.stored.get(class) {
            counters.hash_only.fetch_add(1, Ordering::Relaxed);
            return sha256;
        }
        let job = Job::Put {
            class,
            sha256: sha256.clone(),
            bytes: payload,
        };
        let refused = match self.tx.try_send(job) {
            Ok(()) => return sha256,
            Err(mpsc::error::TrySendError::Full(job) | mpsc::error::TrySendError::Closed(job)) => {
                job
            }
        };
        if let Job::Put { class, bytes, .. } = refused
            && self.overflow(class, &sha256, &bytes)
        {
            return sha256;
        }
        let lost = counters.failed_queue.fetch_add(1, Ordering::Relaxed) + 1;
        // Counted every time; logged once a second at most, so an overloaded writer
        // does not also flood the log (and the CPU writing it) with one line per
        // payload.
        let now = self.started.elapsed().as_secs() + 1;
        let last = self.queue_full_logged.load(Ordering::Relaxed);
        if now > last
            && self
                .queue_full_logged
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::error!(
                sha256 = %sha256,
                lost_in_total = lost,
                "archive queue full, and no overflow directory took the payload: not archived (counted in mesh_archive_write_failures_total)"
            );
        }
        sha256
    }

    /// Writes a payload the queue had no room for straight to the overflow directory;
    /// whether it is kept.
    fn overflow(&self, class: &'static str, sha256: &str, bytes: &[u8]) -> bool {
        let Some(overflow) = &self.overflow else {
            return false;
        };
        let counters = &self.inner.counters;
        let written = self.inner.sealer.seal(sha256, bytes).and_then(|sealed| {
            overflow
                .write(class, sha256, &sealed)
                .map_err(|e| e.to_string())
        });
        match written {
            Ok(wrote) => {
                counters.overflowed.fetch_add(1, Ordering::Relaxed);
                let kind = match (wrote, overflow.is_store()) {
                    (false, _) => &counters.deduplicated,
                    (true, true) => &counters.written,
                    (true, false) => &counters.spooled,
                };
                kind.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                // Debug only: the caller's rate-limited error says the payload was lost.
                tracing::debug!(error = %e, %sha256, "archive overflow write failed");
                false
            }
        }
    }

    /// Waits until everything queued before now is written (or has failed).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Job::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// The decrypted payload named `sha256`, `None` if it is not archived.
    pub async fn get(&self, sha256: &str) -> Result<Option<Vec<u8>>, String> {
        let valid = sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit());
        if !valid {
            return Ok(None);
        }
        let sha256 = sha256.to_ascii_lowercase();
        // A payload spooled during an outage is readable before it is replayed, so an
        // unreachable store is reported only if the spool does not have it either.
        let mut unreachable = None;
        let stores = std::iter::once(&self.inner.store).chain(self.inner.spool.as_ref());
        for store in stores {
            for class in CLASSES {
                match store.get(&object_path(class, &sha256)).await {
                    Ok(found) => {
                        let object = found.bytes().await.map_err(|e| e.to_string())?;
                        let plain = self.inner.sealer.open(&sha256, &object)?;
                        if sha256_hex(&plain) != sha256 {
                            return Err(format!(
                                "archived object {sha256} does not match its name"
                            ));
                        }
                        return Ok(Some(plain));
                    }
                    Err(object_store::Error::NotFound { .. }) => continue,
                    Err(e) => {
                        unreachable = Some(e.to_string());
                        break;
                    }
                }
            }
        }
        match unreachable {
            Some(e) => Err(e),
            None => Ok(None),
        }
    }

    /// Moves spooled objects to the store; returns how many. Stops at the first
    /// failure (the store is still away) and leaves the rest for the next round.
    pub async fn replay(&self) -> Result<u64, String> {
        let Some(spool) = &self.inner.spool else {
            return Ok(0);
        };
        let mut moved = 0;
        let waiting: Vec<_> = spool.list(None).collect().await;
        for meta in waiting {
            let meta = meta.map_err(|e| e.to_string())?;
            let sealed = match spool.get(&meta.location).await {
                Ok(found) => found.bytes().await.map_err(|e| e.to_string())?,
                // Another replayer moved it first.
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(e.to_string()),
            };
            match self.inner.store.head(&meta.location).await {
                Ok(_) => {}
                Err(object_store::Error::NotFound { .. }) => {
                    self.inner
                        .store
                        .put(&meta.location, PutPayload::from(sealed))
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Err(e) => return Err(e.to_string()),
            }
            match spool.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.to_string()),
            }
            moved += 1;
            self.inner.counters.replayed.fetch_add(1, Ordering::Relaxed);
        }
        Ok(moved)
    }

    /// Deletes objects older than their classification's `retention_days`; returns
    /// how many. Retention runs from when a payload was first archived (a payload
    /// sent again is not rewritten).
    pub async fn sweep(&self, now: chrono::DateTime<chrono::Utc>) -> Result<u64, String> {
        self.inner.forget_known();
        let mut deleted = 0;
        for class in CLASSES {
            let Some(days) = self.retention.get(class) else {
                continue;
            };
            let cutoff = now - chrono::Duration::days(days.min(1_000_000) as i64);
            let prefix = ObjectPath::from(class);
            let mut listing = self.inner.store.list(Some(&prefix));
            while let Some(meta) = listing.next().await {
                let meta = meta.map_err(|e| e.to_string())?;
                if meta.last_modified < cutoff {
                    // Every process with the archive sweeps; another may have been first.
                    match self.inner.store.delete(&meta.location).await {
                        Ok(()) => deleted += 1,
                        Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(e.to_string()),
                    }
                }
            }
        }
        Ok(deleted)
    }

    /// The archive's counters for `/metrics`, labelled with the `service` showing them
    /// (the counters are the process's: in `mesh up` two services show the same). It
    /// holds the counters only, not the queue, so a service's metrics never keep the
    /// writer from finishing.
    pub fn collector(&self, service: &'static str) -> Collector {
        let inner = self.inner.clone();
        Box::new(move |out: &mut String| {
            use std::fmt::Write;
            let c = &inner.counters;
            let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
            let counters: [(&str, &str, &[CounterValue]); 7] = [
                (
                    "mesh_archive_queue_overflow_total",
                    "Payloads written at once to a local directory because the archive queue was full.",
                    &[(None, load(&c.overflowed))],
                ),
                (
                    "mesh_archive_objects_written_total",
                    "Payload objects written to the archive store.",
                    &[(None, load(&c.written))],
                ),
                (
                    "mesh_archive_deduplicated_total",
                    "Payloads already archived, not written again.",
                    &[(None, load(&c.deduplicated))],
                ),
                (
                    "mesh_archive_hash_only_total",
                    "Payloads recorded by hash only (classification or size).",
                    &[(None, load(&c.hash_only))],
                ),
                (
                    "mesh_archive_write_failures_total",
                    "Payloads not archived, by reason.",
                    &[
                        (Some("store"), load(&c.failed_store)),
                        (Some("queue_full"), load(&c.failed_queue)),
                    ],
                ),
                (
                    "mesh_archive_spooled_total",
                    "Payloads spooled to disk while the store was failing.",
                    &[(None, load(&c.spooled))],
                ),
                (
                    "mesh_archive_replayed_total",
                    "Spooled payloads written to the store later.",
                    &[(None, load(&c.replayed))],
                ),
            ];
            for (name, help, values) in counters {
                let _ = writeln!(out, "# HELP {name} {help}");
                let _ = writeln!(out, "# TYPE {name} counter");
                for (reason, value) in values {
                    match reason {
                        Some(r) => {
                            let _ = writeln!(
                                out,
                                "{name}{{service=\"{service}\",reason=\"{r}\"}} {value}"
                            );
                        }
                        None => {
                            let _ = writeln!(out, "{name}{{service=\"{service}\"}} {value}");
                        }
                    }
                }
            }
        })
    }
}

/// One value of a counter, with its `reason` label when it has one.
type CounterValue<'a> = (Option<&'a str>, u64);

/// Spawns the retention sweep: every `every`, until `stop` turns true.
pub fn spawn_sweeper(
    archive: Arc<Archive>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        loop {
            match archive.sweep(chrono::Utc::now()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "archive retention sweep"),
                Err(e) => tracing::warn!(error = %e, "archive retention sweep failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    });
}

/// A spool directory (created if missing) for [`Archive::spawn`].
pub fn local_spool(dir: &std::path::Path) -> Result<Arc<dyn ObjectStore>, String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create the archive spool {}: {e}", dir.display()))?;
    let spool = object_store::local::LocalFileSystem::new_with_prefix(dir)
        .map_err(|e| format!("archive spool {}: {e}", dir.display()))?;
    Ok(Arc::new(spool))
}

/// Replays the spool every `every` until `stop` turns true (a no-op without a spool).
pub fn spawn_replayer(
    archive: Arc<Archive>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        loop {
            match archive.replay().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(objects = n, "spooled payloads replayed to the archive"),
                Err(e) => tracing::debug!(error = %e, "archive store still unreachable"),
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    });
}

/// Object names known to be stored, since `since`.
struct Known {
    since: std::time::Instant,
    names: std::collections::HashSet<String>,
}

impl Known {
    fn expire(&mut self) {
        if self.since.elapsed() > KNOWN_FOR {
            self.names.clear();
            self.since = std::time::Instant::now();
        }
    }
}

/// `<classification>/<sha256>`: the classification prefix lets retention be swept
/// per class by listing; the name is the plaintext's SHA-256 so dedup works.
fn object_path(class: &str, sha256: &str) -> ObjectPath {
    ObjectPath::from(format!("{class}/{sha256}"))
}

impl Inner {
    fn is_known(&self, path: &ObjectPath) -> bool {
        match self.known.lock() {
            Ok(mut known) => {
                known.expire();
                known.names.contains(path.as_ref())
            }
            Err(_) => false,
        }
    }

    fn remember(&self, path: &ObjectPath) {
        if let Ok(mut known) = self.known.lock() {
            known.expire();
            if known.names.len() >= KNOWN {
                known.names.clear();
            }
            known.names.insert(path.to_string());
        }
    }

    fn forget_known(&self) {
        if let Ok(mut known) = self.known.lock() {
            known.names.clear();
        }
    }

    async fn put(&self, class: &str, sha256: &str, bytes: Vec<u8>) {
        let path = object_path(class, sha256);
        if self.is_known(&path) {
            self.counters.deduplicated.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Two tries: a blip should not lose a payload, an outage must not stall the
        // queue behind it.
        for attempt in 0..2 {
            match self.try_put(&path, sha256, &bytes).await {
                Ok(true) => {
                    self.remember(&path);
                    self.counters.written.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Ok(false) => {
                    // Not remembered: an object found already stored may be old enough
                    // for another process's retention sweep to delete it any moment;
                    // one this process just wrote is not.
                    self.counters.deduplicated.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(e) if attempt == 0 => {
                    tracing::warn!(error = %e, %sha256, "archive write failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => self.spool_or_drop(&path, sha256, &bytes, &e).await,
            }
        }
    }

    /// Keeps a payload the store refused in the spool, to be replayed; without a
    /// spool (or when it fails too) the payload is lost, and counted.
    async fn spool_or_drop(&self, path: &ObjectPath, sha256: &str, bytes: &[u8], why: &str) {
        if let Some(spool) = &self.spool {
            let kept = match self.sealer.seal(sha256, bytes) {
                Ok(sealed) => spool
                    .put(path, PutPayload::from(sealed))
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            match kept {
                Ok(_) => {
                    self.counters.spooled.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %why, %sha256, "archive store unreachable; payload spooled for replay");
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, %sha256, "could not spool the payload either")
                }
            }
        }
        self.counters.failed_store.fetch_add(1, Ordering::Relaxed);
        tracing::error!(error = %why, %sha256, "payload not archived");
    }

    /// `Ok(false)` when the object was there already.
    async fn try_put(&self, path: &ObjectPath, sha256: &str, bytes: &[u8]) -> Result<bool, String> {
        match self.store.head(path).await {
            Ok(_) => return Ok(false),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.to_string()),
        }
        let sealed = self.sealer.seal(sha256, bytes)?;
        self.store
            .put(path, PutPayload::from(sealed))
            .await
            .map_err(|e| e.to_string())?;
        Ok(true)
    }
}
