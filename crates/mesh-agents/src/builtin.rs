//! The planner, coder and critic: one agent type whose kind picks the prompt and how
//! the reply is read.

use crate::model::ModelClient;
use crate::parse::{parse_plan, parse_verdict};
use crate::prompts::{Prompts, render};
use crate::tools::ToolClient;
use async_trait::async_trait;
use mesh_sdk::{AgentError, BaseAgent, TaskContext, TaskOutcome};
use mesh_types::{AgentRole, NewAgent, RiskTier, Task};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuiltinKind {
    Planner,
    Coder,
    Critic,
}

impl BuiltinKind {
    pub const NAMES: &'static [&'static str] = &["planner", "coder", "critic"];

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "planner" => Some(Self::Planner),
            "coder" => Some(Self::Coder),
            "critic" => Some(Self::Critic),
            _ => None,
        }
    }

    pub fn role(self) -> AgentRole {
        match self {
            Self::Planner => AgentRole::Planner,
            Self::Coder => AgentRole::Coder,
            Self::Critic => AgentRole::Critic,
        }
    }

    /// The subtask type of the code flow this kind does.
    pub fn task_type(self) -> &'static str {
        match self {
            Self::Planner => "plan",
            Self::Coder => "implement",
            Self::Critic => "review",
        }
    }
}

pub struct BuiltinAgent {
    pub kind: BuiltinKind,
    pub name: String,
    pub model: String,
    pub risk_tier: RiskTier,
    /// Task types it claims; by default its kind's flow subtask type.
    pub capabilities: Vec<String>,
    pub prompts: Arc<Prompts>,
    pub client: ModelClient,
    /// The tool registry, for the coder's `file_read` of its target.
    pub tools: Option<ToolClient>,
}

#[async_trait]
impl BaseAgent for BuiltinAgent {
    fn descriptor(&self) -> NewAgent {
        // Built from JSON so fields the registration gains later keep their defaults.
        let descriptor = json!({
            "name": self.name,
            "version": env!("CARGO_PKG_VERSION"),
            "role": self.kind.role(),
            "riskTier": self.risk_tier,
            "capabilities": self.capabilities,
            // The gateway picks the provider serving the model.
            "modelPreference": {"provider": "routing-gateway", "model": self.model},
        });
        serde_json::from_value(descriptor)
            .unwrap_or_else(|e| unreachable!("the built-in descriptor matches NewAgent: {e}"))
    }

    async fn on_task_received(
        &self,
        ctx: &TaskContext,
        task: &Task,
    ) -> Result<TaskOutcome, AgentError> {
        let mut vars = variables(task);
        if self.kind == BuiltinKind::Coder {
            vars.insert(
                "current",
                self.read_target(ctx, task, &vars["target"]).await,
            );
        }
        let template = match self.kind {
            BuiltinKind::Planner => &self.prompts.planner,
            BuiltinKind::Coder => &self.prompts.coder,
            BuiltinKind::Critic => &self.prompts.critic,
        };
        let prompt = render(template, &vars);
        let format = match self.kind {
            BuiltinKind::Planner => Some(crate::parse::plan_format()),
            BuiltinKind::Critic => Some(crate::parse::verdict_format()),
            BuiltinKind::Coder => None,
        };
        let reply = self
            .client
            .ask(ctx.agent_id, task.id, &self.model, prompt, format)
            .await?;
        let output = match self.kind {
            BuiltinKind::Planner => {
                let plan = parse_plan(&reply).ok_or_else(|| {
                    AgentError::retryable(format!(
                        "the planner's reply holds no steps: {}",
                        excerpt(&reply)
                    ))
                })?;
                json!({"steps": plan.steps, "model": self.model})
            }
            BuiltinKind::Coder => json!({
                "step": task.input["step"]["number"],
                "title": task.input["step"]["title"],
                "content": reply,
                "model": self.model,
            }),
            BuiltinKind::Critic => {
                let verdict = parse_verdict(&reply).ok_or_else(|| {
                    AgentError::retryable(format!(
                        "the critic's reply is neither an approval nor a rejection: {}",
                        excerpt(&reply)
                    ))
                })?;
                json!({
                    "verdict": if verdict.approved { "approve" } else { "reject" },
                    "notes": verdict.notes,
                    "model": self.model,
                })
            }
        };
        Ok(TaskOutcome::Complete(output))
    }
}

