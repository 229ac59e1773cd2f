//! `mesh bench queue`: enqueue → claim → complete with no-op handlers through the task
//! queue's core (the functions its HTTP handlers call), provenance on and task events on
//! the events bus (read from the log by the embedded bus, relayed to an external one),
//! SQLite at `synchronous=FULL`, eight
//! concurrent producers submitting `--batch` tasks per call and workers completing up
//! to `--batch` per call. Reports throughput, pickup latency under that load, and
//! pickup latency on an idle queue (enqueue commit → handler start).

use super::quantile_ms;
use crate::cli::{BenchBackend, GlobalArgs};
use crate::commands::{cli_caller, load_config, open_store};
use crate::compose::Cores;
use crate::config::Overrides;
use crate::output;
use anyhow::{Context, Result, bail};
use mesh_queue::{
    ClaimBody, CompleteBody, CompletionItem, CompletionsBody, MAX_CLAIM_BATCH, MAX_COMPLETE_BATCH,
    MAX_ENQUEUE_BATCH, TaskQueue,
};
use mesh_service::{Caller, Readiness, ServiceName};
use mesh_types::NewTask;
use serde_json::json;
use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Tasks one claim leases when submissions are not batched.
const CLAIM_BATCH: u32 = 32;
const PRODUCERS: usize = 8;
const IDLE_SAMPLES: usize = 200;
/// How long one claim waits for work (long poll, woken by enqueues).
const CLAIM_WAIT_MS: u64 = 200;

type Enqueued = Arc<Mutex<HashMap<Uuid, Instant>>>;

