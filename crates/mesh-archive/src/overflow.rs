//! Where a payload goes when the archive's queue is full (the store has been slower
//! than payloads arrive for a while): sealed and written at once into a local
//! directory — the store's own when it is local, else the spool the replayer empties
//! into the store — instead of being lost. The price, a small file write on the
//! caller's thread, is paid only under that overload.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// A local directory laid out as the object store lays out its objects
/// (`CLASS/SHA256`).
pub struct Overflow {
    dir: PathBuf,
    into_store: bool,
}

impl Overflow {
    /// The store's own directory: what is written there is archived.
    pub fn into_store(dir: PathBuf) -> Self {
        Overflow {
            dir,
            into_store: true,
        }
    }

    /// The spool of a remote store: what is written there is replayed later.
    pub fn into_spool(dir: PathBuf) -> Self {
        Overflow {
            dir,
            into_store: false,
        }
    }

    pub(crate) fn is_store(&self) -> bool {
        self.into_store
    }

    /// Writes a sealed object unless one of that name is there; whether it wrote.
    pub(crate) fn write(&self, class: &str, sha256: &str, sealed: &[u8]) -> std::io::Result<bool> {
        let class_dir = self.dir.join(class);
        let target = class_dir.join(sha256);
        if target.exists() {
            return Ok(false);
        }
        std::fs::create_dir_all(&class_dir)?;
        // Staged under the name the object store gives uploads in progress
        // (`NAME#DIGITS`), which its listing skips, then renamed into place: a reader
        // or the replayer never sees half an object.
        let staged = class_dir.join(format!("{sha256}#{}", staging_suffix()));
        std::fs::write(&staged, sealed)?;
        std::fs::rename(&staged, &target).inspect_err(|_| {
            let _ = std::fs::remove_file(&staged);
        })?;
        Ok(true)
    }
}

/// Digits unique within this machine's processes: the process id, then a counter.
fn staging_suffix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
