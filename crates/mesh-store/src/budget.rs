//! Token and cost budgets, exact under concurrency: a call reserves its estimate in
//! every scope that applies, in one transaction, or in none; when it ends, the
//! reservation is released and what it actually used is added.

use crate::Result;
use async_trait::async_trait;

/// One scope a call is charged to, with its limits (`None`: unlimited).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetScope {
    /// E.g. `task:<id>`, `tenant:<name>:2026-11-24`, `tier:high:2026-11-24`.
    pub scope: String,
    pub token_limit: Option<i64>,
    pub cost_limit_micros: Option<i64>,
}

/// Tokens and cost (in micro-units of currency).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spend {
    pub tokens: i64,
    pub cost_micros: i64,
}

/// A scope's standing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BudgetUsage {
    pub used: Spend,
    pub reserved: Spend,
}

#[async_trait]
pub trait BudgetStore: Send + Sync {
    /// Reserves `spend` in every scope, or in none: `Ok(Err(scope))` names the first
    /// scope whose used + reserved + `spend` would pass a limit.
    async fn reserve(
        &self,
        scopes: &[BudgetScope],
        spend: Spend,
    ) -> Result<std::result::Result<(), String>>;
    /// Releases a reservation and adds what was actually used.
    async fn settle(&self, scopes: &[String], reserved: Spend, used: Spend) -> Result<()>;
    async fn budget_usage(&self, scope: &str) -> Result<BudgetUsage>;
}

/// Whether reserving `spend` on top of `usage` stays within `scope`'s limits.
pub(crate) fn fits(scope: &BudgetScope, usage: &BudgetUsage, spend: Spend) -> bool {
    let tokens = usage.used.tokens + usage.reserved.tokens + spend.tokens;
    let cost = usage.used.cost_micros + usage.reserved.cost_micros + spend.cost_micros;
    scope.token_limit.is_none_or(|l| tokens <= l)
        && scope.cost_limit_micros.is_none_or(|l| cost <= l)
}
