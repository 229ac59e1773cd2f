//! Agents, as in the seed's `agents` table and its registration contract.

use crate::enums::{AgentRole, AgentStatus, RiskTier};
use crate::time::{Timestamp, rfc3339_micros};
use crate::validate::{FieldError, non_negative, text};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Which model an agent wants, and where to go when that provider fails.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelPreference {
    pub provider: String,
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_model: Option<String>,
}

impl ModelPreference {
    fn validate(&self) -> Result<(), FieldError> {
        text("modelPreference.provider", &self.provider, 64)?;
        text("modelPreference.model", &self.model, 128)?;
        if let Some(t) = self.temperature
            && !(t.is_finite() && (0.0..=2.0).contains(&t))
        {
            return Err(FieldError::new(
                "modelPreference.temperature",
                "must be between 0 and 2",
            ));
        }
        if self.max_tokens == Some(0) {
            return Err(FieldError::new("modelPreference.maxTokens", "must be > 0"));
        }
        if self.fallback_model.is_some() && self.fallback_provider.is_none() {
            return Err(FieldError::new(
                "modelPreference.fallbackProvider",
                "is required when fallbackModel is set",
            ));
        }
        Ok(())
    }
}

/// What an agent's model use costs, and how much one task may spend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentCostProfile {
    pub input_cost_per_1k_tokens: f64,
    pub output_cost_per_1k_tokens: f64,
    pub max_budget_per_task: f64,
    #[serde(default = "default_currency")]
    pub currency: String,
}

pub(crate) fn default_currency() -> String {
    "USD".to_string()
}

pub(crate) fn validate_currency(field: &str, currency: &str) -> Result<(), FieldError> {
    if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_uppercase()) {
        return Err(FieldError::new(
            field,
            "must be a three-letter ISO 4217 code such as USD",
        ));
    }
    Ok(())
}

impl AgentCostProfile {
    fn validate(&self) -> Result<(), FieldError> {
        non_negative(
            "costProfile.inputCostPer1kTokens",
            self.input_cost_per_1k_tokens,
        )?;
        non_negative(
            "costProfile.outputCostPer1kTokens",
            self.output_cost_per_1k_tokens,
        )?;
        non_negative("costProfile.maxBudgetPerTask", self.max_budget_per_task)?;
        validate_currency("costProfile.currency", &self.currency)
    }
}

/// Body of `POST /api/v1/agents`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewAgent {
    pub name: String,
    pub version: String,
    pub role: AgentRole,
    pub risk_tier: RiskTier,
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub model_preference: Option<ModelPreference>,
    #[serde(default)]
    pub cost_profile: Option<AgentCostProfile>,
    /// Leases the agent works on at once; holding this many makes it `busy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
}

pub const MAX_CAPABILITIES: usize = 64;
pub const MAX_CONCURRENCY: u32 = 10_000;

impl NewAgent {
    pub fn validate(&self) -> Result<(), FieldError> {
        text("name", &self.name, 128)?;
        text("version", &self.version, 32)?;
        if self.capabilities.len() > MAX_CAPABILITIES {
            return Err(FieldError::new(
                "capabilities",
                format!("at most {MAX_CAPABILITIES} capabilities"),
            ));
        }
        for (i, cap) in self.capabilities.iter().enumerate() {
            text(&format!("capabilities[{i}]"), cap, 64)?;
        }
        if let Some(pref) = &self.model_preference {
            pref.validate()?;
        }
        if let Some(cost) = &self.cost_profile {
            cost.validate()?;
        }
        if let Some(n) = self.max_concurrency
            && !(1..=MAX_CONCURRENCY).contains(&n)
        {
            return Err(FieldError::new(
                "maxConcurrency",
                format!("must be between 1 and {MAX_CONCURRENCY}"),
            ));
        }
        Ok(())
    }

    pub fn into_agent(self, id: Uuid, now: Timestamp) -> Agent {
        Agent {
            id,
            name: self.name,
            version: self.version,
            role: self.role,
            risk_tier: self.risk_tier,
            capabilities: self.capabilities,
            model_preference: self.model_preference,
            cost_profile: self.cost_profile,
            status: AgentStatus::Active,
            registered_at: now,
            last_heartbeat: None,
            max_concurrency: self.max_concurrency,
            draining_since: None,
            a2a: None,
        }
    }
}

/// Where a remote agent imported over A2A is reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct A2aEndpoint {
    /// Its Agent Card: fetched at import, and by the registry's health probes.
    pub card_url: String,
    /// Its JSON-RPC interface, where work is sent.
    pub url: String,
    pub protocol_version: String,
    /// `secret://NAME`: the bearer token sent with every call to the interface, read
    /// from the secret store where the agent's proxy runs (never a value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// A registered agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Agent {
    pub id: Uuid,
    pub name: String,
    pub version: String,
    pub role: AgentRole,
    pub risk_tier: RiskTier,
    pub capabilities: Vec<String>,
    pub model_preference: Option<ModelPreference>,
    pub cost_profile: Option<AgentCostProfile>,
    pub status: AgentStatus,
    #[serde(with = "rfc3339_micros")]
    pub registered_at: Timestamp,
    #[serde(default, with = "crate::task::optional_micros")]
    pub last_heartbeat: Option<Timestamp>,
    #[serde(default)]
    pub max_concurrency: Option<u32>,
    /// When a drain began: the agent takes no new work and is retired once it holds
    /// no lease.
    #[serde(default, with = "crate::task::optional_micros")]
    pub draining_since: Option<Timestamp>,
    /// Set for agents imported from an A2A Agent Card.
    #[serde(default)]
    pub a2a: Option<A2aEndpoint>,
}

impl Agent {
    /// The last sign of life: its latest heartbeat (or successful probe), else its
    /// registration — what the heartbeat expiry measures too.
    pub fn last_seen(&self) -> Timestamp {
        self.last_heartbeat.unwrap_or(self.registered_at)
    }
}

/// Filters of `GET /api/v1/agents`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentFilter {
    pub status: Option<AgentStatus>,
    pub role: Option<AgentRole>,
    pub capability: Option<String>,
    /// Only agents imported over A2A (`true`) or only the others (`false`).
    pub a2a: Option<bool>,
}

/// How many agents are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentSummary {
    pub active: u64,
    pub busy: u64,
    pub unhealthy: u64,
    pub retired: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn seed_registration_body_parses() {
        let body = json!({
          "name": "coder-agent-v1",
          "version": "1.0.0",
          "role": "coder",
          "riskTier": "medium",
          "capabilities": ["typescript", "python", "refactoring"],
          "modelPreference": { "provider": "anthropic", "model": "claude-sonnet-4-5-20250929" }
        });
        let agent: NewAgent = serde_json::from_value(body).unwrap();
        agent.validate().unwrap();
        assert_eq!(agent.role, AgentRole::Coder);
    }

    #[test]
    fn cost_profile_and_preference_are_checked() {
        let agent: NewAgent = serde_json::from_value(json!({
          "name": "a", "version": "1", "role": "critic", "riskTier": "low", "capabilities": [],
          "costProfile": {"inputCostPer1kTokens": -1.0, "outputCostPer1kTokens": 0.1, "maxBudgetPerTask": 2.0}
        }))
        .unwrap();
        assert_eq!(
            agent.validate().unwrap_err().field,
            "costProfile.inputCostPer1kTokens"
        );
        let bad_role = serde_json::from_value::<NewAgent>(json!({
          "name": "a", "version": "1", "role": "wizard", "riskTier": "low", "capabilities": []
        }));
        assert!(bad_role.unwrap_err().to_string().contains("wizard"));
    }
}
