//! `mesh bench provenance`: sustained appends to the provenance log (hash chain, Merkle
//! leaves, durable commits) while the background checkpointer signs checkpoints as the
//! service does; then verification of one inclusion proof, and the timeline + graph
//! query of a task with 10,000 nodes.

use super::quantile_ms;
use crate::cli::{BenchBackend, GlobalArgs};
use crate::commands::{load_config, open_store};
use crate::compose::Cores;
use crate::config::Overrides;
use crate::output;
use anyhow::{Context, Result, bail};
use mesh_provenance::checkpointer::{CheckpointPolicy, spawn_checkpointer};
use mesh_provenance::tree;
use mesh_service::{Readiness, ServiceName};
use mesh_store::Store;
use mesh_types::EventDraft;
use mesh_types::checkpoint::{NoteSigner, NoteVerifier};
use serde_json::json;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Nodes of the task whose provenance is queried.
const GRAPH_NODES: usize = 10_000;
const GRAPH_QUERIES: usize = 20;
const PROOF_VERIFICATIONS: usize = 2_000;

pub struct Options {
    pub backend: BenchBackend,
    pub events: usize,
    pub batch: usize,
    pub producers: usize,
}

pub async fn run(g: &GlobalArgs, opts: Options) -> Result<ExitCode> {
    if opts.events == 0 || opts.batch == 0 || opts.producers == 0 {
        bail!("--events, --batch and --producers must be at least 1");
    }
    let scratch = super::tempdir()?;
    let mut flags = Overrides::default();
    match opts.backend {
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
    if opts.backend == BenchBackend::Sqlite {
        config.store = None;
        config.data_dir = scratch.clone();
    }
    let store = open_store(&config).await?;
    let signer = Arc::new(NoteSigner::from_seed(
        &config.checkpoints.origin,
        scratch_seed(),
    )?);
    let checkpoints_before = store.provenance.latest_checkpoint().await?;

    // Appends while the checkpointer runs, as in the service.
    let (stop, watch) = tokio::sync::watch::channel(false);
    let checkpointer = spawn_checkpointer(
        store.provenance.clone(),
        signer.clone(),
        CheckpointPolicy::default(),
        watch,
    );
    let started = Instant::now();
    let mut latencies = append_load(&store, &opts).await?;
    let elapsed = started.elapsed();
    let _ = stop.send(true);
    checkpointer.await?;
    latencies.sort();
    let signed = count_checkpoints(&store, checkpoints_before.map(|c| c.tree_size)).await?;

    let (verify_us, proof_ms) = proof_timings(&store, &signer).await?;
    let graph = graph_query(&store, &config).await?;

    let events_per_sec = opts.events as f64 / elapsed.as_secs_f64();
    let report = json!({
        "backend": store.backend,
        "events": opts.events,
        "batch": opts.batch,
        "producers": opts.producers,
        "eventsPerSec": events_per_sec.round(),
        "appendP50Ms": quantile_ms(&latencies, 0.50),
        "appendP99Ms": quantile_ms(&latencies, 0.99),
        "checkpointsSigned": signed,
        "proofVerifyUs": verify_us,
        "proofGenerateMs": proof_ms,
        "taskGraphNodes": graph.0,
        "taskGraphQueryP50Ms": quantile_ms(&graph.1, 0.50),
        "taskGraphQueryP95Ms": quantile_ms(&graph.1, 0.95),
    });
    if g.json {
        output::json(&report)?;
    } else {
        println!(
            "{} events ({} per append, {} producers) on {}: {:.0} events/s, append p50 {:.2} ms, p99 {:.2} ms; {} checkpoints signed",
            opts.events,
            opts.batch,
            opts.producers,
            store.backend,
            events_per_sec,
            quantile_ms(&latencies, 0.50),
            quantile_ms(&latencies, 0.99),
            signed
        );
        println!("inclusion proof: verified in {verify_us:.1} µs (generated in {proof_ms:.1} ms)");
        println!(
            "task with {} graph nodes: timeline + graph p50 {:.1} ms, p95 {:.1} ms",
            graph.0,
            quantile_ms(&graph.1, 0.50),
            quantile_ms(&graph.1, 0.95)
        );
    }
    drop(store);
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(ExitCode::SUCCESS)
}

/// A fresh key for the scratch log (v4 UUIDs are 122 random bits each).
fn scratch_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    seed[..16].copy_from_slice(Uuid::new_v4().as_bytes());
    seed[16..].copy_from_slice(Uuid::new_v4().as_bytes());
    seed
}

