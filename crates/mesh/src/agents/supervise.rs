//! Agents declared with `mode = "process"`: `mesh worker` children this process starts,
//! restarts with backoff when they die, and stops (SIGTERM, then a kill after the
//! grace period) when it stops. Each start and exit is recorded.

use super::decl::AgentDecl;
use super::host::{Endpoints, default_model, record_spawn};
use crate::config::Config;
use anyhow::Result;
use mesh_service::ServiceName;
use mesh_store::Store;
use mesh_types::EventDraft;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};
use tokio::sync::watch;

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A child that ran this long before dying restarts at once: it was not crash-looping.
const STABLE_RUN: Duration = Duration::from_secs(60);
/// How long a child has to drain after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);

pub struct ChildSpec {
    decl: AgentDecl,
    /// `<name>-<replica>`; each start registers under it plus a fresh suffix, since a
    /// killed worker's registration stays behind until its heartbeat expires.
    base: String,
    /// Arguments after `--name NAME`.
    args: Vec<String>,
    key: String,
    /// Where the child exports its spans: this process's resolved traces URL.
    traces_url: Option<String>,
}

impl ChildSpec {
    pub fn new(
        decl: &AgentDecl,
        base: String,
        key: String,
        endpoints: &Endpoints,
        config: &Config,
    ) -> Result<Self> {
        let mut args = vec![
            "--kind".to_string(),
            decl.kind.clone(),
            "--model".into(),
            decl.model.clone().unwrap_or_else(|| default_model(config)),
            "--risk-tier".into(),
            decl.tier().to_string(),
            "--capabilities".into(),
            decl.task_types()?.join(","),
            "--concurrency".into(),
            decl.concurrency.unwrap_or(2).to_string(),
            "--lease-ms".into(),
            config.queue.lease_ms.to_string(),
            "--queue".into(),
            endpoints[&ServiceName::TaskQueue].clone(),
            "--registry".into(),
            endpoints[&ServiceName::AgentRegistry].clone(),
            "--gateway".into(),
            endpoints[&ServiceName::RoutingGateway].clone(),
            "--tools".into(),
            endpoints[&ServiceName::ToolRegistry].clone(),
        ];
        if let Some(dir) = &config.prompts_dir {
            args.push("--prompts-dir".into());
            args.push(dir.display().to_string());
        }
        Ok(ChildSpec {
            decl: decl.clone(),
            base,
            args,
            key,
            traces_url: config
                .telemetry
                .traces
                .as_ref()
                .map(|t| t.traces_url.clone()),
        })
    }

    fn start(&self, name: &str) -> std::io::Result<Child> {
        let exe = std::env::current_exe()?;
        let mut command = Command::new(exe);
        command
            .args(["worker", "--exit-with-parent", "--name", name])
            .args(&self.args)
            // The key goes by environment, not argv, so `ps` does not show it.
            .env("MESH_API_KEY", &self.key)
            .kill_on_drop(true);
        // The child exports where its parent does, whether the file or the
        // environment said so (the variable is how `mesh worker` learns it).
        if let Some(url) = &self.traces_url {
            command.env(crate::telemetry::ENV_TRACES_ENDPOINT, url);
        }
        command.spawn()
    }
}

/// Keeps one child running until `stop` flips.
pub async fn run(spec: ChildSpec, store: Store, mut stop: watch::Receiver<bool>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        let started = Instant::now();
        let name = format!("{}-{}", spec.base, super::host::suffix());
        let mut child = match spec.start(&name) {
            Ok(child) => child,
            Err(err) => {
                tracing::error!(agent = %name, error = %err, "cannot start the agent process");
                if wait_or_stop(&mut stop, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        record_spawn(&store, &spec.decl, &name, child.id()).await;
        let exited = tokio::select! {
            status = child.wait() => status.ok().and_then(|s| s.code()),
            _ = stopped(&mut stop) => {
                terminate(&mut child, &name).await;
                return;
            }
        };
        tracing::warn!(agent = %name, code = ?exited, "agent process exited; restarting");
        record_exit(&store, &name, exited).await;
        if started.elapsed() >= STABLE_RUN {
            backoff = FIRST_BACKOFF;
        }
        if wait_or_stop(&mut stop, backoff).await {
            return;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Sleeps; true if told to stop meanwhile.
async fn wait_or_stop(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stopped(stop) => true,
    }
}

/// Resolves once told to stop (or once nobody can tell us any more).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, before any other await.
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}

/// SIGTERM lets the worker finish its tasks and retire; a kill follows if it hangs.
async fn terminate(child: &mut Child, name: &str) {
    if let Some(pid) = child.id() {
        // `kill` rather than a signal crate: the one signal we send needs no binding.
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
    }
    match tokio::time::timeout(STOP_GRACE, child.wait()).await {
        Ok(_) => tracing::info!(agent = %name, "agent process stopped"),
        Err(_) => {
            tracing::warn!(agent = %name, "agent process ignored SIGTERM; killing it");
            let _ = child.kill().await;
        }
    }
}

async fn record_exit(store: &Store, name: &str, code: Option<i32>) {
    let event = EventDraft::new("agent_process_exited", "mesh", "agent", None)
        .payload(json!({"agentName": name, "exitCode": code, "restarting": true}));
    if let Err(err) = store.provenance.append(vec![event]).await {
        tracing::warn!(agent = %name, error = %err, "could not record the exit");
    }
}
