use super::PgStore;
use super::rows::get;
use crate::{ProjectionStore, Result};
use async_trait::async_trait;

#[async_trait]
impl ProjectionStore for PgStore {
    async fn projection_cursor(&self, name: &str) -> Result<i64> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT after_seq FROM projection_cursors WHERE name = $1",
                &[&name],
            )
            .await?;
        Ok(row.map(|r| get::<i64>(&r, 0)).transpose()?.unwrap_or(0))
    }

    async fn set_projection_cursor(&self, name: &str, after_seq: i64) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO projection_cursors (name, after_seq, updated_at) VALUES ($1, $2, now())
                 ON CONFLICT (name) DO UPDATE SET after_seq = excluded.after_seq,
                   updated_at = excluded.updated_at
                 WHERE excluded.after_seq > projection_cursors.after_seq",
                &[&name, &after_seq],
            )
            .await?;
        Ok(())
    }
}
