use super::PgStore;
use super::provenance::append_in_tx;
use super::rows::{get, json, to_json, unique_conflict};
use crate::{ApiKeyRecord, KeyStore, Result, StoreError};
use async_trait::async_trait;
use deadpool_postgres::Transaction;
use mesh_types::EventDraft;
use mesh_types::time::Timestamp;
use tokio_postgres::Row;
use uuid::Uuid;

const KEY_COLUMNS: &str = "id, name, key_hash, roles, tenant, created_at, revoked_at";

/// Serialises bootstrap-key creation between processes starting on one empty store.
const FIRST_KEY_LOCK: i64 = 0x006d_6573_686b_6579;

fn key_from_row(row: &Row) -> Result<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: get(row, 0)?,
        name: get(row, 1)?,
        key_hash: get(row, 2)?,
        roles: json(row, 3)?,
        tenant: get(row, 4)?,
        created_at: get(row, 5)?,
        revoked: get::<Option<Timestamp>>(row, 6)?.is_some(),
    })
}

async fn insert(tx: &Transaction<'_>, key: &ApiKeyRecord) -> Result<()> {
    tx.execute(
        &format!("INSERT INTO api_keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, NULL)"),
        &[
            &key.id,
            &key.name,
            &key.key_hash,
            &to_json(&key.roles),
            &key.tenant,
            &key.created_at,
        ],
    )
    .await
    .map_err(|e| unique_conflict(e, "an identical API key already exists".to_string()))?;
    Ok(())
}

#[async_trait]
impl KeyStore for PgStore {
    async fn insert_key(&self, key: &ApiKeyRecord, audit: Vec<EventDraft>) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        insert(&tx, key).await?;
        append_in_tx(&tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn insert_first_key(&self, key: &ApiKeyRecord, audit: Vec<EventDraft>) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&FIRST_KEY_LOCK])
            .await?;
        let any: bool = tx
            .query_one("SELECT EXISTS(SELECT 1 FROM api_keys)", &[])
            .await?
            .get(0);
        if any {
            return Ok(false);
        }
        insert(&tx, key).await?;
        append_in_tx(&tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn find_key(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL"
                ),
                &[&key_hash],
            )
            .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn list_keys(&self) -> Result<Vec<ApiKeyRecord>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at"),
                &[],
            )
            .await?;
        rows.iter().map(key_from_row).collect()
    }

    async fn revoke_key(&self, id: Uuid, audit: Vec<EventDraft>) -> Result<ApiKeyRecord> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(
                &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1 FOR UPDATE"),
                &[&id],
            )
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("API key {id}")))?;
        let key = key_from_row(&row)?;
        if key.revoked {
            return Err(StoreError::Conflict(format!(
                "API key {id} is already revoked"
            )));
        }
        tx.execute(
            "UPDATE api_keys SET revoked_at = $2 WHERE id = $1",
            &[&id, &mesh_types::time::now()],
        )
        .await?;
        append_in_tx(&tx, audit).await?;
        tx.commit().await?;
        Ok(ApiKeyRecord {
            revoked: true,
            ..key
        })
    }
}
