use super::{cli_caller, core, load_config, local_cores, open_store};
use crate::cli::{GlobalArgs, ProvenanceCommand};
use crate::config::Overrides;
use crate::output;
use anyhow::Result;
use std::process::ExitCode;

pub async fn run(g: &GlobalArgs, cmd: ProvenanceCommand) -> Result<ExitCode> {
    // Proofs are verified without the store; everything else reads it.
    let cmd = match cmd {
        ProvenanceCommand::Proofs(c) => return super::provenance_proof::run(g, c).await,
        other => other,
    };
    let config = load_config(g, Overrides::default())?;
    let store = open_store(&config).await?;
    let service = core(local_cores(&store, &config).await?.provenance)?;
    // With the log's key at hand, `verify` also checks the checkpoints' signatures.
    if let Some(signer) = crate::checkpoints::existing_signer(&config, &store)? {
        service.set_signer(signer);
    }
    match cmd {
        ProvenanceCommand::Proofs(c) => return super::provenance_proof::run(g, c).await,
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
        ProvenanceCommand::Export { task_id, format } => {
            let text = service
                .export_task(&cli_caller().principal, task_id, format)
                .await?;
            print!("{text}");
        }
        ProvenanceCommand::Archived { sha256 } => {
            service.set_archive(crate::archive::open_existing(&config, &store)?);
            let payload = service.archived(&cli_caller().principal, &sha256).await?;
            output::bytes(&payload)?;
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
