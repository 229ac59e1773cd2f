use super::tasks::new_task;
use super::{Harness, event};
use mesh_store::{ApiKeyRecord, StoreError};
use mesh_types::agent::AgentFilter;
use mesh_types::tool::ToolFilter;
use mesh_types::{Agent, AgentRole, AgentStatus, NewAgent, NewTool, PageRequest, Role, ToolStatus};
use serde_json::json;
use std::sync::Arc;
use uuid::Uuid;

fn new_agent(name: &str, role: &str, caps: &[&str]) -> Agent {
    let new: NewAgent = serde_json::from_value(json!({
        "name": name, "version": "1.0.0", "role": role, "riskTier": "medium",
        "capabilities": caps,
        "modelPreference": {"provider": "anthropic", "model": "claude-sonnet-4-5-20250929", "temperature": 0.2},
        "costProfile": {"inputCostPer1kTokens": 0.003, "outputCostPer1kTokens": 0.015, "maxBudgetPerTask": 2.5}
    }))
    .unwrap();
    new.into_agent(Uuid::now_v7(), mesh_types::time::now())
}

fn new_tool(name: &str) -> mesh_types::Tool {
    let new: NewTool = serde_json::from_value(json!({
        "name": name, "version": "2.1.0",
        "inputSchema": {"type": "object", "properties": {"q": {"type": "string"}}},
        "outputSchema": {"type": "array"},
        "riskTier": "low", "rateLimit": 60,
        "costModel": {"perInvocation": 0.001, "perInputUnit": 0.0001, "inputUnitType": "tokens", "currency": "USD"}
    }))
    .unwrap();
    new.into_tool(Uuid::now_v7(), mesh_types::time::now())
}

pub async fn agents_lifecycle(h: &Harness) {
    let s = &h.store;
    let coder = new_agent("coder-agent-v1", "coder", &["typescript", "python"]);
    let critic = new_agent("critic-1", "critic", &["review"]);
    s.agents
        .insert_agent(&coder, vec![event("agent_registered")])
        .await
        .unwrap();
    s.agents.insert_agent(&critic, vec![]).await.unwrap();
    assert_eq!(s.agents.get_agent(coder.id).await.unwrap().unwrap(), coder);

    let by_cap = s
        .agents
        .list_agents(
            &AgentFilter {
                capability: Some("python".into()),
                ..Default::default()
            },
            &PageRequest::new(None, None),
        )
        .await
        .unwrap();
    assert_eq!(
        by_cap.items.iter().map(|a| a.id).collect::<Vec<_>>(),
        vec![coder.id]
    );
    let by_role = s
        .agents
        .list_agents(
            &AgentFilter {
                role: Some(AgentRole::Critic),
                ..Default::default()
            },
            &PageRequest::new(None, None),
        )
        .await
        .unwrap();
    assert_eq!(by_role.items.len(), 1);

    let now = mesh_types::time::now();
    let beat = s
        .agents
        .heartbeat(coder.id, now, event("agent_recovered"))
        .await
        .unwrap();
    assert_eq!(beat.last_heartbeat, Some(now));
    let retired = s
        .agents
        .retire_agent(coder.id, vec![event("agent_retired")])
        .await
        .unwrap();
    assert_eq!(retired.status, AgentStatus::Retired);
    assert!(matches!(
        s.agents.retire_agent(coder.id, vec![]).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.agents.heartbeat(coder.id, now, event("x")).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.agents.heartbeat(Uuid::now_v7(), now, event("x")).await,
        Err(StoreError::NotFound(_))
    ));
    let summary = s.agents.agent_summary().await.unwrap();
    assert_eq!((summary.active, summary.retired), (1, 1));
}

pub async fn agent_heartbeat_expiry(h: &Harness) {
    let s = &h.store;
    let agent = new_agent("sleepy", "researcher", &[]);
    s.agents.insert_agent(&agent, vec![]).await.unwrap();
    let head = s.provenance.head().await.unwrap().count;
    let cutoff = mesh_types::time::now() + chrono::Duration::seconds(1);
    let expired = s
        .agents
        .expire_heartbeats(
            cutoff,
            Arc::new(|a: &Agent| {
                event("agent_heartbeat_expired").payload(json!({"agent": a.name}))
            }),
        )
        .await
        .unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].status, AgentStatus::Unhealthy);
    assert_eq!(s.provenance.head().await.unwrap().count, head + 1);
    // Already unhealthy: nothing more to expire, no new event.
    let again = s
        .agents
        .expire_heartbeats(cutoff, Arc::new(|_: &Agent| event("x")))
        .await
        .unwrap();
    assert!(again.is_empty());
    assert_eq!(s.provenance.head().await.unwrap().count, head + 1);
    // A heartbeat brings it back and records the recovery.
    let back = s
        .agents
        .heartbeat(agent.id, mesh_types::time::now(), event("agent_recovered"))
        .await
        .unwrap();
    assert_eq!(back.status, AgentStatus::Active);
    assert_eq!(s.provenance.head().await.unwrap().count, head + 2);
}

