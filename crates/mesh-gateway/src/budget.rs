//! Token and cost budgets the gateway owns: per task, per tenant per day, per agent
//! risk tier per day. A call reserves its estimate (prompt size plus `max_tokens`, at
//! the provider's prices) in every applicable scope before it is sent — all or none,
//! exact across gateway processes since the store does it in one transaction — and
//! settles with what it really used when it ends. Over a budget: 402 `budget_exceeded`,
//! nothing charged.

use crate::chat::ChatRequest;
use crate::providers::Provider;
use mesh_service::ApiError;
use mesh_store::{BudgetScope, Spend, Store};
use mesh_types::{Agent, Principal};
use serde::Deserialize;
use std::collections::BTreeMap;
use uuid::Uuid;

/// Tokens assumed for a reply when the request sets no `max_tokens`.
const DEFAULT_REPLY_TOKENS: i64 = 1024;

/// `[gateway.budgets]`; costs in the providers' price currency.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BudgetsConfig {
    pub per_task_tokens: Option<i64>,
    pub per_task_cost: Option<f64>,
    pub per_tenant_daily_tokens: Option<i64>,
    pub per_tenant_daily_cost: Option<f64>,
    /// By agent risk tier: `{ low = 100000, critical = 5000 }`.
    #[serde(default)]
    pub per_risk_tier_daily_tokens: BTreeMap<String, i64>,
    #[serde(default)]
    pub per_risk_tier_daily_cost: BTreeMap<String, f64>,
    /// Reply tokens assumed when a request sets no `max_tokens` (default 1024).
    pub default_reply_tokens: Option<i64>,
}

/// What a call holds while it runs.
#[derive(Debug, Clone)]
pub struct Reservation {
    pub scopes: Vec<String>,
    pub spend: Spend,
}

pub fn micros(amount: f64) -> i64 {
    (amount * 1_000_000.0).round() as i64
}

/// What `tokens_in`/`tokens_out` cost at `provider`'s prices, in micro-units.
pub fn cost_micros(provider: &Provider, tokens_in: u64, tokens_out: u64) -> i64 {
    micros(
        tokens_in as f64 / 1000.0 * provider.pricing.input_per_1k
            + tokens_out as f64 / 1000.0 * provider.pricing.output_per_1k,
    )
}

/// A scope as `GET /api/v1/budgets/{scope}` takes it: `task:<uuid>`,
/// `tenant:<name>[:<YYYY-MM-DD>]` or `tier:<low|medium|high|critical>[:<YYYY-MM-DD>]`,
/// a missing day meaning `today`. Returns the stored scope's name.
pub fn canonical_scope(raw: &str, today: &str) -> Result<String, String> {
    let day_of = |rest: Option<&str>| -> Result<String, String> {
        match rest {
            None => Ok(today.to_string()),
            Some(day) if is_day(day) => Ok(day.to_string()),
            Some(day) => Err(format!("`{day}` is not a day (YYYY-MM-DD)")),
        }
    };
    let mut parts = raw.splitn(3, ':');
    let (kind, name, rest) = (parts.next(), parts.next(), parts.next());
    match (kind, name) {
        (Some("task"), Some(id)) if rest.is_none() => Uuid::parse_str(id)
            .map(|id| format!("task:{id}"))
            .map_err(|_| format!("`{id}` is not a task id")),
        (Some("tenant"), Some(tenant)) if !tenant.is_empty() => {
            Ok(format!("tenant:{tenant}:{}", day_of(rest)?))
        }
        (Some("tier"), Some(tier)) if tier.parse::<mesh_types::RiskTier>().is_ok() => {
            Ok(format!("tier:{tier}:{}", day_of(rest)?))
        }
        _ => Err(
            "expected task:<id>, tenant:<name>[:<YYYY-MM-DD>] or tier:<low|medium|high|critical>[:<YYYY-MM-DD>]"
                .into(),
        ),
    }
}

/// `YYYY-MM-DD`, as the daily scopes are named.
fn is_day(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let number = |r: std::ops::Range<usize>| text[r].parse::<u32>().unwrap_or(0);
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && digits(0..4)
        && digits(5..7)
        && digits(8..10)
        && (1..=12).contains(&number(5..7))
        && (1..=31).contains(&number(8..10))
}

impl BudgetsConfig {
    pub fn is_empty(&self) -> bool {
        *self == BudgetsConfig::default()
    }

    fn scopes(
        &self,
        principal: &Principal,
        agent: Option<&Agent>,
        task: Option<Uuid>,
    ) -> Vec<BudgetScope> {
        // Scope names are built only for the limits that are set: formatting the day on
        // every call showed in profiles of a gateway with no budgets at all.
        let day = std::cell::OnceCell::new();
        let day = || day.get_or_init(|| mesh_types::time::now().format("%Y-%m-%d").to_string());
        let mut out = Vec::new();
        let mut add = |scope: &dyn Fn() -> String, tokens: Option<i64>, cost: Option<f64>| {
            if tokens.is_some() || cost.is_some() {
                out.push(BudgetScope {
                    scope: scope(),
                    token_limit: tokens,
                    cost_limit_micros: cost.map(micros),
                });
            }
        };
        if let Some(task) = task {
            add(
                &|| format!("task:{task}"),
                self.per_task_tokens,
                self.per_task_cost,
            );
        }
        add(
            &|| format!("tenant:{}:{}", principal.tenant, day()),
            self.per_tenant_daily_tokens,
            self.per_tenant_daily_cost,
        );
        if let Some(agent) = agent {
            let tier = agent.risk_tier.as_str();
            add(
                &|| format!("tier:{tier}:{}", day()),
                self.per_risk_tier_daily_tokens.get(tier).copied(),
                self.per_risk_tier_daily_cost.get(tier).copied(),
            );
        }
        out
    }

