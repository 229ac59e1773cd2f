//! Composition: which services run in this process, how each reaches the others, and
//! their lifecycle from bind to drain. Only this module knows the deployment mode.

use crate::agents::{AgentHost, Endpoints};
use crate::config::Config;
use anyhow::{Context, Result};
use axum::Router;
use mesh_bus::EventsBus;
use mesh_gateway::{Gateway, GatewayOptions, Provider, RateLimiter};
use mesh_orchestrator::Orchestrator;
use mesh_policy::{DecisionLogger, Enforcer, PolicyService};
use mesh_provenance::ProvenanceService;
use mesh_queue::{TaskQueue, TaskQueueClient};
use mesh_registry::{AgentRegistry, AgentRegistryClient, ToolRegistry};
use mesh_service::buckets::BucketStore;
use mesh_service::{HttpClient, Readiness, SecretDir, ServiceContext, ServiceName};
use mesh_store::Store;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// The service cores of one process; a core is absent when the service runs elsewhere.
pub struct Cores {
    /// The policy set every service of this process enforces.
    pub policy: Arc<Enforcer>,
    pub policy_service: Option<Arc<PolicyService>>,
    /// Batched provenance writers (the policy service's decision log, the gateway's
    /// call records); each finishes once flushed, after the service holding it stops.
    pub log_writers: Vec<JoinHandle<()>>,
    pub orchestrator: Option<Arc<Orchestrator>>,
    pub gateway: Option<Arc<Gateway>>,
    pub queue: Option<Arc<TaskQueue>>,
    pub agents: Option<Arc<AgentRegistry>>,
    pub tools: Option<Arc<ToolRegistry>>,
    pub provenance: Option<Arc<ProvenanceService>>,
    pub bus: Option<Arc<EventsBus>>,
}

