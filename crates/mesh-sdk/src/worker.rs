use crate::agent::{AgentError, BaseAgent, Health, TaskContext, TaskOutcome};
use crate::client::MeshClient;
use mesh_queue::{AwaitBody, ClaimBody, ExtendBody, FailBody, TaskListQuery};
use mesh_service::ApiError;
use mesh_types::queue::Lease;
use mesh_types::{Agent, NewTask};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Longest pause between claims that keep failing (refused by policy, mesh down).
const MAX_CLAIM_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Task types to claim; `None` means the agent's capabilities.
    pub task_types: Option<Vec<String>>,
    /// Tasks run at once.
    pub concurrency: usize,
    pub lease_ms: i64,
    /// Pause after a failed claim before asking again.
    pub poll_interval: Duration,
    /// How long one claim may wait for work to appear (long poll; at most 10 s). The
    /// worker notices shutdown between claims, so this bounds how long it takes to
    /// start draining.
    pub claim_wait: Duration,
    /// How often the agent tells the registry it is alive.
    pub heartbeat_interval: Duration,
    /// Whether the worker heartbeats at all: off for agents whose health the registry
    /// learns another way (it probes remote A2A agents).
    pub heartbeats: bool,
    /// Work as this already-registered agent instead of registering a new one. The
    /// worker then leaves the agent registered when it stops: it retires only agents
    /// it registered itself.
    pub attach_to: Option<uuid::Uuid>,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            task_types: None,
            concurrency: 4,
            lease_ms: 30_000,
            poll_interval: Duration::from_millis(50),
            claim_wait: Duration::from_secs(1),
            heartbeat_interval: Duration::from_secs(5),
            heartbeats: true,
            attach_to: None,
        }
    }
}

/// What a worker did before it stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerReport {
    pub completed: u64,
    pub failed: u64,
    /// Results refused because the lease had moved on (the task was re-run elsewhere).
    pub lost_leases: u64,
    /// Tasks handed back to make room for critical ones.
    pub yielded: u64,
    /// Calls that reported completions: fewer than `completed` when handlers that
    /// finished together were reported in one call.
    pub completion_reports: u64,
}

#[derive(Default)]
struct Counters {
    completed: AtomicU64,
    failed: AtomicU64,
    lost: AtomicU64,
    yielded: AtomicU64,
}

pub struct Worker<A: BaseAgent> {
    agent: Arc<A>,
    client: MeshClient,
    options: WorkerOptions,
}

impl<A: BaseAgent> Worker<A> {
    pub fn new(agent: A, client: MeshClient, options: WorkerOptions) -> Self {
        Self {
            agent: Arc::new(agent),
            client,
            options,
        }
    }

