//! `mesh worker`: one built-in agent in its own process (how `mode = "process"` agents
//! run, and how to scale agents out on other machines).

use crate::cli::WorkerArgs;
use anyhow::{Context, Result};
use mesh_agents::{BuiltinAgent, BuiltinKind, ModelClient, Prompts, ToolClient};
use mesh_sdk::{MeshClient, Worker, WorkerOptions};
use std::process::ExitCode;
use std::sync::Arc;

pub async fn run(args: WorkerArgs) -> Result<ExitCode> {
    let kind = BuiltinKind::parse(&args.kind).with_context(|| {
        format!(
            "--kind {}: expected one of {}",
            args.kind,
            BuiltinKind::NAMES.join(", ")
        )
    })?;
    // A worker has no config file: OpenTelemetry SDKs' variables say where spans go.
    let telemetry = crate::telemetry::resolve(
        crate::telemetry::TelemetryFileConfig::default(),
        &crate::telemetry::process_env(),
    )?;
    crate::telemetry::install(&telemetry);
    let key = std::env::var("MESH_API_KEY")
        .ok()
        .filter(|k| !k.is_empty())
        .context("MESH_API_KEY must hold an API key with the agent role")?;
    let prompts = Prompts::load(args.prompts_dir.as_deref()).map_err(anyhow::Error::msg)?;
    let capabilities = if args.capabilities.is_empty() {
        vec![kind.task_type().to_string()]
    } else {
        args.capabilities
    };
    let agent = BuiltinAgent {
        kind,
        name: args
            .name
            .unwrap_or_else(|| format!("{}-{}", args.kind, std::process::id())),
        model: args.model,
        risk_tier: args.risk_tier,
        capabilities,
        prompts: Arc::new(prompts),
        client: ModelClient::http(&args.gateway, &key),
        tools: Some(ToolClient::http(&args.tools, &key)),
    };
    let client =
        MeshClient::http(&args.queue, &args.registry, &key).map_err(|e| anyhow::anyhow!("{e}"))?;
    let options = WorkerOptions {
        concurrency: args.concurrency.max(1),
        lease_ms: args.lease_ms,
        ..WorkerOptions::default()
    };
    let signal = mesh_service::server::shutdown_signal();
    let orphaned = parent_gone(args.exit_with_parent);
    let shutdown = async move {
        tokio::select! {
            _ = signal => {}
            _ = orphaned => tracing::warn!("the supervising mesh is gone; draining"),
        }
    };
    let report = Worker::new(agent, client, options)
        .run(shutdown)
        .await
        .map_err(|e| anyhow::anyhow!("the agent could not run: {e}"))?;
    tracing::info!(?report, "worker stopped");
    mesh_telemetry::flush(std::time::Duration::from_secs(5)).await;
    Ok(ExitCode::SUCCESS)
}

/// Resolves when this process is re-parented (its supervisor died, even by SIGKILL);
/// never, unless `watch`.
async fn parent_gone(watch: bool) {
    if !watch {
        return std::future::pending().await;
    }
    let parent = std::os::unix::process::parent_id();
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        if std::os::unix::process::parent_id() != parent {
            return;
        }
    }
}