/// `producers` tasks appending `batch` events per call until `events` are written;
/// the latency of each append (one durable commit).
async fn append_load(store: &Store, opts: &Options) -> Result<Vec<Duration>> {
    let calls = opts.events.div_ceil(opts.batch);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut handles = Vec::new();
    for p in 0..opts.producers {
        let (log, next) = (store.provenance.clone(), next.clone());
        let (batch, total) = (opts.batch, opts.events);
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let call = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if call >= calls {
                    break;
                }
                let n = batch.min(total - call * batch);
                let drafts = (0..n)
                    .map(|i| {
                        EventDraft::new("bench_event", "bench", "bench", None)
                            .payload(json!({"producer": p, "call": call, "i": i}))
                    })
                    .collect();
                let t = Instant::now();
                log.append(drafts).await?;
                latencies.push(t.elapsed());
            }
            Ok::<_, mesh_store::StoreError>(latencies)
        }));
    }
    let mut all = Vec::with_capacity(calls);
    for h in handles {
        all.extend(h.await??);
    }
    Ok(all)
}

async fn count_checkpoints(store: &Store, before: Option<i64>) -> Result<usize> {
    let mut after = before.unwrap_or(0);
    let mut n = 0;
    loop {
        let batch = store.provenance.checkpoints_after(after, 1_000).await?;
        let Some(last) = batch.last() else { break };
        after = last.tree_size;
        n += batch.len();
    }
    Ok(n)
}

/// Mean time to verify one inclusion proof (signature, event hash, path), and the
/// time the store took to generate it.
async fn proof_timings(store: &Store, signer: &NoteSigner) -> Result<(f64, f64)> {
    let head = store.provenance.head().await?;
    let middle = store
        .provenance
        .events_after(head.count / 2, 1)
        .await?
        .into_iter()
        .next()
        .context("the log is empty")?;
    let started = Instant::now();
    let proof = tree::inclusion(store.provenance.as_ref(), middle.id, Some(signer)).await?;
    let proof_ms = started.elapsed().as_secs_f64() * 1000.0;
    let verifier = NoteVerifier::parse(&signer.verifier_key())?;
    let started = Instant::now();
    for _ in 0..PROOF_VERIFICATIONS {
        // Parsing the key each time, as a verifier handed one file would.
        let key = NoteVerifier::parse(&signer.verifier_key())?;
        std::hint::black_box(proof.verify(&key)?);
    }
    let verify_us = started.elapsed().as_secs_f64() * 1e6 / PROOF_VERIFICATIONS as f64;
    proof.verify(&verifier)?;
    Ok((verify_us, proof_ms))
}

/// One task with `GRAPH_NODES` nodes (model calls, tool calls and policy decisions on
/// its timeline), queried through the provenance service's core as its route does,
/// the reply serialised.
async fn graph_query(
    store: &Store,
    config: &crate::config::Config,
) -> Result<(usize, Vec<Duration>)> {
    let task = Uuid::now_v7();
    let mut drafts = vec![
        EventDraft::new("task_created", "bench", "task", Some(task.to_string()))
            .task(task)
            .payload(json!({"type": "bench"})),
    ];
    for i in 1..GRAPH_NODES {
        let (action, key) = match i % 3 {
            0 => ("model_call", "modelCallId"),
            1 => ("tool_call", "toolCallId"),
            _ => ("policy_decision", "decisionId"),
        };
        drafts.push(
            EventDraft::new(action, "bench", "task", Some(task.to_string()))
                .task(task)
                .payload(json!({key: Uuid::now_v7(), "latencyMs": i % 97})),
        );
    }
    for chunk in drafts.chunks(1_000) {
        store.provenance.append(chunk.to_vec()).await?;
    }
    let cores = Cores::build(
        store,
        &[ServiceName::Provenance],
        config,
        &Readiness::default(),
    )
    .await?;
    let service = cores.provenance.context("provenance core")?;
    let mut times = Vec::with_capacity(GRAPH_QUERIES);
    let mut nodes = 0;
    for _ in 0..GRAPH_QUERIES {
        let t = Instant::now();
        let p = service.task(task).await?;
        let body = serde_json::to_vec(&p)?;
        times.push(t.elapsed());
        nodes = p.graph.nodes.len();
        std::hint::black_box(body);
    }
    times.sort();
    Ok((nodes, times))
}
