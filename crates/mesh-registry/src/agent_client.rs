use crate::agents::{AgentListQuery, AgentRegistry};
use mesh_service::client::{Method, query_string};
use mesh_service::{ApiError, Caller, HttpClient};
use mesh_types::agent::AgentSummary;
use mesh_types::matching::{MatchQuery, MatchResult};
use mesh_types::{Agent, NewAgent, Page};
use std::sync::Arc;
use uuid::Uuid;

/// How other services reach the agent registry: in-process or over HTTP.
#[derive(Clone)]
pub enum AgentRegistryClient {
    InProcess(Arc<AgentRegistry>),
    Http(HttpClient),
}

impl AgentRegistryClient {
    pub async fn register(&self, caller: &Caller, new: NewAgent) -> Result<Agent, ApiError> {
        match self {
            Self::InProcess(core) => core.register(&caller.principal, new).await,
            Self::Http(http) => {
                http.send(Method::POST, "/api/v1/agents", &caller.token, Some(&new))
                    .await
            }
        }
    }

    pub async fn heartbeat(&self, caller: &Caller, id: Uuid) -> Result<Agent, ApiError> {
        match self {
            Self::InProcess(core) => core.heartbeat(&caller.principal, id).await,
            Self::Http(http) => {
                http.send(
                    Method::POST,
                    &format!("/api/v1/agents/{id}/heartbeat"),
                    &caller.token,
                    None::<&()>,
                )
                .await
            }
        }
    }

    pub async fn retire(&self, caller: &Caller, id: Uuid) -> Result<Agent, ApiError> {
        match self {
            Self::InProcess(core) => core.retire(&caller.principal, id).await,
            Self::Http(http) => {
                http.send(
                    Method::POST,
                    &format!("/api/v1/agents/{id}/retire"),
                    &caller.token,
                    None::<&()>,
                )
                .await
            }
        }
    }

    /// No new work for the agent; it is retired once its leases are done.
    pub async fn drain(&self, caller: &Caller, id: Uuid) -> Result<Agent, ApiError> {
        match self {
            Self::InProcess(core) => core.drain(&caller.principal, id).await,
            Self::Http(http) => {
                http.send(
                    Method::POST,
                    &format!("/api/v1/agents/{id}/drain"),
                    &caller.token,
                    None::<&()>,
                )
                .await
            }
        }
    }

    pub async fn get(&self, caller: &Caller, id: Uuid) -> Result<Agent, ApiError> {
        match self {
            Self::InProcess(core) => core.get(id).await,
            Self::Http(http) => {
                http.send(
                    Method::GET,
                    &format!("/api/v1/agents/{id}"),
                    &caller.token,
                    None::<&()>,
                )
                .await
            }
        }
    }

    pub async fn list(
        &self,
        caller: &Caller,
        query: AgentListQuery,
    ) -> Result<Page<Agent>, ApiError> {
        match self {
            Self::InProcess(core) => core.list(query).await,
            Self::Http(http) => {
                let qs = query_string(&query)?;
                http.send(
                    Method::GET,
                    &format!("/api/v1/agents{qs}"),
                    &caller.token,
                    None::<&()>,
                )
                .await
            }
        }
    }

    pub async fn summary(&self, caller: &Caller) -> Result<AgentSummary, ApiError> {
        match self {
            Self::InProcess(core) => core.summary().await,
            Self::Http(http) => {
                http.send(
                    Method::GET,
                    "/api/v1/agents/summary",
                    &caller.token,
                    None::<&()>,
                )
                .await
            }
        }
    }

    /// Agents able to take work described by `query`, best first.
    pub async fn match_agents(
        &self,
        caller: &Caller,
        query: &MatchQuery,
    ) -> Result<MatchResult, ApiError> {
        match self {
            Self::InProcess(core) => core.match_agents(query).await,
            Self::Http(http) => {
                http.send(
                    Method::POST,
                    "/api/v1/agents/match",
                    &caller.token,
                    Some(query),
                )
                .await
            }
        }
    }
}
