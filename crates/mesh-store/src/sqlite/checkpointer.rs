//! WAL checkpoints off the writer thread. SQLite's automatic checkpoint runs inside the
//! commit that crosses its threshold, on the one thread every write waits for; profiles
//! of the queue showed it taking about a twentieth of that thread. A passive checkpoint
//! from another connection copies the WAL into the database while writes go on. The
//! writer keeps a much higher automatic threshold as a backstop, should this thread
//! fall behind.

use super::connect;
use crate::StoreError;
use crate::url::SqliteOptions;
use std::sync::mpsc::{RecvTimeoutError, Sender, channel};
use std::time::Duration;

const INTERVAL: Duration = Duration::from_millis(100);
/// Pages the WAL may hold before a commit on the writer checkpoints it itself.
pub(crate) const WRITER_BACKSTOP_PAGES: u32 = 16_384;

/// Stops its thread when dropped.
pub(crate) struct Checkpointer {
    _stop: Sender<()>,
}

impl Checkpointer {
    pub(crate) fn start(options: &SqliteOptions) -> Result<Self, StoreError> {
        let conn = connect(options)?;
        let (stop, stopped) = channel::<()>();
        std::thread::Builder::new()
            .name("mesh-sqlite-ckpt".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(INTERVAL) {
                    // (busy, WAL frames, frames checkpointed); busy only means readers
                    // or the writer held frames back this time.
                    if let Err(err) =
                        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!(error = %err, "WAL checkpoint failed");
                    }
                }
            })
            .map_err(|e| {
                StoreError::Backend(format!("cannot start the SQLite checkpointer: {e}"))
            })?;
        Ok(Self { _stop: stop })
    }
}
