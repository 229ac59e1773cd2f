//! `[[agents]]`: the agents the mesh spawns and supervises. Declared here (or left to
//! the defaults), each is registered, routed work, health-checked by heartbeat, drained
//! and retired by the mesh; nothing outside the configuration starts them.

use anyhow::{Result, bail};
use mesh_agents::BuiltinKind;
use mesh_types::RiskTier;
use serde::{Deserialize, Serialize};

/// Where a declared agent runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpawnMode {
    /// A task in the process running the orchestrator.
    #[default]
    InProcess,
    /// A `mesh worker` child process the mesh starts, restarts when it dies, and
    /// stops on shutdown.
    Process,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentDecl {
    /// Base name; each replica registers as `<name>-<n>-<suffix>` (names stay unique
    /// in the registry across restarts).
    pub name: String,
    /// `planner`, `coder` or `critic`.
    pub kind: String,
    #[serde(default = "one")]
    pub replicas: u32,
    #[serde(default)]
    pub mode: SpawnMode,
    /// The model it asks [default: the first configured provider's first model, else
    /// `sim-small`].
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub risk_tier: Option<RiskTier>,
    /// Task types it claims [default: its kind's flow stage: plan, implement, review].
    #[serde(default)]
    pub capabilities: Option<Vec<String>>,
    /// Tasks it runs at once.
    #[serde(default)]
    pub concurrency: Option<usize>,
}

fn one() -> u32 {
    1
}

impl AgentDecl {
    fn builtin(name: &str, kind: &str, replicas: u32) -> Self {
        AgentDecl {
            name: name.into(),
            kind: kind.into(),
            replicas,
            mode: SpawnMode::InProcess,
            model: None,
            risk_tier: None,
            capabilities: None,
            concurrency: None,
        }
    }

    /// A planner, two coders and a critic, in-process.
    pub fn defaults() -> Vec<AgentDecl> {
        vec![
            AgentDecl::builtin("planner", "planner", 1),
            AgentDecl::builtin("coder", "coder", 2),
            AgentDecl::builtin("critic", "critic", 1),
        ]
    }

    pub fn kind(&self) -> Result<BuiltinKind> {
        match BuiltinKind::parse(&self.kind) {
            Some(kind) => Ok(kind),
            None => bail!(
                "[[agents]] {}: kind `{}` is not one of {}",
                self.name,
                self.kind,
                BuiltinKind::NAMES.join(", ")
            ),
        }
    }

    /// Task types the agent claims.
    pub fn task_types(&self) -> Result<Vec<String>> {
        Ok(match &self.capabilities {
            Some(c) => c.clone(),
            None => vec![self.kind()?.task_type().to_string()],
        })
    }

    /// High by default: the built-ins must be able to take the subtasks of the
    /// high-risk code flow once a human has approved it.
    pub fn tier(&self) -> RiskTier {
        self.risk_tier.unwrap_or(RiskTier::High)
    }

    pub fn check(list: &[AgentDecl]) -> Result<()> {
        for (i, decl) in list.iter().enumerate() {
            decl.kind()?;
            let at = format!("[[agents]] {}", decl.name);
            if decl.name.trim().is_empty() || decl.name.len() > 64 {
                bail!("[[agents]]: name must be 1 to 64 characters");
            }
            if decl.replicas > 64 {
                bail!("{at}: replicas must be at most 64");
            }
            if decl.concurrency == Some(0) {
                bail!("{at}: concurrency must be at least 1");
            }
            if decl.capabilities.as_ref().is_some_and(|c| c.is_empty()) {
                bail!("{at}: capabilities must name at least one task type");
            }
            if list[..i].iter().any(|d| d.name == decl.name) {
                bail!("[[agents]]: two agents are named {}", decl.name);
            }
        }
        Ok(())
    }
}
