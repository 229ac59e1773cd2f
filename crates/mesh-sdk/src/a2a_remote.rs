//! A remote A2A agent as a mesh agent: the handler of a [`Worker`](crate::Worker)
//! attached to an imported agent. For each task the mesh leases to that agent it sends
//! the task to the remote agent with `SendMessage`, polls `GetTask` until the remote
//! task ends, and reports the outcome as its own; the queue records the lease and the
//! result as for any agent, and the proxy records nothing more.
//!
//! While the handler waits, the worker keeps the lease alive; when the lease is lost
//! (the attempt timed out, or was taken back) the handler is dropped, and the remote
//! task is asked to cancel.

use crate::agent::{AgentError, BaseAgent, TaskContext, TaskOutcome};
use async_trait::async_trait;
use mesh_a2a::mesh::{parts_to_value, value_to_parts};
use mesh_a2a::{
    A2aClient, A2aError, Message, Part, Role, SendMessageConfiguration, SendMessageRequest,
    SendMessageResponse, TaskState,
};
use mesh_service::SecretDir;
use mesh_types::{Agent, NewAgent, Task};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// First pause between `GetTask` polls; it doubles up to `MAX_POLL`.
const FIRST_POLL: Duration = Duration::from_millis(100);
const MAX_POLL: Duration = Duration::from_secs(2);
/// Polls that may fail in a row (the agent briefly unreachable) before the attempt does.
const POLL_FAILURES: u32 = 5;

pub struct A2aRemoteAgent {
    agent: Agent,
    http: reqwest::Client,
    /// The agent's token, as `secret://NAME`, and where to read it. It is read for
    /// every attempt, so a secret rotated in place (as Kubernetes updates a mounted
    /// one) is used from the next task on, without restarting the proxy.
    token: Option<(String, Option<SecretDir>)>,
}

impl A2aRemoteAgent {
    /// The proxy of an imported agent; an error when the agent has no A2A endpoint,
    /// or its token cannot be read from `secrets`.
    pub fn new(
        agent: Agent,
        http: reqwest::Client,
        secrets: Option<&SecretDir>,
    ) -> Result<Self, A2aError> {
        let endpoint = agent.a2a.as_ref().ok_or_else(|| {
            A2aError::Invalid(format!("agent {} has no A2A endpoint", agent.name))
        })?;
        let token = endpoint
            .token
            .clone()
            .map(|reference| (reference, secrets.cloned()));
        let remote = Self { agent, http, token };
        remote.client()?;
        Ok(remote)
    }

    /// A client of the remote agent holding its current token.
    fn client(&self) -> Result<Arc<A2aClient>, A2aError> {
        let url = self.agent.a2a.as_ref().map_or("", |e| e.url.as_str());
        let token = match &self.token {
            Some((reference, secrets)) => Some(
                SecretDir::resolve(secrets.as_ref(), reference).map_err(|e| {
                    A2aError::Invalid(format!("the token of agent {}: {e}", self.agent.name))
                })?,
            ),
            None => None,
        };
        Ok(Arc::new(A2aClient::new(self.http.clone(), url, token)?))
    }

    async fn poll(
        &self,
        client: Arc<A2aClient>,
        mut remote: mesh_a2a::Task,
    ) -> Result<TaskOutcome, AgentError> {
        let mut cancel = CancelOnDrop {
            client: client.clone(),
            task_id: Some(remote.id.clone()),
        };
        let mut wait = FIRST_POLL;
        let mut failures = 0;
        loop {
            let state = remote.status.state;
            if state.is_terminal() || state.is_interrupted() {
                cancel.task_id = None;
                return self.outcome(remote);
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(MAX_POLL);
            match client.get_task(&remote.id).await {
                Ok(next) => {
                    failures = 0;
                    remote = next;
                }
                Err(A2aError::Unreachable(why)) if failures + 1 < POLL_FAILURES => {
                    failures += 1;
                    tracing::warn!(agent = %self.agent.name, task = %remote.id, error = %why, "GetTask failed; polling again");
                }
                Err(err) => {
                    return Err(AgentError::retryable(format!(
                        "remote agent {}: GetTask {}: {err}",
                        self.agent.name, remote.id
                    )));
                }
            }
        }
    }

    /// What a remote task that stopped moving means for the mesh task.
    fn outcome(&self, remote: mesh_a2a::Task) -> Result<TaskOutcome, AgentError> {
        let state = remote.status.state;
        let message = remote.status.message.as_ref();
        match state {
            TaskState::Completed => {
                let parts: Vec<Part> = remote
                    .artifacts
                    .iter()
                    .flat_map(|a| a.parts.iter().cloned())
                    .collect();
                let result = if parts.is_empty() {
                    message.map_or(Value::Null, |m| parts_to_value(&m.parts))
                } else {
                    parts_to_value(&parts)
                };
                Ok(TaskOutcome::Complete(task_output(result, Some(&remote.id))))
            }
            // Another agent may do what this one would not or could not: retry.
            TaskState::Failed | TaskState::Rejected | TaskState::Canceled => {
                Err(AgentError::retryable(format!(
                    "remote agent {}: task {} ended {state:?}{}",
                    self.agent.name,
                    remote.id,
                    message
                        .map(|m| format!(": {}", said(m)))
                        .unwrap_or_default()
                )))
            }
            // The mesh has no one to ask for more input or credentials.
            _ => Err(AgentError::fatal(format!(
                "remote agent {}: task {} stopped in {state:?}, which needs a client's input",
                self.agent.name, remote.id
            ))),
        }
    }
}

/// A remote answer as a mesh task's output: the answer under `result`, and lifted to
/// the top so flows read it as they read a local agent's output — an object's fields as
/// they are (a critic's `verdict`), text as `content` (a coder's change).
fn task_output(result: Value, remote_task: Option<&str>) -> Value {
    let mut output = match &result {
        Value::Object(fields) if fields.len() == 1 && fields.contains_key("text") => {
            json!({"content": fields["text"]})
        }
        Value::Object(fields) => Value::Object(fields.clone()),
        _ => json!({}),
    };
    output["result"] = result;
    if let Some(id) = remote_task {
        output["a2aTaskId"] = json!(id);
    }
    output
}

#[async_trait]
impl BaseAgent for A2aRemoteAgent {
    fn descriptor(&self) -> NewAgent {
        NewAgent {
            name: self.agent.name.clone(),
            version: self.agent.version.clone(),
            role: self.agent.role,
            risk_tier: self.agent.risk_tier,
            capabilities: self.agent.capabilities.clone(),
            model_preference: self.agent.model_preference.clone(),
            cost_profile: self.agent.cost_profile.clone(),
            max_concurrency: self.agent.max_concurrency,
        }
    }

