//! Reading typed values out of PostgreSQL rows, and building filtered pages.

use crate::StoreError;
use serde::de::DeserializeOwned;
use std::str::FromStr;
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, ToSql};
use uuid::Uuid;

pub fn get<'a, T: FromSql<'a>>(row: &'a Row, idx: usize) -> Result<T, StoreError> {
    row.try_get(idx)
        .map_err(|e| StoreError::Corrupt(format!("column {idx}: {e}")))
}

pub fn parsed<T>(row: &Row, idx: usize) -> Result<T, StoreError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    let text: String = get(row, idx)?;
    text.trim_end()
        .parse()
        .map_err(|e| StoreError::Corrupt(format!("column {idx}: {e}")))
}

pub fn json<T: DeserializeOwned>(row: &Row, idx: usize) -> Result<T, StoreError> {
    let value: serde_json::Value = get(row, idx)?;
    Ok(serde_json::from_value(value)?)
}

pub fn opt_json<T: DeserializeOwned>(row: &Row, idx: usize) -> Result<Option<T>, StoreError> {
    let value: Option<serde_json::Value> = get(row, idx)?;
    Ok(value.map(serde_json::from_value).transpose()?)
}

pub fn to_json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

/// Maps a unique-constraint violation to `Conflict` with the given message.
pub fn unique_conflict(err: tokio_postgres::Error, message: String) -> StoreError {
    if err.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
        StoreError::Conflict(message)
    } else {
        err.into()
    }
}

pub fn cursor(page: &mesh_types::PageRequest) -> Result<Option<Uuid>, StoreError> {
    page.cursor
        .as_deref()
        .map(|c| {
            Uuid::parse_str(c)
                .map_err(|_| StoreError::invalid("cursor", "is not a cursor this API issued"))
        })
        .transpose()
}

type Param = Box<dyn ToSql + Sync + Send>;

/// A `SELECT … WHERE` built from optional filters, with `$n` parameters.
pub struct Query {
    sql: String,
    args: Vec<Param>,
}

impl Query {
    pub fn select(columns: &str, table: &str) -> Self {
        Self {
            sql: format!("SELECT {columns} FROM {table} WHERE TRUE"),
            args: Vec::new(),
        }
    }

    /// Adds `AND clause`, where the one `$` in `clause` stands for `value`.
    pub fn and(&mut self, clause: &str, value: impl ToSql + Sync + Send + 'static) {
        self.args.push(Box::new(value));
        let numbered = clause.replacen('$', &format!("${}", self.args.len()), 1);
        self.sql.push_str(" AND ");
        self.sql.push_str(&numbered);
    }

    /// Runs the query newest first, one row past `limit` to learn whether more follow.
    pub async fn page<T>(
        mut self,
        client: &tokio_postgres::Client,
        cursor: Option<Uuid>,
        limit: u32,
        map: fn(&Row) -> Result<T, StoreError>,
        id_of: fn(&T) -> Uuid,
    ) -> Result<mesh_types::Page<T>, StoreError> {
        if let Some(c) = cursor {
            self.and("id < $", c);
        }
        self.sql
            .push_str(&format!(" ORDER BY id DESC LIMIT {}", limit + 1));
        let params: Vec<&(dyn ToSql + Sync)> = self
            .args
            .iter()
            .map(|a| a.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let rows = client.query(&self.sql, &params).await?;
        let items = rows.iter().map(map).collect::<Result<Vec<_>, _>>()?;
        Ok(crate::paging::page(items, limit, id_of))
    }
}
