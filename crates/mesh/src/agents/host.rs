//! Starting the agents of this process, and stopping them with it.
//!
//! Every declared agent passes the `agent.spawn` policy point before it starts: a deny
//! is recorded and the agent is not started; the mesh carries on without it.

use super::decl::{AgentDecl, SpawnMode};
use super::supervise::{self, ChildSpec};
use crate::compose::Cores;
use crate::config::Config;
use anyhow::{Context, Result};
use mesh_agents::{BuiltinAgent, ModelClient, ToolClient};
use mesh_orchestrator::flows::FlowRunner;
use mesh_policy::{Actor, Point, Resource, inputs};
use mesh_sdk::{BaseAgent, MeshClient, Worker, WorkerOptions};
use mesh_service::SecretDir;
use mesh_service::ServiceName;
use mesh_service::auth::NewKey;
use mesh_store::Store;
use mesh_types::{EventDraft, Principal, Role};
use serde_json::json;
use std::collections::BTreeMap;
use tokio::sync::watch;
use tokio::task::JoinSet;
use uuid::Uuid;

/// How often the registry is rescanned for imported A2A agents to proxy.
const A2A_RESCAN: std::time::Duration = std::time::Duration::from_secs(2);

/// Base URLs of the services, for clients that must speak HTTP.
pub type Endpoints = BTreeMap<ServiceName, String>;

/// The principal the mesh's own agents act as in-process.
pub fn system_principal(name: &str, role: Role) -> Principal {
    Principal {
        key_id: Uuid::nil(),
        name: name.to_string(),
        roles: vec![role],
        tenant: mesh_service::auth::default_tenant(),
    }
}

/// The running agents; `finish` waits for them to drain.
pub struct AgentHost {
    /// What was started, for the start-up banner: `name (mode)`.
    pub started: Vec<String>,
    running: JoinSet<()>,
    store: Store,
    /// Keys minted for agents that reach the mesh over HTTP; revoked on the way out.
    keys: Vec<Uuid>,
}

/// How this process's agents reach the services.
struct Reach<'a> {
    cores: &'a Cores,
    store: &'a Store,
    endpoints: &'a Endpoints,
    keys: Vec<Uuid>,
}

impl Reach<'_> {
    /// A key for an agent of this process that must use HTTP.
    async fn key(&mut self, name: &str, role: Role) -> Result<String> {
        let new = NewKey {
            name: format!("{name} (spawned by the mesh)"),
            roles: vec![role],
            tenant: mesh_service::auth::default_tenant(),
        };
        let (key, record) = mesh_service::auth::create_key(self.store, "system", new)
            .await
            .map_err(|e| anyhow::anyhow!("cannot create a key for {name}: {e}"))?;
        self.keys.push(record.id);
        Ok(key)
    }

    async fn mesh(&mut self, name: &str, role: Role) -> Result<MeshClient> {
        if let (Some(queue), Some(agents)) = (&self.cores.queue, &self.cores.agents) {
            return Ok(MeshClient::in_process(
                queue.clone(),
                agents.clone(),
                system_principal(name, role),
            ));
        }
        let key = self.key(name, role).await?;
        MeshClient::http(
            &self.endpoints[&ServiceName::TaskQueue],
            &self.endpoints[&ServiceName::AgentRegistry],
            &key,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))
    }

    async fn tools(&mut self, name: &str) -> Result<ToolClient> {
        if let Some(tools) = &self.cores.tools {
            return Ok(ToolClient::InProcess(tools.clone()));
        }
        let key = self.key(name, Role::Agent).await?;
        Ok(ToolClient::http(
            &self.endpoints[&ServiceName::ToolRegistry],
            &key,
        ))
    }

    async fn model(&mut self, name: &str) -> Result<ModelClient> {
        if let Some(gateway) = &self.cores.gateway {
            return Ok(ModelClient::InProcess {
                gateway: gateway.clone(),
                principal: system_principal(name, Role::Agent),
            });
        }
        let key = self.key(name, Role::Agent).await?;
        Ok(ModelClient::http(
            &self.endpoints[&ServiceName::RoutingGateway],
            &key,
        ))
    }
}

/// A short random suffix: agent names are unique in the registry for good.
pub(super) fn suffix() -> String {
    Uuid::new_v4().simple().to_string()[..6].to_string()
}

/// The model the built-in agents ask when their declaration names none: a real
/// provider's if one is configured, so the same demo uses it.
pub fn default_model(config: &Config) -> String {
    config
        .providers
        .iter()
        .find_map(|p| p.models.first().cloned())
        .unwrap_or_else(|| "sim-small".to_string())
}

