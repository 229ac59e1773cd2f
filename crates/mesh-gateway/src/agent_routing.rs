//! Agent selection (`POST /api/v1/route/task`): which registered agent should take a
//! task. The agent registry's matcher decides (`mesh_registry::match_agents`, the same
//! ranking as `POST /api/v1/agents/match`): eligible agents declare the task type as a
//! capability, are active or busy (not unhealthy, retired or draining), have a risk
//! tier covering the task's, and the `task.assign` policy would let them take it.
//! Ranked by health (active before busy), load (leases held) and how recently they
//! were heard from; ties go to the cheaper agent.

use crate::Gateway;
use mesh_service::ApiError;
use mesh_types::matching::{MatchCandidate, MatchQuery};
use mesh_types::{AgentStatus, DataClassification, RiskTier};
use serde::{Deserialize, Serialize};

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
    /// The matcher's score, for eligible agents.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub excluded: Option<String>,
}

impl From<MatchCandidate> for AgentCandidate {
    fn from(c: MatchCandidate) -> Self {
        AgentCandidate {
            agent_id: c.agent_id,
            name: c.name,
            status: c.status,
            risk_tier: c.risk_tier,
            cost_per_1k: c.cost_per_1k,
            score: Some(c.score),
            excluded: None,
        }
    }
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

impl Gateway {
    pub async fn route_task(&self, req: &TaskRouteRequest) -> Result<TaskRouteDecision, ApiError> {
        mesh_types::validate::text(
            "taskType",
            &req.task_type,
            mesh_types::task::MAX_TASK_TYPE_LEN,
        )?;
        let query = MatchQuery {
            capabilities: vec![req.task_type.clone()],
            risk_tier: Some(req.risk_tier),
            data_classification: req.data_classification,
            limit: Some(mesh_types::matching::MAX_MATCH_LIMIT),
            ..MatchQuery::default()
        };
        let matched = mesh_registry::match_agents(
            &self.ctx.store,
            &self.policy,
            self.ctx.name.as_str(),
            &query,
        )
        .await?;
        let mut eligible = matched.candidates.into_iter();
        let Some(selected) = eligible.next() else {
            return Err(ApiError::unavailable(
                "no_eligible_agent",
                format!(
                    "no agent can take a {} task of risk tier {} ({} declare the capability)",
                    req.task_type,
                    req.risk_tier,
                    matched.excluded.len()
                ),
            ));
        };
        let mut reasons = vec![format!(
            "{} of {} agents declaring {} are eligible; active before busy, then fewer leases held, then most recently heard from, then cheaper",
            eligible.len() + 1,
            eligible.len() + 1 + matched.excluded.len(),
            req.task_type
        )];
        reasons.push(format!(
            "{} scored {}: {}",
            selected.name,
            selected.score,
            selected.reasons.join(", ")
        ));
        let mut alternatives: Vec<AgentCandidate> = eligible.map(AgentCandidate::from).collect();
        for e in matched.excluded {
            reasons.push(format!("{} excluded: {}", e.name, e.reason));
            alternatives.push(AgentCandidate {
                agent_id: e.agent_id,
                name: e.name,
                status: e.status,
                risk_tier: e.risk_tier,
                cost_per_1k: None,
                score: None,
                excluded: Some(e.reason),
            });
        }
        let confidence = if alternatives.iter().any(|a| a.excluded.is_none()) {
            0.7
        } else {
            0.9
        };
        Ok(TaskRouteDecision {
            selected_agent: selected.into(),
            confidence,
            alternatives,
            reasons,
            decided_at: mesh_types::time::now(),
        })
    }
}