    /// Reserves the call's estimate; `Ok(None)` when no budget applies.
    pub async fn reserve(
        &self,
        store: &Store,
        principal: &Principal,
        agent: Option<&Agent>,
        task: Option<Uuid>,
        provider: &Provider,
        request: &ChatRequest,
    ) -> Result<Option<Reservation>, ApiError> {
        let scopes = self.scopes(principal, agent, task);
        if scopes.is_empty() {
            return Ok(None);
        }
        let chars: usize = request.messages.iter().map(|m| m.text().len()).sum();
        let tokens_in = (chars / 4 + 1) as u64;
        let tokens_out = request
            .max_tokens
            .map(i64::from)
            .unwrap_or(self.default_reply_tokens.unwrap_or(DEFAULT_REPLY_TOKENS))
            .max(1) as u64;
        let spend = Spend {
            tokens: (tokens_in + tokens_out) as i64,
            cost_micros: cost_micros(provider, tokens_in, tokens_out),
        };
        match store.budgets.reserve(&scopes, spend).await? {
            Ok(()) => Ok(Some(Reservation {
                scopes: scopes.into_iter().map(|s| s.scope).collect(),
                spend,
            })),
            Err(scope) => Err(ApiError::new(
                axum::http::StatusCode::PAYMENT_REQUIRED,
                "budget_exceeded",
                format!(
                    "budget {scope} cannot cover this call (an estimated {} tokens on {}); nothing was charged",
                    spend.tokens, provider.name
                ),
            )),
        }
    }
}

/// Releases a reservation, charging what the call used.
pub async fn settle(store: &Store, reservation: Option<Reservation>, used: Spend) {
    if let Some(r) = reservation
        && let Err(e) = store.budgets.settle(&r.scopes, r.spend, used).await
    {
        tracing::error!(error = %e, "could not settle a budget reservation");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_read_as_the_budgets_name_them() {
        let today = "2026-11-24";
        let id = Uuid::nil();
        for (raw, scope) in [
            (format!("task:{id}"), format!("task:{id}")),
            ("tenant:acme".into(), "tenant:acme:2026-11-24".into()),
            (
                "tenant:acme:2026-11-01".into(),
                "tenant:acme:2026-11-01".into(),
            ),
            ("tier:critical".into(), "tier:critical:2026-11-24".into()),
        ] {
            assert_eq!(canonical_scope(&raw, today), Ok(scope));
        }
        for bad in [
            "xyz",
            "task:nope",
            "tenant:",
            "tier:extreme",
            "tenant:acme:yesterday",
        ] {
            assert!(canonical_scope(bad, today).is_err(), "{bad}");
        }
    }
    use mesh_types::{AgentRole, AgentStatus, RiskTier};

    fn principal() -> Principal {
        Principal {
            key_id: Uuid::now_v7(),
            name: "caller".into(),
            roles: vec![],
            tenant: "acme".into(),
        }
    }

    fn agent(tier: RiskTier) -> Agent {
        Agent {
            id: Uuid::now_v7(),
            name: "coder-1".into(),
            version: "1".into(),
            role: AgentRole::Coder,
            risk_tier: tier,
            capabilities: vec![],
            model_preference: None,
            cost_profile: None,
            status: AgentStatus::Active,
            registered_at: mesh_types::time::now(),
            last_heartbeat: None,
            max_concurrency: None,
            draining_since: None,
            a2a: None,
        }
    }

    #[test]
    fn a_call_falls_in_the_scopes_whose_limits_are_set() {
        let task = Uuid::now_v7();
        let config = BudgetsConfig {
            per_task_tokens: Some(100),
            per_tenant_daily_cost: Some(2.5),
            per_risk_tier_daily_tokens: [("high".to_string(), 50)].into(),
            ..Default::default()
        };
        let today = || mesh_types::time::now().format("%Y-%m-%d").to_string();
        let before = today();
        let scopes = config.scopes(&principal(), Some(&agent(RiskTier::High)), Some(task));
        // The day is the one the call was made on (either side of a midnight).
        let day = if scopes[1].scope.ends_with(&before) {
            before
        } else {
            today()
        };
        let named: Vec<_> = scopes
            .iter()
            .map(|s| (s.scope.as_str(), s.token_limit, s.cost_limit_micros))
            .collect();
        assert_eq!(
            named,
            [
                (format!("task:{task}").as_str(), Some(100), None),
                (format!("tenant:acme:{day}").as_str(), None, Some(2_500_000)),
                (format!("tier:high:{day}").as_str(), Some(50), None),
            ]
        );
        // A tier without a limit, and no task: only the tenant's scope.
        let scopes = config.scopes(&principal(), Some(&agent(RiskTier::Low)), None);
        assert_eq!(scopes.len(), 1);
        assert!(scopes[0].scope.starts_with("tenant:acme:"));
    }

    #[test]
    fn no_limits_means_no_scopes() {
        let scopes = BudgetsConfig::default().scopes(
            &principal(),
            Some(&agent(RiskTier::Critical)),
            Some(Uuid::now_v7()),
        );
        assert!(scopes.is_empty());
    }
}
