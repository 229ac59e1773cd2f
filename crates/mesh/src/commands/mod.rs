//! One function per command; each resolves configuration and the store the same way.

mod bench;
mod demo;
mod keys;
mod policy;
mod provenance;
mod provenance_proof;
mod registry;
mod run;
mod tasks;
mod worker;

use crate::cli::{Cli, Command, GlobalArgs};
use crate::config::{Config, Overrides};
use anyhow::{Context, Result};
use mesh_service::Caller;
use mesh_store::Store;
use mesh_types::{Principal, Role};
use std::process::ExitCode;

pub async fn run(cli: Cli) -> Result<ExitCode> {
    let g = &cli.global;
    match cli.command {
        Command::Up(args) => run::up(g, args).await,
        Command::Serve(args) => run::serve(g, args).await,
        Command::Migrate => {
            let config = load_config(g, Overrides::default())?;
            let store = open_store(&config).await?;
            println!("schema is up to date ({})", store.display_url);
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys(cmd) => keys::run(g, cmd).await,
        Command::Task(cmd) => tasks::run(g, cmd).await,
        Command::Agents(cmd) => registry::agents(g, cmd).await,
        Command::Tools(cmd) => registry::tools(g, cmd).await,
        Command::Provenance(cmd) => provenance::run(g, cmd).await,
        Command::Policy(cmd) => policy::run(g, cmd),
        Command::Approvals(cmd) => policy::approvals(g, cmd).await,
        Command::Bench(cmd) => bench::run(g, cmd).await,
        Command::Demo(args) => demo::run(g, args).await,
        Command::Worker(args) => worker::run(args).await,
    }
}

/// Defaults, then `--config FILE`, then the global and command flags.
pub fn load_config(g: &GlobalArgs, mut flags: Overrides) -> Result<Config> {
    flags.data_dir = g.data_dir.clone();
    flags.store = g.store.clone();
    flags.bus = g.bus.clone();
    flags.policy_dir = g.policy_dir.clone();
    flags.otel_env = crate::telemetry::process_env();
    let text = match &g.config {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --config {}", path.display()))?,
        ),
        None => None,
    };
    let name = g
        .config
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    Config::resolve(text.as_deref().map(|t| (name.as_str(), t)), &flags)
}

/// Opens (and migrates) the configured store. An unreachable store is an error naming
/// the setting; there is no fallback to another backend.
pub async fn open_store(config: &Config) -> Result<Store> {
    let setting = match &config.store {
        Some(url) => format!(
            "store `{}` (--store or `store` in the config file)",
            redact(url)
        ),
        None => format!(
            "embedded store in data directory `{}` (--data-dir)",
            config.data_dir.display()
        ),
    };
    mesh_store::open(config.store.as_deref(), &config.data_dir)
        .await
        .with_context(|| format!("cannot open the {setting}"))
}

fn redact(url: &str) -> String {
    mesh_store::StoreUrl::parse(url)
        .map(|u| u.display())
        .unwrap_or_else(|_| url.to_string())
}

/// The principal the CLI acts as: the local operator, with admin rights over a store it
/// can open directly anyway. Events it causes name it `cli:<user>`.
pub fn cli_caller() -> Caller {
    let user = std::env::var("USER").unwrap_or_else(|_| "local".to_string());
    Caller {
        principal: Principal {
            key_id: uuid::Uuid::nil(),
            name: format!("cli:{user}"),
            roles: vec![Role::Admin],
            tenant: "default".to_string(),
        },
        token: String::new(),
    }
}

/// The store-backed cores in-process, for commands that act on the store directly.
pub async fn local_cores(store: &Store, config: &Config) -> Result<crate::compose::Cores> {
    use mesh_service::ServiceName::*;
    let services = [
        Orchestrator,
        TaskQueue,
        AgentRegistry,
        ToolRegistry,
        Provenance,
    ];
    crate::compose::Cores::build(
        store,
        &services,
        config,
        &mesh_service::Readiness::default(),
    )
    .await
}

/// Unwraps a core that `local_cores` always builds.
pub fn core<T>(core: Option<T>) -> Result<T> {
    core.context("service core missing")
}
