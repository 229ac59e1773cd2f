use super::SqliteStore;
use crate::{ProjectionStore, Result};
use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

#[async_trait]
impl ProjectionStore for SqliteStore {
    async fn projection_cursor(&self, name: &str) -> Result<i64> {
        let name = name.to_string();
        self.read(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT after_seq FROM projection_cursors WHERE name = ?1",
                    params![name],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or(0))
        })
        .await
    }

    async fn set_projection_cursor(&self, name: &str, after_seq: i64) -> Result<()> {
        let name = name.to_string();
        let now = mesh_types::time::format(&mesh_types::time::now());
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO projection_cursors (name, after_seq, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET after_seq = excluded.after_seq,
                   updated_at = excluded.updated_at
                 WHERE excluded.after_seq > projection_cursors.after_seq",
            )?
            .execute(params![name, after_seq, now])?;
            Ok(())
        })
        .await
    }
}
