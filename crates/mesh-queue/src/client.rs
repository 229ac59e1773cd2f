use crate::core::{ApprovalBody, TaskListQuery, TaskQueue};
use crate::leases::{
    AwaitBody, ClaimBody, CompleteBody, CompletionResult, CompletionsBody, ExtendBody, FailBody,
    FailReply,
};
use mesh_service::client::{Method, query_string};
use mesh_service::{ApiError, Caller, HttpClient};
use mesh_types::queue::Lease;
use mesh_types::task::QueueStats;
use mesh_types::{NewTask, Page, Task};
use std::sync::Arc;
use uuid::Uuid;

/// How other services reach the task queue: the same core in-process, or its HTTP API.
#[derive(Clone)]
pub enum TaskQueueClient {
    InProcess(Arc<TaskQueue>),
    Http(HttpClient),
}

impl TaskQueueClient {
    pub async fn enqueue(&self, caller: &Caller, new: NewTask) -> Result<Task, ApiError> {
        match self {
            Self::InProcess(core) => core.enqueue(&caller.principal, new).await,
            Self::Http(http) => {
                http.send(
                    Method::POST,
                    "/api/v1/queue/tasks",
                    &caller.token,
                    Some(&new),
                )
                .await
            }
        }
    }

    /// Submits several tasks in one transaction, all or none.
    pub async fn enqueue_batch(
        &self,
        caller: &Caller,
        tasks: Vec<NewTask>,
    ) -> Result<Vec<Task>, ApiError> {
        match self {
            Self::InProcess(core) => core.enqueue_batch(&caller.principal, tasks).await,
            Self::Http(http) => {
                #[derive(serde::Deserialize)]
                struct Stored {
                    tasks: Vec<Task>,
                }
                let stored: Stored = http
                    .send(
                        Method::POST,
                        "/api/v1/queue/tasks/batch",
                        &caller.token,
                        Some(&serde_json::json!({ "tasks": tasks })),
                    )
                    .await?;
                Ok(stored.tasks)
            }
        }
    }

    /// Completes several leased tasks in one transaction; each result stands alone.
    pub async fn complete_batch(
        &self,
        caller: &Caller,
        body: CompletionsBody,
    ) -> Result<Vec<CompletionResult>, ApiError> {
        match self {
            Self::InProcess(core) => core.complete_batch(caller, body).await,
            Self::Http(http) => {
                #[derive(serde::Deserialize)]
                struct Results {
                    results: Vec<CompletionResult>,
                }
                let replied: Results = http
                    .send(
                        Method::POST,
                        "/api/v1/queue/completions",
                        &caller.token,
                        Some(&body),
                    )
                    .await?;
                Ok(replied.results)
            }
        }
    }

    pub async fn get(&self, caller: &Caller, id: Uuid) -> Result<Task, ApiError> {
        match self {
            Self::InProcess(core) => core.get(&caller.principal, id).await,
            Self::Http(http) => {
                http.send(
                    Method::GET,
                    &format!("/api/v1/queue/tasks/{id}"),
                    &caller.token,
                    None::<&()>,
                )
                .await
            }
        }
    }

    pub async fn list(
        &self,
        caller: &Caller,
        query: TaskListQuery,
    ) -> Result<Page<Task>, ApiError> {
        match self {
            Self::InProcess(core) => core.list(&caller.principal, query).await,
            Self::Http(http) => {
                let qs = query_string(&query)?;
                http.send(
                    Method::GET,
                    &format!("/api/v1/queue/tasks{qs}"),
                    &caller.token,
                    None::<&()>,
                )
                .await
            }
        }
    }

    pub async fn cancel(&self, caller: &Caller, id: Uuid) -> Result<Task, ApiError> {
        match self {
            Self::InProcess(core) => core.cancel(&caller.principal, id).await,
            Self::Http(http) => {
                http.send(
                    Method::POST,
                    &format!("/api/v1/queue/tasks/{id}/cancel"),
                    &caller.token,
                    None::<&()>,
                )
                .await
            }
        }
    }

