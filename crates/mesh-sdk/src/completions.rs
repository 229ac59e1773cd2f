//! Completions that finish together are reported together. Handlers that finish while
//! a report is in flight are sent in one `POST /queue/completions` (one transaction on
//! the queue, and on its store one commit) instead of a call each; a lone completion
//! still goes by itself. Each handler hears only its own outcome: a refused completion
//! (409: the lease was lost) is that handler's error, as if it had reported alone.

use mesh_queue::{
    CompleteBody, CompletionItem, CompletionsBody, MAX_COMPLETE_BATCH, TaskQueueClient,
};
use mesh_service::{ApiError, Caller};
use reqwest::StatusCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

struct Pending {
    item: CompletionItem,
    reply: oneshot::Sender<Result<(), ApiError>>,
}

/// Shared by every clone of a client; its reporter starts with the first completion
/// and stops when the last clone is dropped.
#[derive(Clone, Default)]
pub(crate) struct Completions {
    queue: Arc<OnceLock<mpsc::UnboundedSender<Pending>>>,
    /// Calls made to the queue so far.
    reports: Arc<AtomicU64>,
}

impl Completions {
    pub(crate) fn reports(&self) -> u64 {
        self.reports.load(Ordering::Relaxed)
    }

    pub(crate) async fn complete(
        &self,
        queue: &TaskQueueClient,
        caller: &Caller,
        task_id: Uuid,
        lease_token: Uuid,
        output: serde_json::Value,
    ) -> Result<(), ApiError> {
        let sender = self.queue.get_or_init(|| {
            let (sender, pending) = mpsc::unbounded_channel();
            let reports = self.reports.clone();
            tokio::spawn(report(queue.clone(), caller.clone(), pending, reports));
            sender
        });
        let (reply, outcome) = oneshot::channel();
        let item = CompletionItem {
            task_id,
            lease_token,
            output: Some(output),
        };
        sender
            .send(Pending { item, reply })
            .map_err(|_| ApiError::internal("the completion reporter has stopped"))?;
        outcome
            .await
            .map_err(|_| ApiError::internal("the completion reporter dropped a completion"))?
    }
}

async fn report(
    queue: TaskQueueClient,
    caller: Caller,
    mut pending: mpsc::UnboundedReceiver<Pending>,
    reports: Arc<AtomicU64>,
) {
    while let Some(first) = pending.recv().await {
        reports.fetch_add(1, Ordering::Relaxed);
        let mut batch = vec![first];
        while batch.len() < MAX_COMPLETE_BATCH {
            match pending.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        if batch.len() == 1 {
            let Pending { item, reply } = batch.remove(0);
            let body = CompleteBody {
                lease_token: item.lease_token,
                output: item.output,
            };
            let _ = reply.send(
                queue
                    .complete(&caller, item.task_id, body)
                    .await
                    .map(|_| ()),
            );
            continue;
        }
        let (items, replies): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|p| (p.item, p.reply)).unzip();
        let body = CompletionsBody { completions: items };
        match queue.complete_batch(&caller, body).await {
            Ok(results) => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let outcome = match result.error {
                        None => Ok(()),
                        Some(e) => Err(ApiError::new(
                            StatusCode::from_u16(e.status)
                                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                            &e.code,
                            e.message,
                        )),
                    };
                    let _ = reply.send(outcome);
                }
            }
            // The whole report failed (unreachable, 5xx): every handler hears it.
            Err(err) => {
                for reply in replies {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }
}