    /// Registers the agent (or attaches to `attach_to`), then claims and runs tasks
    /// until `shutdown` resolves or the agent is drained or retired; then finishes what
    /// it holds and calls `on_retire`. An agent it registered it retires on shutdown;
    /// a drained one the registry retires once its last lease is done.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<WorkerReport, ApiError> {
        let caller = &self.client.caller;
        let me = match self.options.attach_to {
            Some(id) => {
                let agent = self.client.agents.get(caller, id).await?;
                if agent.status == mesh_types::AgentStatus::Retired {
                    return Err(ApiError::conflict(format!(
                        "agent {} is retired; a worker cannot attach to it",
                        agent.name
                    )));
                }
                tracing::info!(agent = %agent.name, id = %agent.id, "worker attached to a registered agent");
                agent
            }
            None => {
                let agent = self
                    .client
                    .agents
                    .register(caller, self.agent.descriptor())
                    .await?;
                tracing::info!(agent = %agent.name, id = %agent.id, "agent registered");
                agent
            }
        };
        let heartbeat = self.options.heartbeats.then(|| {
            tokio::spawn(heartbeat_loop(
                self.agent.clone(),
                self.client.clone(),
                me.id,
                self.options.heartbeat_interval,
            ))
        });
        let mut retire_on_exit = self.options.attach_to.is_none();
        let types = self
            .options
            .task_types
            .clone()
            .unwrap_or_else(|| me.capabilities.clone());
        let slots = Arc::new(Semaphore::new(self.options.concurrency.max(1)));
        let counters = Arc::new(Counters::default());
        let mut running = JoinSet::new();
        tokio::pin!(shutdown);
        let mut failed_claims = 0u32;
        loop {
            // Wait for a free slot, unless told to stop.
            let permit = tokio::select! {
                _ = &mut shutdown => break,
                permit = slots.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => break },
            };
            let free = slots.available_permits() + 1;
            let body = ClaimBody {
                agent_id: me.id,
                task_types: types.clone(),
                limit: Some(free.min(mesh_queue_max_batch()) as u32),
                lease_ms: Some(self.options.lease_ms),
                wait_ms: Some(self.options.claim_wait.as_millis() as u64),
            };
            let leases = match self.client.queue.claim(&self.client.caller, body).await {
                Ok(leases) => {
                    failed_claims = 0;
                    leases
                }
                Err(err) if matches!(err.code.as_str(), "agent_draining" | "agent_retired") => {
                    // Drained (or retired by someone else): take nothing more, finish
                    // what is running; the registry retires a drained agent itself.
                    tracing::info!(agent = %me.name, reason = %err.message, "agent takes no more work; finishing");
                    retire_on_exit = false;
                    break;
                }
                Err(err) => {
                    // Back off exponentially: a queue whose waiting work the policy
                    // will not assign to this agent must not be asked (and the refusal
                    // logged) several times a second.
                    failed_claims = failed_claims.saturating_add(1);
                    let wait = (self.options.poll_interval * 4)
                        .saturating_mul(1 << failed_claims.min(7))
                        .min(MAX_CLAIM_BACKOFF);
                    tracing::warn!(error = %err, retry_in_ms = wait.as_millis() as u64, "claim failed");
                    drop(permit);
                    if pause(&mut shutdown, wait).await {
                        break;
                    }
                    continue;
                }
            };
            if leases.is_empty() {
                // The claim already waited (long poll); just give shutdown a look.
                drop(permit);
                if pause(&mut shutdown, Duration::from_millis(1)).await {
                    break;
                }
                continue;
            }
            let mut permit = Some(permit);
            for lease in leases {
                // The first lease uses the slot we hold; the rest take the free ones.
                let slot = match permit.take() {
                    Some(p) => p,
                    None => match slots.clone().try_acquire_owned() {
                        Ok(p) => p,
                        Err(_) => break, // cannot happen: we asked for at most the free slots
                    },
                };
                let run = run_one(
                    self.agent.clone(),
                    self.client.clone(),
                    me.clone(),
                    lease,
                    self.options.lease_ms,
                    counters.clone(),
                );
                running.spawn(async move {
                    run.await;
                    drop(slot);
                });
            }
        }
        tracing::info!(agent = %me.name, in_flight = running.len(), "worker draining");
        if retire_on_exit {
            // The lifecycle's drain step, on the record: no new work for this agent
            // from here, what it holds is finished below, then it retires.
            if let Err(err) = self.client.agents.drain(caller, me.id).await {
                tracing::warn!(error = %err, "could not mark the agent draining");
            }
        }
        while running.join_next().await.is_some() {}
        if let Some(heartbeat) = heartbeat {
            heartbeat.abort();
        }
        self.agent.on_retire().await;
        if retire_on_exit {
            match self.client.agents.retire(caller, me.id).await {
                Ok(_) => {}
                // The registry's sweep retired the drained agent first.
                Err(err) if err.status.as_u16() == 409 => {
                    tracing::debug!(error = %err, "the agent was already retired")
                }
                Err(err) => tracing::warn!(error = %err, "could not retire the agent"),
            }
        }
        Ok(WorkerReport {
            completed: counters.completed.load(Ordering::Relaxed),
            failed: counters.failed.load(Ordering::Relaxed),
            lost_leases: counters.lost.load(Ordering::Relaxed),
            yielded: counters.yielded.load(Ordering::Relaxed),
            completion_reports: self.client.completions.reports(),
        })
    }
}

fn mesh_queue_max_batch() -> usize {
    mesh_queue::MAX_CLAIM_BATCH as usize
}