    /// Approves (queues) or rejects (cancels) a task a policy escalated.
    pub async fn resolve_approval(
        &self,
        caller: &Caller,
        id: Uuid,
        approve: bool,
        note: Option<String>,
    ) -> Result<Task, ApiError> {
        match self {
            Self::InProcess(core) => {
                core.resolve_approval(&caller.principal, id, approve, note)
                    .await
            }
            Self::Http(http) => {
                let verb = if approve { "approve" } else { "reject" };
                http.send(
                    Method::POST,
                    &format!("/api/v1/queue/approvals/{id}/{verb}"),
                    &caller.token,
                    Some(&ApprovalBody { note }),
                )
                .await
            }
        }
    }

    /// Leases tasks to an agent; the SDK's worker calls this.
    pub async fn claim(&self, caller: &Caller, body: ClaimBody) -> Result<Vec<Lease>, ApiError> {
        match self {
            Self::InProcess(core) => core.claim(caller, body).await,
            Self::Http(http) => {
                http.send(
                    Method::POST,
                    "/api/v1/queue/claim",
                    &caller.token,
                    Some(&body),
                )
                .await
            }
        }
    }

    pub async fn extend(
        &self,
        caller: &Caller,
        id: Uuid,
        body: ExtendBody,
    ) -> Result<Lease, ApiError> {
        match self {
            Self::InProcess(core) => core.extend(id, body).await,
            Self::Http(http) => {
                http.send(
                    Method::POST,
                    &format!("/api/v1/queue/tasks/{id}/heartbeat"),
                    &caller.token,
                    Some(&body),
                )
                .await
            }
        }
    }

    pub async fn complete(
        &self,
        caller: &Caller,
        id: Uuid,
        body: CompleteBody,
    ) -> Result<Task, ApiError> {
        match self {
            Self::InProcess(core) => core.complete(caller, id, body).await,
            Self::Http(http) => {
                http.send(
                    Method::POST,
                    &format!("/api/v1/queue/tasks/{id}/complete"),
                    &caller.token,
                    Some(&body),
                )
                .await
            }
        }
    }

    pub async fn yield_task(
        &self,
        caller: &Caller,
        id: Uuid,
        body: ExtendBody,
    ) -> Result<Task, ApiError> {
        match self {
            Self::InProcess(core) => core.yield_task(caller, id, body).await,
            Self::Http(http) => {
                http.send(
                    Method::POST,
                    &format!("/api/v1/queue/tasks/{id}/yield"),
                    &caller.token,
                    Some(&body),
                )
                .await
            }
        }
    }

    pub async fn await_children(
        &self,
        caller: &Caller,
        id: Uuid,
        body: AwaitBody,
    ) -> Result<Task, ApiError> {
        match self {
            Self::InProcess(core) => core.await_children(caller, id, body).await,
            Self::Http(http) => {
                http.send(
                    Method::POST,
                    &format!("/api/v1/queue/tasks/{id}/await-children"),
                    &caller.token,
                    Some(&body),
                )
                .await
            }
        }
    }

    pub async fn fail(
        &self,
        caller: &Caller,
        id: Uuid,
        body: FailBody,
    ) -> Result<FailReply, ApiError> {
        match self {
            Self::InProcess(core) => core.fail(caller, id, body).await,
            Self::Http(http) => {
                http.send(
                    Method::POST,
                    &format!("/api/v1/queue/tasks/{id}/fail"),
                    &caller.token,
                    Some(&body),
                )
                .await
            }
        }
    }

    pub async fn stats(
        &self,
        caller: &Caller,
        task_type: &str,
        priority: i32,
    ) -> Result<QueueStats, ApiError> {
        match self {
            Self::InProcess(core) => core.stats(task_type, priority).await,
            Self::Http(http) => {
                let qs = query_string(&[
                    ("type", task_type.to_string()),
                    ("priority", priority.to_string()),
                ])?;
                http.send(
                    Method::GET,
                    &format!("/api/v1/queue/stats{qs}"),
                    &caller.token,
                    None::<&()>,
                )
                .await
            }
        }
    }
}
