//! `mesh up` and `mesh serve`.

use super::{load_config, open_store};
use crate::cli::{GlobalArgs, ServeArgs, UpArgs};
use crate::compose;
use crate::config::Overrides;
use anyhow::Result;
use mesh_service::ServiceName;
use mesh_store::Store;
use std::process::ExitCode;

pub async fn up(g: &GlobalArgs, args: UpArgs) -> Result<ExitCode> {
    let flags = Overrides {
        bind: args.bind,
        listen: args.listen,
        ..Default::default()
    };
    let config = load_config(g, flags)?;
    let store = open_store(&config).await?;
    start(&store, &ServiceName::ALL, &config).await
}

pub async fn serve(g: &GlobalArgs, args: ServeArgs) -> Result<ExitCode> {
    let flags = Overrides {
        listen: args.listen.map(|a| (args.service, a)).into_iter().collect(),
        peers: args.peer,
        ..Default::default()
    };
    let config = load_config(g, flags)?;
    let store = open_store(&config).await?;
    start(&store, &[args.service], &config).await
}

async fn start(
    store: &Store,
    services: &[ServiceName],
    config: &crate::config::Config,
) -> Result<ExitCode> {
    // Before the services start: the mesh's own agents get keys of their own, and the
    // bootstrap admin key is for a store that has none.
    let admin_key = mesh_service::auth::bootstrap_admin_key(store).await?;
    let running = compose::start(store, services, config).await?;
    // Listen for SIGTERM before announcing readiness: a supervisor may signal at once.
    let signal = mesh_service::server::shutdown_signal();
    println!("Agentic Mesh is up (store: {})", store.display_url);
    for (service, addr) in &running.endpoints {
        println!("  {:<20} http://{addr}", service.as_str());
    }
    if !running.agents_started().is_empty() {
        println!("Agents: {}", running.agents_started().join(", "));
    }
    if let Some(key) = admin_key {
        println!("Admin API key (created because the store had none; shown once, keep it):");
        println!("  {key}");
    }
    println!("Press Ctrl-C or send SIGTERM to drain and stop.");
    tracing::info!("ready");
    running.run_until_signal(signal, config.drain_grace).await?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}
