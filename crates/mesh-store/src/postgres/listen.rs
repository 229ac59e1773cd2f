//! Wake-ups across processes: every transaction that makes work claimable sends
//! `NOTIFY mesh_work` (delivered at commit), and each process keeps one connection
//! `LISTEN`ing that turns notifications into a local wake-up. If the listener's
//! connection drops it reconnects; waiting claimers fall back to polling meanwhile.

use futures_util::StreamExt;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, NoTls};

pub(crate) const CHANNEL: &str = "mesh_work";
const RECONNECT_AFTER: Duration = Duration::from_secs(1);
/// How often an idle listener checks whether its store is gone.
const LIVENESS_CHECK: Duration = Duration::from_secs(2);

/// Listens for as long as the store holding `work` exists.
pub(crate) fn spawn_listener(config: tokio_postgres::Config, work: &Arc<Notify>) {
    let work = Arc::downgrade(work);
    tokio::spawn(async move {
        while work.strong_count() > 0 {
            if let Err(err) = listen(&config, &work).await {
                tracing::warn!(error = %err, "PostgreSQL LISTEN connection lost; reconnecting");
            }
            if work.strong_count() > 0 {
                tokio::time::sleep(RECONNECT_AFTER).await;
            }
        }
    });
}

fn wake(work: &Weak<Notify>) {
    if let Some(work) = work.upgrade() {
        work.notify_waiters();
    }
}

/// Listens until the connection fails (`Err`) or the store is dropped (`Ok`).
async fn listen(
    config: &tokio_postgres::Config,
    work: &Weak<Notify>,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    // The connection must be polled for the LISTEN to complete, so issue it alongside.
    let statement = format!("LISTEN {CHANNEL}");
    let subscribe = client.batch_execute(&statement);
    tokio::pin!(subscribe);
    let mut subscribed = false;
    let mut liveness = tokio::time::interval(LIVENESS_CHECK);
    loop {
        tokio::select! {
            done = &mut subscribe, if !subscribed => {
                done?;
                subscribed = true;
                // Anything committed before we listened is found by the waiters' claim.
                wake(work);
            }
            message = messages.next() => match message {
                Some(Ok(AsyncMessage::Notification(_))) => wake(work),
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(err),
                None => return Ok(()),
            },
            _ = liveness.tick() => {
                if work.strong_count() == 0 {
                    return Ok(());
                }
            }
        }
    }
}
