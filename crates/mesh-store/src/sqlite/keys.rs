use super::SqliteStore;
use super::provenance::record_in_tx;
use super::rows::{fmt_ts, json, opt_ts, to_json, ts, uuid};
use crate::{ApiKeyRecord, KeyStore, Result, StoreError};
use async_trait::async_trait;
use mesh_types::EventDraft;
use rusqlite::{OptionalExtension, Row, Transaction, params};
use uuid::Uuid;

const KEY_COLUMNS: &str = "id, name, key_hash, roles, tenant, created_at, revoked_at";

fn key_from_row(row: &Row<'_>) -> rusqlite::Result<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: uuid(row, 0)?,
        name: row.get(1)?,
        key_hash: row.get(2)?,
        roles: json(row, 3)?,
        tenant: row.get(4)?,
        created_at: ts(row, 5)?,
        revoked: opt_ts(row, 6)?.is_some(),
    })
}

fn insert(tx: &Transaction<'_>, key: &ApiKeyRecord) -> Result<()> {
    tx.prepare_cached(&format!(
        "INSERT INTO api_keys ({KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL)"
    ))?
    .execute(params![
        key.id.to_string(),
        key.name,
        key.key_hash,
        to_json(&key.roles),
        key.tenant,
        fmt_ts(&key.created_at),
    ])?;
    Ok(())
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn insert_key(&self, key: &ApiKeyRecord, audit: Vec<EventDraft>) -> Result<()> {
        let key = key.clone();
        self.write(move |tx| {
            insert(tx, &key)?;
            record_in_tx(tx, audit)?;
            Ok(())
        })
        .await
    }

    async fn insert_first_key(&self, key: &ApiKeyRecord, audit: Vec<EventDraft>) -> Result<bool> {
        let key = key.clone();
        self.write(move |tx| {
            let any: bool = tx
                .prepare_cached("SELECT EXISTS(SELECT 1 FROM api_keys)")?
                .query_row([], |r| r.get(0))?;
            if any {
                return Ok(false);
            }
            insert(tx, &key)?;
            record_in_tx(tx, audit)?;
            Ok(true)
        })
        .await
    }

    async fn find_key(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>> {
        let key_hash = key_hash.to_string();
        self.read(move |conn| {
            Ok(conn
                .query_row(
                    &format!(
                        "SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = ?1 AND revoked_at IS NULL"
                    ),
                    params![key_hash],
                    key_from_row,
                )
                .optional()?)
        })
        .await
    }

    async fn list_keys(&self) -> Result<Vec<ApiKeyRecord>> {
        self.read(|conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at"
            ))?;
            Ok(stmt
                .query_map([], key_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn revoke_key(&self, id: Uuid, audit: Vec<EventDraft>) -> Result<ApiKeyRecord> {
        self.write(move |tx| {
            let key = tx
                .query_row(
                    &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?1"),
                    params![id.to_string()],
                    key_from_row,
                )
                .optional()?
                .ok_or_else(|| StoreError::NotFound(format!("API key {id}")))?;
            if key.revoked {
                return Err(StoreError::Conflict(format!(
                    "API key {id} is already revoked"
                )));
            }
            tx.prepare_cached("UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1")?
                .execute(params![id.to_string(), fmt_ts(&mesh_types::time::now())])?;
            record_in_tx(tx, audit)?;
            Ok(ApiKeyRecord {
                revoked: true,
                ..key
            })
        })
        .await
    }
}