impl Cores {
    /// Builds the cores for `services`; the orchestrator reaches a queue or registry
    /// that is not among them over HTTP at the configured peer URL.
    pub async fn build(
        store: &Store,
        services: &[ServiceName],
        config: &Config,
        readiness: &Readiness,
    ) -> Result<Self> {
        let here = |s: ServiceName| services.contains(&s);
        let ctx = |s: ServiceName| ServiceContext::new(s, store.clone(), readiness.clone());
        let location = &config.policy.location;
        let policy =
            Enforcer::start(location.clone(), store.clone(), readiness.clone()).map_err(|e| {
                anyhow::anyhow!(
                    "cannot enforce the policies in the {} (--policy-dir, [policy] dir): {e}",
                    location.describe()
                )
            })?;
        let agents = here(ServiceName::AgentRegistry).then(|| {
            AgentRegistry::with_secrets(
                ctx(ServiceName::AgentRegistry),
                policy.clone(),
                config.secrets_dir.clone().map(SecretDir::new),
            )
        });
        let agent_client = || -> Result<AgentRegistryClient> {
            Ok(match &agents {
                Some(core) => AgentRegistryClient::InProcess(core.clone()),
                None => AgentRegistryClient::Http(peer(config, ServiceName::AgentRegistry)?),
            })
        };
        let queue = if here(ServiceName::TaskQueue) {
            let ctx = ctx(ServiceName::TaskQueue);
            Some(TaskQueue::new(
                ctx,
                config.queue.clone(),
                agent_client()?,
                policy.clone(),
            ))
        } else {
            None
        };
        let tools = if here(ServiceName::ToolRegistry) {
            let limits =
                BucketStore::open(config.tools.limits_store.as_deref(), "[tools] limits_store")
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            Some(ToolRegistry::new(
                ctx(ServiceName::ToolRegistry),
                policy.clone(),
                config.tools.clone(),
                agent_client()?,
                limits,
            ))
        } else {
            None
        };
        let provenance = here(ServiceName::Provenance)
            .then(|| ProvenanceService::new(ctx(ServiceName::Provenance), policy.clone()));
        let (policy_service, decision_log) = if here(ServiceName::PolicyEnforcer) {
            let (logger, writer) = DecisionLogger::spawn(store.clone());
            let service = Arc::new(PolicyService {
                ctx: ctx(ServiceName::PolicyEnforcer),
                enforcer: policy.clone(),
                logger,
            });
            (Some(service), Some(writer))
        } else {
            (None, None)
        };
        let orchestrator = if here(ServiceName::Orchestrator) {
            let queue_client = match &queue {
                Some(core) => TaskQueueClient::InProcess(core.clone()),
                None => TaskQueueClient::Http(peer(config, ServiceName::TaskQueue)?),
            };
            let ctx = ctx(ServiceName::Orchestrator);
            Some(Orchestrator::new(
                ctx,
                queue_client,
                agent_client()?,
                config.flows.clone(),
            ))
        } else {
            None
        };
        let bus = if here(ServiceName::EventsBus) {
            let backend = mesh_bus::open(config.bus.as_deref(), store)
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "cannot open the events bus (`bus` in the config file, --bus): {}",
                        e.message
                    )
                })?;
            Some(EventsBus::new(ctx(ServiceName::EventsBus), backend))
        } else {
            None
        };
        let mut log_writers: Vec<JoinHandle<()>> = decision_log.into_iter().collect();
        let gateway = if here(ServiceName::RoutingGateway) {
            let secrets = config.secrets_dir.clone().map(SecretDir::new);
            let providers = config
                .providers
                .iter()
                .map(|p| Provider::from_config(p, secrets.as_ref()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let limiter = RateLimiter::new(config.limits.clone())
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let (records, writer) = DecisionLogger::spawn(store.clone());
            log_writers.push(writer);
            let ctx = ctx(ServiceName::RoutingGateway);
            Some(
                Gateway::new(
                    ctx,
                    policy.clone(),
                    providers,
                    records,
                    GatewayOptions {
                        limiter,
                        budgets: config.budgets.clone(),
                        rules: config.routes.clone(),
                        sim_script: config.sim_script.clone(),
                        agent_breaker: config.agent_breaker,
                    },
                )
                .map_err(|e| anyhow::anyhow!("{e}"))?,
            )
        } else {
            None
        };
        Ok(Cores {
            policy,
            policy_service,
            log_writers,
            orchestrator,
            gateway,
            queue,
            agents,
            tools,
            provenance,
            bus,
        })
    }

    fn router(&self, service: ServiceName) -> Option<Router> {
        Some(match service {
            ServiceName::Orchestrator => mesh_orchestrator::router(self.orchestrator.clone()?),
            ServiceName::TaskQueue => mesh_queue::router(self.queue.clone()?),
            ServiceName::AgentRegistry => mesh_registry::agent_router(self.agents.clone()?),
            ServiceName::ToolRegistry => mesh_registry::tool_router(self.tools.clone()?),
            ServiceName::Provenance => mesh_provenance::router(self.provenance.clone()?),
            ServiceName::RoutingGateway => mesh_gateway::router(self.gateway.clone()?),
            ServiceName::PolicyEnforcer => mesh_policy::router(self.policy_service.clone()?),
            ServiceName::EventsBus => mesh_bus::router(self.bus.clone()?),
        })
    }
}

fn peer(config: &Config, service: ServiceName) -> Result<HttpClient> {
    let url = &config.peers[&service];
    HttpClient::new(service, url).map_err(|e| anyhow::anyhow!("client for {service} at {url}: {e}"))
}

/// How long the exporter may take to send the last spans on the way out.
const TELEMETRY_FLUSH: Duration = Duration::from_secs(5);
/// At least this long for the final checkpoint at shutdown, grace period or not.
const FINAL_CHECKPOINT_WAIT: Duration = Duration::from_secs(5);

/// A set of services serving on their listeners.
pub struct Running {
    pub endpoints: Vec<(ServiceName, SocketAddr)>,
    /// The flow runner and declared agents this process runs, stopped before the
    /// services so they can finish their tasks through them.
    agents: Option<AgentHost>,
    agents_stop: watch::Sender<bool>,
    log_writers: Vec<JoinHandle<()>>,
    /// Signs the last checkpoint once everything that appends has drained.
    checkpointer: Option<(watch::Sender<bool>, JoinHandle<()>)>,
    servers: JoinSet<(ServiceName, std::io::Result<()>)>,
    shutdown: watch::Sender<bool>,
    readiness: Readiness,
}

