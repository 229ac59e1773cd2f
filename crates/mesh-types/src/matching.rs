//! Capability matching: which registered agents can take a piece of work, best first.
//!
//! One ranking serves the agent registry's `POST /api/v1/agents/match` and the
//! gateway's `POST /api/v1/route/task`. It is pure: the callers read the agents, the
//! leases each holds and any policy verdicts, and hand them in.
//!
//! Eligible: active or busy (not unhealthy, retired or draining), declares every
//! requested capability (and the role, if asked), and its risk tier covers the
//! work's — as the default `task.assign` policy reads tiers: an agent may take work of
//! its own tier or below. Ranked by a score that puts health first (active before
//! busy), then load (leases held, against its declared concurrency), then how recently
//! it was heard from; ties go to the cheaper agent.

use crate::agent::Agent;
use crate::enums::{AgentRole, AgentStatus, DataClassification, RiskTier};
use crate::time::Timestamp;
use crate::validate::{FieldError, text};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use uuid::Uuid;

pub const DEFAULT_MATCH_LIMIT: u32 = 10;
pub const MAX_MATCH_LIMIT: u32 = 100;

/// Weights of the score's parts; health outweighs the other two together, so an
/// active agent always ranks before a busy one.
const HEALTH_WEIGHT: f64 = 0.5;
const LOAD_WEIGHT: f64 = 0.35;
const FRESHNESS_WEIGHT: f64 = 0.15;
/// Heard from within this long: fully fresh; within `STALE_SECS`: half.
const FRESH_SECS: i64 = 10;
const STALE_SECS: i64 = 30;

/// Body of `POST /api/v1/agents/match`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MatchQuery {
    #[serde(default)]
    pub role: Option<AgentRole>,
    /// Every one of these must be among the agent's capabilities.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// The work's risk tier: only agents whose tier covers it are eligible.
    #[serde(default)]
    pub risk_tier: Option<RiskTier>,
    /// The work's data classification, for the `task.assign` policy.
    #[serde(default)]
    pub data_classification: Option<DataClassification>,
    #[serde(default)]
    pub limit: Option<u32>,
}

impl MatchQuery {
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.capabilities.len() > crate::agent::MAX_CAPABILITIES {
            return Err(FieldError::new(
                "capabilities",
                format!("at most {} capabilities", crate::agent::MAX_CAPABILITIES),
            ));
        }
        for (i, cap) in self.capabilities.iter().enumerate() {
            text(&format!("capabilities[{i}]"), cap, 64)?;
        }
        if let Some(limit) = self.limit
            && !(1..=MAX_MATCH_LIMIT).contains(&limit)
        {
            return Err(FieldError::new(
                "limit",
                format!("must be between 1 and {MAX_MATCH_LIMIT}"),
            ));
        }
        Ok(())
    }
}

/// An eligible agent, with its score and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MatchCandidate {
    pub agent_id: Uuid,
    pub name: String,
    pub role: AgentRole,
    pub status: AgentStatus,
    pub risk_tier: RiskTier,
    /// Leases (running tasks) the agent holds now.
    pub leases: u32,
    pub max_concurrency: Option<u32>,
    #[serde(with = "crate::time::rfc3339_micros")]
    pub last_seen: Timestamp,
    /// Input plus output price per 1K tokens, from its cost profile.
    pub cost_per_1k: Option<f64>,
    /// 0–1; higher is better.
    pub score: f64,
    pub reasons: Vec<String>,
}

/// An agent that declares the capabilities but cannot take the work, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Excluded {
    pub agent_id: Uuid,
    pub name: String,
    pub status: AgentStatus,
    pub risk_tier: RiskTier,
    pub reason: String,
}

/// The answer of `POST /api/v1/agents/match`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MatchResult {
    /// Best first, at most `limit`.
    pub candidates: Vec<MatchCandidate>,
    pub excluded: Vec<Excluded>,
}

pub fn tier_rank(tier: RiskTier) -> u8 {
    match tier {
        RiskTier::Low => 0,
        RiskTier::Medium => 1,
        RiskTier::High => 2,
        RiskTier::Critical => 3,
    }
}