/// Sleeps `d`; true if shutdown fired first.
async fn pause<F: Future<Output = ()>>(shutdown: &mut std::pin::Pin<&mut F>, d: Duration) -> bool {
    tokio::select! {
        _ = shutdown.as_mut() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

async fn heartbeat_loop<A: BaseAgent>(
    agent: Arc<A>,
    client: MeshClient,
    id: uuid::Uuid,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        match agent.health_check().await {
            Health::Healthy => {
                if let Err(err) = client.agents.heartbeat(&client.caller, id).await {
                    tracing::warn!(error = %err, "heartbeat failed");
                }
            }
            // Silence lets the registry's TTL mark us unhealthy.
            Health::Unhealthy(why) => {
                tracing::warn!(reason = %why, "agent unhealthy; skipping heartbeat")
            }
        }
    }
}

async fn run_one<A: BaseAgent>(
    agent: Arc<A>,
    client: MeshClient,
    me: Agent,
    lease: Lease,
    lease_ms: i64,
    counters: Arc<Counters>,
) {
    let task = lease.task.clone();
    let token = lease.lease_token;
    let ctx = TaskContext {
        agent_id: me.id,
        agent_name: me.name.clone(),
        attempt: lease.attempt,
    };
    // Keep the lease alive while the handler runs. The keeper stops the handler when
    // the scheduler asks this task to yield to a critical one, or when the queue
    // refuses the extension (the attempt timed out or the lease was taken back): the
    // work is someone else's now, so carrying on would only waste it.
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<Stop>();
    let keeper = {
        let client = client.clone();
        let id = task.id;
        tokio::spawn(async move {
            let every = Duration::from_millis((lease_ms / 3).max(10) as u64);
            loop {
                tokio::time::sleep(every).await;
                let body = ExtendBody {
                    lease_token: token,
                    lease_ms: Some(lease_ms),
                };
                match client.queue.extend(&client.caller, id, body).await {
                    Ok(lease) if lease.task.yield_requested => {
                        let _ = stop_tx.send(Stop::Yield);
                        return;
                    }
                    Ok(_) => {}
                    Err(err) if err.status.as_u16() == 409 => {
                        let _ = stop_tx.send(Stop::LeaseLost(err.message));
                        return;
                    }
                    Err(err) => {
                        tracing::warn!(task = %id, error = %err, "could not extend the lease");
                    }
                }
            }
        })
    };
    let mut span = crate::spans::open(&me, &task, lease.attempt);
    let handled = async {
        // A task that kept an output when it spawned subtasks is coming back to finish.
        if task.output.is_some() {
            match subtasks(&client, task.id).await {
                Ok(children) => agent.on_subtask_result(&ctx, &task, &children).await,
                Err(err) => Err(AgentError::retryable(format!(
                    "could not read the subtasks: {err}"
                ))),
            }
        } else {
            agent.on_task_received(&ctx, &task).await
        }
    };
    let handled = mesh_telemetry::within(span.context(), handled);
    // Cooperative cancellation: the handler is dropped at its next await point.
    let result = tokio::select! {
        result = handled => result,
        Ok(stop) = stop_rx => {
            keeper.abort();
            span.fail("stopped", "the attempt was stopped (lease lost or yielded)");
            match stop {
                Stop::LeaseLost(why) => {
                    tracing::warn!(task = %task.id, reason = %why, "lease lost; abandoning the task");
                    counters.lost.fetch_add(1, Ordering::Relaxed);
                }
                Stop::Yield => {
                    let body = ExtendBody { lease_token: token, lease_ms: None };
                    match client.queue.yield_task(&client.caller, task.id, body).await {
                        Ok(_) => {
                            tracing::info!(task = %task.id, "yielded to a critical task");
                            counters.yielded.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(err) => tracing::warn!(task = %task.id, error = %err, "could not yield; the lease will expire instead"),
                    }
                }
            }
            return;
        }
    };
    keeper.abort();
    crate::spans::outcome(&mut span, &result);
    let spawned_by = span.context();
    drop(span);
    let reported = match result {
        Ok(TaskOutcome::Complete(output)) => complete(&client, &task.id, token, output).await,
        Ok(TaskOutcome::Spawn { subtasks, output }) => {
            match spawn(&client, task.id, subtasks, spawned_by).await {
                Ok(_) => {
                    // Parked, not finished: counted when it completes after resuming.
                    let body = AwaitBody {
                        lease_token: token,
                        output: Some(output),
                    };
                    client
                        .queue
                        .await_children(&client.caller, task.id, body)
                        .await
                        .map(|_| None)
                }
                Err(err) => {
                    fail(
                        &client,
                        &task.id,
                        token,
                        &AgentError::retryable(format!("could not queue subtasks: {err}")),
                    )
                    .await
                }
            }
        }
        Err(error) => {
            agent.on_error(&ctx, &task, &error).await;
            fail(&client, &task.id, token, &error).await
        }
    };
    match reported {
        Ok(Some(true)) => counters.completed.fetch_add(1, Ordering::Relaxed),
        Ok(Some(false)) => counters.failed.fetch_add(1, Ordering::Relaxed),
        Ok(None) => 0,
        Err(err) if err.status.as_u16() == 409 => {
            tracing::warn!(task = %task.id, "lease lost before the result was reported; another agent has the task");
            counters.lost.fetch_add(1, Ordering::Relaxed)
        }
        Err(err) => {
            tracing::error!(task = %task.id, error = %err, "could not report the result; the lease will expire and the task re-run");
            counters.failed.fetch_add(1, Ordering::Relaxed)
        }
    };
}

/// Why the lease keeper stopped a running handler.
enum Stop {
    Yield,
    LeaseLost(String),
}

/// `Some(true)` completed, `Some(false)` failed, `None` parked for its subtasks.
type Reported = Result<Option<bool>, ApiError>;

async fn complete(
    client: &MeshClient,
    id: &uuid::Uuid,
    token: uuid::Uuid,
    output: serde_json::Value,
) -> Reported {
    client
        .completions
        .complete(&client.queue, &client.caller, *id, token, output)
        .await
        .map(|_| Some(true))
}

async fn fail(
    client: &MeshClient,
    id: &uuid::Uuid,
    token: uuid::Uuid,
    error: &AgentError,
) -> Reported {
    let body = FailBody {
        lease_token: token,
        reason: one_line(&error.message),
        retryable: error.retryable,
    };
    client
        .queue
        .fail(&client.caller, *id, body)
        .await
        .map(|_| Some(false))
}

/// Longest failure reason the queue accepts.
const MAX_REASON_CHARS: usize = 2_000;

/// A reason the queue accepts: one line (handlers quote model replies and tool output,
/// which carry newlines), at most [`MAX_REASON_CHARS`].
fn one_line(reason: &str) -> String {
    let flat: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_REASON_CHARS)
        .collect();
    if flat.trim().is_empty() {
        "the handler failed without a reason".into()
    } else {
        flat
    }
}

/// Every subtask of `parent`.
async fn subtasks(
    client: &MeshClient,
    parent: uuid::Uuid,
) -> Result<Vec<mesh_types::Task>, ApiError> {
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let query = TaskListQuery {
            parent_id: Some(parent),
            limit: Some(500),
            cursor,
            ..Default::default()
        };
        let page = client.queue.list(&client.caller, query).await?;
        all.extend(page.items);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(all),
        }
    }
}

async fn spawn(
    client: &MeshClient,
    parent: uuid::Uuid,
    subtasks: Vec<NewTask>,
    spawned_by: Option<mesh_telemetry::SpanContext>,
) -> Result<Vec<uuid::Uuid>, ApiError> {
    let mut ids = Vec::with_capacity(subtasks.len());
    for mut sub in subtasks {
        sub.parent_id = Some(parent);
        if let Some(span) = spawned_by
            && let Some(fields) = sub
                .metadata
                .get_or_insert_with(|| serde_json::json!({}))
                .as_object_mut()
        {
            fields
                .entry(crate::spans::SPAWNED_BY)
                .or_insert_with(|| span.traceparent().into());
        }
        ids.push(client.queue.enqueue(&client.caller, sub).await?.id);
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reasons_are_flattened_and_bounded() {
        assert_eq!(super::one_line("bad\nreply:\t\"x\""), "bad reply: \"x\"");
        assert_eq!(super::one_line(&"é".repeat(3_000)).chars().count(), 2_000);
        assert_eq!(super::one_line("\n"), "the handler failed without a reason");
    }
}