/// Binds every listener first (so a taken port fails start-up before anything serves),
/// then serves each service and starts background loops.
pub async fn start(store: &Store, services: &[ServiceName], config: &Config) -> Result<Running> {
    let mut listeners = Vec::new();
    for service in services {
        let addr = config.listen[service];
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("{service} cannot listen on {addr} (set services.{service}.listen or --listen {service}=ADDR)"))?;
        listeners.push((*service, listener));
    }
    // Before anything serves, so the first request's spans are exported.
    crate::telemetry::install(&config.telemetry);
    let readiness = Readiness::default();
    let mut cores = Cores::build(store, services, config, &readiness).await?;
    let (shutdown, watcher) = watch::channel(false);
    let mut servers = JoinSet::new();
    let mut endpoints = Vec::new();
    for (service, listener) in listeners {
        let router = cores
            .router(service)
            .with_context(|| format!("{service} has no core in this process"))?;
        endpoints.push((service, listener.local_addr()?));
        let mut stop = watcher.clone();
        servers.spawn(async move {
            let signal = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            (
                service,
                mesh_service::server::serve(listener, router, signal).await,
            )
        });
    }
    if let Some(agents) = &cores.agents {
        let sweep = (config.heartbeat_ttl / 3).max(Duration::from_millis(100));
        mesh_registry::spawn_heartbeat_sweeper(
            agents.clone(),
            config.heartbeat_ttl,
            sweep,
            watcher.clone(),
        );
        // Remote (A2A) agents send no heartbeats: they are probed as often as swept.
        mesh_registry::spawn_agent_prober(agents.clone(), sweep, watcher.clone());
    }
    if let Some(queue) = &cores.queue {
        mesh_queue::spawn_queue_sweeper(queue.clone(), watcher.clone());
    }
    let mut checkpointer = None;
    if let Some(provenance) = &cores.provenance {
        match crate::checkpoints::load_signer(config, store) {
            Ok(signer) => {
                provenance.set_signer(signer.clone());
                // Its own stop signal: the final checkpoint must come after the servers
                // and the decision-log writers have appended their last events.
                let (stop, stopped) = watch::channel(false);
                let task = mesh_provenance::checkpointer::spawn_checkpointer(
                    store.provenance.clone(),
                    signer,
                    config.checkpoints.policy,
                    stopped,
                );
                checkpointer = Some((stop, task));
                readiness.set_detail("checkpoints", serde_json::json!({"signing": true}));
            }
            // On a shared store no process may invent a key of its own (the others
            // would sign the same log with another); the log is still recorded and
            // hash-chained, it is just not signed until a key is mounted.
            Err(err) if store.backend != "sqlite" => {
                tracing::warn!(error = %format!("{err:#}"), "provenance checkpoints are off: no signing key");
                readiness.set_detail(
                    "checkpoints",
                    serde_json::json!({"signing": false, "reason": format!("{err:#}")}),
                );
            }
            Err(err) => return Err(err),
        }
    }
    // Opened here, not in `Cores::build`, so commands that only read the store neither
    // open object storage nor generate a key.
    crate::archive::attach(&mut cores, config, store, &readiness, watcher.clone())?;
    if let Some(tools) = &cores.tools {
        // Built-in tools and MCP connections; CLI commands build cores without them.
        tools.start(watcher.clone()).await;
    }
    if let Some(bus) = &cores.bus {
        mesh_bus::spawn_relay(bus.clone(), watcher.clone());
    }
    if let (Some(provenance), Some(url)) = (&cores.provenance, &config.graph) {
        // The live graph follows the log beside the service that reads it; a graph
        // that is down only makes it fall behind (reported in /readyz and /metrics).
        mesh_provenance::live::spawn_graph_projection(
            provenance.context().clone(),
            url.clone(),
            watcher.clone(),
        )
        .map_err(|e| anyhow::anyhow!("[provenance] graph: {e}"))?;
    }
    mesh_policy::spawn_reloader(
        cores.policy.clone(),
        config.policy.reload_interval,
        watcher.clone(),
    );
    let (agents_stop, agents_watch) = watch::channel(false);
    let mut urls: Endpoints = config.peers.clone();
    for (service, addr) in &endpoints {
        urls.insert(*service, format!("http://{addr}"));
    }
    // Agents run where the orchestrator runs: it spawns and supervises them.
    let agents = if cores.orchestrator.is_some() {
        Some(AgentHost::start(store, &cores, config, &urls, agents_watch).await?)
    } else {
        None
    };
    let runs_agents = agents.as_ref().is_some_and(|a| !a.started.is_empty());
    crate::peers::spawn_probes(
        crate::peers::needed(services, runs_agents, &urls),
        readiness.clone(),
        watcher.clone(),
    );
    readiness.set_ready(true);
    Ok(Running {
        agents,
        agents_stop,
        endpoints,
        log_writers: std::mem::take(&mut cores.log_writers),
        checkpointer,
        servers,
        shutdown,
        readiness,
    })
}

