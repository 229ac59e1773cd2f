//! Flows as configuration: which tasks a flow takes, whether a human approves them
//! first, and how the work is staged. The first flow that matches a task runs it.

use mesh_types::{RiskTier, Task};
use serde::Deserialize;
use serde_json::{Value, json};

/// How a flow gets the work done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowKind {
    /// Route → policy check → one capable agent → done.
    Direct,
    /// A planner splits the task into steps, coders do the steps, a critic reviews;
    /// a rejection sends the steps back with the critic's notes.
    Code,
}

/// The subtask types the code flow's stages are queued as (agents claim by type).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageTypes {
    #[serde(default = "plan")]
    pub plan: String,
    #[serde(default = "implement")]
    pub implement: String,
    #[serde(default = "review")]
    pub review: String,
}

fn plan() -> String {
    "plan".into()
}
fn implement() -> String {
    "implement".into()
}
fn review() -> String {
    "review".into()
}

impl Default for StageTypes {
    fn default() -> Self {
        StageTypes {
            plan: plan(),
            implement: implement(),
            review: review(),
        }
    }
}

/// One `[[flows]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowDef {
    pub name: String,
    /// Task types it takes; empty means any.
    #[serde(default)]
    pub task_types: Vec<String>,
    /// Takes only tasks at or above this risk tier.
    #[serde(default)]
    pub min_risk: Option<RiskTier>,
    pub kind: FlowKind,
    /// A human approves each task before any agent sees it.
    #[serde(default)]
    pub approval: bool,
    /// Who is asked to approve (shown with the pending approval).
    #[serde(default)]
    pub approver: Option<String>,
    /// Code flow: review rounds before the flow gives up.
    #[serde(default = "default_rounds")]
    pub max_rounds: u32,
    #[serde(default)]
    pub stages: StageTypes,
    /// Code flow: what a coder's output must satisfy; an output that does not is
    /// sent to the critic with the reasons instead of being accepted.
    #[serde(default = "default_implement_schema")]
    pub implement_schema: Value,
}

fn default_rounds() -> u32 {
    3
}

fn default_implement_schema() -> Value {
    json!({
        "type": "object",
        "required": ["content"],
        "properties": {"content": {"type": "string", "minLength": 1}},
    })
}

/// `data.mesh_config.approvers.critical_tasks` in the bundled policy data.
const DEFAULT_TASK_APPROVER: &str = "platform-oncall";

const CODE_TYPES: &[&str] = &["code_generate", "code_refactor", "code_review"];

impl FlowDef {
    fn new(name: &str, kind: FlowKind, types: &[&str], min_risk: Option<RiskTier>) -> Self {
        FlowDef {
            name: name.into(),
            task_types: types.iter().map(|t| t.to_string()).collect(),
            min_risk,
            kind,
            approval: min_risk.is_some(),
            // The approver the default policy bundle names for tasks, so that a task
            // both a flow and the policy hold for approval waits for one team.
            approver: min_risk.map(|_| DEFAULT_TASK_APPROVER.to_string()),
            max_rounds: default_rounds(),
            stages: StageTypes::default(),
            implement_schema: default_implement_schema(),
        }
    }

    /// The flows used when the configuration names none: code tasks go through plan →
    /// implement → review; high-risk tasks wait for a human first; the rest go direct.
    pub fn defaults() -> Vec<FlowDef> {
        let high = Some(RiskTier::High);
        vec![
            FlowDef::new("high_risk_code", FlowKind::Code, CODE_TYPES, high),
            FlowDef::new("code", FlowKind::Code, CODE_TYPES, None),
            FlowDef::new("high_risk", FlowKind::Direct, &[], high),
            FlowDef::new("default", FlowKind::Direct, &[], None),
        ]
    }

    pub fn matches(&self, task_type: &str, risk: RiskTier) -> bool {
        (self.task_types.is_empty() || self.task_types.iter().any(|t| t == task_type))
            && self.min_risk.is_none_or(|min| risk >= min)
    }

