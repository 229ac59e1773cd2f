//! `mesh bench …`: measurements on this machine, never assertions in tests.

mod gateway;
mod policy;
mod provenance;
mod queue;
mod relay;
mod tasks;

use crate::cli::{BenchCommand, GlobalArgs};
use anyhow::{Context, Result};
use std::process::ExitCode;
use std::time::Duration;

pub async fn run(g: &GlobalArgs, cmd: BenchCommand) -> Result<ExitCode> {
    match cmd {
        BenchCommand::Tasks { tasks, concurrency } => tasks::run(g, tasks, concurrency).await,
        BenchCommand::Gateway {
            requests,
            rate,
            seconds,
        } => {
            let opts = gateway::Options {
                requests,
                rate,
                seconds,
            };
            gateway::run(g, opts).await
        }
        BenchCommand::Relay { listen, upstream } => relay::serve(listen, upstream).await,
        BenchCommand::Policy {
            inputs,
            requests,
            rate,
        } => policy::run(g, inputs, requests, rate).await,
        BenchCommand::Queue {
            backend,
            tasks,
            workers,
            batch,
        } => queue::run(g, backend, tasks, workers, batch).await,
        BenchCommand::Provenance {
            backend,
            events,
            batch,
            producers,
        } => {
            let opts = provenance::Options {
                backend,
                events,
                batch,
                producers,
            };
            provenance::run(g, opts).await
        }
    }
}

/// A scratch directory for a benchmark's own SQLite file.
fn tempdir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("mesh-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// The `p`-quantile (0..=1) of sorted durations, in milliseconds.
fn quantile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1000.0
}
