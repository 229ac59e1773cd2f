use super::PgStore;
use super::provenance::append_in_tx;
use super::rows::{self, get, json, opt_json, parsed, to_json, unique_conflict};
use crate::{AgentStore, EventFor, EventsFor, Result, StoreError};
use async_trait::async_trait;
use deadpool_postgres::Transaction;
use mesh_types::agent::{AgentFilter, AgentSummary};
use mesh_types::time::Timestamp;
use mesh_types::{Agent, AgentStatus, EventDraft, Page, PageRequest};
use std::collections::HashMap;
use tokio_postgres::Row;
use uuid::Uuid;

const AGENT_COLUMNS: &str = "id, name, version, role, risk_tier, capabilities, model_preference, \
     cost_profile, status, registered_at, last_heartbeat, max_concurrency, draining_since, a2a_endpoint";
/// Leases `agents.id` holds (for use inside a statement on `agents`).
const LEASES_HELD: &str =
    "(SELECT COUNT(*) FROM tasks WHERE tasks.status = 'running' AND tasks.leased_by = agents.id)";

fn agent_from_row(row: &Row) -> Result<Agent> {
    Ok(Agent {
        id: get(row, 0)?,
        name: get(row, 1)?,
        version: get(row, 2)?,
        role: parsed(row, 3)?,
        risk_tier: parsed(row, 4)?,
        capabilities: json(row, 5)?,
        model_preference: opt_json(row, 6)?,
        cost_profile: opt_json(row, 7)?,
        status: parsed(row, 8)?,
        registered_at: get(row, 9)?,
        last_heartbeat: get(row, 10)?,
        max_concurrency: get::<Option<i32>>(row, 11)?.map(|n| u32::try_from(n).unwrap_or(0)),
        draining_since: get(row, 12)?,
        a2a: opt_json(row, 13)?,
    })
}

async fn lock(tx: &Transaction<'_>, id: Uuid) -> Result<Agent> {
    let row = tx
        .query_opt(
            &format!("SELECT {AGENT_COLUMNS} FROM agents WHERE id = $1 FOR UPDATE"),
            &[&id],
        )
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("agent {id}")))?;
    agent_from_row(&row)
}

/// Runs an `UPDATE … RETURNING` of agents; the rows in id order, so the events they
/// produce are in a stable order.
async fn update_returning(tx: &Transaction<'_>, sql: &str) -> Result<Vec<Agent>> {
    let rows = tx.query(sql, &[]).await?;
    let mut agents = rows
        .iter()
        .map(agent_from_row)
        .collect::<Result<Vec<_>>>()?;
    agents.sort_by_key(|a| a.id);
    Ok(agents)
}

#[async_trait]
impl AgentStore for PgStore {
    async fn insert_agent(&self, agent: &Agent, audit: Vec<EventDraft>) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute(
            &format!("INSERT INTO agents ({AGENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"),
            &[
                &agent.id,
                &agent.name,
                &agent.version,
                &agent.role.as_str(),
                &agent.risk_tier.as_str(),
                &to_json(&agent.capabilities),
                &agent.model_preference.as_ref().map(to_json),
                &agent.cost_profile.as_ref().map(to_json),
                &agent.status.as_str(),
                &agent.registered_at,
                &agent.last_heartbeat,
                &agent.max_concurrency.map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
                &agent.draining_since,
                &agent.a2a.as_ref().map(to_json),
            ],
        )
        .await
        .map_err(|e| {
            unique_conflict(e, format!("an agent named `{}` is already registered", agent.name))
        })?;
        append_in_tx(&tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_agent(&self, id: Uuid) -> Result<Option<Agent>> {
        let client = self.client().await?;
        // Every claim reads its agent: one round trip, not a parse and then a run.
        let by_id = client
            .prepare_cached(&format!("SELECT {AGENT_COLUMNS} FROM agents WHERE id = $1"))
            .await?;
        let row = client.query_opt(&by_id, &[&id]).await?;
        row.as_ref().map(agent_from_row).transpose()
    }

    async fn list_agents(&self, filter: &AgentFilter, page: &PageRequest) -> Result<Page<Agent>> {
        let cursor = rows::cursor(page)?;
        let mut q = rows::Query::select(AGENT_COLUMNS, "agents");
        if let Some(status) = filter.status {
            q.and("status = $", status.as_str());
        }
        if let Some(role) = filter.role {
            q.and("role = $", role.as_str());
        }
        if let Some(cap) = &filter.capability {
            q.and("capabilities ? $", cap.clone());
        }
        if let Some(a2a) = filter.a2a {
            q.and("(a2a_endpoint IS NOT NULL) = $", a2a);
        }
        let client = self.client().await?;
        q.page(&client, cursor, page.limit, agent_from_row, |a| a.id)
            .await
    }

    async fn heartbeat(&self, id: Uuid, now: Timestamp, on_recovery: EventDraft) -> Result<Agent> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let agent = lock(&tx, id).await?;
        let recovering = match agent.status {
            AgentStatus::Retired => {
                return Err(StoreError::Conflict(format!("agent {id} is retired")));
            }
            AgentStatus::Unhealthy => true,
            AgentStatus::Active | AgentStatus::Busy => false,
        };
        let row = tx
            .query_one(
                &format!(
                    "UPDATE agents SET last_heartbeat = $2,
                       status = CASE WHEN status = 'unhealthy' THEN 'active' ELSE status END
                     WHERE id = $1 RETURNING {AGENT_COLUMNS}"
                ),
                &[&id, &now],
            )
            .await?;
        if recovering {
            append_in_tx(&tx, vec![on_recovery]).await?;
        }
        tx.commit().await?;
        agent_from_row(&row)
    }

