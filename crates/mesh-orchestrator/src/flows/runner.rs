//! The code flow's runner: an SDK agent of the orchestrator that claims the tasks of
//! code flows and drives them through plan → implement → review as subtasks.
//!
//! It keeps no state of its own. Between stages the task is parked with the flow's
//! state as its output; when the stage's subtasks finish, the queue puts the task back
//! and whichever orchestrator claims it next carries on. So any number of orchestrator
//! processes run flows side by side, and a flow whose orchestrator dies is finished by
//! another once the lease expires. Subtasks carry idempotency keys derived from the
//! task, stage, round and step, so a stage replayed after a crash re-finds the subtasks
//! it had already queued instead of queueing them twice.

use super::config::{FlowDef, FlowKind, Flows};
use async_trait::async_trait;
use mesh_sdk::{AgentError, BaseAgent, TaskContext, TaskOutcome};
use mesh_store::Store;
use mesh_types::{AgentRole, EventDraft, NewAgent, NewTask, RiskTier, Task, TaskStatus};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Stage {
    Plan,
    Implement,
    Review,
}

impl Stage {
    fn as_str(self) -> &'static str {
        match self {
            Stage::Plan => "plan",
            Stage::Implement => "implement",
            Stage::Review => "review",
        }
    }
}

/// What a parked flow task keeps as its output between stages.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FlowState {
    flow: String,
    stage: Stage,
    round: u32,
    #[serde(default)]
    plan: Vec<Value>,
    #[serde(default)]
    changes: Vec<Value>,
    #[serde(default)]
    reviews: Vec<Value>,
}

pub struct FlowRunner {
    name: String,
    flows: Arc<Flows>,
    store: Store,
}

impl FlowRunner {
    /// `name` must be unique among live agents: one runner per orchestrator process.
    pub fn new(name: String, flows: Arc<Flows>, store: Store) -> Self {
        Self { name, flows, store }
    }

    fn flow_for(&self, task: &Task) -> Result<&FlowDef, AgentError> {
        self.flows
            .of(task)
            .filter(|f| f.kind == FlowKind::Code)
            .ok_or_else(|| {
                AgentError::fatal(format!(
                    "no code flow takes task type {} any more",
                    task.task_type
                ))
            })
    }

    /// A subtask of `parent` for one stage; the key makes a replayed stage find it.
    fn subtask(
        &self,
        parent: &Task,
        flow: &FlowDef,
        stage: Stage,
        round: u32,
        index: usize,
        input: Value,
    ) -> NewTask {
        let task_type = match stage {
            Stage::Plan => &flow.stages.plan,
            Stage::Implement => &flow.stages.implement,
            Stage::Review => &flow.stages.review,
        };
        NewTask {
            task_type: task_type.clone(),
            input,
            priority: parent.priority,
            metadata: Some(json!({
                "flow": flow.name, "stage": stage.as_str(), "round": round,
                "rootTaskId": parent.metadata.get("rootTaskId").cloned().unwrap_or(json!(parent.id)),
            })),
            risk_tier: Some(parent.risk_tier),
            data_classification: Some(parent.data_classification),
            parent_id: Some(parent.id),
            deadline: None,
            idempotency_key: Some(format!("{}:{}:{round}:{index}", parent.id, stage.as_str())),
        }
    }

    fn implement_all(
        &self,
        parent: &Task,
        flow: &FlowDef,
        mut state: FlowState,
        notes: Option<&str>,
    ) -> TaskOutcome {
        state.stage = Stage::Implement;
        state.round += 1;
        let count = state.plan.len();
        let subtasks = state
            .plan
            .iter()
            .enumerate()
            .map(|(i, step)| {
                let input = json!({
                    "task": original(parent),
                    "step": {"number": i + 1, "count": count, "title": step["title"], "description": step["description"]},
                    "notes": notes,
                });
                self.subtask(parent, flow, Stage::Implement, state.round, i, input)
            })
            .collect();
        park(subtasks, &state)
    }

