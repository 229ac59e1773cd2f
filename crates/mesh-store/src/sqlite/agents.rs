use super::SqliteStore;
use super::provenance::record_in_tx;
use super::rows::{self, fmt_ts, json, opt_json, opt_ts, parsed, to_json, ts, uuid};
use crate::{AgentStore, EventFor, EventsFor, Result, StoreError};
use async_trait::async_trait;
use mesh_types::agent::{AgentFilter, AgentSummary};
use mesh_types::time::Timestamp;
use mesh_types::{Agent, AgentStatus, EventDraft, Page, PageRequest};
use rusqlite::{OptionalExtension, Row, Transaction, params};
use std::collections::HashMap;
use uuid::Uuid;

const AGENT_COLUMNS: &str = "id, name, version, role, risk_tier, capabilities, model_preference, \
     cost_profile, status, registered_at, last_heartbeat, max_concurrency, draining_since, a2a_endpoint";
/// Leases `agents.id` holds (for use inside a statement on `agents`).
const LEASES_HELD: &str =
    "(SELECT COUNT(*) FROM tasks WHERE tasks.status = 'running' AND tasks.leased_by = agents.id)";

fn agent_from_row(row: &Row<'_>) -> rusqlite::Result<Agent> {
    Ok(Agent {
        id: uuid(row, 0)?,
        name: row.get(1)?,
        version: row.get(2)?,
        role: parsed(row, 3)?,
        risk_tier: parsed(row, 4)?,
        capabilities: json(row, 5)?,
        model_preference: opt_json(row, 6)?,
        cost_profile: opt_json(row, 7)?,
        status: parsed(row, 8)?,
        registered_at: ts(row, 9)?,
        last_heartbeat: opt_ts(row, 10)?,
        max_concurrency: row
            .get::<_, Option<i64>>(11)?
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
        draining_since: opt_ts(row, 12)?,
        a2a: opt_json(row, 13)?,
    })
}

fn load(tx: &Transaction<'_>, id: Uuid) -> Result<Agent> {
    tx.prepare_cached(&format!("SELECT {AGENT_COLUMNS} FROM agents WHERE id = ?1"))?
        .query_row(params![id.to_string()], agent_from_row)
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("agent {id}")))
}