pub async fn run(
    g: &GlobalArgs,
    backend: BenchBackend,
    tasks: usize,
    workers: usize,
    batch: usize,
) -> Result<ExitCode> {
    if tasks == 0 || workers == 0 {
        bail!("--tasks and --workers must be at least 1");
    }
    if !(1..=MAX_ENQUEUE_BATCH.min(MAX_COMPLETE_BATCH)).contains(&batch) {
        bail!(
            "--batch must be between 1 and {}",
            MAX_ENQUEUE_BATCH.min(MAX_COMPLETE_BATCH)
        );
    }
    let scratch = super::tempdir()?;
    let mut flags = Overrides::default();
    match backend {
        BenchBackend::Sqlite => flags.data_dir = Some(scratch.clone()),
        BenchBackend::Postgres
            if g.store
                .as_deref()
                .is_some_and(|s| s.starts_with("postgres")) => {}
        BenchBackend::Postgres => bail!(
            "--backend postgres needs --store postgres://USER@HOST/DB (a database it may fill)"
        ),
    }
    let mut config = load_config(g, flags)?;
    if backend == BenchBackend::Sqlite {
        config.store = None;
        config.data_dir = scratch.clone();
    }
    let store = open_store(&config).await?;
    let cores = Cores::build(
        &store,
        &[
            ServiceName::TaskQueue,
            ServiceName::AgentRegistry,
            ServiceName::EventsBus,
        ],
        &config,
        &Readiness::default(),
    )
    .await?;
    let queue = cores.queue.context("task queue core")?;
    // Bus events on, as in `mesh up`: every task event reaches its topic (an external
    // bus through the relay).
    let bus = cores.bus.context("events bus core")?;
    let (stop_relay, relay_stops) = tokio::sync::watch::channel(false);
    let relay = mesh_bus::spawn_relay(bus.clone(), relay_stops);
    let registry = cores.agents.context("agent registry core")?;
    let caller = cli_caller();
    let bench_type = format!("bench-{}", Uuid::new_v4().simple());
    let mut agents = Vec::new();
    for i in 0..workers {
        let new = serde_json::from_value(json!({
            "name": format!("bench-worker-{}-{i}", &bench_type[6..14]), "version": "1", "role": "custom",
            "riskTier": "low", "capabilities": [bench_type]
        }))?;
        agents.push(registry.register(&caller.principal, new).await?.id);
    }

    // Load: a producer enqueues while the workers drain.
    let enqueued: Enqueued = Arc::default();
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let load = Load {
        total: tasks,
        batch,
    };
    let pickups = run_workers(
        &queue,
        &caller,
        &agents,
        &bench_type,
        &enqueued,
        &done,
        load,
        produce(&queue, &caller, &bench_type, &enqueued, load),
    )
    .await?;
    let completed_in = started.elapsed();
    // The run ends when the bus has every event too: a relay publishes from the log
    // behind the writes, and its work counts (the embedded bus has them at commit).
    let head = store.provenance.head().await?.count;
    let lag_at_completion = head - bus.lifecycle_position().await?;
    while bus.lifecycle_position().await? < head {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();

    // Idle: one task at a time into a queue the workers poll.
    done.store(0, Ordering::SeqCst);
    let idle = run_workers(
        &queue,
        &caller,
        &agents,
        &bench_type,
        &enqueued,
        &done,
        Load {
            total: IDLE_SAMPLES,
            batch: 1,
        },
        async {
            for i in 0..IDLE_SAMPLES {
                let target = i + 1;
                let id = queue
                    .enqueue(&caller.principal, new_task(&bench_type, i))
                    .await?
                    .id;
                enqueued
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?
                    .insert(id, Instant::now());
                while done.load(Ordering::SeqCst) < target {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
            }
            Ok(())
        },
    )
    .await?;
    let _ = stop_relay.send(true);
    if let Some(relay) = relay {
        let _ = relay.await;
    }
    let _ = std::fs::remove_dir_all(&scratch);

    let report = json!({
        "bench": "queue",
        "backend": store.backend,
        "tasks": tasks,
        "workers": workers,
        "batch": batch,
        "seconds": elapsed.as_secs_f64(),
        "provenanceEvents": head,
        "completedSeconds": completed_in.as_secs_f64(),
        "relayLagAtCompletion": lag_at_completion,
        "tasksPerSec": tasks as f64 / elapsed.as_secs_f64(),
        "pickupP50Ms": quantile_ms(&pickups, 0.5),
        "pickupP99Ms": quantile_ms(&pickups, 0.99),
        "idlePickupP50Ms": quantile_ms(&idle, 0.5),
        "idlePickupP99Ms": quantile_ms(&idle, 0.99),
        "claimWaitMs": CLAIM_WAIT_MS,
        "producers": PRODUCERS,
    });
    if g.json {
        output::json(&report)?;
    } else {
        println!(
            "{tasks} tasks, {workers} workers, batches of {batch}, {} store: {:.0} tasks/s; pickup under load p50 {:.2} ms p99 {:.2} ms; idle pickup p50 {:.2} ms p99 {:.2} ms (long-poll claims); every task completed after {:.2} s, its {head} events all on the bus after {:.2} s",
            store.backend,
            report["tasksPerSec"].as_f64().unwrap_or(0.0),
            quantile_ms(&pickups, 0.5),
            quantile_ms(&pickups, 0.99),
            quantile_ms(&idle, 0.5),
            quantile_ms(&idle, 0.99),
            completed_in.as_secs_f64(),
            elapsed.as_secs_f64(),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// How many tasks a phase runs and how many go in one enqueue or complete call.
#[derive(Clone, Copy)]
struct Load {
    total: usize,
    batch: usize,
}

/// `PRODUCERS` concurrent producers enqueue `load.total` tasks between them,
/// `load.batch` per call.
async fn produce(
    queue: &Arc<TaskQueue>,
    caller: &Caller,
    task_type: &str,
    enqueued: &Enqueued,
    load: Load,
) -> Result<()> {
    let mut producers = tokio::task::JoinSet::new();
    for p in 0..PRODUCERS {
        let (queue, caller, enqueued) = (queue.clone(), caller.clone(), enqueued.clone());
        let task_type = task_type.to_string();
        producers.spawn(async move {
            let mine: Vec<usize> = (p..load.total).step_by(PRODUCERS).collect();
            for chunk in mine.chunks(load.batch) {
                let ids: Vec<Uuid> = if load.batch == 1 {
                    let new = new_task(&task_type, chunk[0]);
                    vec![queue.enqueue(&caller.principal, new).await?.id]
                } else {
                    let news = chunk.iter().map(|i| new_task(&task_type, *i)).collect();
                    let stored = queue.enqueue_batch(&caller.principal, news).await?;
                    stored.into_iter().map(|t| t.id).collect()
                };
                let now = Instant::now();
                let mut times = enqueued.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                times.extend(ids.into_iter().map(|id| (id, now)));
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(joined) = producers.join_next().await {
        joined??;
    }
    Ok(())
}

fn new_task(task_type: &str, i: usize) -> NewTask {
    NewTask {
        task_type: task_type.to_string(),
        input: json!({"i": i}),
        priority: 0,
        metadata: None,
        risk_tier: None,
        data_classification: None,
        parent_id: None,
        deadline: None,
        idempotency_key: None,
    }
}

/// Runs one worker loop per agent while `producer` runs, until `load.total` tasks completed;
/// returns each task's pickup latency (enqueue commit → claimed).
#[allow(clippy::too_many_arguments)]
async fn run_workers(
    queue: &Arc<TaskQueue>,
    caller: &Caller,
    agents: &[Uuid],
    task_type: &str,
    enqueued: &Enqueued,
    done: &Arc<AtomicUsize>,
    load: Load,
    producer: impl std::future::Future<Output = Result<()>>,
) -> Result<Vec<Duration>> {
    let mut handles = Vec::new();
    for agent in agents {
        let (queue, caller, enqueued, done) = (
            queue.clone(),
            caller.clone(),
            enqueued.clone(),
            done.clone(),
        );
        let (agent, task_type) = (*agent, task_type.to_string());
        handles.push(tokio::spawn(async move {
            let mut pickups = Vec::new();
            let limit = if load.batch == 1 {
                CLAIM_BATCH
            } else {
                MAX_CLAIM_BATCH
            };
            while done.load(Ordering::SeqCst) < load.total {
                let body = ClaimBody {
                    agent_id: agent,
                    task_types: vec![task_type.clone()],
                    limit: Some(limit),
                    lease_ms: None,
                    wait_ms: Some(CLAIM_WAIT_MS),
                };
                let leases = queue.claim(&caller, body).await?;
                if leases.is_empty() {
                    continue;
                }
                let claimed = Instant::now();
                for lease in &leases {
                    // The producer records the commit time just after enqueue returns;
                    // a task claimed before that is counted as a zero wait.
                    let since = enqueued
                        .lock()
                        .ok()
                        .and_then(|m| m.get(&lease.task.id).copied());
                    pickups.push(
                        since
                            .map(|t| claimed.saturating_duration_since(t))
                            .unwrap_or_default(),
                    );
                }
                let finished = complete(&queue, &caller, leases, load.batch).await?;
                done.fetch_add(finished, Ordering::SeqCst);
            }
            Ok::<_, anyhow::Error>(pickups)
        }));
    }
    producer.await?;
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await??);
    }
    all.sort();
    Ok(all)
}

/// Completes claimed tasks: `batch` per call, or one call each side by side (as a
/// worker with that much concurrency and no batching would).
async fn complete(
    queue: &Arc<TaskQueue>,
    caller: &Caller,
    leases: Vec<mesh_types::queue::Lease>,
    batch: usize,
) -> Result<usize> {
    let count = leases.len();
    if batch == 1 {
        let calls = leases.into_iter().map(|lease| {
            let body = CompleteBody {
                lease_token: lease.lease_token,
                output: None,
            };
            queue.complete(caller, lease.task.id, body)
        });
        for done in futures_util::future::join_all(calls).await {
            done?;
        }
        return Ok(count);
    }
    for chunk in leases.chunks(batch) {
        let body = CompletionsBody {
            completions: chunk
                .iter()
                .map(|lease| CompletionItem {
                    task_id: lease.task.id,
                    lease_token: lease.lease_token,
                    output: None,
                })
                .collect(),
        };
        for result in queue.complete_batch(caller, body).await? {
            if let Some(error) = result.error {
                bail!("completing task {}: {}", result.task_id, error.message);
            }
        }
    }
    Ok(count)
}
