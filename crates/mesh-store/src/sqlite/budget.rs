use super::SqliteStore;
use crate::budget::fits;
use crate::{BudgetScope, BudgetStore, BudgetUsage, Result, Spend};
use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

fn usage(conn: &rusqlite::Connection, scope: &str) -> rusqlite::Result<BudgetUsage> {
    Ok(conn
        .prepare_cached(
            "SELECT tokens, cost_micros, reserved_tokens, reserved_cost_micros FROM budget_usage WHERE scope = ?1",
        )?
        .query_row(params![scope], |r| {
            Ok(BudgetUsage {
                used: Spend { tokens: r.get(0)?, cost_micros: r.get(1)? },
                reserved: Spend { tokens: r.get(2)?, cost_micros: r.get(3)? },
            })
        })
        .optional()?
        .unwrap_or_default())
}

#[async_trait]
impl BudgetStore for SqliteStore {
    async fn reserve(
        &self,
        scopes: &[BudgetScope],
        spend: Spend,
    ) -> Result<std::result::Result<(), String>> {
        let scopes = scopes.to_vec();
        // The one writer runs this whole closure alone: check-then-reserve is atomic.
        self.write(move |tx| {
            for scope in &scopes {
                if !fits(scope, &usage(tx, &scope.scope)?, spend) {
                    return Ok(Err(scope.scope.clone()));
                }
            }
            for scope in &scopes {
                tx.prepare_cached(
                    "INSERT INTO budget_usage (scope, reserved_tokens, reserved_cost_micros) VALUES (?1, ?2, ?3)
                     ON CONFLICT (scope) DO UPDATE SET reserved_tokens = reserved_tokens + ?2,
                       reserved_cost_micros = reserved_cost_micros + ?3",
                )?
                .execute(params![scope.scope, spend.tokens, spend.cost_micros])?;
            }
            Ok(Ok(()))
        })
        .await
    }

    async fn settle(&self, scopes: &[String], reserved: Spend, used: Spend) -> Result<()> {
        let scopes = scopes.to_vec();
        self.write(move |tx| {
            for scope in &scopes {
                tx.prepare_cached(
                    "UPDATE budget_usage SET reserved_tokens = MAX(0, reserved_tokens - ?2),
                       reserved_cost_micros = MAX(0, reserved_cost_micros - ?3),
                       tokens = tokens + ?4, cost_micros = cost_micros + ?5 WHERE scope = ?1",
                )?
                .execute(params![
                    scope,
                    reserved.tokens,
                    reserved.cost_micros,
                    used.tokens,
                    used.cost_micros
                ])?;
            }
            Ok(())
        })
        .await
    }

    async fn budget_usage(&self, scope: &str) -> Result<BudgetUsage> {
        let scope = scope.to_string();
        self.read(move |conn| Ok(usage(conn, &scope)?)).await
    }
}
