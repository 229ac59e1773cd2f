use super::{Harness, event};
use mesh_store::StoreError;
use mesh_types::tool::ToolFilter;
use mesh_types::{
    McpServer, McpServerStatus, McpTransport, NewMcpServer, PageRequest, Tool, ToolBackend,
    ToolStatus,
};
use serde_json::json;
use std::sync::Arc;
use uuid::Uuid;

fn server(name: &str, transport: McpTransport) -> McpServer {
    let new: NewMcpServer = serde_json::from_value(json!({
        "name": name, "url": "http://placeholder/", "riskTier": "low", "rateLimit": 10,
        "costModel": {"perInvocation": 0.5, "currency": "EUR"},
    }))
    .unwrap();
    new.into_server(transport, Uuid::now_v7(), mesh_types::time::now())
}

fn mcp_tool(server: &str, remote: &str) -> Tool {
    Tool {
        id: Uuid::now_v7(),
        name: format!("{server}.{remote}"),
        version: "0.1.0".into(),
        description: Some("from MCP".into()),
        input_schema: json!({"type": "object"}),
        output_schema: json!({}),
        risk_tier: mesh_types::RiskTier::Low,
        rate_limit: None,
        cost_model: None,
        endpoint: None,
        backend: ToolBackend::Mcp {
            server: server.into(),
            tool: remote.into(),
        },
        status: ToolStatus::Active,
        registered_at: mesh_types::time::now(),
    }
}

async fn tools_of(h: &Harness, server: &str) -> Vec<Tool> {
    let filter = ToolFilter {
        mcp_server: Some(server.into()),
        ..ToolFilter::default()
    };
    h.store
        .tools
        .list_tools(&filter, &PageRequest::new(None, None))
        .await
        .unwrap()
        .items
}

pub async fn mcp_servers_and_their_tools(h: &Harness) {
    let s = &h.store;
    let stdio = server(
        "files",
        McpTransport::Stdio {
            command: vec!["python3".into(), "server.py".into()],
            env: [("TOKEN".to_string(), "secret://files_token".to_string())].into(),
        },
    );
    let http = server(
        "remote",
        McpTransport::Http {
            url: "http://127.0.0.1:9/mcp".into(),
            headers: Default::default(),
        },
    );
    let (read, write) = (mcp_tool("files", "read"), mcp_tool("files", "write"));
    let head = s.provenance.head().await.unwrap().count;
    s.mcp_servers
        .insert_mcp_server(
            &stdio,
            &[read.clone(), write.clone()],
            vec![event("mcp_server_registered")],
        )
        .await
        .unwrap();
    s.mcp_servers
        .insert_mcp_server(&http, &[], vec![])
        .await
        .unwrap();
    assert_eq!(s.provenance.head().await.unwrap().count, head + 1);
    assert_eq!(
        s.mcp_servers
            .get_mcp_server("files")
            .await
            .unwrap()
            .unwrap(),
        stdio
    );
    assert_eq!(
        s.mcp_servers.list_mcp_servers().await.unwrap(),
        vec![stdio.clone(), http.clone()]
    );
    assert_eq!(s.tools.get_tool(read.id).await.unwrap().unwrap(), read);
    assert_eq!(tools_of(h, "files").await.len(), 2);
    assert!(tools_of(h, "remote").await.is_empty());

    // All or nothing: a taken server name, or a taken tool name, stores nothing.
    let again = server("files", stdio.transport.clone());
    assert!(matches!(
        s.mcp_servers.insert_mcp_server(&again, &[], vec![]).await,
        Err(StoreError::Conflict(_))
    ));
    let clash = server("other", stdio.transport.clone());
    let taken = Tool {
        id: Uuid::now_v7(),
        ..read.clone()
    };
    assert!(matches!(
        s.mcp_servers
            .insert_mcp_server(&clash, &[mcp_tool("other", "x"), taken], vec![event("x")])
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(
        s.mcp_servers
            .get_mcp_server("other")
            .await
            .unwrap()
            .is_none()
    );
    assert!(tools_of(h, "other").await.is_empty());

    // A tool's definition follows its server; retirement is final.
    let unhealthy = Tool {
        status: ToolStatus::Unhealthy,
        output_schema: json!({"type": "object"}),
        ..read.clone()
    };
    let updated = s
        .tools
        .update_tool(&unhealthy, vec![event("tool_unhealthy")])
        .await
        .unwrap();
    assert_eq!(updated, unhealthy);
    assert_eq!(s.tools.get_tool(read.id).await.unwrap().unwrap(), unhealthy);
    assert!(matches!(
        s.tools
            .update_tool(&mcp_tool("files", "ghost"), vec![])
            .await,
        Err(StoreError::NotFound(_))
    ));

    let actor: mesh_store::EventFor<Tool> =
        Arc::new(|t: &Tool| event("tool_retired").payload(json!({"toolId": t.id})));
    let head = s.provenance.head().await.unwrap().count;
    let retired = s
        .mcp_servers
        .retire_mcp_server("files", actor.clone(), vec![event("mcp_server_retired")])
        .await
        .unwrap();
    assert_eq!(retired.status, McpServerStatus::Retired);
    assert_eq!(
        s.provenance.head().await.unwrap().count,
        head + 3,
        "the server and its two tools"
    );
    assert!(
        tools_of(h, "files")
            .await
            .iter()
            .all(|t| t.status == ToolStatus::Retired)
    );
    assert!(matches!(
        s.tools.update_tool(&read, vec![]).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.mcp_servers
            .retire_mcp_server("files", actor.clone(), vec![])
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.mcp_servers
            .retire_mcp_server("nobody", actor, vec![])
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        s.mcp_servers
            .get_mcp_server("remote")
            .await
            .unwrap()
            .unwrap()
            .status,
        McpServerStatus::Active
    );
}
