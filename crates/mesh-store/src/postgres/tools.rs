use super::PgStore;
use super::provenance::append_in_tx;
use super::rows::{self, get, opt_json, parsed, to_json, unique_conflict};
use crate::columns::{backend_columns, backend_from_columns};
use crate::{Result, StoreError, ToolStore};
use async_trait::async_trait;
use mesh_types::tool::ToolFilter;
use mesh_types::{EventDraft, Page, PageRequest, Tool, ToolStatus};
use tokio_postgres::{Row, Transaction};
use uuid::Uuid;

pub(super) const TOOL_COLUMNS: &str = "id, name, version, description, input_schema, output_schema, \
     risk_tier, rate_limit, cost_model, status, registered_at, endpoint, backend, mcp_server, mcp_tool";

pub(super) fn tool_from_row(row: &Row) -> Result<Tool> {
    Ok(Tool {
        id: get(row, 0)?,
        name: get(row, 1)?,
        version: get(row, 2)?,
        description: get(row, 3)?,
        input_schema: get(row, 4)?,
        output_schema: get(row, 5)?,
        risk_tier: parsed(row, 6)?,
        rate_limit: get(row, 7)?,
        cost_model: opt_json(row, 8)?,
        status: parsed(row, 9)?,
        registered_at: get(row, 10)?,
        endpoint: get(row, 11)?,
        backend: backend_from_columns(&get::<String>(row, 12)?, get(row, 13)?, get(row, 14)?)?,
    })
}

/// Inserts one tool row; `Conflict` when its name is taken.
pub(super) async fn insert_in_tx(tx: &Transaction<'_>, tool: &Tool) -> Result<()> {
    let (backend, mcp_server, mcp_tool) = backend_columns(&tool.backend);
    tx.execute(
        &format!(
            "INSERT INTO tools ({TOOL_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
        ),
        &[
            &tool.id,
            &tool.name,
            &tool.version,
            &tool.description,
            &tool.input_schema,
            &tool.output_schema,
            &tool.risk_tier.as_str(),
            &tool.rate_limit,
            &tool.cost_model.as_ref().map(to_json),
            &tool.status.as_str(),
            &tool.registered_at,
            &tool.endpoint,
            &backend,
            &mcp_server,
            &mcp_tool,
        ],
    )
    .await
    .map_err(|e| {
        unique_conflict(
            e,
            format!("a tool named `{}` is already registered", tool.name),
        )
    })?;
    Ok(())
}

#[async_trait]
impl ToolStore for PgStore {
    async fn insert_tool(&self, tool: &Tool, audit: Vec<EventDraft>) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        insert_in_tx(&tx, tool).await?;
        append_in_tx(&tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_tool(&self, id: Uuid) -> Result<Option<Tool>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {TOOL_COLUMNS} FROM tools WHERE id = $1"),
                &[&id],
            )
            .await?;
        row.as_ref().map(tool_from_row).transpose()
    }

    async fn list_tools(&self, filter: &ToolFilter, page: &PageRequest) -> Result<Page<Tool>> {
        let cursor = rows::cursor(page)?;
        let mut q = rows::Query::select(TOOL_COLUMNS, "tools");
        if let Some(status) = filter.status {
            q.and("status = $", status.as_str());
        }
        if let Some(name) = &filter.name {
            q.and("name = $", name.clone());
        }
        if let Some(server) = &filter.mcp_server {
            q.and("mcp_server = $", server.clone());
        }
        let client = self.client().await?;
        q.page(&client, cursor, page.limit, tool_from_row, |t| t.id)
            .await
    }

    async fn retire_tool(&self, id: Uuid, audit: Vec<EventDraft>) -> Result<Tool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(
                &format!("SELECT {TOOL_COLUMNS} FROM tools WHERE id = $1 FOR UPDATE"),
                &[&id],
            )
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("tool {id}")))?;
        if tool_from_row(&row)?.status == ToolStatus::Retired {
            return Err(StoreError::Conflict(format!(
                "tool {id} is already retired"
            )));
        }
        let row = tx
            .query_one(
                &format!(
                    "UPDATE tools SET status = 'retired' WHERE id = $1 RETURNING {TOOL_COLUMNS}"
                ),
                &[&id],
            )
            .await?;
        append_in_tx(&tx, audit).await?;
        tx.commit().await?;
        tool_from_row(&row)
    }

    async fn update_tool(&self, tool: &Tool, audit: Vec<EventDraft>) -> Result<Tool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(
                &format!("SELECT {TOOL_COLUMNS} FROM tools WHERE id = $1 FOR UPDATE"),
                &[&tool.id],
            )
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("tool {}", tool.id)))?;
        if tool_from_row(&row)?.status == ToolStatus::Retired {
            return Err(StoreError::Conflict(format!(
                "tool {} is retired",
                tool.name
            )));
        }
        let (backend, mcp_server, mcp_tool) = backend_columns(&tool.backend);
        let row = tx
            .query_one(
                &format!(
                    "UPDATE tools SET version = $2, description = $3, input_schema = $4, \
                     output_schema = $5, risk_tier = $6, rate_limit = $7, cost_model = $8, \
                     status = $9, endpoint = $10, backend = $11, mcp_server = $12, mcp_tool = $13 \
                     WHERE id = $1 RETURNING {TOOL_COLUMNS}"
                ),
                &[
                    &tool.id,
                    &tool.version,
                    &tool.description,
                    &tool.input_schema,
                    &tool.output_schema,
                    &tool.risk_tier.as_str(),
                    &tool.rate_limit,
                    &tool.cost_model.as_ref().map(to_json),
                    &tool.status.as_str(),
                    &tool.endpoint,
                    &backend,
                    &mcp_server,
                    &mcp_tool,
                ],
            )
            .await?;
        append_in_tx(&tx, audit).await?;
        tx.commit().await?;
        tool_from_row(&row)
    }
}
