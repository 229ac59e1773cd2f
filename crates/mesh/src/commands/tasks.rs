use super::{cli_caller, core, load_config, local_cores, open_store};
use crate::cli::{GlobalArgs, TaskCommand};
use crate::config::Overrides;
use crate::output;
use anyhow::{Context, Result};
use mesh_queue::TaskListQuery;
use mesh_types::{NewTask, Task};
use serde_json::Value;
use std::process::ExitCode;

pub async fn run(g: &GlobalArgs, cmd: TaskCommand) -> Result<ExitCode> {
    let config = load_config(g, Overrides::default())?;
    let store = open_store(&config).await?;
    let cores = local_cores(&store, &config).await?;
    let orchestrator = core(cores.orchestrator)?;
    let caller = cli_caller();
    match cmd {
        TaskCommand::Submit {
            task_type,
            input,
            priority,
            metadata,
            risk_tier,
            data_classification,
            parent,
            idempotency_key,
        } => {
            let new = NewTask {
                task_type,
                input: json_arg("--input", &input)?,
                priority,
                metadata: metadata.map(|m| json_arg("--metadata", &m)).transpose()?,
                risk_tier,
                data_classification,
                parent_id: parent,
                deadline: None,
                idempotency_key,
            };
            let reply = orchestrator.submit(&caller, new).await?;
            if g.json {
                output::json(&reply)?;
            } else {
                println!("{}", reply.task_id);
            }
        }
        TaskCommand::Get { id } => {
            let task = orchestrator.get(&caller, id).await?;
            if g.json {
                output::json(&task)?;
            } else {
                print_tasks(std::slice::from_ref(&task));
            }
        }
        TaskCommand::List {
            status,
            task_type,
            limit,
            cursor,
        } => {
            let page = orchestrator
                .list(
                    &caller,
                    TaskListQuery {
                        status,
                        task_type,
                        parent_id: None,
                        limit,
                        cursor,
                    },
                )
                .await?;
            if g.json {
                output::json(&page)?;
            } else {
                print_tasks(&page.items);
                if let Some(next) = page.next_cursor {
                    println!("more: --cursor {next}");
                }
            }
        }
        TaskCommand::Cancel { id } => {
            let task = orchestrator.cancel(&caller, id).await?;
            if g.json {
                output::json(&task)?;
            } else {
                println!("cancelled {}", task.id);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn json_arg(flag: &str, text: &str) -> Result<Value> {
    let text = match text.strip_prefix('@') {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("{flag}: cannot read {path}"))?
        }
        None => text.to_string(),
    };
    serde_json::from_str(&text).with_context(|| format!("{flag} is not valid JSON"))
}

pub(crate) fn print_tasks(tasks: &[Task]) {
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            vec![
                t.id.to_string(),
                t.task_type.clone(),
                t.status.to_string(),
                t.priority.to_string(),
                t.risk_tier.to_string(),
                mesh_types::time::format(&t.created_at),
            ]
        })
        .collect();
    output::table(
        &["ID", "TYPE", "STATUS", "PRIORITY", "RISK", "CREATED"],
        &rows,
    );
}
