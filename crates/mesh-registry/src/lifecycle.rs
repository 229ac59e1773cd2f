//! The lifecycle past registration: `active → busy → unhealthy → retired`, with drains.
//!
//! A drain marks the agent; the task queue then refuses it new work (409
//! `agent_draining`) while it finishes the leases it holds. The registry's sweep
//! retires a draining agent once it holds none (`agent_drained`, then
//! `agent_retired`), and moves agents that declare a concurrency between `active` and
//! `busy` by the leases they hold (`agent_busy`, `agent_available`).

use crate::agents::AgentRegistry;
use mesh_service::ApiError;
use mesh_types::{Agent, AgentStatus, EventDraft, Principal};
use serde_json::json;
use std::sync::Arc;
use uuid::Uuid;

impl AgentRegistry {
    /// Starts draining an agent; draining one already draining changes nothing.
    pub async fn drain(&self, caller: &Principal, id: Uuid) -> Result<Agent, ApiError> {
        let held = self
            .context()
            .store
            .agents
            .agent_loads()
            .await?
            .get(&id)
            .copied()
            .unwrap_or(0);
        let event = EventDraft::new(
            "agent_draining",
            &caller.name,
            "agent",
            Some(id.to_string()),
        )
        .payload(json!({"agentId": id, "leasesHeld": held, "keyId": caller.key_id}));
        Ok(self
            .context()
            .store
            .agents
            .drain_agent(id, mesh_types::time::now(), vec![event])
            .await?)
    }

    /// One pass of the lifecycle sweep: retire drained agents, then balance busy ones.
    /// Returns the agents whose status changed.
    pub async fn settle(&self) -> Result<Vec<Agent>, ApiError> {
        let store = &self.context().store;
        let mut changed = store
            .agents
            .retire_drained(Arc::new(|a: &Agent| {
                let id = Some(a.id.to_string());
                let since = a.draining_since.map(|t| mesh_types::time::format(&t));
                vec![
                    EventDraft::new("agent_drained", "system", "agent", id.clone()).payload(
                        json!({"agentId": a.id, "agentName": a.name, "drainingSince": since}),
                    ),
                    EventDraft::new("agent_retired", "system", "agent", id)
                        .payload(json!({"agentId": a.id, "reason": "drained"})),
                ]
            }))
            .await?;
        let balanced = store
            .agents
            .balance_busy(Arc::new(|a: &Agent| {
                let action = if a.status == AgentStatus::Busy {
                    "agent_busy"
                } else {
                    "agent_available"
                };
                EventDraft::new(action, "system", "agent", Some(a.id.to_string())).payload(
                    json!({"agentId": a.id, "agentName": a.name, "maxConcurrency": a.max_concurrency}),
                )
            }))
            .await?;
        changed.extend(balanced);
        Ok(changed)
    }
}