pub async fn tools_lifecycle(h: &Harness) {
    let s = &h.store;
    let tool = new_tool("web-search");
    s.tools
        .insert_tool(&tool, vec![event("tool_registered")])
        .await
        .unwrap();
    assert_eq!(s.tools.get_tool(tool.id).await.unwrap().unwrap(), tool);
    let listed = s
        .tools
        .list_tools(
            &ToolFilter {
                name: Some("web-search".into()),
                ..Default::default()
            },
            &PageRequest::new(None, None),
        )
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    let retired = s.tools.retire_tool(tool.id, vec![]).await.unwrap();
    assert_eq!(retired.status, ToolStatus::Retired);
    assert!(matches!(
        s.tools.retire_tool(tool.id, vec![]).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.tools.retire_tool(Uuid::now_v7(), vec![]).await,
        Err(StoreError::NotFound(_))
    ));
}

fn key(name: &str, hash: &str) -> ApiKeyRecord {
    ApiKeyRecord {
        id: Uuid::now_v7(),
        name: name.into(),
        key_hash: hash.into(),
        roles: vec![Role::Admin, Role::Auditor],
        tenant: "acme".into(),
        created_at: mesh_types::time::now(),
        revoked: false,
    }
}

pub async fn keys_lifecycle(h: &Harness) {
    let s = &h.store;
    let first = key("bootstrap", &"a".repeat(64));
    assert!(
        s.keys
            .insert_first_key(&first, vec![event("key_created")])
            .await
            .unwrap()
    );
    let second = key("late", &"b".repeat(64));
    assert!(
        !s.keys
            .insert_first_key(&second, vec![event("key_created")])
            .await
            .unwrap()
    );
    assert_eq!(s.provenance.head().await.unwrap().count, 1);
    s.keys.insert_key(&second, vec![]).await.unwrap();
    let found = s.keys.find_key(&"a".repeat(64)).await.unwrap().unwrap();
    assert_eq!(found, first);
    assert!(s.keys.find_key(&"c".repeat(64)).await.unwrap().is_none());
    assert_eq!(s.keys.list_keys().await.unwrap().len(), 2);
    let revoked = s.keys.revoke_key(first.id, vec![]).await.unwrap();
    assert!(revoked.revoked);
    assert!(s.keys.find_key(&"a".repeat(64)).await.unwrap().is_none());
    assert!(matches!(
        s.keys.revoke_key(first.id, vec![]).await,
        Err(StoreError::Conflict(_))
    ));
}

/// A write that fails (duplicate, unknown parent) appends nothing and stores nothing.
pub async fn rejected_writes_leave_nothing(h: &Harness) {
    let s = &h.store;
    let agent = new_agent("dup", "coder", &[]);
    s.agents
        .insert_agent(&agent, vec![event("agent_registered")])
        .await
        .unwrap();
    let head = s.provenance.head().await.unwrap();
    let clash = new_agent("dup", "critic", &[]);
    let err = s
        .agents
        .insert_agent(&clash, vec![event("agent_registered")])
        .await;
    assert!(matches!(err, Err(StoreError::Conflict(_))), "{err:?}");
    assert!(s.agents.get_agent(clash.id).await.unwrap().is_none());

    let tool = new_tool("dup-tool");
    s.tools.insert_tool(&tool, vec![]).await.unwrap();
    let again = new_tool("dup-tool");
    assert!(matches!(
        s.tools
            .insert_tool(&again, vec![event("tool_registered")])
            .await,
        Err(StoreError::Conflict(_))
    ));

    let orphan = new_task("orphan", 0, Some(Uuid::now_v7()));
    let err = s
        .tasks
        .insert_task(&orphan, vec![event("task_created")])
        .await;
    assert!(matches!(err, Err(StoreError::Invalid { .. })), "{err:?}");
    assert!(s.tasks.get_task(orphan.id).await.unwrap().is_none());
    assert_eq!(s.provenance.head().await.unwrap(), head);
}

/// Many writes at once, some of which must fail: on SQLite they share group commits, so
/// a failing write must roll back alone and the rest must commit with an intact chain.
pub async fn concurrent_writes_fail_alone(h: &Harness) {
    let mut writers = Vec::new();
    for i in 0..40 {
        let store = h.store.clone();
        writers.push(tokio::spawn(async move {
            // Names repeat in pairs: one of each pair wins.
            let agent = new_agent(&format!("racer-{}", i / 2), "coder", &[]);
            store
                .agents
                .insert_agent(&agent, vec![event("agent_registered")])
                .await
        }));
    }
    let mut ok = 0;
    for w in writers {
        match w.await.unwrap() {
            Ok(()) => ok += 1,
            Err(StoreError::Conflict(_)) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(ok, 20);
    assert_eq!(
        h.store.provenance.head().await.unwrap().count,
        20,
        "no event from a failed write"
    );
    assert_eq!(
        mesh_store::verify_chain(h.store.provenance.as_ref())
            .await
            .unwrap(),
        Ok(20)
    );
}
