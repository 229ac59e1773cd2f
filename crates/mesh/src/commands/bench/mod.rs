//! `mesh bench …`: measurements on this machine, never assertions in tests.

mod gateway;
mod policy;
mod provenance;
mod queue;
mod relay;
mod tasks;

use crate::cli::{BenchCommand, GlobalArgs};
use anyhow::{Context, Result, bail};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

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

/// Starts `mesh` with `args` plus `--listen 127.0.0.1:PORT` on a free port, and waits
/// until it accepts connections. Returns the process and its base URL.
fn spawn_listening(args: &[&std::ffi::OsStr], what: &str) -> Result<(Child, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut child = Command::new(std::env::current_exe()?)
        .args(args)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .env("MESH_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start {what}"))?;
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok((child, url));
        }
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited ({status}) before listening on {url}");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} did not start listening on {url} within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
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

#[cfg(test)]
mod tests {
    #[test]
    fn a_process_that_exits_before_listening_is_reported_at_once() {
        // In a test the current executable is the test harness, which refuses an
        // option it does not know and exits. (Waiting out the deadline would fail
        // with "did not start listening" instead.)
        let err =
            super::spawn_listening(&["--no-such-option".as_ref()], "the harness").unwrap_err();
        assert!(err.to_string().contains("exited"), "{err}");
    }
}
