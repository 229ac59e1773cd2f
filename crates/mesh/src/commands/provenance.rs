use super::{core, load_config, local_cores, open_store};
use crate::cli::{GlobalArgs, ProvenanceCommand};
use crate::config::Overrides;
use crate::output;
use anyhow::Result;
use std::process::ExitCode;

pub async fn run(g: &GlobalArgs, cmd: ProvenanceCommand) -> Result<ExitCode> {
    let config = load_config(g, Overrides::default())?;
    let store = open_store(&config).await?;
    let service = core(local_cores(&store, &config).await?.provenance)?;
    match cmd {
        ProvenanceCommand::Show { task_id } => {
            let p = service.task(task_id).await?;
            if g.json {
                output::json(&p)?;
                return Ok(ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = p
                .timeline
                .iter()
                .map(|e| {
                    let s = |k: &str| e.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
                    vec![
                        e.get("seq").map(|v| v.to_string()).unwrap_or_default(),
                        s("timestamp"),
                        s("agent"),
                        s("action"),
                        s("taskId"),
                    ]
                })
                .collect();
            output::table(&["SEQ", "TIMESTAMP", "AGENT", "ACTION", "TASK"], &rows);
            println!();
            println!(
                "graph: {} nodes, {} edges",
                p.graph.nodes.len(),
                p.graph.edges.len()
            );
            for edge in &p.graph.edges {
                println!("  ({})-[:{}]->({})", edge.from, edge.kind, edge.to);
            }
        }
        ProvenanceCommand::Verify => {
            let report = service.verify().await?;
            if g.json {
                output::json(&report)?;
            } else if let Some(breach) = &report.breach {
                println!("BROKEN: {}", breach.message);
                if let Some(id) = breach.event_id {
                    println!("first bad event: {id}");
                }
            } else {
                println!(
                    "intact: {} events, head {}",
                    report.events, report.head.last_hash
                );
            }
            if !report.ok {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
