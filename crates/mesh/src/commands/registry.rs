use super::{core, load_config, local_cores, open_store};
use crate::cli::{AgentsCommand, GlobalArgs, ToolsCommand};
use crate::config::Overrides;
use crate::output;
use anyhow::Result;
use mesh_registry::{AgentListQuery, ToolListQuery};
use std::process::ExitCode;

pub async fn agents(g: &GlobalArgs, cmd: AgentsCommand) -> Result<ExitCode> {
    let config = load_config(g, Overrides::default())?;
    let store = open_store(&config).await?;
    let registry = core(local_cores(&store, &config).await?.agents)?;
    let AgentsCommand::List {
        status,
        role,
        capability,
        limit,
    } = cmd;
    let page = registry
        .list(AgentListQuery {
            status,
            role,
            capability,
            limit,
            ..AgentListQuery::default()
        })
        .await?;
    if g.json {
        output::json(&page)?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = page
        .items
        .iter()
        .map(|a| {
            vec![
                a.id.to_string(),
                a.name.clone(),
                a.role.to_string(),
                a.risk_tier.to_string(),
                a.status.to_string(),
                a.capabilities.join(","),
            ]
        })
        .collect();
    output::table(
        &["ID", "NAME", "ROLE", "RISK", "STATUS", "CAPABILITIES"],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn tools(g: &GlobalArgs, cmd: ToolsCommand) -> Result<ExitCode> {
    let config = load_config(g, Overrides::default())?;
    let store = open_store(&config).await?;
    let registry = core(local_cores(&store, &config).await?.tools)?;
    let ToolsCommand::List { status, limit } = cmd;
    let page = registry
        .list(ToolListQuery {
            status,
            name: None,
            limit,
            cursor: None,
        })
        .await?;
    if g.json {
        output::json(&page)?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = page
        .items
        .iter()
        .map(|t| {
            vec![
                t.id.to_string(),
                t.name.clone(),
                t.version.clone(),
                t.risk_tier.to_string(),
                t.rate_limit
                    .map(|r| format!("{r}/min"))
                    .unwrap_or_else(|| "-".into()),
                t.status.to_string(),
            ]
        })
        .collect();
    output::table(
        &["ID", "NAME", "VERSION", "RISK", "RATE LIMIT", "STATUS"],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}