    fn check(&self) -> Result<(), String> {
        let at = format!("[[flows]] {}", self.name);
        if self.name.trim().is_empty() {
            return Err("[[flows]]: name must not be empty".into());
        }
        if self.kind == FlowKind::Code {
            if self.task_types.is_empty() {
                return Err(format!(
                    "{at}: a code flow must name its task_types (its runner claims them)"
                ));
            }
            if self.max_rounds == 0 {
                return Err(format!("{at}: max_rounds must be at least 1"));
            }
            let stages = [
                &self.stages.plan,
                &self.stages.implement,
                &self.stages.review,
            ];
            if let Some(t) = self.task_types.iter().find(|t| stages.contains(t)) {
                return Err(format!(
                    "{at}: task type {t} is both a flow's task and one of its stages"
                ));
            }
            jsonschema::validator_for(&self.implement_schema)
                .map_err(|e| format!("{at}: implement_schema: {e}"))?;
        }
        Ok(())
    }
}

/// The configured flows, in matching order.
#[derive(Debug, Clone)]
pub struct Flows {
    flows: Vec<FlowDef>,
}

impl Default for Flows {
    fn default() -> Self {
        Flows {
            flows: FlowDef::defaults(),
        }
    }
}

impl Flows {
    /// Checks the flows; a task that no flow matches goes direct.
    pub fn new(flows: Vec<FlowDef>) -> Result<Self, String> {
        for (i, flow) in flows.iter().enumerate() {
            flow.check()?;
            if flows[..i].iter().any(|f| f.name == flow.name) {
                return Err(format!("[[flows]]: two flows are named {}", flow.name));
            }
        }
        Ok(Flows { flows })
    }

    /// The flow for a task about to be submitted.
    pub fn select(&self, task_type: &str, risk: RiskTier) -> Option<&FlowDef> {
        self.flows.iter().find(|f| f.matches(task_type, risk))
    }

    /// The flow a stored task was submitted under (its `metadata.flow`), or the one
    /// that matches it now.
    pub fn of(&self, task: &Task) -> Option<&FlowDef> {
        task.metadata
            .get("flow")
            .and_then(Value::as_str)
            .and_then(|name| self.flows.iter().find(|f| f.name == name))
            .or_else(|| self.select(&task.task_type, task.risk_tier))
    }

    /// Task types the orchestrator's flow runner claims: those of the code flows.
    pub fn staged_types(&self) -> Vec<String> {
        let mut types: Vec<String> = self
            .flows
            .iter()
            .filter(|f| f.kind == FlowKind::Code)
            .flat_map(|f| f.task_types.iter().cloned())
            .collect();
        types.sort();
        types.dedup();
        types
    }

    pub fn all(&self) -> &[FlowDef] {
        &self.flows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_matching_flow_wins() {
        let flows = Flows::default();
        let pick = |t: &str, r| flows.select(t, r).map(|f| f.name.as_str());
        assert_eq!(pick("code_refactor", RiskTier::Low), Some("code"));
        assert_eq!(
            pick("code_refactor", RiskTier::Critical),
            Some("high_risk_code")
        );
        assert_eq!(pick("summarise", RiskTier::High), Some("high_risk"));
        assert_eq!(pick("summarise", RiskTier::Medium), Some("default"));
        assert_eq!(
            flows.staged_types(),
            ["code_generate", "code_refactor", "code_review"]
        );
    }

    #[test]
    fn bad_flows_are_refused_with_their_name() {
        let mut code = FlowDef::defaults().remove(1);
        code.task_types = vec!["plan".into()];
        let err = Flows::new(vec![code.clone()]).unwrap_err();
        assert!(
            err.contains("[[flows]] code") && err.contains("plan"),
            "{err}"
        );
        code.task_types = vec!["code_refactor".into()];
        code.max_rounds = 0;
        assert!(
            Flows::new(vec![code.clone()])
                .unwrap_err()
                .contains("max_rounds")
        );
        code.max_rounds = 2;
        assert!(
            Flows::new(vec![code.clone(), code])
                .unwrap_err()
                .contains("two flows")
        );
        let parsed: Result<FlowDef, _> = toml::from_str("name = \"x\"\nkind = \"pipeline\"");
        assert!(parsed.unwrap_err().to_string().contains("pipeline"));
    }
}
