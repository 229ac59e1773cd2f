//! `mesh policy test|eval` (offline, on a policy directory or bundle) and
//! `mesh approvals list|approve|reject` (on the store, as an admin).

use super::{cli_caller, core, load_config, local_cores, open_store};
use crate::cli::{ApprovalsCommand, GlobalArgs, PolicyCommand};
use crate::config::Overrides;
use crate::output;
use anyhow::{Context, Result};
use mesh_policy::PolicyLocation;
use mesh_policy::engine::CompiledPolicies;
use mesh_policy::testing::{Outcome, run_tests};
use std::io::Read;
use std::process::ExitCode;

pub fn run(g: &GlobalArgs, cmd: PolicyCommand) -> Result<ExitCode> {
    let config = load_config(g, Overrides::default())?;
    match cmd {
        PolicyCommand::Test { dir } => {
            let location = dir
                .map(|d| PolicyLocation::from_path(&d))
                .unwrap_or(config.policy.location);
            let policies = compile(&location)?;
            let results = run_tests(&policies);
            let failed = results
                .iter()
                .filter(|r| r.outcome != Outcome::Pass)
                .count();
            if g.json {
                output::json(&results)?;
            } else {
                for r in &results {
                    let mark = match r.outcome {
                        Outcome::Pass => "PASS",
                        Outcome::Fail => "FAIL",
                        Outcome::Error => "ERROR",
                    };
                    println!("{mark:5} {} ({} µs)", r.name, r.duration_us);
                    if let Some(e) = &r.error {
                        println!("      {}", e.trim().replace('\n', "\n      "));
                    }
                }
                println!("{}", "-".repeat(40));
                println!("PASS: {}/{}", results.len() - failed, results.len());
                if failed > 0 {
                    println!("FAIL: {failed}/{}", results.len());
                }
            }
            if results.is_empty() {
                eprintln!("no test_* rules found in the {}", location.describe());
                return Ok(ExitCode::FAILURE);
            }
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        PolicyCommand::Eval { input, query } => {
            let policies = compile(&config.policy.location)?;
            let input = match input {
                None => None,
                Some(path) => {
                    let text = if path.as_os_str() == "-" {
                        let mut text = String::new();
                        std::io::stdin().read_to_string(&mut text)?;
                        text
                    } else {
                        std::fs::read_to_string(&path)
                            .with_context(|| format!("cannot read --input {}", path.display()))?
                    };
                    Some(
                        serde_json::from_str(&text)
                            .with_context(|| format!("--input {} is not JSON", path.display()))?,
                    )
                }
            };
            let result = policies.query(&query, input)?;
            output::json(&result)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn compile(location: &PolicyLocation) -> Result<CompiledPolicies> {
    let source = location.load()?;
    Ok(CompiledPolicies::compile(source)?)
}

pub async fn approvals(g: &GlobalArgs, cmd: ApprovalsCommand) -> Result<ExitCode> {
    let config = load_config(g, Overrides::default())?;
    let store = open_store(&config).await?;
    let cores = local_cores(&store, &config).await?;
    let orchestrator = core(cores.orchestrator)?;
    let caller = cli_caller();
    let approve = matches!(cmd, ApprovalsCommand::Approve { .. });
    match cmd {
        ApprovalsCommand::List { limit } => {
            let page = orchestrator.approvals(&caller, limit, None).await?;
            if g.json {
                output::json(&page)?;
            } else {
                let rows: Vec<Vec<String>> = page
                    .items
                    .iter()
                    .map(|p| {
                        vec![
                            p.task.id.to_string(),
                            p.task.task_type.clone(),
                            p.task.risk_tier.to_string(),
                            p.escalation_target.clone().unwrap_or_default(),
                            p.reason.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                output::table(&["ID", "TYPE", "RISK", "APPROVER", "REASON"], &rows);
            }
        }
        ApprovalsCommand::Approve { id, note } | ApprovalsCommand::Reject { id, note } => {
            let task = orchestrator
                .resolve_approval(&caller, id, approve, note)
                .await?;
            if g.json {
                output::json(&task)?;
            } else {
                println!("{} {}", task.status, task.id);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
