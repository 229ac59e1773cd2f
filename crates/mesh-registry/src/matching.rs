//! Capability matching over the registry (`POST /api/v1/agents/match`), shared with the
//! gateway's `POST /api/v1/route/task`: the agents that declare the first requested
//! capability, the leases each holds, and what `task.assign` would say, ranked by
//! [`mesh_types::matching::rank`].

use crate::agents::AgentRegistry;
use mesh_policy::{Enforcer, Point, PolicyContext, Resource, inputs};
use mesh_service::ApiError;
use mesh_store::Store;
use mesh_types::agent::AgentFilter;
use mesh_types::matching::{MatchQuery, MatchResult};
use mesh_types::{Agent, PageRequest};
use serde_json::json;

/// Agents considered per match (the registry is read in one page).
const MAX_CONSIDERED: u32 = 500;

/// Ranks the registered agents for `query`, asking `policy` whether each eligible one
/// may take such work. Reads the `agents` table and the leases of running tasks.
pub async fn match_agents(
    store: &Store,
    policy: &Enforcer,
    service: &str,
    query: &MatchQuery,
) -> Result<MatchResult, ApiError> {
    query.validate()?;
    let filter = AgentFilter {
        role: query.role,
        capability: query.capabilities.first().cloned(),
        ..AgentFilter::default()
    };
    let agents = store
        .agents
        .list_agents(&filter, &PageRequest::new(Some(MAX_CONSIDERED), None))
        .await?
        .items;
    let loads = store.agents.agent_loads().await?;
    let now = mesh_types::time::now();
    Ok(mesh_types::matching::rank(
        query,
        agents,
        &loads,
        now,
        |agent| assign_refusal(policy, service, query, agent),
    ))
}

/// What `task.assign` would say about `agent` taking such work, if it refuses. Not
/// recorded: the assignment itself is decided, and recorded, when the agent claims.
fn assign_refusal(
    policy: &Enforcer,
    service: &str,
    query: &MatchQuery,
    agent: &Agent,
) -> Option<String> {
    let mut attributes = json!({"riskTier": query.risk_tier.unwrap_or_default()});
    if let Some(task_type) = query.capabilities.first() {
        attributes["taskType"] = json!(task_type);
    }
    let ctx = PolicyContext {
        action: Point::TaskAssign.as_str().into(),
        subject: inputs::agent(agent),
        resource: Resource {
            kind: Some("task".into()),
            id: None,
            classification: query.data_classification.map(|c| c.as_str().to_string()),
            attributes,
        },
        environment: inputs::environment(service),
    };
    let (decision, _, _) = policy.decide(&ctx);
    (!decision.permits()).then(|| format!("policy: {}", decision.reason))
}

impl AgentRegistry {
    pub async fn match_agents(&self, query: &MatchQuery) -> Result<MatchResult, ApiError> {
        let ctx = self.context();
        match_agents(&ctx.store, self.policy(), ctx.name.as_str(), query).await
    }
}
