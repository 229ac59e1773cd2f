//! `mesh bench queue`: enqueue → claim → complete with no-op handlers through the task
//! queue's core (the functions its HTTP handlers call), provenance on, SQLite at
//! `synchronous=FULL`, eight concurrent producers. Reports throughput, pickup latency
//! under that load, and pickup latency on an idle queue (enqueue commit → handler start).

use super::quantile_ms;
use crate::cli::{BenchBackend, GlobalArgs};
use crate::commands::{cli_caller, load_config, open_store};
use crate::compose::Cores;
use crate::config::Overrides;
use crate::output;
use anyhow::{Context, Result, bail};
use mesh_queue::{ClaimBody, CompleteBody, TaskQueue};
use mesh_service::{Caller, Readiness, ServiceName};
use mesh_types::NewTask;
use serde_json::json;
use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

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
) -> Result<ExitCode> {
    if tasks == 0 || workers == 0 {
        bail!("--tasks and --workers must be at least 1");
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
        &[ServiceName::TaskQueue, ServiceName::AgentRegistry],
        &config,
        &Readiness::default(),
    )
    .await?;
    let queue = cores.queue.context("task queue core")?;
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
    let pickups = run_workers(
        &queue,
        &caller,
        &agents,
        &bench_type,
        &enqueued,
        &done,
        tasks,
        async {
            for i in 0..tasks {
                let new = new_task(&bench_type, i);
                let id = queue.enqueue(&caller.principal, new).await?.id;
                enqueued
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?
                    .insert(id, Instant::now());
            }
            Ok(())
        },
    )
    .await?;
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
        IDLE_SAMPLES,
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
    let _ = std::fs::remove_dir_all(&scratch);

    let report = json!({
        "bench": "queue",
        "backend": store.backend,
        "tasks": tasks,
        "workers": workers,
        "seconds": elapsed.as_secs_f64(),
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
            "{tasks} tasks, {workers} workers, {} store: {:.0} tasks/s; pickup under load p50 {:.2} ms p99 {:.2} ms; idle pickup p50 {:.2} ms p99 {:.2} ms (long-poll claims)",
            store.backend,
            report["tasksPerSec"].as_f64().unwrap_or(0.0),
            quantile_ms(&pickups, 0.5),
            quantile_ms(&pickups, 0.99),
            quantile_ms(&idle, 0.5),
            quantile_ms(&idle, 0.99),
        );
    }
    Ok(ExitCode::SUCCESS)
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

/// Runs one worker loop per agent while `producer` runs, until `total` tasks completed;
/// returns each task's pickup latency (enqueue commit → claimed).
#[allow(clippy::too_many_arguments)]
async fn run_workers(
    queue: &Arc<TaskQueue>,
    caller: &Caller,
    agents: &[Uuid],
    task_type: &str,
    enqueued: &Enqueued,
    done: &Arc<AtomicUsize>,
    total: usize,
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
            while done.load(Ordering::SeqCst) < total {
                let body = ClaimBody {
                    agent_id: agent,
                    task_types: vec![task_type.clone()],
                    limit: Some(CLAIM_BATCH),
                    lease_ms: None,
                    wait_ms: Some(CLAIM_WAIT_MS),
                };
                let leases = queue.claim(&caller, body).await?;
                if leases.is_empty() {
                    continue;
                }
                let claimed = Instant::now();
                let mut completions = Vec::with_capacity(leases.len());
                for lease in leases {
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
                    let body = CompleteBody {
                        lease_token: lease.lease_token,
                        output: None,
                    };
                    // A worker finishes its claimed tasks side by side, as a worker with
                    // that much concurrency would.
                    completions.push(queue.complete(&caller, lease.task.id, body));
                }
                for done_task in futures_util::future::join_all(completions).await {
                    done_task?;
                    done.fetch_add(1, Ordering::SeqCst);
                }
            }
            Ok::<_, mesh_service::ApiError>(pickups)
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
