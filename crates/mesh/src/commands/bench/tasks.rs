//! `mesh bench tasks`: task submission over HTTP through the full path — permission
//! guard, validation, queue statistics, the task row and its three provenance events
//! in one durable transaction — against a mesh started in this process.

use super::quantile_ms;
use crate::cli::GlobalArgs;
use crate::commands::{load_config, open_store};
use crate::compose;
use crate::config::Overrides;
use crate::output;
use anyhow::{Context, Result, bail};
use mesh_service::ServiceName;
use serde_json::json;
use std::process::ExitCode;
use std::time::{Duration, Instant};

pub async fn run(g: &GlobalArgs, tasks: usize, concurrency: usize) -> Result<ExitCode> {
    if tasks == 0 || concurrency == 0 {
        bail!("--tasks and --concurrency must be at least 1");
    }
    // A fresh SQLite file unless --store names another store.
    let scratch = super::tempdir()?;
    let mut flags = Overrides {
        listen: ServiceName::ALL
            .iter()
            .map(|s| {
                (
                    *s,
                    "127.0.0.1:0".parse().map_err(|e| anyhow::anyhow!("{e}")),
                )
            })
            .map(|(s, a)| a.map(|a| (s, a)))
            .collect::<Result<_>>()?,
        ..Default::default()
    };
    if g.store.is_none() && g.data_dir.is_none() {
        flags.data_dir = Some(scratch.clone());
    }
    let mut config = load_config(g, flags.clone())?;
    if let Some(dir) = flags.data_dir {
        config.data_dir = dir;
    }
    let store = open_store(&config).await?;
    let (key, _) = mesh_service::auth::create_key(
        &store,
        "bench",
        mesh_service::auth::NewKey {
            name: "bench".into(),
            roles: vec![mesh_types::Role::Operator],
            tenant: "bench".into(),
        },
    )
    .await?;
    let mut running = compose::start(&store, &ServiceName::ALL, &config).await?;
    let orchestrator = running
        .endpoints
        .iter()
        .find(|(s, _)| *s == ServiceName::Orchestrator)
        .map(|(_, a)| format!("http://{a}/api/v1/tasks"))
        .context("orchestrator did not start")?;

    let client = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let per_client = tasks.div_ceil(concurrency);
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let (client, url, key) = (client.clone(), orchestrator.clone(), key.clone());
        let count = per_client.min(tasks.saturating_sub(w * per_client));
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(count);
            for i in 0..count {
                let body = json!({"type": "bench", "input": {"worker": w, "i": i}, "priority": (i % 3) as i32});
                let t = Instant::now();
                let resp = client.post(&url).bearer_auth(&key).json(&body).send().await?;
                if resp.status() != reqwest::StatusCode::CREATED {
                    bail!("submission failed: {} {}", resp.status(), resp.text().await.unwrap_or_default());
                }
                resp.bytes().await?;
                latencies.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut latencies: Vec<Duration> = Vec::with_capacity(tasks);
    for w in workers {
        latencies.extend(w.await??);
    }
    let elapsed = started.elapsed();
    running.drain(Duration::from_secs(5)).await;
    let _ = std::fs::remove_dir_all(&scratch);

    latencies.sort();
    let pct = |p: f64| quantile_ms(&latencies, p);
    let report = json!({
        "bench": "tasks",
        "backend": store.backend,
        "tasks": latencies.len(),
        "concurrency": concurrency,
        "seconds": elapsed.as_secs_f64(),
        "tasksPerSec": latencies.len() as f64 / elapsed.as_secs_f64(),
        "p50Ms": pct(0.50),
        "p99Ms": pct(0.99),
        "maxMs": pct(1.0),
    });
    if g.json {
        output::json(&report)?;
    } else {
        println!(
            "{} tasks over HTTP, {} clients, {} store: {:.0} tasks/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            report["tasks"],
            concurrency,
            store.backend,
            report["tasksPerSec"].as_f64().unwrap_or(0.0),
            pct(0.50),
            pct(0.99),
            pct(1.0)
        );
    }
    Ok(ExitCode::SUCCESS)
}