/// Most of the target file a coder's prompt carries.
const MAX_TARGET_CHARS: usize = 8_000;

impl BuiltinAgent {
    /// The target's current text through the `file_read` tool, or a note saying why
    /// there is none; a failed read is the model's problem to work around, not the
    /// task's.
    async fn read_target(&self, ctx: &TaskContext, task: &Task, target: &str) -> String {
        let Some(tools) = &self.tools else {
            return "(no tool registry available)".into();
        };
        if target.is_empty() {
            return "(no target named)".into();
        }
        let args = json!({"path": target, "maxBytes": MAX_TARGET_CHARS});
        match tools.invoke("file_read", ctx.agent_id, task.id, args).await {
            Ok(output) => output["content"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| "(file_read returned no content)".into()),
            Err(why) => format!("(could not read {target}: {why})"),
        }
    }
}

fn excerpt(text: &str) -> String {
    let short: String = text.chars().take(160).collect();
    if short.len() < text.len() {
        format!("{short}…")
    } else {
        short
    }
}

/// The template variables of a flow subtask (`{task: {type, input}, step?, …}`); a task
/// submitted directly is its own `task`.
fn variables(task: &Task) -> BTreeMap<&'static str, String> {
    let input = &task.input;
    let (kind, original) = match input.get("task") {
        Some(t) => (
            t["type"].as_str().unwrap_or(&task.task_type).to_string(),
            t.get("input").cloned().unwrap_or(Value::Null),
        ),
        None => (task.task_type.clone(), input.clone()),
    };
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let spec = match original.get("spec") {
        Some(s) => text(s),
        None => text(&original),
    };
    let mut vars = BTreeMap::from([
        ("type", kind),
        ("spec", spec),
        ("target", text(&original["target"])),
        (
            "input",
            serde_json::to_string_pretty(&original).unwrap_or_default(),
        ),
        ("step_number", text(&input["step"]["number"])),
        ("step_count", text(&input["step"]["count"])),
        ("step_title", text(&input["step"]["title"])),
        ("step_description", text(&input["step"]["description"])),
        ("round", text(&input["round"])),
        ("max_rounds", text(&input["maxRounds"])),
    ]);
    let notes = text(&input["notes"]);
    vars.insert(
        "notes",
        if notes.is_empty() {
            "none".into()
        } else {
            notes
        },
    );
    let changes = input["changes"]
        .as_array()
        .map(|changes| {
            changes
                .iter()
                .map(|c| {
                    format!(
                        "--- step {}: {}\n{}",
                        text(&c["step"]),
                        text(&c["title"]),
                        text(&c["content"])
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default();
    vars.insert("changes", changes);
    let problems = input["problems"]
        .as_array()
        .map(|p| p.iter().map(text).collect::<Vec<_>>().join("; "))
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "none".into());
    vars.insert("problems", problems);
    vars
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(kind: &str, input: Value) -> Task {
        let new = mesh_types::NewTask {
            task_type: kind.into(),
            input,
            priority: 0,
            metadata: None,
            risk_tier: None,
            data_classification: None,
            parent_id: None,
            deadline: None,
            idempotency_key: None,
        };
        new.into_task(uuid::Uuid::nil(), "default", 3, mesh_types::time::now())
    }

    #[test]
    fn flow_subtasks_and_direct_tasks_fill_the_same_variables() {
        let sub = task(
            "implement",
            json!({"task": {"type": "code_refactor", "input": {"spec": "split it", "target": "a.ts"}},
                   "step": {"number": 2, "count": 3, "title": "t"}, "notes": null}),
        );
        let v = variables(&sub);
        assert_eq!(v["type"], "code_refactor");
        assert_eq!(v["spec"], "split it");
        assert_eq!(v["target"], "a.ts");
        assert_eq!(v["step_number"], "2");
        assert_eq!(v["notes"], "none");
        let direct = task("plan", json!({"spec": "do x"}));
        let v = variables(&direct);
        assert_eq!(v["type"], "plan");
        assert_eq!(v["spec"], "do x");
        let review = task(
            "review",
            json!({"round": 1, "maxRounds": 3, "changes": [{"step": 1, "title": "a", "content": "diff"}], "problems": ["bad"]}),
        );
        let v = variables(&review);
        assert!(v["changes"].contains("--- step 1: a\ndiff"));
        assert_eq!(v["problems"], "bad");
    }
}
