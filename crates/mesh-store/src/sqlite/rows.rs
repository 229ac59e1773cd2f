//! Reading typed values out of SQLite's text columns.

use mesh_types::time::Timestamp;
use rusqlite::Row;
use rusqlite::types::Type;
use serde::de::DeserializeOwned;
use std::str::FromStr;
use uuid::Uuid;

pub(crate) fn conversion<E: std::error::Error + Send + Sync + 'static>(
    idx: usize,
    err: E,
) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, Box::new(err))
}

pub fn parsed<T>(row: &Row<'_>, idx: usize) -> rusqlite::Result<T>
where
    T: FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let text: String = row.get(idx)?;
    text.parse().map_err(|e| conversion(idx, e))
}

pub fn uuid(row: &Row<'_>, idx: usize) -> rusqlite::Result<Uuid> {
    parsed(row, idx)
}

pub fn opt_uuid(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<Uuid>> {
    let text: Option<String> = row.get(idx)?;
    text.map(|t| t.parse().map_err(|e| conversion(idx, e)))
        .transpose()
}

pub fn json<T: DeserializeOwned>(row: &Row<'_>, idx: usize) -> rusqlite::Result<T> {
    let text: String = row.get(idx)?;
    serde_json::from_str(&text).map_err(|e| conversion(idx, e))
}

pub fn opt_json<T: DeserializeOwned>(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<T>> {
    let text: Option<String> = row.get(idx)?;
    text.map(|t| serde_json::from_str(&t).map_err(|e| conversion(idx, e)))
        .transpose()
}

pub fn ts(row: &Row<'_>, idx: usize) -> rusqlite::Result<Timestamp> {
    let text: String = row.get(idx)?;
    parse_ts(&text).map_err(|e| conversion(idx, e))
}

pub fn opt_ts(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<Timestamp>> {
    let text: Option<String> = row.get(idx)?;
    text.map(|t| parse_ts(&t).map_err(|e| conversion(idx, e)))
        .transpose()
}

fn parse_ts(text: &str) -> Result<Timestamp, chrono::ParseError> {
    chrono::DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&chrono::Utc))
}

pub fn fmt_ts(ts: &Timestamp) -> String {
    mesh_types::time::format(ts)
}

pub fn to_json<T: serde::Serialize>(value: &T) -> String {
    // Serialising plain data types to a string cannot fail.
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_string())
}

/// Parses a pagination cursor (the id of the last item of the previous page).
pub fn cursor(page: &mesh_types::PageRequest) -> Result<Option<String>, crate::StoreError> {
    page.cursor
        .as_deref()
        .map(|c| {
            Uuid::parse_str(c).map(|id| id.to_string()).map_err(|_| {
                crate::StoreError::invalid("cursor", "is not a cursor this API issued")
            })
        })
        .transpose()
}

/// A `SELECT … WHERE` built from optional filters, with numbered parameters.
pub struct Query {
    sql: String,
    args: Vec<Box<dyn rusqlite::types::ToSql>>,
}

impl Query {
    pub fn select(columns: &str, table: &str) -> Self {
        Self {
            sql: format!("SELECT {columns} FROM {table} WHERE 1=1"),
            args: Vec::new(),
        }
    }

    /// Adds `AND clause`, where the one `?` in `clause` stands for `value`.
    pub fn and(&mut self, clause: &str, value: impl rusqlite::types::ToSql + 'static) {
        self.args.push(Box::new(value));
        let numbered = clause.replacen('?', &format!("?{}", self.args.len()), 1);
        self.sql.push_str(" AND ");
        self.sql.push_str(&numbered);
    }

    /// Runs the query newest first, one row past `limit` to learn whether more follow.
    pub fn page<T>(
        mut self,
        conn: &rusqlite::Connection,
        cursor: Option<String>,
        limit: u32,
        map: fn(&Row<'_>) -> rusqlite::Result<T>,
        id_of: fn(&T) -> Uuid,
    ) -> Result<mesh_types::Page<T>, crate::StoreError> {
        if let Some(c) = cursor {
            self.and("id < ?", c);
        }
        self.sql
            .push_str(&format!(" ORDER BY id DESC LIMIT {}", limit + 1));
        let mut stmt = conn.prepare(&self.sql)?;
        let params: Vec<&dyn rusqlite::types::ToSql> =
            self.args.iter().map(|a| a.as_ref()).collect();
        let items = stmt
            .query_map(params.as_slice(), map)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(crate::paging::page(items, limit, id_of))
    }
}
