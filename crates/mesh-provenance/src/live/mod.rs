//! The live graph projection: a background task in the provenance service's process
//! that follows the provenance log from a stored cursor and `MERGE`s each event's nodes
//! and relationships into a graph database (FalkorDB or a Bolt server).
//!
//! It only reads the log and writes its cursor, never in a writer's transaction, so a
//! slow or absent graph never holds up a write: it falls behind, says so (`/readyz`
//! `checks.graphProjection`, `mesh_provenance_projection_lag` on `/metrics`), and
//! catches up from its cursor when the graph answers again.

mod sink;
mod url;

pub use url::{DEFAULT_GRAPH, GraphUrl};

use crate::export::cypher;
use crate::project_events;
use mesh_service::ServiceContext;
use serde::Serialize;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The cursor's name in `projection_cursors`.
pub const CURSOR: &str = "graph";
/// Events applied per round.
const BATCH: u32 = 500;
const IDLE_WAIT: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What `/readyz` and `/metrics` report.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectionStatus {
    pub backend: &'static str,
    pub url: String,
    /// The last log `seq` applied to the graph.
    pub applied_seq: i64,
    /// The log's last `seq` when last looked at.
    pub head_seq: i64,
    /// Events written to the log but not yet to the graph.
    pub lag: i64,
    /// Whether the last attempt to write to the graph succeeded.
    pub ok: bool,
    pub last_error: Option<String>,
}

/// Shared view of the projection's progress.
#[derive(Clone, Default)]
pub struct ProjectionHandle {
    status: Arc<Mutex<ProjectionStatus>>,
}

impl ProjectionHandle {
    pub fn status(&self) -> ProjectionStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn update(&self, ctx: &ServiceContext, f: impl FnOnce(&mut ProjectionStatus)) {
        let snapshot = match self.status.lock() {
            Ok(mut s) => {
                f(&mut s);
                s.lag = (s.head_seq - s.applied_seq).max(0);
                s.clone()
            }
            Err(_) => return,
        };
        ctx.readiness.set_detail(
            "graphProjection",
            serde_json::to_value(snapshot).unwrap_or_default(),
        );
    }
}