impl AgentHost {
    /// Starts the flow runner (if the orchestrator is here) and every declared agent.
    pub async fn start(
        store: &Store,
        cores: &Cores,
        config: &Config,
        endpoints: &Endpoints,
        stop: watch::Receiver<bool>,
    ) -> Result<Self> {
        let mut reach = Reach {
            cores,
            store,
            endpoints,
            keys: vec![],
        };
        let mut running = JoinSet::new();
        let mut started = Vec::new();
        // A runner with no staged flow to run would only hold a registration.
        if cores.orchestrator.is_some() && !config.flows.staged_types().is_empty() {
            let name = format!("flow-runner-{}", suffix());
            let runner = FlowRunner::new(name.clone(), config.flows.clone(), store.clone());
            let client = reach.mesh(&name, Role::Admin).await?;
            let options = WorkerOptions {
                concurrency: 16,
                lease_ms: config.queue.lease_ms,
                ..WorkerOptions::default()
            };
            spawn_worker(&mut running, runner, client, options, stop.clone());
            started.push(format!("{name} (flow runner)"));
        }
        for decl in &config.agents {
            for replica in 1..=decl.replicas {
                let name = format!("{}-{replica}-{}", decl.name, suffix());
                if !spawn_allowed(cores, store, decl, &name).await? {
                    continue;
                }
                match decl.mode {
                    SpawnMode::InProcess => {
                        let agent = BuiltinAgent {
                            kind: decl.kind()?,
                            name: name.clone(),
                            model: decl.model.clone().unwrap_or_else(|| default_model(config)),
                            risk_tier: decl.tier(),
                            capabilities: decl.task_types()?,
                            prompts: config.prompts.clone(),
                            client: reach.model(&name).await?,
                            tools: Some(reach.tools(&name).await?),
                        };
                        let client = reach.mesh(&name, Role::Agent).await?;
                        let options = WorkerOptions {
                            concurrency: decl.concurrency.unwrap_or(2),
                            lease_ms: config.queue.lease_ms,
                            ..WorkerOptions::default()
                        };
                        record_spawn(store, decl, &name, None).await;
                        spawn_worker(&mut running, agent, client, options, stop.clone());
                        started.push(format!("{name} ({}, in-process)", decl.kind));
                    }
                    SpawnMode::Process => {
                        let base = format!("{}-{replica}", decl.name);
                        let key = reach.key(&base, Role::Agent).await?;
                        started.push(format!("{base}-* ({}, worker process)", decl.kind));
                        let spec = ChildSpec::new(decl, base, key, endpoints, config)?;
                        running.spawn(supervise::run(spec, store.clone(), stop.clone()));
                    }
                }
            }
        }
        // Remote agents imported over A2A work through proxy workers run here; the
        // registry is rescanned so agents imported at runtime start working.
        let client = reach.mesh("a2a-proxy", Role::Agent).await?;
        let secrets = config.secrets_dir.clone().map(SecretDir::new);
        let proxies = mesh_sdk::spawn_a2a_supervisor(client, A2A_RESCAN, secrets, stop.clone());
        running.spawn(async move {
            if let Err(err) = proxies.await {
                tracing::error!(error = %err, "the A2A proxy supervisor failed");
            }
        });
        Ok(AgentHost {
            started,
            running,
            store: store.clone(),
            keys: reach.keys,
        })
    }

    /// Waits for every agent to finish its work and retire, then revokes their keys.
    pub async fn finish(mut self) {
        while self.running.join_next().await.is_some() {}
        for id in self.keys {
            if let Err(err) = mesh_service::auth::revoke_key(&self.store, "system", id).await {
                tracing::warn!(error = %err, "could not revoke a spawned agent's key");
            }
        }
    }
}

fn spawn_worker<A: BaseAgent>(
    running: &mut JoinSet<()>,
    agent: A,
    client: MeshClient,
    options: WorkerOptions,
    mut stop: watch::Receiver<bool>,
) {
    running.spawn(async move {
        let name = agent.descriptor().name;
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        match Worker::new(agent, client, options).run(shutdown).await {
            Ok(report) => tracing::info!(agent = %name, ?report, "agent stopped"),
            Err(err) => tracing::error!(agent = %name, error = %err, "agent could not run"),
        }
    });
}

/// The `agent.spawn` policy point for a declared agent; the decision is recorded
/// either way.
async fn spawn_allowed(cores: &Cores, store: &Store, decl: &AgentDecl, name: &str) -> Result<bool> {
    let principal = system_principal("mesh", Role::Admin);
    let resource = Resource {
        kind: Some("agent".into()),
        id: Some(name.to_string()),
        classification: None,
        attributes: json!({
            "name": name, "kind": decl.kind, "role": decl.kind()?.role(),
            "riskTier": decl.tier(), "capabilities": decl.task_types()?,
            "mode": decl.mode, "model": decl.model,
        }),
    };
    let actor = Actor {
        name: "mesh".into(),
        agent: None,
        task: None,
    };
    let ctx = inputs::context(inputs::principal(&principal), resource, "mesh");
    match cores.policy.admit(Point::AgentSpawn, ctx, &actor).await {
        Ok(verdict) => {
            store
                .provenance
                .append(vec![verdict.audit])
                .await
                .context("recording the agent.spawn decision")?;
            Ok(true)
        }
        Err(refusal) => {
            tracing::warn!(agent = %name, reason = %refusal.message, "policy refused to spawn the agent");
            Ok(false)
        }
    }
}

/// `agent_spawned`: the first step of a declared agent's recorded lifecycle.
pub(super) async fn record_spawn(store: &Store, decl: &AgentDecl, name: &str, pid: Option<u32>) {
    let event = EventDraft::new("agent_spawned", "mesh", "agent", None).payload(json!({
        "agentName": name, "kind": decl.kind, "mode": decl.mode, "pid": pid,
    }));
    if let Err(err) = store.provenance.append(vec![event]).await {
        tracing::warn!(agent = %name, error = %err, "could not record the spawn");
    }
}
