use super::PgStore;
use crate::budget::fits;
use crate::{BudgetScope, BudgetStore, BudgetUsage, Result, Spend};
use async_trait::async_trait;

fn from_row(row: &tokio_postgres::Row) -> BudgetUsage {
    BudgetUsage {
        used: Spend {
            tokens: row.get(0),
            cost_micros: row.get(1),
        },
        reserved: Spend {
            tokens: row.get(2),
            cost_micros: row.get(3),
        },
    }
}

#[async_trait]
impl BudgetStore for PgStore {
    async fn reserve(
        &self,
        scopes: &[BudgetScope],
        spend: Spend,
    ) -> Result<std::result::Result<(), String>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Lock the scopes' rows in one order, so concurrent reservations cannot deadlock.
        let mut ordered: Vec<&BudgetScope> = scopes.iter().collect();
        ordered.sort_by(|a, b| a.scope.cmp(&b.scope));
        for scope in &ordered {
            tx.execute(
                "INSERT INTO budget_usage (scope) VALUES ($1) ON CONFLICT (scope) DO NOTHING",
                &[&scope.scope],
            )
            .await?;
            let row = tx
                .query_one(
                    "SELECT tokens, cost_micros, reserved_tokens, reserved_cost_micros FROM budget_usage
                     WHERE scope = $1 FOR UPDATE",
                    &[&scope.scope],
                )
                .await?;
            if !fits(scope, &from_row(&row), spend) {
                tx.rollback().await?;
                return Ok(Err(scope.scope.clone()));
            }
        }
        for scope in &ordered {
            tx.execute(
                "UPDATE budget_usage SET reserved_tokens = reserved_tokens + $2,
                   reserved_cost_micros = reserved_cost_micros + $3 WHERE scope = $1",
                &[&scope.scope, &spend.tokens, &spend.cost_micros],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Ok(()))
    }

    async fn settle(&self, scopes: &[String], reserved: Spend, used: Spend) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let mut ordered = scopes.to_vec();
        ordered.sort();
        for scope in &ordered {
            tx.execute(
                "UPDATE budget_usage SET reserved_tokens = GREATEST(0, reserved_tokens - $2),
                   reserved_cost_micros = GREATEST(0, reserved_cost_micros - $3),
                   tokens = tokens + $4, cost_micros = cost_micros + $5 WHERE scope = $1",
                &[
                    scope,
                    &reserved.tokens,
                    &reserved.cost_micros,
                    &used.tokens,
                    &used.cost_micros,
                ],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn budget_usage(&self, scope: &str) -> Result<BudgetUsage> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT tokens, cost_micros, reserved_tokens, reserved_cost_micros FROM budget_usage WHERE scope = $1",
                &[&scope],
            )
            .await?;
        Ok(row.as_ref().map(from_row).unwrap_or_default())
    }
}