/// Starts the projection; it runs until `shutdown` fires. The URL was checked when
/// the configuration was read, so only the backend's reachability can fail later, and
/// that is retried for as long as the process runs.
pub fn spawn_graph_projection(
    ctx: ServiceContext,
    url: GraphUrl,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<ProjectionHandle, String> {
    let mut sink = sink::Sink::new(&url)?;
    let handle = ProjectionHandle::default();
    handle.update(&ctx, |s| {
        s.backend = url.backend();
        s.url = url.display().to_string();
    });
    register_metrics(&ctx, &handle);
    let h = handle.clone();
    tokio::spawn(async move {
        let mut backoff = IDLE_WAIT;
        loop {
            let wait = match step(&ctx, &mut sink, &h).await {
                Ok(n) => {
                    backoff = IDLE_WAIT;
                    if n >= BATCH as usize {
                        Duration::ZERO
                    } else {
                        IDLE_WAIT
                    }
                }
                Err(err) => {
                    // Once per outage at warn: retries every few seconds would flood the log.
                    if h.status().last_error.is_none() {
                        tracing::warn!(graph = %url.display(), error = %err, "graph projection failing; retrying until it answers");
                    } else {
                        tracing::debug!(graph = %url.display(), error = %err, "graph projection still failing");
                    }
                    h.update(&ctx, |s| {
                        s.ok = false;
                        s.last_error = Some(err);
                    });
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    backoff
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
        }
    });
    Ok(handle)
}

/// Applies one batch after the cursor; returns how many events it covered.
async fn step(
    ctx: &ServiceContext,
    sink: &mut sink::Sink,
    handle: &ProjectionHandle,
) -> Result<usize, String> {
    let store = &ctx.store;
    let after = store
        .projections
        .projection_cursor(CURSOR)
        .await
        .map_err(|e| format!("reading the cursor: {e}"))?;
    let head = store
        .provenance
        .head()
        .await
        .map_err(|e| format!("reading the log's head: {e}"))?;
    let events = store
        .provenance
        .events_after(after, BATCH)
        .await
        .map_err(|e| format!("reading the log: {e}"))?;
    let Some(last) = events.last().map(|e| e.seq) else {
        // Caught up: whatever failed before (a write, a read of the store) has been
        // overcome, since the cursor only moves after a successful write.
        handle.update(ctx, |s| {
            s.applied_seq = after;
            s.head_seq = head.count;
            s.ok = true;
            s.last_error = None;
        });
        return Ok(0);
    };
    handle.update(ctx, |s| {
        s.applied_seq = after;
        s.head_seq = head.count.max(last);
    });
    let statements = cypher::statements(&project_events(&events));
    sink.apply(&statements).await?;
    store
        .projections
        .set_projection_cursor(CURSOR, last)
        .await
        .map_err(|e| format!("saving the cursor: {e}"))?;
    handle.update(ctx, |s| {
        s.applied_seq = last;
        s.ok = true;
        s.last_error = None;
    });
    Ok(events.len())
}

fn register_metrics(ctx: &ServiceContext, handle: &ProjectionHandle) {
    let handle = handle.clone();
    let service = ctx.name.as_str();
    ctx.metrics.add_collector(Box::new(move |out| {
        let s = handle.status();
        let labels = format!("service=\"{service}\",backend=\"{}\"", s.backend);
        let _ = writeln!(
            out,
            "# HELP mesh_provenance_projection_lag Provenance events not yet applied to the live graph."
        );
        let _ = writeln!(out, "# TYPE mesh_provenance_projection_lag gauge");
        let _ = writeln!(out, "mesh_provenance_projection_lag{{{labels}}} {}", s.lag);
        let _ = writeln!(
            out,
            "# HELP mesh_provenance_projection_ok Whether the last write to the live graph succeeded."
        );
        let _ = writeln!(out, "# TYPE mesh_provenance_projection_ok gauge");
        let _ = writeln!(
            out,
            "mesh_provenance_projection_ok{{{labels}}} {}",
            u8::from(s.ok)
        );
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_service::{Readiness, ServiceName};
    use mesh_types::EventDraft;

    /// Without any graph server: an unreachable backend leaves the cursor where it
    /// was and shows up as lag and an error, in the status and on `/metrics`.
    #[tokio::test]
    async fn an_unreachable_graph_is_reported_as_lag_and_the_cursor_stays() {
        let dir = tempfile::tempdir().unwrap();
        let store = mesh_store::open(None, dir.path()).await.unwrap();
        let task = uuid::Uuid::now_v7();
        store
            .provenance
            .append(vec![
                EventDraft::new("task_created", "t", "task", None).task(task),
                EventDraft::new("task_queued", "t", "task", None).task(task),
            ])
            .await
            .unwrap();
        let ctx = ServiceContext::new(ServiceName::Provenance, store.clone(), Readiness::default());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = GraphUrl::parse(&format!("falkordb://127.0.0.1:{port}/g")).unwrap();
        let (stop, watch) = tokio::sync::watch::channel(false);
        let handle = spawn_graph_projection(ctx.clone(), url, watch).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let status = loop {
            let s = handle.status();
            if s.last_error.is_some() {
                break s;
            }
            assert!(tokio::time::Instant::now() < deadline, "{s:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let _ = stop.send(true);
        assert!(!status.ok);
        assert_eq!((status.applied_seq, status.head_seq, status.lag), (0, 2, 2));
        assert!(status.last_error.unwrap().starts_with("connect: "));
        assert_eq!(
            store.projections.projection_cursor(CURSOR).await.unwrap(),
            0
        );
        let metrics = ctx.metrics.render(true, &[]);
        assert!(
            metrics.contains(
                "mesh_provenance_projection_lag{service=\"provenance-service\",backend=\"falkordb\"} 2"
            ),
            "{metrics}"
        );
    }
}