impl Running {
    /// The agents this process started (flow runner, declared agents).
    pub fn agents_started(&self) -> &[String] {
        self.agents.as_ref().map_or(&[], |a| a.started.as_slice())
    }

    /// Serves until `signal` (see `mesh_service::server::shutdown_signal`) resolves, or
    /// until a server fails; then drains.
    pub async fn run_until_signal(
        mut self,
        signal: impl std::future::Future<Output = ()>,
        grace: Duration,
    ) -> Result<()> {
        let failure = tokio::select! {
            _ = signal => None,
            Some(done) = self.servers.join_next() => Some(done),
        };
        if let Some(done) = failure {
            self.drain(grace).await;
            return match done {
                Ok((service, Err(err))) => Err(anyhow::anyhow!("{service} stopped: {err}")),
                Ok((service, Ok(()))) => Err(anyhow::anyhow!("{service} stopped unexpectedly")),
                Err(err) => Err(anyhow::anyhow!("a server task failed: {err}")),
            };
        }
        tracing::info!(grace_secs = grace.as_secs(), "draining");
        self.drain(grace).await;
        Ok(())
    }

    /// Drops readiness, stops accepting, and gives in-flight requests `grace` to finish.
    pub async fn drain(&mut self, grace: Duration) {
        self.readiness.set_ready(false);
        let deadline = tokio::time::Instant::now() + grace;
        let _ = self.agents_stop.send(true);
        if let Some(agents) = self.agents.take()
            && tokio::time::timeout_at(deadline, agents.finish())
                .await
                .is_err()
        {
            tracing::warn!(
                "grace period over; agents abandoned their tasks (their leases will expire)"
            );
        }
        let _ = self.shutdown.send(true);
        let log_writers = std::mem::take(&mut self.log_writers);
        let all_done = async {
            while self.servers.join_next().await.is_some() {}
            // The servers (and the loggers they held) are gone: the decision log
            // writes what is buffered and ends.
            for writer in log_writers {
                let _ = writer.await;
            }
        };
        if tokio::time::timeout_at(deadline, all_done).await.is_err() {
            tracing::warn!("grace period over; abandoning in-flight requests");
            self.servers.abort_all();
        }
        if let Some((stop, task)) = self.checkpointer.take() {
            let _ = stop.send(true);
            // Signing is quick; waiting past the grace period for it is worth it, as the
            // events since the last checkpoint would otherwise stay unsigned until the
            // next start.
            let bound = deadline.max(tokio::time::Instant::now() + FINAL_CHECKPOINT_WAIT);
            if tokio::time::timeout_at(bound, task).await.is_err() {
                tracing::warn!("the final provenance checkpoint did not finish in time");
            }
        }
        // Last, so the spans of the work that just drained go out too.
        mesh_telemetry::flush(TELEMETRY_FLUSH).await;
    }
}
