use super::{cli_caller, load_config, open_store};
use crate::cli::{GlobalArgs, KeysCommand};
use crate::config::Overrides;
use crate::output;
use anyhow::Result;
use mesh_service::auth::{self, NewKey};
use std::process::ExitCode;

pub async fn run(g: &GlobalArgs, cmd: KeysCommand) -> Result<ExitCode> {
    let config = load_config(g, Overrides::default())?;
    let store = open_store(&config).await?;
    let actor = cli_caller().principal.name;
    match cmd {
        KeysCommand::Create {
            roles,
            name,
            tenant,
        } => {
            let name = name.unwrap_or_else(|| {
                let roles: Vec<_> = roles.iter().map(|r| r.as_str()).collect();
                format!("{}-key", roles.join("-"))
            });
            let (key, record) = auth::create_key(
                &store,
                &actor,
                NewKey {
                    name,
                    roles,
                    tenant,
                },
            )
            .await?;
            if g.json {
                output::json(&serde_json::json!({"key": key, "record": record}))?;
            } else {
                // The key alone, so `KEY=$(mesh keys create --role admin)` works.
                println!("{key}");
            }
        }
        KeysCommand::List => {
            let keys = store.keys.list_keys().await?;
            if g.json {
                return output::json(&keys).map(|_| ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = keys
                .iter()
                .map(|k| {
                    let roles: Vec<_> = k.roles.iter().map(|r| r.as_str()).collect();
                    vec![
                        k.id.to_string(),
                        k.name.clone(),
                        roles.join(","),
                        k.tenant.clone(),
                        if k.revoked { "revoked" } else { "active" }.to_string(),
                    ]
                })
                .collect();
            output::table(&["ID", "NAME", "ROLES", "TENANT", "STATUS"], &rows);
        }
        KeysCommand::Revoke { id } => {
            let record = auth::revoke_key(&store, &actor, id).await?;
            if g.json {
                output::json(&record)?;
            } else {
                println!("revoked {} ({})", record.id, record.name);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