/// Runs an `UPDATE … RETURNING` of agents; the rows in id order, so the events they
/// produce are in a stable order.
fn update_returning(tx: &Transaction<'_>, sql: &str) -> Result<Vec<Agent>> {
    let mut stmt = tx.prepare(sql)?;
    let mut agents = stmt
        .query_map([], agent_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    agents.sort_by_key(|a| a.id);
    Ok(agents)
}

#[async_trait]
impl AgentStore for SqliteStore {
    async fn insert_agent(&self, agent: &Agent, audit: Vec<EventDraft>) -> Result<()> {
        let agent = agent.clone();
        self.write(move |tx| {
            let taken: bool = tx.prepare_cached("SELECT EXISTS(SELECT 1 FROM agents WHERE name = ?1)")?.query_row(params![agent.name],
                |r| r.get(0),)?;
            if taken {
                return Err(StoreError::Conflict(format!(
                    "an agent named `{}` is already registered",
                    agent.name
                )));
            }
            tx.prepare_cached(&format!("INSERT INTO agents ({AGENT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"))?.execute(params![
                    agent.id.to_string(),
                    agent.name,
                    agent.version,
                    agent.role.as_str(),
                    agent.risk_tier.as_str(),
                    to_json(&agent.capabilities),
                    agent.model_preference.as_ref().map(to_json),
                    agent.cost_profile.as_ref().map(to_json),
                    agent.status.as_str(),
                    fmt_ts(&agent.registered_at),
                    agent.last_heartbeat.as_ref().map(fmt_ts),
                    agent.max_concurrency,
                    agent.draining_since.as_ref().map(fmt_ts),
                    agent.a2a.as_ref().map(to_json),
                ],)?;
            record_in_tx(tx, audit)?;
            Ok(())
        })
        .await
    }

    async fn get_agent(&self, id: Uuid) -> Result<Option<Agent>> {
        self.read(move |conn| {
            Ok(conn
                .query_row(
                    &format!("SELECT {AGENT_COLUMNS} FROM agents WHERE id = ?1"),
                    params![id.to_string()],
                    agent_from_row,
                )
                .optional()?)
        })
        .await
    }

    async fn list_agents(&self, filter: &AgentFilter, page: &PageRequest) -> Result<Page<Agent>> {
        let cursor = rows::cursor(page)?;
        let filter = filter.clone();
        let limit = page.limit;
        self.read(move |conn| {
            let mut q = rows::Query::select(AGENT_COLUMNS, "agents");
            if let Some(status) = filter.status {
                q.and("status = ?", status.as_str());
            }
            if let Some(role) = filter.role {
                q.and("role = ?", role.as_str());
            }
            if let Some(cap) = filter.capability {
                q.and(
                    "EXISTS (SELECT 1 FROM json_each(capabilities) WHERE value = ?)",
                    cap,
                );
            }
            if let Some(a2a) = filter.a2a {
                q.and("(a2a_endpoint IS NOT NULL) = ?", a2a);
            }
            q.page(conn, cursor, limit, agent_from_row, |a| a.id)
        })
        .await
    }

    async fn heartbeat(&self, id: Uuid, now: Timestamp, on_recovery: EventDraft) -> Result<Agent> {
        self.write(move |tx| {
            let agent = load(tx, id)?;
            match agent.status {
                AgentStatus::Retired => {
                    return Err(StoreError::Conflict(format!("agent {id} is retired")));
                }
                AgentStatus::Unhealthy => {
                    tx.prepare_cached(
                        "UPDATE agents SET status = 'active', last_heartbeat = ?2 WHERE id = ?1",
                    )?
                    .execute(params![id.to_string(), fmt_ts(&now)])?;
                    record_in_tx(tx, vec![on_recovery])?;
                }
                AgentStatus::Active | AgentStatus::Busy => {
                    tx.prepare_cached("UPDATE agents SET last_heartbeat = ?2 WHERE id = ?1")?
                        .execute(params![id.to_string(), fmt_ts(&now)])?;
                }
            }
            load(tx, id)
        })
        .await
    }

    async fn retire_agent(&self, id: Uuid, audit: Vec<EventDraft>) -> Result<Agent> {
        self.write(move |tx| {
            let agent = load(tx, id)?;
            if agent.status == AgentStatus::Retired {
                return Err(StoreError::Conflict(format!(
                    "agent {id} is already retired"
                )));
            }
            tx.prepare_cached("UPDATE agents SET status = 'retired' WHERE id = ?1")?
                .execute(params![id.to_string()])?;
            record_in_tx(tx, audit)?;
            load(tx, id)
        })
        .await
    }

    async fn expire_heartbeats(
        &self,
        cutoff: Timestamp,
        event: EventFor<Agent>,
    ) -> Result<Vec<Agent>> {
        self.write(move |tx| {
            let mut stmt = tx.prepare(&format!(
                "UPDATE agents SET status = 'unhealthy'
                 WHERE status IN ('active', 'busy') AND COALESCE(last_heartbeat, registered_at) < ?1
                 RETURNING {AGENT_COLUMNS}"
            ))?;
            let mut expired = stmt
                .query_map(params![fmt_ts(&cutoff)], agent_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            expired.sort_by_key(|a| a.id);
            record_in_tx(tx, expired.iter().map(|a| event(a)).collect())?;
            Ok(expired)
        })
        .await
    }

    async fn agent_summary(&self) -> Result<AgentSummary> {
        self.read(|conn| {
            let mut stmt = conn.prepare("SELECT status, COUNT(*) FROM agents GROUP BY status")?;
            let mut summary = AgentSummary::default();
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            for row in rows {
                let (status, n) = row?;
                let n = n.max(0) as u64;
                match status.parse::<AgentStatus>() {
                    Ok(AgentStatus::Active) => summary.active = n,
                    Ok(AgentStatus::Busy) => summary.busy = n,
                    Ok(AgentStatus::Unhealthy) => summary.unhealthy = n,
                    Ok(AgentStatus::Retired) => summary.retired = n,
                    Err(e) => return Err(StoreError::Corrupt(e.to_string())),
                }
            }
            Ok(summary)
        })
        .await
    }
    async fn drain_agent(&self, id: Uuid, now: Timestamp, audit: Vec<EventDraft>) -> Result<Agent> {
        self.write(move |tx| {
            let agent = load(tx, id)?;
            if agent.status == AgentStatus::Retired {
                return Err(StoreError::Conflict(format!("agent {id} is retired")));
            }
            if agent.draining_since.is_none() {
                tx.prepare_cached("UPDATE agents SET draining_since = ?2 WHERE id = ?1")?
                    .execute(params![id.to_string(), fmt_ts(&now)])?;
                record_in_tx(tx, audit)?;
            }
            load(tx, id)
        })
        .await
    }

    async fn retire_drained(&self, events: EventsFor<Agent>) -> Result<Vec<Agent>> {
        self.write(move |tx| {
            let retired = update_returning(
                tx,
                &format!(
                    "UPDATE agents SET status = 'retired'
                     WHERE draining_since IS NOT NULL AND status <> 'retired' AND {LEASES_HELD} = 0
                     RETURNING {AGENT_COLUMNS}"
                ),
            )?;
            record_in_tx(tx, retired.iter().flat_map(|a| events(a)).collect())?;
            Ok(retired)
        })
        .await
    }

    async fn balance_busy(&self, event: EventFor<Agent>) -> Result<Vec<Agent>> {
        self.write(move |tx| {
            let changed = update_returning(
                tx,
                &format!(
                    "UPDATE agents SET status = CASE status WHEN 'active' THEN 'busy' ELSE 'active' END
                     WHERE max_concurrency IS NOT NULL
                       AND ((status = 'active' AND {LEASES_HELD} >= max_concurrency)
                         OR (status = 'busy' AND {LEASES_HELD} < max_concurrency))
                     RETURNING {AGENT_COLUMNS}"
                ),
            )?;
            record_in_tx(tx, changed.iter().map(|a| event(a)).collect())?;
            Ok(changed)
        })
        .await
    }

    async fn agent_loads(&self) -> Result<HashMap<Uuid, u32>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT leased_by, COUNT(*) FROM tasks
                 WHERE status = 'running' AND leased_by IS NOT NULL GROUP BY leased_by",
            )?;
            let rows = stmt.query_map([], |r| Ok((uuid(r, 0)?, r.get::<_, i64>(1)?)))?;
            let mut loads = HashMap::new();
            for row in rows {
                let (agent, n) = row?;
                loads.insert(agent, u32::try_from(n).unwrap_or(u32::MAX));
            }
            Ok(loads)
        })
        .await
    }

    async fn mark_unhealthy(&self, id: Uuid, event: EventDraft) -> Result<Option<Agent>> {
        self.write(move |tx| {
            let changed = tx
                .prepare_cached(
                    "UPDATE agents SET status = 'unhealthy' WHERE id = ?1 AND status IN ('active', 'busy')",
                )?
                .execute(params![id.to_string()])?;
            if changed == 0 {
                return Ok(None);
            }
            record_in_tx(tx, vec![event])?;
            load(tx, id).map(Some)
        })
        .await
    }
}