/// Why `agent` cannot take the work before any policy is asked, if it cannot. Retired
/// agents are skipped silently by [`rank`]: they accumulate and are never candidates.
fn ineligible(query: &MatchQuery, agent: &Agent) -> Option<String> {
    if agent.draining_since.is_some() {
        return Some("agent is draining".into());
    }
    if !matches!(agent.status, AgentStatus::Active | AgentStatus::Busy) {
        return Some(format!("agent is {}", agent.status));
    }
    if let Some(role) = query.role
        && agent.role != role
    {
        return Some(format!("role {} is not {role}", agent.role));
    }
    let missing: Vec<&str> = query
        .capabilities
        .iter()
        .filter(|c| !agent.capabilities.contains(c))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Some(format!("lacks capability {}", missing.join(", ")));
    }
    if let Some(needed) = query.risk_tier
        && tier_rank(agent.risk_tier) < tier_rank(needed)
    {
        return Some(format!(
            "risk tier {} does not cover {needed}",
            agent.risk_tier
        ));
    }
    None
}

/// Ranks `agents` for `query`. `leases` maps agent ids to the leases each holds;
/// `refusal` is asked last about otherwise eligible agents (the `task.assign` policy),
/// and a `Some(reason)` excludes the agent.
pub fn rank(
    query: &MatchQuery,
    agents: Vec<Agent>,
    leases: &HashMap<Uuid, u32>,
    now: Timestamp,
    refusal: impl Fn(&Agent) -> Option<String>,
) -> MatchResult {
    let mut candidates = Vec::new();
    let mut excluded = Vec::new();
    for agent in agents {
        if agent.status == AgentStatus::Retired {
            continue;
        }
        if let Some(reason) = ineligible(query, &agent).or_else(|| refusal(&agent)) {
            excluded.push(Excluded {
                agent_id: agent.id,
                name: agent.name,
                status: agent.status,
                risk_tier: agent.risk_tier,
                reason,
            });
            continue;
        }
        let held = leases.get(&agent.id).copied().unwrap_or(0);
        candidates.push(score(agent, held, now));
    }
    candidates.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(
                a.cost_per_1k
                    .unwrap_or(0.0)
                    .total_cmp(&b.cost_per_1k.unwrap_or(0.0)),
            )
            .then(b.last_seen.cmp(&a.last_seen))
            .then(a.agent_id.cmp(&b.agent_id))
    });
    let limit = query.limit.unwrap_or(DEFAULT_MATCH_LIMIT) as usize;
    candidates.truncate(limit);
    MatchResult {
        candidates,
        excluded,
    }
}

