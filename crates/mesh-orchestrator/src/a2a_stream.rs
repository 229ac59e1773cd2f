//! A2A streaming: after `SendStreamingMessage` has submitted its task, or
//! `SubscribeToTask` has found one, the answer is a Server-Sent Events stream of
//! `StreamResponse`s, each in a JSON-RPC response carrying the call's id: the task as
//! it stands, then a status update whenever its A2A status changes, its output as an
//! artifact update just before the final `completed`. The stream ends when the task
//! does, or when it waits on the client (input or authentication); a task waiting for
//! a human's approval is still submitted, so its stream stays open, kept alive by
//! comments.
//!
//! It follows the task by reading it when the queue signals a transition in this
//! process, and at least every `STREAM_POLL` for transitions made by other processes.
//! A client that disconnects drops the stream, and the following stops with it.

use crate::core::Orchestrator;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use mesh_a2a::jsonrpc;
use mesh_a2a::mesh::task_from_mesh;
use mesh_a2a::{
    StreamResponse, Task as A2aTask, TaskArtifactUpdateEvent, TaskState, TaskStatus,
    TaskStatusUpdateEvent,
};
use mesh_service::Caller;
use mesh_types::Task;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

/// The longest a transition made by another process goes unseen.
const STREAM_POLL: Duration = Duration::from_millis(250);

/// What a status update says: the state and the status message's text. A change of
/// mesh status that A2A does not tell apart (queued → waiting for approval is still
/// `submitted`, but with a message) is reported only when one of these changes.
fn said(status: &TaskStatus) -> (TaskState, Option<String>) {
    let text = status.message.as_ref().map(|m| {
        m.parts
            .iter()
            .filter_map(|p| p.text.as_deref())
            .collect::<Vec<_>>()
            .join(" ")
    });
    (status.state, text)
}

fn ends_stream(state: TaskState) -> bool {
    state.is_terminal() || state.is_interrupted()
}

/// The events that report `now`: its artifacts (a completed task's output), then its
/// status.
fn updates(now: &A2aTask) -> Vec<StreamResponse> {
    let context_id = now.context_id.clone().unwrap_or_else(|| now.id.clone());
    let mut out: Vec<StreamResponse> = now
        .artifacts
        .iter()
        .map(|artifact| {
            StreamResponse::ArtifactUpdate(TaskArtifactUpdateEvent {
                task_id: now.id.clone(),
                context_id: context_id.clone(),
                artifact: artifact.clone(),
                append: false,
                last_chunk: true,
                metadata: None,
            })
        })
        .collect();
    out.push(StreamResponse::StatusUpdate(TaskStatusUpdateEvent {
        task_id: now.id.clone(),
        context_id,
        status: now.status.clone(),
        metadata: now.metadata.clone(),
    }));
    out
}

struct Following {
    core: Arc<Orchestrator>,
    caller: Caller,
    task_id: uuid::Uuid,
    seen: (TaskState, Option<String>),
    ready: VecDeque<StreamResponse>,
    done: bool,
}

/// The task's events from now on, ending with it.
pub fn follow(
    core: Arc<Orchestrator>,
    caller: Caller,
    task: &Task,
) -> impl Stream<Item = StreamResponse> + Send + 'static {
    let first = task_from_mesh(task);
    let seen = said(&first.status);
    let state = Following {
        core,
        caller,
        task_id: task.id,
        done: ends_stream(seen.0),
        seen,
        ready: VecDeque::from([StreamResponse::Task(first)]),
    };
    stream::unfold(state, |mut st| async move {
        loop {
            if let Some(event) = st.ready.pop_front() {
                return Some((event, st));
            }
            if st.done {
                return None;
            }
            // Register for the queue's wake-up before reading, so a transition in
            // between is not missed.
            let work = st.core.context().store.queue.work_signal();
            let woken = work.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            match st.core.get(&st.caller, st.task_id).await {
                Ok(task) => {
                    let now = task_from_mesh(&task);
                    let said_now = said(&now.status);
                    if said_now != st.seen {
                        st.done = ends_stream(said_now.0);
                        st.seen = said_now;
                        st.ready.extend(updates(&now));
                        continue;
                    }
                }
                Err(err) => {
                    // The task cannot be read any more (the store failed, or the
                    // task is gone): the client learns it from the stream's end and
                    // can ask GetTask. The caller was authorised when the stream began.
                    tracing::warn!(task = %st.task_id, error = %err, "A2A stream stops");
                    return None;
                }
            }
            tokio::select! {
                _ = woken => {}
                _ = tokio::time::sleep(STREAM_POLL) => {}
            }
        }
    })
}

/// The stream as the JSON-RPC binding sends it: each event a response to `call_id`.
pub fn sse(
    events: impl Stream<Item = StreamResponse> + Send + 'static,
    call_id: Value,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    use futures_util::StreamExt;
    let events = events.map(move |event| {
        let reply = jsonrpc::Response::result(call_id.clone(), json!(event));
        Ok(Event::default()
            .json_data(&reply)
            .unwrap_or_else(|_| Event::default().comment("unserialisable event")))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}
