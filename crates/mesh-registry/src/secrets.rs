//! Secrets for agents, read through the `secret.read` policy point (per-agent scopes).
//!
//! The store is a mounted-secrets directory (one file per secret, the file name is the
//! secret's name), as Kubernetes and Docker mount them: secrets never sit in config
//! files or environment variables. The provenance event names the secret and the
//! agent, never the value.

use crate::agents::AgentRegistry;
use mesh_policy::{Actor, Point, Resource, inputs};
use mesh_service::ApiError;
use mesh_types::{AgentStatus, EventDraft};
use serde::Serialize;
use serde_json::json;
use std::path::PathBuf;
use uuid::Uuid;

/// Largest secret served.
const MAX_SECRET_BYTES: u64 = 64 * 1024;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretValue {
    pub name: String,
    pub value: String,
}

impl AgentRegistry {
    pub async fn read_secret(&self, agent_id: Uuid, name: &str) -> Result<SecretValue, ApiError> {
        let valid = !name.is_empty()
            && name.len() <= 128
            && !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !valid {
            return Err(ApiError::invalid(
                "name",
                "name: a secret name is 1-128 letters, digits, `_`, `-` or `.`, not starting with `.`",
            ));
        }
        let dir: PathBuf = self
            .secrets_dir()
            .ok_or_else(|| ApiError::not_found("no secret store is configured ([secrets] dir)"))?
            .to_path_buf();
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
        let path = dir.join(name);
        let value = match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() && meta.len() <= MAX_SECRET_BYTES => {
                std::fs::read_to_string(&path)
                    .map_err(|e| ApiError::internal(format!("secret {name}: {e}")))?
            }
            Ok(meta) if meta.is_file() => {
                return Err(ApiError::internal(format!(
                    "secret {name} is larger than {MAX_SECRET_BYTES} bytes"
                )));
            }
            _ => return Err(ApiError::not_found(format!("no secret named {name}"))),
        };
        let event = EventDraft::new("secret_read", &agent.name, "secret", Some(name.to_string()))
            .payload(json!({"secret": name, "agentId": agent.id, "agentName": agent.name}));
        self.context()
            .store
            .provenance
            .append(vec![verdict.audit, event])
            .await?;
        Ok(SecretValue {
            name: name.to_string(),
            value: value.trim_end_matches(['\n', '\r']).to_string(),
        })
    }
}