fn score(agent: Agent, leases: u32, now: Timestamp) -> MatchCandidate {
    let mut reasons = Vec::new();
    let health = if agent.status == AgentStatus::Busy {
        reasons.push("busy".to_string());
        0.5
    } else {
        reasons.push("active".to_string());
        1.0
    };
    let load = match agent.max_concurrency {
        Some(max) => {
            reasons.push(format!("{leases} of {max} leases held"));
            1.0 - (f64::from(leases) / f64::from(max.max(1))).min(1.0)
        }
        None => {
            reasons.push(format!("{leases} leases held"));
            1.0 / (1.0 + f64::from(leases))
        }
    };
    let last_seen = agent.last_seen();
    let age = (now - last_seen).num_seconds().max(0);
    let freshness = if age <= FRESH_SECS {
        1.0
    } else if age <= STALE_SECS {
        0.5
    } else {
        0.0
    };
    reasons.push(format!("last heard from {age} s ago"));
    let score = HEALTH_WEIGHT * health + LOAD_WEIGHT * load + FRESHNESS_WEIGHT * freshness;
    MatchCandidate {
        agent_id: agent.id,
        name: agent.name,
        role: agent.role,
        status: agent.status,
        risk_tier: agent.risk_tier,
        leases,
        max_concurrency: agent.max_concurrency,
        last_seen,
        cost_per_1k: agent
            .cost_profile
            .as_ref()
            .map(|p| p.input_cost_per_1k_tokens + p.output_cost_per_1k_tokens),
        // Three decimals: enough to order by, and stable to read.
        score: (score * 1000.0).round() / 1000.0,
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::NewAgent;
    use serde_json::json;

    fn agent(name: &str, tier: &str, caps: &[&str]) -> Agent {
        let new: NewAgent = serde_json::from_value(json!({
            "name": name, "version": "1", "role": "coder", "riskTier": tier, "capabilities": caps,
        }))
        .unwrap();
        new.into_agent(Uuid::now_v7(), crate::time::now())
    }

    fn query(caps: &[&str]) -> MatchQuery {
        MatchQuery {
            capabilities: caps.iter().map(|c| c.to_string()).collect(),
            ..MatchQuery::default()
        }
    }

    fn names(result: &MatchResult) -> Vec<&str> {
        result.candidates.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn an_idle_agent_ranks_before_a_loaded_one_and_active_before_busy() {
        let idle = agent("idle", "low", &["code"]);
        let loaded = agent("loaded", "low", &["code"]);
        let mut busy = agent("busy", "low", &["code"]);
        busy.status = AgentStatus::Busy;
        busy.max_concurrency = Some(1);
        let leases = HashMap::from([(loaded.id, 3), (busy.id, 1)]);
        let now = crate::time::now();
        let result = rank(
            &query(&["code"]),
            vec![busy, loaded, idle],
            &leases,
            now,
            |_| None,
        );
        assert_eq!(names(&result), ["idle", "loaded", "busy"]);
        let loaded = &result.candidates[1];
        assert_eq!(loaded.leases, 3);
        assert!(loaded.reasons.contains(&"3 leases held".to_string()));
        assert!(result.candidates[0].score > loaded.score);
        assert!(loaded.score > result.candidates[2].score);
    }

    #[test]
    fn a_stale_agent_ranks_after_a_fresh_one() {
        let fresh = agent("fresh", "low", &["code"]);
        let mut stale = agent("stale", "low", &["code"]);
        stale.last_heartbeat = Some(crate::time::now() - crate::time::millis(25_000));
        let result = rank(
            &query(&["code"]),
            vec![stale, fresh],
            &HashMap::new(),
            crate::time::now(),
            |_| None,
        );
        assert_eq!(names(&result), ["fresh", "stale"]);
    }

    #[test]
    fn unfit_agents_are_excluded_with_the_reason() {
        let mut sick = agent("sick", "high", &["code"]);
        sick.status = AgentStatus::Unhealthy;
        let mut leaving = agent("leaving", "high", &["code"]);
        leaving.draining_since = Some(crate::time::now());
        let mut gone = agent("gone", "high", &["code"]);
        gone.status = AgentStatus::Retired;
        let junior = agent("junior", "low", &["code"]);
        let partial = agent("partial", "high", &["code"]);
        let refused = agent("refused", "high", &["code", "review"]);
        let fit = agent("fit", "critical", &["code", "review"]);
        let q = MatchQuery {
            risk_tier: Some(RiskTier::High),
            ..query(&["code", "review"])
        };
        let result = rank(
            &q,
            vec![sick, leaving, gone, junior, partial, refused, fit],
            &HashMap::new(),
            crate::time::now(),
            |a| (a.name == "refused").then(|| "policy: no".to_string()),
        );
        assert_eq!(names(&result), ["fit"]);
        let why: HashMap<&str, &str> = result
            .excluded
            .iter()
            .map(|e| (e.name.as_str(), e.reason.as_str()))
            .collect();
        assert_eq!(why["sick"], "agent is unhealthy");
        assert_eq!(why["leaving"], "agent is draining");
        assert_eq!(why["junior"], "lacks capability review");
        assert_eq!(why["partial"], "lacks capability review");
        assert_eq!(why["refused"], "policy: no");
        assert!(!why.contains_key("gone"), "retired agents are not listed");
        let tier = rank(
            &MatchQuery {
                risk_tier: Some(RiskTier::High),
                ..query(&["code"])
            },
            vec![agent("junior", "low", &["code"])],
            &HashMap::new(),
            crate::time::now(),
            |_| None,
        );
        assert_eq!(tier.excluded[0].reason, "risk tier low does not cover high");
    }

    #[test]
    fn ties_go_to_the_cheaper_agent_and_the_limit_holds() {
        let mut pricey = agent("pricey", "low", &["code"]);
        let mut thrifty = agent("thrifty", "low", &["code"]);
        let profile = |price: f64| {
            serde_json::from_value(json!({
                "inputCostPer1kTokens": price, "outputCostPer1kTokens": 0.0, "maxBudgetPerTask": 1.0
            }))
            .unwrap()
        };
        pricey.cost_profile = Some(profile(0.9));
        thrifty.cost_profile = Some(profile(0.1));
        let now = crate::time::now();
        let q = MatchQuery {
            limit: Some(1),
            ..query(&["code"])
        };
        let result = rank(&q, vec![pricey, thrifty], &HashMap::new(), now, |_| None);
        assert_eq!(names(&result), ["thrifty"]);
        assert!(q.validate().is_ok());
        let too_many = MatchQuery {
            limit: Some(0),
            ..query(&["code"])
        };
        assert_eq!(too_many.validate().unwrap_err().field, "limit");
    }
}