    async fn on_task_received(
        &self,
        ctx: &TaskContext,
        task: &Task,
    ) -> Result<TaskOutcome, AgentError> {
        // One message per attempt: the remote may drop a repeated message id, and a
        // retry must reach it.
        let mut message = Message::new(
            format!("{}-{}", task.id, ctx.attempt),
            Role::User,
            value_to_parts(&task.input),
        );
        message.context_id = Some(task.id.to_string());
        message.metadata = Some(json!({
            "meshTaskId": task.id, "taskType": task.task_type, "attempt": ctx.attempt,
        }));
        let request = SendMessageRequest {
            tenant: None,
            message,
            configuration: Some(SendMessageConfiguration {
                accepted_output_modes: vec!["application/json".into(), "text/plain".into()],
                history_length: Some(0),
                return_immediately: true,
            }),
            metadata: None,
        };
        // Another agent may hold a token that reads.
        let client = self
            .client()
            .map_err(|e| AgentError::retryable(e.to_string()))?;
        match client.send_message(&request).await {
            Ok(SendMessageResponse::Task(remote)) => self.poll(client, remote).await,
            // A direct reply: the answer is the message.
            Ok(SendMessageResponse::Message(reply)) => Ok(TaskOutcome::Complete(task_output(
                parts_to_value(&reply.parts),
                None,
            ))),
            Err(A2aError::Rpc(err)) if is_permanent(err.code) => Err(AgentError::fatal(format!(
                "remote agent {} refused the task: {err}",
                self.agent.name
            ))),
            Err(err) => Err(AgentError::retryable(format!(
                "remote agent {}: SendMessage: {err}",
                self.agent.name
            ))),
        }
    }
}

/// What a status message says, for a failure reason: its text, else its parts as JSON.
fn said(message: &Message) -> String {
    let text: Vec<&str> = message
        .parts
        .iter()
        .filter_map(|p| p.text.as_deref())
        .collect();
    if text.is_empty() {
        parts_to_value(&message.parts).to_string()
    } else {
        text.join(" ")
    }
}

/// Refusals that another attempt would meet again.
fn is_permanent(code: i64) -> bool {
    use mesh_a2a::jsonrpc::{
        CONTENT_TYPE_NOT_SUPPORTED, INVALID_PARAMS, METHOD_NOT_FOUND, UNSUPPORTED_OPERATION,
    };
    matches!(
        code,
        INVALID_PARAMS | METHOD_NOT_FOUND | UNSUPPORTED_OPERATION | CONTENT_TYPE_NOT_SUPPORTED
    )
}

/// Asks the remote agent to cancel its task if the handler is dropped before the task
/// ended (the lease was lost or the worker told to yield).
struct CancelOnDrop {
    client: Arc<A2aClient>,
    task_id: Option<String>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(id) = self.task_id.take() else {
            return;
        };
        let client = self.client.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(err) = client.cancel_task(&id).await {
                    tracing::warn!(task = %id, error = %err, "could not cancel an abandoned remote task");
                }
            });
        }
    }
}

#[cfg(test)]
mod output_tests {
    use super::task_output;
    use serde_json::json;

    #[test]
    fn answers_are_kept_and_lifted_for_flows() {
        let verdict = task_output(json!({"verdict": "approve"}), Some("r1"));
        assert_eq!(verdict["verdict"], "approve");
        assert_eq!(verdict["result"]["verdict"], "approve");
        assert_eq!(verdict["a2aTaskId"], "r1");
        let text = task_output(json!({"text": "a diff"}), None);
        assert_eq!(text["content"], "a diff");
        assert!(text.get("a2aTaskId").is_none());
        assert_eq!(task_output(json!([1]), None), json!({"result": [1]}));
    }
}