    /// Records who reviewed the task (the `REVIEWED_BY` edge) and what they said.
    async fn record_review(
        &self,
        parent: &Task,
        review: &Task,
        state: &FlowState,
    ) -> Result<(), AgentError> {
        let events = self
            .store
            .provenance
            .events_for_task(review.id)
            .await
            .map_err(|e| AgentError::retryable(format!("reading the review's record: {e}")))?;
        let reviewer = events
            .iter()
            .rev()
            .find(|e| e.action == "task_completed")
            .and_then(|e| e.payload.get("agentId"))
            .and_then(Value::as_str)
            .and_then(|id| id.parse::<Uuid>().ok());
        let agent = match reviewer {
            Some(id) => self.store.agents.get_agent(id).await.ok().flatten(),
            None => None,
        };
        let (id, name) = agent
            .map(|a| (json!(a.id), a.name))
            .unwrap_or((Value::Null, "critic".to_string()));
        let output = review.output.clone().unwrap_or(Value::Null);
        let event = EventDraft::new("task_reviewed", &name, "task", Some(parent.id.to_string()))
            .task(parent.id)
            .payload(json!({
                "agentId": id, "agentName": name, "agentRole": "critic",
                "reviewTaskId": review.id, "round": state.round,
                "verdict": output["verdict"], "notes": output["notes"],
            }));
        self.append(vec![event]).await
    }

    async fn append(&self, events: Vec<EventDraft>) -> Result<(), AgentError> {
        self.store
            .provenance
            .append(events)
            .await
            .map(|_| ())
            .map_err(|e| AgentError::retryable(format!("recording the flow's progress: {e}")))
    }

    /// Checks each coder output against the flow's schema; the problems found go to
    /// the critic, and each is recorded on its subtask.
    async fn check_outputs(
        &self,
        flow: &FlowDef,
        done: &[&Task],
    ) -> Result<(Vec<Value>, Vec<String>), AgentError> {
        let validator = jsonschema::validator_for(&flow.implement_schema)
            .map_err(|e| AgentError::fatal(format!("flow {}: implement_schema: {e}", flow.name)))?;
        let mut changes = Vec::new();
        let mut problems = Vec::new();
        let mut events = Vec::new();
        for task in done {
            let output = task.output.clone().unwrap_or(Value::Null);
            let step = &task.input["step"];
            let errors: Vec<String> = validator
                .iter_errors(&output)
                .map(|e| format!("{}: {e}", display_path(&e.instance_path().to_string())))
                .collect();
            if !errors.is_empty() {
                let problem = format!(
                    "step {} produced invalid output ({})",
                    step["number"],
                    errors.join("; ")
                );
                events.push(
                    EventDraft::new("output_invalid", "orchestrator", "task", Some(task.id.to_string()))
                        .task(task.id)
                        .payload(json!({"errors": errors, "schema": "implement_schema", "routedTo": "critic"})),
                );
                problems.push(problem);
            }
            changes.push(json!({
                "step": step["number"], "title": step["title"], "taskId": task.id,
                "content": output.get("content").cloned().unwrap_or(output.clone()),
            }));
        }
        if !events.is_empty() {
            self.append(events).await?;
        }
        Ok((changes, problems))
    }
}

fn display_path(pointer: &str) -> String {
    if pointer.is_empty() {
        "output".into()
    } else {
        format!("output{pointer}")
    }
}

/// The task as the flow's stages see it.
fn original(task: &Task) -> Value {
    json!({"id": task.id, "type": task.task_type, "input": task.input})
}

fn park(subtasks: Vec<NewTask>, state: &FlowState) -> TaskOutcome {
    TaskOutcome::Spawn {
        subtasks,
        output: json!(state),
    }
}

/// The subtasks of the current stage and round.
fn of_stage<'a>(subtasks: &'a [Task], state: &FlowState) -> Vec<&'a Task> {
    let mut found: Vec<&Task> = subtasks
        .iter()
        .filter(|t| {
            t.metadata["stage"] == state.stage.as_str() && t.metadata["round"] == state.round
        })
        .collect();
    found.sort_by_key(|t| t.input["step"]["number"].as_u64().unwrap_or(0));
    found
}

/// Ends the flow because a stage's subtask did not complete.
fn stage_failed(state: &FlowState, failed: &[&Task]) -> AgentError {
    let why: Vec<String> = failed
        .iter()
        .map(|t| {
            format!(
                "{} {} ({})",
                t.task_type,
                t.status,
                t.last_error.as_deref().unwrap_or("no reason given")
            )
        })
        .collect();
    AgentError::fatal(format!(
        "flow {} stopped at {} round {}: {}",
        state.flow,
        state.stage.as_str(),
        state.round,
        why.join("; ")
    ))
}

