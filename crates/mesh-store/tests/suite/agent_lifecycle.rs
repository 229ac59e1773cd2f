//! Agent lifecycle beyond registration: leases held, busy, drains, failed probes.

use super::tasks::new_task;
use super::{Harness, event};
use mesh_store::StoreError;
use mesh_types::agent::{A2aEndpoint, AgentFilter};
use mesh_types::queue::ClaimRequest;
use mesh_types::{Agent, AgentStatus, NewAgent, PageRequest};
use serde_json::json;
use std::sync::Arc;
use uuid::Uuid;

fn agent(name: &str, max_concurrency: Option<u32>) -> Agent {
    let new: NewAgent = serde_json::from_value(json!({
        "name": name, "version": "1", "role": "coder", "riskTier": "high",
        "capabilities": ["work"], "maxConcurrency": max_concurrency,
    }))
    .unwrap();
    new.into_agent(Uuid::now_v7(), mesh_types::time::now())
}

async fn lease_one(h: &Harness, agent: &Agent) -> mesh_types::queue::Lease {
    h.store
        .tasks
        .insert_task(&new_task("work", 0, None), vec![])
        .await
        .unwrap();
    let req = ClaimRequest {
        agent_id: agent.id,
        agent_name: agent.name.clone(),
        task_types: vec!["work".into()],
        limit: 1,
        lease_ms: 60_000,
        now: mesh_types::time::now(),
        ageing_secs: 60,
    };
    h.store.queue.claim(&req).await.unwrap().remove(0)
}

pub async fn agents_drain_busy_and_probes(h: &Harness) {
    let s = &h.store;
    let mut remote = agent("remote", Some(1));
    remote.a2a = Some(A2aEndpoint {
        card_url: "http://127.0.0.1:9/.well-known/agent-card.json".into(),
        url: "http://127.0.0.1:9/rpc".into(),
        protocol_version: "1.0".into(),
        token: Some("secret://remote_token".into()),
    });
    let local = agent("local", None);
    s.agents.insert_agent(&remote, vec![]).await.unwrap();
    s.agents.insert_agent(&local, vec![]).await.unwrap();
    assert_eq!(
        s.agents.get_agent(remote.id).await.unwrap().unwrap(),
        remote
    );
    let imported = s
        .agents
        .list_agents(
            &AgentFilter {
                a2a: Some(true),
                ..Default::default()
            },
            &PageRequest::new(None, None),
        )
        .await
        .unwrap();
    assert_eq!(
        imported.items.iter().map(|a| a.id).collect::<Vec<_>>(),
        [remote.id]
    );

    // Leases held, and busy at the declared concurrency.
    let lease = lease_one(h, &remote).await;
    lease_one(h, &local).await;
    lease_one(h, &local).await;
    let loads = s.agents.agent_loads().await.unwrap();
    assert_eq!((loads[&remote.id], loads[&local.id]), (1, 2));
    let flip = Arc::new(|a: &Agent| event(&format!("agent_{}", a.status)));
    let changed = s.agents.balance_busy(flip.clone()).await.unwrap();
    assert_eq!(changed.len(), 1, "only agents declaring a concurrency");
    assert_eq!(
        (changed[0].id, changed[0].status),
        (remote.id, AgentStatus::Busy)
    );
    assert!(
        s.agents
            .balance_busy(flip.clone())
            .await
            .unwrap()
            .is_empty()
    );

    // A drain: written once, kept while a lease is held, retired once none is.
    let head = s.provenance.head().await.unwrap().count;
    let now = mesh_types::time::now();
    let draining = s
        .agents
        .drain_agent(remote.id, now, vec![event("agent_draining")])
        .await
        .unwrap();
    assert_eq!(draining.draining_since, Some(now));
    let again = s
        .agents
        .drain_agent(remote.id, mesh_types::time::now(), vec![event("x")])
        .await
        .unwrap();
    assert_eq!(again.draining_since, Some(now));
    assert_eq!(s.provenance.head().await.unwrap().count, head + 1);
    let both = Arc::new(|_: &Agent| vec![event("agent_drained"), event("agent_retired")]);
    assert!(
        s.agents
            .retire_drained(both.clone())
            .await
            .unwrap()
            .is_empty()
    );
    s.queue
        .complete_task(lease.task.id, lease.lease_token, None, now, "remote")
        .await
        .unwrap();
    let back = s.agents.balance_busy(flip).await.unwrap();
    assert_eq!(back[0].status, AgentStatus::Active);
    let retired = s.agents.retire_drained(both.clone()).await.unwrap();
    assert_eq!(
        (retired.len(), retired[0].status),
        (1, AgentStatus::Retired)
    );
    // agent_draining, task_completed, agent_available, agent_drained, agent_retired.
    assert_eq!(s.provenance.head().await.unwrap().count, head + 5);
    assert!(s.agents.retire_drained(both).await.unwrap().is_empty());
    assert!(matches!(
        s.agents.drain_agent(remote.id, now, vec![]).await,
        Err(StoreError::Conflict(_))
    ));

    // A failed probe makes a working agent unhealthy, once; a heartbeat (or a
    // successful probe) brings it back.
    let sick = s
        .agents
        .mark_unhealthy(local.id, event("agent_probe_failed"))
        .await
        .unwrap();
    assert_eq!(sick.map(|a| a.status), Some(AgentStatus::Unhealthy));
    assert!(
        s.agents
            .mark_unhealthy(local.id, event("x"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.agents
            .mark_unhealthy(remote.id, event("x"))
            .await
            .unwrap()
            .is_none(),
        "a retired agent stays retired"
    );
    assert_eq!(s.provenance.head().await.unwrap().count, head + 6);
}
