use super::SqliteStore;
use super::provenance::record_in_tx;
use super::rows::{self, conversion, fmt_ts, json, opt_json, parsed, to_json, ts, uuid};
use crate::columns::{backend_columns, backend_from_columns};
use crate::{Result, StoreError, ToolStore};
use async_trait::async_trait;
use mesh_types::tool::ToolFilter;
use mesh_types::{EventDraft, Page, PageRequest, Tool, ToolStatus};
use rusqlite::{OptionalExtension, Row, Transaction, params};
use uuid::Uuid;

pub(super) const TOOL_COLUMNS: &str = "id, name, version, description, input_schema, output_schema, \
     risk_tier, rate_limit, cost_model, status, registered_at, endpoint, backend, mcp_server, mcp_tool";

pub(super) fn tool_from_row(row: &Row<'_>) -> rusqlite::Result<Tool> {
    Ok(Tool {
        id: uuid(row, 0)?,
        name: row.get(1)?,
        version: row.get(2)?,
        description: row.get(3)?,
        input_schema: json(row, 4)?,
        output_schema: json(row, 5)?,
        risk_tier: parsed(row, 6)?,
        rate_limit: row.get(7)?,
        cost_model: opt_json(row, 8)?,
        status: parsed(row, 9)?,
        registered_at: ts(row, 10)?,
        endpoint: row.get(11)?,
        backend: backend_from_columns(&row.get::<_, String>(12)?, row.get(13)?, row.get(14)?)
            .map_err(|e| conversion(12, e))?,
    })
}

fn load(tx: &Transaction<'_>, id: Uuid) -> Result<Tool> {
    tx.prepare_cached(&format!("SELECT {TOOL_COLUMNS} FROM tools WHERE id = ?1"))?
        .query_row(params![id.to_string()], tool_from_row)
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("tool {id}")))
}

/// Inserts one tool row; `Conflict` when its name is taken.
pub(super) fn insert_in_tx(tx: &Transaction<'_>, tool: &Tool) -> Result<()> {
    let taken: bool = tx
        .prepare_cached("SELECT EXISTS(SELECT 1 FROM tools WHERE name = ?1)")?
        .query_row(params![tool.name], |r| r.get(0))?;
    if taken {
        return Err(StoreError::Conflict(format!(
            "a tool named `{}` is already registered",
            tool.name
        )));
    }
    let (backend, mcp_server, mcp_tool) = backend_columns(&tool.backend);
    tx.prepare_cached(&format!(
        "INSERT INTO tools ({TOOL_COLUMNS}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
    ))?
    .execute(params![
        tool.id.to_string(),
        tool.name,
        tool.version,
        tool.description,
        to_json(&tool.input_schema),
        to_json(&tool.output_schema),
        tool.risk_tier.as_str(),
        tool.rate_limit,
        tool.cost_model.as_ref().map(to_json),
        tool.status.as_str(),
        fmt_ts(&tool.registered_at),
        tool.endpoint,
        backend,
        mcp_server,
        mcp_tool,
    ])?;
    Ok(())
}

#[async_trait]
impl ToolStore for SqliteStore {
    async fn insert_tool(&self, tool: &Tool, audit: Vec<EventDraft>) -> Result<()> {
        let tool = tool.clone();
        self.write(move |tx| {
            insert_in_tx(tx, &tool)?;
            record_in_tx(tx, audit)?;
            Ok(())
        })
        .await
    }

    async fn get_tool(&self, id: Uuid) -> Result<Option<Tool>> {
        self.read(move |conn| {
            Ok(conn
                .query_row(
                    &format!("SELECT {TOOL_COLUMNS} FROM tools WHERE id = ?1"),
                    params![id.to_string()],
                    tool_from_row,
                )
                .optional()?)
        })
        .await
    }

    async fn list_tools(&self, filter: &ToolFilter, page: &PageRequest) -> Result<Page<Tool>> {
        let cursor = rows::cursor(page)?;
        let filter = filter.clone();
        let limit = page.limit;
        self.read(move |conn| {
            let mut q = rows::Query::select(TOOL_COLUMNS, "tools");
            if let Some(status) = filter.status {
                q.and("status = ?", status.as_str());
            }
            if let Some(name) = filter.name {
                q.and("name = ?", name);
            }
            if let Some(server) = filter.mcp_server {
                q.and("mcp_server = ?", server);
            }
            q.page(conn, cursor, limit, tool_from_row, |t| t.id)
        })
        .await
    }

    async fn retire_tool(&self, id: Uuid, audit: Vec<EventDraft>) -> Result<Tool> {
        self.write(move |tx| {
            let tool = load(tx, id)?;
            if tool.status == ToolStatus::Retired {
                return Err(StoreError::Conflict(format!(
                    "tool {id} is already retired"
                )));
            }
            tx.prepare_cached("UPDATE tools SET status = 'retired' WHERE id = ?1")?
                .execute(params![id.to_string()])?;
            record_in_tx(tx, audit)?;
            load(tx, id)
        })
        .await
    }

    async fn update_tool(&self, tool: &Tool, audit: Vec<EventDraft>) -> Result<Tool> {
        let tool = tool.clone();
        self.write(move |tx| {
            if load(tx, tool.id)?.status == ToolStatus::Retired {
                return Err(StoreError::Conflict(format!(
                    "tool {} is retired",
                    tool.name
                )));
            }
            let (backend, mcp_server, mcp_tool) = backend_columns(&tool.backend);
            tx.prepare_cached(
                "UPDATE tools SET version = ?2, description = ?3, input_schema = ?4, \
                 output_schema = ?5, risk_tier = ?6, rate_limit = ?7, cost_model = ?8, \
                 status = ?9, endpoint = ?10, backend = ?11, mcp_server = ?12, mcp_tool = ?13 \
                 WHERE id = ?1",
            )?
            .execute(params![
                tool.id.to_string(),
                tool.version,
                tool.description,
                to_json(&tool.input_schema),
                to_json(&tool.output_schema),
                tool.risk_tier.as_str(),
                tool.rate_limit,
                tool.cost_model.as_ref().map(to_json),
                tool.status.as_str(),
                tool.endpoint,
                backend,
                mcp_server,
                mcp_tool,
            ])?;
            record_in_tx(tx, audit)?;
            load(tx, tool.id)
        })
        .await
    }
}
