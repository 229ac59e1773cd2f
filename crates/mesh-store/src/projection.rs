use crate::Result;
use async_trait::async_trait;

/// Positions of projections that follow the provenance log from outside it (the live
/// graph projection): each remembers the `seq` of the last event it applied, so it
/// resumes there after a restart or an outage of what it writes to.
#[async_trait]
pub trait ProjectionStore: Send + Sync {
    /// The last applied `seq` of the named projection; 0 when it has none.
    async fn projection_cursor(&self, name: &str) -> Result<i64>;
    /// Records progress. Never moves a cursor backwards, so two processes running the
    /// same projection cannot undo each other's progress.
    async fn set_projection_cursor(&self, name: &str, after_seq: i64) -> Result<()>;
}
