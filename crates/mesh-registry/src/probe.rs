//! Active health probes of remote agents. An agent imported over A2A sends no
//! heartbeats; the registry fetches its Agent Card instead, every probe interval. A
//! card served and valid counts as a heartbeat (an unhealthy agent recovers,
//! `agent_recovered`); anything else makes a working agent unhealthy
//! (`agent_probe_failed`, with the error), so the queue stops handing it work.

use crate::agents::AgentRegistry;
use mesh_service::ApiError;
use mesh_types::agent::AgentFilter;
use mesh_types::{Agent, AgentStatus, EventDraft, PageRequest};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

/// How long a probe waits for the card.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

impl AgentRegistry {
    /// Probes every imported agent that is not retired, all at once; returns those
    /// whose status changed.
    pub async fn probe_remote_agents(self: &Arc<Self>) -> Result<Vec<Agent>, ApiError> {
        let mut probes = JoinSet::new();
        let mut cursor = None;
        loop {
            let filter = AgentFilter {
                a2a: Some(true),
                ..AgentFilter::default()
            };
            let page = self
                .context()
                .store
                .agents
                .list_agents(&filter, &PageRequest::new(Some(500), cursor))
                .await?;
            for agent in page.items {
                if agent.status != AgentStatus::Retired {
                    let me = self.clone();
                    probes.spawn(async move { me.probe(agent).await });
                }
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let mut changed = Vec::new();
        while let Some(done) = probes.join_next().await {
            match done {
                Ok(Ok(Some(agent))) => changed.push(agent),
                Ok(Ok(None)) => {}
                Ok(Err(err)) => tracing::error!(error = %err, "could not record a probe"),
                Err(err) => tracing::error!(error = %err, "a probe panicked"),
            }
        }
        Ok(changed)
    }

    /// Probes one agent and records the outcome; `Some` when its status changed.
    async fn probe(&self, agent: Agent) -> Result<Option<Agent>, ApiError> {
        let Some(endpoint) = &agent.a2a else {
            return Ok(None);
        };
        let outcome = match reqwest::Url::parse(&endpoint.card_url) {
            Ok(url) => tokio::time::timeout(PROBE_TIMEOUT, mesh_a2a::fetch_card(self.http(), &url))
                .await
                .unwrap_or_else(|_| {
                    Err(mesh_a2a::A2aError::Unreachable(format!(
                        "{url}: no answer within {} s",
                        PROBE_TIMEOUT.as_secs()
                    )))
                }),
            Err(e) => Err(mesh_a2a::A2aError::Invalid(format!("card URL: {e}"))),
        };
        let store = &self.context().store;
        let id = Some(agent.id.to_string());
        match outcome {
            Ok(_) => {
                let recovered = EventDraft::new("agent_recovered", "system", "agent", id)
                    .payload(json!({"agentId": agent.id, "reason": "probe succeeded"}));
                match store
                    .agents
                    .heartbeat(agent.id, mesh_types::time::now(), recovered)
                    .await
                {
                    Ok(now) => Ok((now.status != agent.status).then_some(now)),
                    // Retired since it was listed: nothing to record.
                    Err(mesh_store::StoreError::Conflict(_)) => Ok(None),
                    Err(err) => Err(err.into()),
                }
            }
            Err(err) => {
                let failed =
                    EventDraft::new("agent_probe_failed", "system", "agent", id).payload(json!({
                        "agentId": agent.id, "agentName": agent.name,
                        "cardUrl": endpoint.card_url, "error": err.to_string(),
                    }));
                Ok(store.agents.mark_unhealthy(agent.id, failed).await?)
            }
        }
    }
}

/// Probes imported agents every `interval` until `shutdown` fires.
pub fn spawn_agent_prober(
    registry: Arc<AgentRegistry>,
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
            match registry.probe_remote_agents().await {
                Ok(changed) => {
                    for agent in changed {
                        tracing::warn!(agent = %agent.name, id = %agent.id, status = %agent.status, "probe changed a remote agent's health");
                    }
                }
                Err(err) => tracing::error!(error = %err, "agent probes failed"),
            }
        }
    })
}
