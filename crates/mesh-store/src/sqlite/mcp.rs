use super::SqliteStore;
use super::provenance::record_in_tx;
use super::rows::{conversion, fmt_ts, opt_json, parsed, to_json, ts, uuid};
use super::tools::{TOOL_COLUMNS, insert_in_tx, tool_from_row};
use crate::columns::{transport_columns, transport_from_columns};
use crate::{EventFor, McpServerStore, Result, StoreError};
use async_trait::async_trait;
use mesh_types::{EventDraft, McpServer, McpServerStatus, Tool};
use rusqlite::{Connection, OptionalExtension, Row, params};

const SERVER_COLUMNS: &str = "id, name, transport, command, url, risk_tier, rate_limit, cost_model, status, registered_at, settings";

fn server_from_row(row: &Row<'_>) -> rusqlite::Result<McpServer> {
    Ok(McpServer {
        id: uuid(row, 0)?,
        name: row.get(1)?,
        transport: transport_from_columns(
            &row.get::<_, String>(2)?,
            opt_json(row, 3)?,
            row.get(4)?,
            opt_json(row, 10)?,
        )
        .map_err(|e| conversion(2, e))?,
        risk_tier: parsed(row, 5)?,
        rate_limit: row.get(6)?,
        cost_model: opt_json(row, 7)?,
        status: parsed(row, 8)?,
        registered_at: ts(row, 9)?,
    })
}

fn load(conn: &Connection, name: &str) -> Result<Option<McpServer>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {SERVER_COLUMNS} FROM mcp_servers WHERE name = ?1"
        ))?
        .query_row(params![name], server_from_row)
        .optional()?)
}

#[async_trait]
impl McpServerStore for SqliteStore {
    async fn insert_mcp_server(
        &self,
        server: &McpServer,
        tools: &[Tool],
        audit: Vec<EventDraft>,
    ) -> Result<()> {
        let (server, tools) = (server.clone(), tools.to_vec());
        self.write(move |tx| {
            if load(tx, &server.name)?.is_some() {
                return Err(StoreError::Conflict(format!(
                    "an MCP server named `{}` is already registered",
                    server.name
                )));
            }
            let (transport, command, url, settings) = transport_columns(&server.transport);
            tx.prepare_cached(&format!(
                "INSERT INTO mcp_servers ({SERVER_COLUMNS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
            ))?
            .execute(params![
                server.id.to_string(),
                server.name,
                transport,
                command.map(to_json),
                url,
                server.risk_tier.as_str(),
                server.rate_limit,
                server.cost_model.as_ref().map(to_json),
                server.status.as_str(),
                fmt_ts(&server.registered_at),
                settings.map(to_json),
            ])?;
            for tool in &tools {
                insert_in_tx(tx, tool)?;
            }
            record_in_tx(tx, audit)?;
            Ok(())
        })
        .await
    }

    async fn get_mcp_server(&self, name: &str) -> Result<Option<McpServer>> {
        let name = name.to_string();
        self.read(move |conn| load(conn, &name)).await
    }

    async fn list_mcp_servers(&self) -> Result<Vec<McpServer>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {SERVER_COLUMNS} FROM mcp_servers ORDER BY id"
            ))?;
            let servers = stmt
                .query_map([], server_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(servers)
        })
        .await
    }

    async fn retire_mcp_server(
        &self,
        name: &str,
        tool_event: EventFor<Tool>,
        mut audit: Vec<EventDraft>,
    ) -> Result<McpServer> {
        let name = name.to_string();
        self.write(move |tx| {
            let server = load(tx, &name)?
                .ok_or_else(|| StoreError::NotFound(format!("MCP server {name}")))?;
            if server.status == McpServerStatus::Retired {
                return Err(StoreError::Conflict(format!(
                    "MCP server {name} is already retired"
                )));
            }
            let tools = tx
                .prepare_cached(&format!(
                    "SELECT {TOOL_COLUMNS} FROM tools WHERE mcp_server = ?1 AND status != 'retired'"
                ))?
                .query_map(params![name], tool_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            tx.prepare_cached(
                "UPDATE tools SET status = 'retired' WHERE mcp_server = ?1 AND status != 'retired'",
            )?
            .execute(params![name])?;
            tx.prepare_cached("UPDATE mcp_servers SET status = 'retired' WHERE name = ?1")?
                .execute(params![name])?;
            audit.extend(tools.iter().map(|t| tool_event(t)));
            record_in_tx(tx, audit)?;
            Ok(McpServer {
                status: McpServerStatus::Retired,
                ..server
            })
        })
        .await
    }
}
