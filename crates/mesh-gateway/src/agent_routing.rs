//! Agent selection (`POST /api/v1/route/task`): which registered agent should take a
//! task. Eligible: declares the task type as a capability, is active or busy (not
//! unhealthy or retired), has a risk tier covering the task's, and the `task.assign`
//! policy would let it take the task. Ranked: idle before busy, then cheaper (its cost
//! profile), then the most recently heard from.

use crate::Gateway;
use mesh_policy::{PolicyContext, Resource, inputs};
use mesh_service::ApiError;
use mesh_types::agent::AgentFilter;
use mesh_types::{Agent, AgentStatus, DataClassification, PageRequest, RiskTier};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Agents considered per decision (the registry is read in one page).
const MAX_CANDIDATES: u32 = 500;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskRouteRequest {
    pub task_type: String,
    #[serde(default)]
    pub risk_tier: RiskTier,
    #[serde(default)]
    pub data_classification: Option<DataClassification>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentCandidate {
    pub agent_id: uuid::Uuid,
    pub name: String,
    pub status: AgentStatus,
    pub risk_tier: RiskTier,
    pub cost_per_1k: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub excluded: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskRouteDecision {
    pub selected_agent: AgentCandidate,
    pub confidence: f64,
    pub alternatives: Vec<AgentCandidate>,
    pub reasons: Vec<String>,
    #[serde(with = "mesh_types::time::rfc3339_micros")]
    pub decided_at: mesh_types::time::Timestamp,
}

fn rank(tier: RiskTier) -> u8 {
    match tier {
        RiskTier::Low => 0,
        RiskTier::Medium => 1,
        RiskTier::High => 2,
        RiskTier::Critical => 3,
    }
}

impl Gateway {
    pub async fn route_task(&self, req: &TaskRouteRequest) -> Result<TaskRouteDecision, ApiError> {
        mesh_types::validate::text(
            "taskType",
            &req.task_type,
            mesh_types::task::MAX_TASK_TYPE_LEN,
        )?;
        let filter = AgentFilter {
            capability: Some(req.task_type.clone()),
            ..AgentFilter::default()
        };
        let agents = self
            .ctx
            .store
            .agents
            .list_agents(&filter, &PageRequest::new(Some(MAX_CANDIDATES), None))
            .await?
            .items;
        let mut eligible: Vec<(AgentCandidate, Agent)> = Vec::new();
        let mut excluded = Vec::new();
        for agent in agents {
            let mut c = AgentCandidate {
                agent_id: agent.id,
                name: agent.name.clone(),
                status: agent.status,
                risk_tier: agent.risk_tier,
                cost_per_1k: agent
                    .cost_profile
                    .as_ref()
                    .map(|p| p.input_cost_per_1k_tokens + p.output_cost_per_1k_tokens),
                excluded: None,
            };
            c.excluded = if !matches!(agent.status, AgentStatus::Active | AgentStatus::Busy) {
                Some(format!("agent is {}", agent.status))
            } else if rank(agent.risk_tier) < rank(req.risk_tier) {
                Some(format!(
                    "risk tier {} does not cover {}",
                    agent.risk_tier, req.risk_tier
                ))
            } else {
                self.assign_refusal(req, &agent)
            };
            match c.excluded {
                Some(_) => excluded.push(c),
                None => eligible.push((c, agent)),
            }
        }
        eligible.sort_by(|(a, x), (b, y)| {
            (a.status == AgentStatus::Busy)
                .cmp(&(b.status == AgentStatus::Busy))
                .then(
                    a.cost_per_1k
                        .unwrap_or(0.0)
                        .total_cmp(&b.cost_per_1k.unwrap_or(0.0)),
                )
                .then(y.last_heartbeat.cmp(&x.last_heartbeat))
        });
        let mut eligible: Vec<AgentCandidate> = eligible.into_iter().map(|(c, _)| c).collect();
        if eligible.is_empty() {
            return Err(ApiError::unavailable(
                "no_eligible_agent",
                format!(
                    "no agent can take a {} task of risk tier {} ({} declare the capability)",
                    req.task_type,
                    req.risk_tier,
                    excluded.len()
                ),
            ));
        }
        let selected = eligible.remove(0);
        let mut reasons = vec![format!(
            "{} of {} agents declaring {} are eligible; idle first, then cheaper, then most recently heard from",
            eligible.len() + 1,
            eligible.len() + 1 + excluded.len(),
            req.task_type
        )];
        for c in &excluded {
            reasons.push(format!(
                "{} excluded: {}",
                c.name,
                c.excluded.as_deref().unwrap_or("")
            ));
        }
        let confidence = if eligible.is_empty() { 0.9 } else { 0.7 };
        Ok(TaskRouteDecision {
            selected_agent: selected,
            confidence,
            alternatives: eligible.into_iter().chain(excluded).collect(),
            reasons,
            decided_at: mesh_types::time::now(),
        })
    }

    /// What `task.assign` would say about this agent for such a task (not recorded: the
    /// assignment itself is decided and recorded when the agent claims).
    fn assign_refusal(&self, req: &TaskRouteRequest, agent: &Agent) -> Option<String> {
        let ctx = PolicyContext {
            action: mesh_policy::Point::TaskAssign.as_str().into(),
            subject: inputs::agent(agent),
            resource: Resource {
                kind: Some("task".into()),
                id: None,
                classification: req.data_classification.map(|c| c.as_str().to_string()),
                attributes: json!({"taskType": req.task_type, "riskTier": req.risk_tier}),
            },
            environment: inputs::environment(self.ctx.name.as_str()),
        };
        let (decision, _, _) = self.policy.decide(&ctx);
        (!decision.permits()).then(|| format!("policy: {}", decision.reason))
    }
}
