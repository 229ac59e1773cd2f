//! A small agent in its own process, speaking HTTP to a remote mesh.
//!
//! It registers, heartbeats, claims tasks of its types, answers each with an echo of
//! the input after `--work-ms`, and retires on SIGTERM or Ctrl-C once its tasks finish.
//!
//! ```sh
//! mesh keys create --role agent > agent.key
//! cargo run --example echo_agent -- --key-file agent.key --types echo
//! ```

#![allow(clippy::print_stdout)]

use async_trait::async_trait;
use clap::Parser;
use mesh_sdk::{
    AgentError, BaseAgent, MeshClient, TaskContext, TaskOutcome, Worker, WorkerOptions,
};
use mesh_types::{NewAgent, Task};
use serde_json::json;
use std::time::Duration;

#[derive(Parser)]
#[command(about = "An echo agent for Agentic Mesh")]
struct Args {
    /// Task queue base URL
    #[arg(long, default_value = "http://127.0.0.1:5007")]
    queue: String,
    /// Agent registry base URL
    #[arg(long, default_value = "http://127.0.0.1:5004")]
    registry: String,
    /// File holding an API key with the `agent` role
    #[arg(long)]
    key_file: std::path::PathBuf,
    /// Agent name [default: echo-agent-<pid>]
    #[arg(long)]
    name: Option<String>,
    /// Task types to handle, comma-separated
    #[arg(long, default_value = "echo", value_delimiter = ',')]
    types: Vec<String>,
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    #[arg(long, default_value_t = 30_000)]
    lease_ms: i64,
    /// Simulated work per task
    #[arg(long, default_value_t = 0)]
    work_ms: u64,
}

struct EchoAgent {
    name: String,
    types: Vec<String>,
    work: Duration,
}

#[async_trait]
impl BaseAgent for EchoAgent {
    fn descriptor(&self) -> NewAgent {
        NewAgent {
            name: self.name.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            role: mesh_types::AgentRole::Custom,
            risk_tier: mesh_types::RiskTier::Low,
            capabilities: self.types.clone(),
            model_preference: None,
            cost_profile: None,
            max_concurrency: None,
        }
    }

    async fn on_task_received(
        &self,
        ctx: &TaskContext,
        task: &Task,
    ) -> Result<TaskOutcome, AgentError> {
        tokio::time::sleep(self.work).await;
        Ok(TaskOutcome::Complete(
            json!({"echo": task.input, "agent": ctx.agent_name, "attempt": ctx.attempt}),
        ))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let args = Args::parse();
    let key = std::fs::read_to_string(&args.key_file)
        .map_err(|e| format!("cannot read --key-file {}: {e}", args.key_file.display()))?;
    let client = MeshClient::http(&args.queue, &args.registry, key.trim())?;
    let agent = EchoAgent {
        name: args
            .name
            .unwrap_or_else(|| format!("echo-agent-{}", std::process::id())),
        types: args.types,
        work: Duration::from_millis(args.work_ms),
    };
    let options = WorkerOptions {
        concurrency: args.concurrency,
        lease_ms: args.lease_ms,
        ..Default::default()
    };
    let report = Worker::new(agent, client, options)
        .run(mesh_service::server::shutdown_signal())
        .await?;
    println!(
        "completed {} failed {} lost {}",
        report.completed, report.failed, report.lost_leases
    );
    Ok(())
}
