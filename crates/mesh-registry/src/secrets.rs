//! Secrets for agents, read through the `secret.read` policy point (per-agent scopes).
//!
//! The store is a mounted-secrets directory (one file per secret, the file name is the
//! secret's name), as Kubernetes and Docker mount them: secrets never sit in config
//! files or environment variables. The provenance event names the secret and the
//! agent, never the value.

use crate::agents::AgentRegistry;
use mesh_policy::{Actor, Point, Resource, inputs};
use mesh_service::ApiError;
use mesh_service::secrets::SecretError;
use mesh_types::{AgentStatus, EventDraft};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretValue {
    pub name: String,
    pub value: String,
}

impl AgentRegistry {
    pub async fn read_secret(&self, agent_id: Uuid, name: &str) -> Result<SecretValue, ApiError> {
        let dir = self
            .secrets_dir()
            .ok_or_else(|| ApiError::not_found("no secret store is configured ([secrets] dir)"))?;
        if let Err(e @ SecretError::BadName(_)) = dir.read(name) {
            return Err(ApiError::invalid("name", format!("name: {e}")));
        }
        let agent = self.get(agent_id).await?;
        if agent.status == AgentStatus::Retired {
            return Err(ApiError::conflict(format!(
                "agent {} is retired",
                agent.name
            )));
        }
        let resource = Resource {
            kind: Some("secret".into()),
            id: Some(name.to_string()),
            classification: Some("restricted".into()),
            attributes: json!({}),
        };
        let actor = Actor {
            name: agent.name.clone(),
            agent: Some((agent.id, agent.name.clone())),
            task: None,
        };
        let ctx = inputs::context(
            inputs::agent(&agent),
            resource,
            self.context().name.as_str(),
        );
        let verdict = self.policy().admit(Point::SecretRead, ctx, &actor).await?;
        let value = dir.read(name).map_err(|e| match e {
            SecretError::Missing(_) => ApiError::not_found(e.to_string()),
            _ => ApiError::internal(e.to_string()),
        })?;
        let event = EventDraft::new("secret_read", &agent.name, "secret", Some(name.to_string()))
            .payload(json!({"secret": name, "agentId": agent.id, "agentName": agent.name}));
        self.context()
            .store
            .provenance
            .append(vec![verdict.audit, event])
            .await?;
        Ok(SecretValue {
            name: name.to_string(),
            value,
        })
    }
}
