//! Importing a remote A2A agent (`POST /api/v1/agents/import`): fetch its Agent Card,
//! check it, and register the agent with its JSON-RPC endpoint through the same
//! `agent.register` policy point as any registration. The hosts the registry reaches
//! (the card's, and the endpoint's when it differs) are first put to the `egress`
//! policy, since the URL comes from the caller.

use crate::agents::AgentRegistry;
use axum::http::StatusCode;
use mesh_a2a::{A2aError, AgentCard};
use mesh_policy::{Point, Resource, inputs};
use mesh_service::ApiError;
use mesh_types::agent::A2aEndpoint;
use mesh_types::{Agent, AgentRole, EventDraft, NewAgent, Principal, RiskTier};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Body of `POST /api/v1/agents/import`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImportBody {
    /// The agent's base URL (its card is at `.well-known/agent-card.json` under it) or
    /// the card's own URL.
    pub url: String,
    /// Default: the card's name.
    #[serde(default)]
    pub name: Option<String>,
    /// Default: `custom`.
    #[serde(default)]
    pub role: Option<AgentRole>,
    /// Default: `low`, the least a remote agent is trusted with.
    #[serde(default)]
    pub risk_tier: Option<RiskTier>,
    /// Default: the card's skill ids and tags.
    #[serde(default)]
    pub capabilities: Option<Vec<String>>,
    #[serde(default)]
    pub max_concurrency: Option<u32>,
    /// `secret://NAME`: a bearer token for the agent's interface, read from the secret
    /// store when its proxy starts. Naming it takes `secret.read` for the caller.
    #[serde(default)]
    pub token: Option<String>,
}

impl AgentRegistry {
    pub async fn import(&self, caller: &Principal, body: ImportBody) -> Result<Agent, ApiError> {
        mesh_types::validate::text("url", &body.url, 2_048)?;
        let card_url =
            mesh_a2a::card_url(&body.url).map_err(|e| ApiError::invalid("url", e.to_string()))?;
        let mut audit = vec![self.admit_egress(caller, &card_url).await?];
        let card = mesh_a2a::fetch_card(self.http(), &card_url)
            .await
            .map_err(card_refused)?;
        let interface = card
            .jsonrpc_interface()
            .map_err(|e| card_refused(A2aError::BadCard(e)))?;
        let rpc_url = reqwest::Url::parse(&interface.url)
            .map_err(|e| ApiError::invalid("card", format!("interface URL: {e}")))?;
        if rpc_url.host_str() != card_url.host_str() {
            audit.push(self.admit_egress(caller, &rpc_url).await?);
        }
        if let Some(token) = &body.token {
            let secret = token.strip_prefix("secret://").ok_or_else(|| {
                ApiError::invalid(
                    "token",
                    "a token is given as secret://NAME, never as a value",
                )
            })?;
            let used_by = json!({"a2aAgent": card_url.to_string()});
            audit.push(
                crate::secret_use::admit(
                    self.policy(),
                    &self.context().name,
                    caller,
                    secret,
                    used_by,
                )
                .await?,
            );
        }
        let endpoint = A2aEndpoint {
            card_url: card_url.to_string(),
            url: interface.url.clone(),
            protocol_version: interface.protocol_version.clone(),
            token: body.token.clone(),
        };
        let new = NewAgent {
            name: body.name.unwrap_or_else(|| card.name.clone()),
            version: card.version.clone(),
            role: body.role.unwrap_or(AgentRole::Custom),
            risk_tier: body.risk_tier.unwrap_or(RiskTier::Low),
            capabilities: body
                .capabilities
                .unwrap_or_else(|| skill_capabilities(&card)),
            model_preference: None,
            cost_profile: None,
            max_concurrency: body.max_concurrency,
        };
        self.register_with(caller, new, Some(endpoint), audit).await
    }

    /// The `egress` decision on the registry reaching `url` for `caller`; a refusal is
    /// recorded and answered 403.
    async fn admit_egress(
        &self,
        caller: &Principal,
        url: &reqwest::Url,
    ) -> Result<EventDraft, ApiError> {
        let host = url.host_str().unwrap_or_default();
        let outbound = Resource {
            kind: Some("url".into()),
            id: None,
            classification: None,
            attributes: json!({"host": host, "url": url.as_str(), "method": "GET", "body": null}),
        };
        let ctx = inputs::context(
            inputs::principal(caller),
            outbound,
            self.context().name.as_str(),
        );
        let verdict = self
            .policy()
            .admit(Point::Egress, ctx, &inputs::principal_actor(caller))
            .await?;
        Ok(verdict.audit)
    }
}

/// A card's skills as capabilities: each skill's id, then its tags, without repeats.
pub fn skill_capabilities(card: &AgentCard) -> Vec<String> {
    let mut caps: Vec<String> = Vec::new();
    for skill in &card.skills {
        for cap in std::iter::once(&skill.id).chain(&skill.tags) {
            if !caps.contains(cap) {
                caps.push(cap.clone());
            }
        }
    }
    caps
}

/// A card that could not be had: 502 when the agent cannot be reached, 400 naming the
/// reason when what it serves is not a valid card.
fn card_refused(err: A2aError) -> ApiError {
    match err {
        A2aError::Unreachable(why) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "agent_unreachable",
            format!("cannot fetch the Agent Card: {why}"),
        ),
        A2aError::BadCard(e) => {
            let field = if e.field.is_empty() {
                "card".to_string()
            } else {
                format!("card.{}", e.field)
            };
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_agent_card",
                format!("invalid Agent Card: {e}"),
            )
            .with_field(field)
        }
        A2aError::Invalid(why)
        | A2aError::Rpc(mesh_a2a::jsonrpc::RpcError { message: why, .. }) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_agent_card",
            format!("invalid Agent Card: {why}"),
        )
        .with_field("card"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skills_become_capabilities_once_each() {
        let card: AgentCard = serde_json::from_value(json!({
            "name": "n", "description": "d", "version": "1", "capabilities": {},
            "supportedInterfaces": [{"url": "http://h/rpc", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}],
            "defaultInputModes": ["text/plain"], "defaultOutputModes": ["text/plain"],
            "skills": [
                {"id": "summarize", "name": "s", "description": "d", "tags": ["text", "nlp"]},
                {"id": "translate", "name": "t", "description": "d", "tags": ["text"]}
            ]
        }))
        .unwrap();
        assert_eq!(
            skill_capabilities(&card),
            ["summarize", "text", "nlp", "translate"]
        );
    }

    #[test]
    fn unreachable_is_502_and_a_bad_card_400_naming_the_field() {
        let down = card_refused(A2aError::Unreachable("refused".into()));
        assert_eq!(down.status, StatusCode::BAD_GATEWAY);
        let bad = card_refused(A2aError::BadCard(
            mesh_a2a::parse_card(b"{}").expect_err("an empty object is no card"),
        ));
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
        assert_eq!(bad.code, "invalid_agent_card");
        assert!(bad.message.contains("missing field"), "{}", bad.message);
    }
}
