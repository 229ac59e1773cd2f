use super::PgStore;
use super::provenance::append_in_tx;
use super::rows::{get, opt_json, parsed, to_json, unique_conflict};
use super::tools::{TOOL_COLUMNS, insert_in_tx, tool_from_row};
use crate::columns::{transport_columns, transport_from_columns};
use crate::{EventFor, McpServerStore, Result, StoreError};
use async_trait::async_trait;
use mesh_types::{EventDraft, McpServer, McpServerStatus, Tool};
use tokio_postgres::Row;

const SERVER_COLUMNS: &str = "id, name, transport, command, url, risk_tier, rate_limit, cost_model, status, registered_at, settings";

fn server_from_row(row: &Row) -> Result<McpServer> {
    Ok(McpServer {
        id: get(row, 0)?,
        name: get(row, 1)?,
        transport: transport_from_columns(
            &get::<String>(row, 2)?,
            opt_json(row, 3)?,
            get(row, 4)?,
            opt_json(row, 10)?,
        )?,
        risk_tier: parsed(row, 5)?,
        rate_limit: get(row, 6)?,
        cost_model: opt_json(row, 7)?,
        status: parsed(row, 8)?,
        registered_at: get(row, 9)?,
    })
}

#[async_trait]
impl McpServerStore for PgStore {
    async fn insert_mcp_server(
        &self,
        server: &McpServer,
        tools: &[Tool],
        audit: Vec<EventDraft>,
    ) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let (transport, command, url, settings) = transport_columns(&server.transport);
        tx.execute(
            &format!(
                "INSERT INTO mcp_servers ({SERVER_COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
            ),
            &[
                &server.id,
                &server.name,
                &transport,
                &command.map(to_json),
                &url,
                &server.risk_tier.as_str(),
                &server.rate_limit,
                &server.cost_model.as_ref().map(to_json),
                &server.status.as_str(),
                &server.registered_at,
                &settings.map(to_json),
            ],
        )
        .await
        .map_err(|e| {
            unique_conflict(
                e,
                format!(
                    "an MCP server named `{}` is already registered",
                    server.name
                ),
            )
        })?;
        for tool in tools {
            insert_in_tx(&tx, tool).await?;
        }
        append_in_tx(&tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_mcp_server(&self, name: &str) -> Result<Option<McpServer>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {SERVER_COLUMNS} FROM mcp_servers WHERE name = $1"),
                &[&name],
            )
            .await?;
        row.as_ref().map(server_from_row).transpose()
    }

    async fn list_mcp_servers(&self) -> Result<Vec<McpServer>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!("SELECT {SERVER_COLUMNS} FROM mcp_servers ORDER BY id"),
                &[],
            )
            .await?;
        rows.iter().map(server_from_row).collect()
    }

    async fn retire_mcp_server(
        &self,
        name: &str,
        tool_event: EventFor<Tool>,
        mut audit: Vec<EventDraft>,
    ) -> Result<McpServer> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let server = tx
            .query_opt(
                &format!("SELECT {SERVER_COLUMNS} FROM mcp_servers WHERE name = $1 FOR UPDATE"),
                &[&name],
            )
            .await?
            .as_ref()
            .map(server_from_row)
            .transpose()?
            .ok_or_else(|| StoreError::NotFound(format!("MCP server {name}")))?;
        if server.status == McpServerStatus::Retired {
            return Err(StoreError::Conflict(format!(
                "MCP server {name} is already retired"
            )));
        }
        let tools = tx
            .query(
                &format!(
                    "UPDATE tools SET status = 'retired' \
                     WHERE mcp_server = $1 AND status <> 'retired' RETURNING {TOOL_COLUMNS}"
                ),
                &[&name],
            )
            .await?
            .iter()
            .map(tool_from_row)
            .collect::<Result<Vec<_>>>()?;
        tx.execute(
            "UPDATE mcp_servers SET status = 'retired' WHERE name = $1",
            &[&name],
        )
        .await?;
        audit.extend(tools.iter().map(|t| tool_event(t)));
        append_in_tx(&tx, audit).await?;
        tx.commit().await?;
        Ok(McpServer {
            status: McpServerStatus::Retired,
            ..server
        })
    }
}