#[async_trait]
impl BaseAgent for FlowRunner {
    fn descriptor(&self) -> NewAgent {
        let descriptor = json!({
            "name": self.name,
            "version": env!("CARGO_PKG_VERSION"),
            "role": AgentRole::Custom,
            // It must be allowed to take any flow task it is given; what it does with
            // one is spawn subtasks, which the agent.spawn policy point judges.
            "riskTier": RiskTier::Critical,
            "capabilities": self.flows.staged_types(),
        });
        serde_json::from_value(descriptor)
            .unwrap_or_else(|e| unreachable!("the flow runner's descriptor matches NewAgent: {e}"))
    }

    async fn on_task_received(
        &self,
        _ctx: &TaskContext,
        task: &Task,
    ) -> Result<TaskOutcome, AgentError> {
        let flow = self.flow_for(task)?;
        let state = FlowState {
            flow: flow.name.clone(),
            stage: Stage::Plan,
            round: 0,
            plan: vec![],
            changes: vec![],
            reviews: vec![],
        };
        let plan = self.subtask(
            task,
            flow,
            Stage::Plan,
            0,
            0,
            json!({"task": original(task)}),
        );
        Ok(park(vec![plan], &state))
    }

    async fn on_subtask_result(
        &self,
        _ctx: &TaskContext,
        parent: &Task,
        subtasks: &[Task],
    ) -> Result<TaskOutcome, AgentError> {
        let flow = self.flow_for(parent)?;
        let mut state: FlowState = parent
            .output
            .clone()
            .and_then(|o| serde_json::from_value(o).ok())
            .ok_or_else(|| AgentError::fatal("the flow's saved state is unreadable"))?;
        let current = of_stage(subtasks, &state);
        let failed: Vec<&Task> = current
            .iter()
            .copied()
            .filter(|t| t.status != TaskStatus::Completed)
            .collect();
        if current.is_empty() {
            return Err(AgentError::fatal(format!(
                "flow {} resumed at {} round {} with no subtasks of that stage",
                state.flow,
                state.stage.as_str(),
                state.round
            )));
        }
        if !failed.is_empty() {
            return Err(stage_failed(&state, &failed));
        }
        match state.stage {
            Stage::Plan => {
                let steps = current[0]
                    .output
                    .as_ref()
                    .and_then(|o| o.get("steps"))
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                if steps.is_empty() {
                    return Err(AgentError::fatal("the planner produced no steps"));
                }
                state.plan = steps;
                Ok(self.implement_all(parent, flow, state, None))
            }
            Stage::Implement => {
                let (changes, problems) = self.check_outputs(flow, &current).await?;
                state.changes = changes.clone();
                state.stage = Stage::Review;
                let input = json!({
                    "task": original(parent),
                    "round": state.round,
                    "maxRounds": flow.max_rounds,
                    "changes": changes,
                    "problems": problems,
                });
                let review = self.subtask(parent, flow, Stage::Review, state.round, 0, input);
                Ok(park(vec![review], &state))
            }
            Stage::Review => {
                let review = current[0];
                self.record_review(parent, review, &state).await?;
                let output = review.output.clone().unwrap_or(Value::Null);
                state.reviews.push(json!({
                    "round": state.round, "verdict": output["verdict"], "notes": output["notes"],
                }));
                let notes = output["notes"].as_str().unwrap_or_default().to_string();
                if output["verdict"] == "approve" {
                    return Ok(TaskOutcome::Complete(json!({
                        "flow": state.flow,
                        "rounds": state.round,
                        "plan": state.plan,
                        "changes": state.changes,
                        "reviews": state.reviews,
                    })));
                }
                if state.round >= flow.max_rounds {
                    return Err(AgentError::fatal(format!(
                        "the critic rejected round {} of {}: {notes}",
                        state.round, flow.max_rounds
                    )));
                }
                Ok(self.implement_all(parent, flow, state, Some(&notes)))
            }
        }
    }
}