    async fn retire_agent(&self, id: Uuid, audit: Vec<EventDraft>) -> Result<Agent> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let agent = lock(&tx, id).await?;
        if agent.status == AgentStatus::Retired {
            return Err(StoreError::Conflict(format!(
                "agent {id} is already retired"
            )));
        }
        let row = tx
            .query_one(
                &format!(
                    "UPDATE agents SET status = 'retired' WHERE id = $1 RETURNING {AGENT_COLUMNS}"
                ),
                &[&id],
            )
            .await?;
        append_in_tx(&tx, audit).await?;
        tx.commit().await?;
        agent_from_row(&row)
    }

    async fn expire_heartbeats(
        &self,
        cutoff: Timestamp,
        event: EventFor<Agent>,
    ) -> Result<Vec<Agent>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let rows = tx
            .query(
                &format!(
                    "UPDATE agents SET status = 'unhealthy'
                     WHERE status IN ('active', 'busy') AND COALESCE(last_heartbeat, registered_at) < $1
                     RETURNING {AGENT_COLUMNS}"
                ),
                &[&cutoff],
            )
            .await?;
        let mut expired = rows
            .iter()
            .map(agent_from_row)
            .collect::<Result<Vec<_>>>()?;
        expired.sort_by_key(|a| a.id);
        append_in_tx(&tx, expired.iter().map(|a| event(a)).collect()).await?;
        tx.commit().await?;
        Ok(expired)
    }

    async fn agent_summary(&self) -> Result<AgentSummary> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT status, COUNT(*) FROM agents GROUP BY status", &[])
            .await?;
        let mut summary = AgentSummary::default();
        for row in &rows {
            let status: AgentStatus = parsed(row, 0)?;
            let n: i64 = get(row, 1)?;
            let n = n.max(0) as u64;
            match status {
                AgentStatus::Active => summary.active = n,
                AgentStatus::Busy => summary.busy = n,
                AgentStatus::Unhealthy => summary.unhealthy = n,
                AgentStatus::Retired => summary.retired = n,
            }
        }
        Ok(summary)
    }
    async fn drain_agent(&self, id: Uuid, now: Timestamp, audit: Vec<EventDraft>) -> Result<Agent> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let agent = lock(&tx, id).await?;
        if agent.status == AgentStatus::Retired {
            return Err(StoreError::Conflict(format!("agent {id} is retired")));
        }
        if agent.draining_since.is_some() {
            return Ok(agent);
        }
        let row = tx
            .query_one(
                &format!(
                    "UPDATE agents SET draining_since = $2 WHERE id = $1 RETURNING {AGENT_COLUMNS}"
                ),
                &[&id, &now],
            )
            .await?;
        append_in_tx(&tx, audit).await?;
        tx.commit().await?;
        agent_from_row(&row)
    }

    async fn retire_drained(&self, events: EventsFor<Agent>) -> Result<Vec<Agent>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let retired = update_returning(
            &tx,
            &format!(
                "UPDATE agents SET status = 'retired'
                 WHERE draining_since IS NOT NULL AND status <> 'retired' AND {LEASES_HELD} = 0
                 RETURNING {AGENT_COLUMNS}"
            ),
        )
        .await?;
        append_in_tx(&tx, retired.iter().flat_map(|a| events(a)).collect()).await?;
        tx.commit().await?;
        Ok(retired)
    }

    async fn balance_busy(&self, event: EventFor<Agent>) -> Result<Vec<Agent>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let changed = update_returning(
            &tx,
            &format!(
                "UPDATE agents SET status = CASE status WHEN 'active' THEN 'busy' ELSE 'active' END
                 WHERE max_concurrency IS NOT NULL
                   AND ((status = 'active' AND {LEASES_HELD} >= max_concurrency)
                     OR (status = 'busy' AND {LEASES_HELD} < max_concurrency))
                 RETURNING {AGENT_COLUMNS}"
            ),
        )
        .await?;
        append_in_tx(&tx, changed.iter().map(|a| event(a)).collect()).await?;
        tx.commit().await?;
        Ok(changed)
    }

    async fn agent_loads(&self) -> Result<HashMap<Uuid, u32>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT leased_by, COUNT(*) FROM tasks
                 WHERE status = 'running' AND leased_by IS NOT NULL GROUP BY leased_by",
                &[],
            )
            .await?;
        let mut loads = HashMap::new();
        for row in &rows {
            let agent: Uuid = get(row, 0)?;
            let n: i64 = get(row, 1)?;
            loads.insert(agent, u32::try_from(n).unwrap_or(u32::MAX));
        }
        Ok(loads)
    }

    async fn mark_unhealthy(&self, id: Uuid, event: EventDraft) -> Result<Option<Agent>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(
                &format!(
                    "UPDATE agents SET status = 'unhealthy'
                     WHERE id = $1 AND status IN ('active', 'busy') RETURNING {AGENT_COLUMNS}"
                ),
                &[&id],
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        append_in_tx(&tx, vec![event]).await?;
        tx.commit().await?;
        agent_from_row(&row).map(Some)
    }
}
