use mesh_policy::{Enforcer, Point};
use mesh_service::{ApiError, SecretDir, ServiceContext};
use mesh_types::agent::{A2aEndpoint, AgentFilter, AgentSummary};
use mesh_types::{
    Agent, AgentRole, AgentStatus, EventDraft, NewAgent, Page, PageRequest, Principal,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// The agent registry's core.
pub struct AgentRegistry {
    ctx: ServiceContext,
    policy: Arc<Enforcer>,
    /// Mounted-secrets directory agents read from, if configured.
    secrets_dir: Option<SecretDir>,
    /// For Agent Cards (import, probes). It follows no redirect: the egress policy
    /// judged the host it was given, not wherever a redirect points.
    http: reqwest::Client,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentListQuery {
    pub status: Option<AgentStatus>,
    pub role: Option<AgentRole>,
    pub capability: Option<String>,
    /// `true`: only agents imported over A2A; `false`: only the others.
    pub a2a: Option<bool>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

impl AgentRegistry {
    pub fn new(ctx: ServiceContext, policy: Arc<Enforcer>) -> Arc<Self> {
        Self::with_secrets(ctx, policy, None)
    }

    pub fn with_secrets(
        ctx: ServiceContext,
        policy: Arc<Enforcer>,
        secrets_dir: Option<SecretDir>,
    ) -> Arc<Self> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Arc::new(Self {
            ctx,
            policy,
            secrets_dir,
            http,
        })
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub(crate) fn policy(&self) -> &Enforcer {
        &self.policy
    }

    pub(crate) fn secrets_dir(&self) -> Option<&SecretDir> {
        self.secrets_dir.as_ref()
    }

    pub fn context(&self) -> &ServiceContext {
        &self.ctx
    }

    /// Registers an agent if the `agent.register` policy point admits it; the decision
    /// is written with the registration.
    pub async fn register(&self, caller: &Principal, new: NewAgent) -> Result<Agent, ApiError> {
        self.register_with(caller, new, None, Vec::new()).await
    }

    /// Registration, for agents of this process's own making too (imports): `a2a` is
    /// where a remote agent is reached; `audit` holds decisions taken on the way, written
    /// with the registration.
    pub(crate) async fn register_with(
        &self,
        caller: &Principal,
        new: NewAgent,
        a2a: Option<A2aEndpoint>,
        mut audit: Vec<EventDraft>,
    ) -> Result<Agent, ApiError> {
        new.validate()?;
        let service = self.ctx.name.as_str();
        let (new, decision) = self
            .policy
            .admit_new(Point::AgentRegister, "agent", caller, service, new)
            .await?;
        new.validate()?;
        let mut agent = new.into_agent(Uuid::now_v7(), mesh_types::time::now());
        agent.a2a = a2a;
        let event = EventDraft::new(
            "agent_registered",
            &caller.name,
            "agent",
            Some(agent.id.to_string()),
        )
        .payload(json!({
            "agentId": agent.id,
            "agentName": agent.name,
            "version": agent.version,
            "role": agent.role,
            "riskTier": agent.risk_tier,
            "capabilities": agent.capabilities,
            "modelPreference": agent.model_preference,
            "maxConcurrency": agent.max_concurrency,
            "a2a": agent.a2a,
            "keyId": caller.key_id,
        }));
        audit.splice(0..0, [event, decision]);
        self.ctx.store.agents.insert_agent(&agent, audit).await?;
        Ok(agent)
    }

    pub async fn get(&self, id: Uuid) -> Result<Agent, ApiError> {
        self.ctx
            .store
            .agents
            .get_agent(id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("agent {id} not found")))
    }

    pub async fn list(&self, query: AgentListQuery) -> Result<Page<Agent>, ApiError> {
        let filter = AgentFilter {
            status: query.status,
            role: query.role,
            capability: query.capability,
            a2a: query.a2a,
        };
        let page = PageRequest::new(query.limit, query.cursor);
        Ok(self.ctx.store.agents.list_agents(&filter, &page).await?)
    }

    pub async fn heartbeat(&self, caller: &Principal, id: Uuid) -> Result<Agent, ApiError> {
        let recovered = EventDraft::new(
            "agent_recovered",
            &caller.name,
            "agent",
            Some(id.to_string()),
        )
        .payload(json!({"agentId": id, "reason": "heartbeat received"}));
        Ok(self
            .ctx
            .store
            .agents
            .heartbeat(id, mesh_types::time::now(), recovered)
            .await?)
    }

    pub async fn retire(&self, caller: &Principal, id: Uuid) -> Result<Agent, ApiError> {
        let event = EventDraft::new("agent_retired", &caller.name, "agent", Some(id.to_string()))
            .payload(json!({"agentId": id}));
        Ok(self.ctx.store.agents.retire_agent(id, vec![event]).await?)
    }

    pub async fn summary(&self) -> Result<AgentSummary, ApiError> {
        Ok(self.ctx.store.agents.agent_summary().await?)
    }

    /// Marks agents silent for longer than `ttl` unhealthy; returns them.
    pub async fn expire_heartbeats(&self, ttl: Duration) -> Result<Vec<Agent>, ApiError> {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let cutoff = mesh_types::time::now() - mesh_types::time::millis(ttl_ms);
        let expired = self
            .ctx
            .store
            .agents
            .expire_heartbeats(
                cutoff,
                Arc::new(move |a: &Agent| {
                    EventDraft::new(
                        "agent_heartbeat_expired",
                        "system",
                        "agent",
                        Some(a.id.to_string()),
                    )
                    .payload(json!({
                        "agentId": a.id,
                        "agentName": a.name,
                        "lastHeartbeat": a.last_heartbeat.map(|t| mesh_types::time::format(&t)),
                        "ttlMs": ttl_ms,
                    }))
                }),
            )
            .await?;
        Ok(expired)
    }
}

/// Every `interval` until `shutdown` fires: marks agents silent past `ttl` unhealthy,
/// retires drained agents and balances busy ones.
pub fn spawn_heartbeat_sweeper(
    registry: Arc<AgentRegistry>,
    ttl: Duration,
    interval: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            match registry.expire_heartbeats(ttl).await {
                Ok(expired) => {
                    for agent in expired {
                        tracing::warn!(agent = %agent.name, id = %agent.id, "agent missed its heartbeat; marked unhealthy");
                    }
                }
                Err(err) => tracing::error!(error = %err, "heartbeat sweep failed"),
            }
            match registry.settle().await {
                Ok(changed) => {
                    for agent in changed {
                        tracing::info!(agent = %agent.name, id = %agent.id, status = %agent.status, "agent lifecycle moved on");
                    }
                }
                Err(err) => tracing::error!(error = %err, "lifecycle sweep failed"),
            }
        }
    })
}
