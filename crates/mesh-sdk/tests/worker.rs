//! The worker runtime in-process, over the real queue and registry cores on SQLite.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_trait::async_trait;
use mesh_queue::{QueueConfig, TaskQueue};
use mesh_registry::{AgentRegistry, AgentRegistryClient};
use mesh_sdk::{
    AgentError, BaseAgent, MeshClient, TaskContext, TaskOutcome, Worker, WorkerOptions,
};
use mesh_service::{Readiness, ServiceContext, ServiceName};
use mesh_types::queue::RetryPolicy;
use mesh_types::{AgentStatus, NewAgent, NewTask, Principal, Role, Task, TaskStatus};
use serde_json::json;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

struct TestAgent {
    retire_calls: AtomicU32,
}

#[async_trait]
impl BaseAgent for TestAgent {
    fn descriptor(&self) -> NewAgent {
        serde_json::from_value(json!({
            "name": "sdk-test-agent", "version": "1.0.0", "role": "coder", "riskTier": "low",
            "capabilities": ["echo", "flaky", "split", "broken"]
        }))
        .unwrap()
    }

    async fn on_task_received(
        &self,
        ctx: &TaskContext,
        task: &Task,
    ) -> Result<TaskOutcome, AgentError> {
        match task.task_type.as_str() {
            "echo" => Ok(TaskOutcome::Complete(
                json!({"echo": task.input, "by": ctx.agent_name}),
            )),
            "flaky" if ctx.attempt == 1 => Err(AgentError::retryable("first attempts always fail")),
            "flaky" => Ok(TaskOutcome::Complete(json!({"attempt": ctx.attempt}))),
            "broken" => Err(AgentError::fatal("cannot be done")),
            "split" => Ok(TaskOutcome::Spawn {
                subtasks: (0..2)
                    .map(|i| {
                        serde_json::from_value::<NewTask>(
                            json!({"type": "echo", "input": {"part": i}}),
                        )
                        .unwrap()
                    })
                    .collect(),
                output: json!("split in two"),
            }),
            other => Err(AgentError::fatal(format!("unknown type {other}"))),
        }
    }

    async fn on_retire(&self) {
        self.retire_calls.fetch_add(1, Ordering::SeqCst);
    }
}

fn principal() -> Principal {
    Principal {
        key_id: uuid::Uuid::nil(),
        name: "sdk-test".into(),
        roles: vec![Role::Admin],
        tenant: "default".into(),
    }
}

/// A store in `dir` with the queue (configured by `config`) and registry cores over it.
async fn cores(
    dir: &std::path::Path,
    config: QueueConfig,
) -> (
    mesh_store::Store,
    std::sync::Arc<AgentRegistry>,
    std::sync::Arc<TaskQueue>,
) {
    let store = mesh_store::open(None, dir).await.unwrap();
    let ready = Readiness::default();
    let policy = mesh_policy::Enforcer::start(
        mesh_policy::PolicyLocation::Embedded,
        store.clone(),
        ready.clone(),
    )
    .unwrap();
    let agents = AgentRegistry::new(
        ServiceContext::new(ServiceName::AgentRegistry, store.clone(), ready.clone()),
        policy.clone(),
    );
    let queue = TaskQueue::new(
        ServiceContext::new(ServiceName::TaskQueue, store.clone(), ready),
        config,
        AgentRegistryClient::InProcess(agents.clone()),
        policy,
    );
    (store, agents, queue)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_process_worker_runs_tasks_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let config = QueueConfig {
        retry: RetryPolicy {
            base_ms: 10,
            max_ms: 20,
        },
        ..Default::default()
    };
    let (store, agents, queue) = cores(dir.path(), config).await;
    let mut ids = Vec::new();
    for (t, input) in [
        ("echo", json!({"n": 1})),
        ("flaky", json!({})),
        ("split", json!({})),
        ("broken", json!({})),
    ] {
        let new: NewTask = serde_json::from_value(json!({"type": t, "input": input})).unwrap();
        ids.push(queue.enqueue(&principal(), new).await.unwrap().id);
    }
    let client = MeshClient::in_process(queue.clone(), agents.clone(), principal());
    let options = WorkerOptions {
        poll_interval: Duration::from_millis(10),
        lease_ms: 2_000,
        ..Default::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(
        Worker::new(
            TestAgent {
                retire_calls: AtomicU32::new(0),
            },
            client,
            options,
        )
        .run(async {
            let _ = stopped.await;
        }),
    );

    // Wait for the work to settle (state, not time, is what the test checks).
    let settled = |tasks: &[Task]| tasks.iter().all(|t| t.status.is_terminal()) && tasks.len() == 6;
    let mut tasks = Vec::new();
    for _ in 0..400 {
        tasks = store
            .tasks
            .list_tasks(
                &Default::default(),
                &mesh_types::PageRequest::new(Some(100), None),
            )
            .await
            .unwrap()
            .items;
        if settled(&tasks) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(settled(&tasks), "{tasks:#?}");
    let by_id = |id| tasks.iter().find(|t| t.id == id).unwrap();
    assert_eq!(
        by_id(ids[0]).output,
        Some(json!({"echo": {"n": 1}, "by": "sdk-test-agent"}))
    );
    assert_eq!(
        (by_id(ids[1]).status, by_id(ids[1]).attempts),
        (TaskStatus::Completed, 2)
    );
    let children: Vec<&Task> = tasks
        .iter()
        .filter(|t| t.parent_id == Some(ids[2]))
        .collect();
    assert_eq!(children.len(), 2);
    assert!(children.iter().all(|c| c.status == TaskStatus::Completed));
    // The parent waited for its subtasks and was resumed to finish with their results.
    let parent = by_id(ids[2]);
    assert_eq!(parent.status, TaskStatus::Completed);
    assert_eq!(
        parent.attempts, 1,
        "spawned on the first claim, finished on the second; parking refunded the first"
    );
    let output = parent.output.clone().unwrap();
    assert_eq!(output["output"], "split in two");
    assert_eq!(output["subtasks"].as_array().unwrap().len(), 2);
    assert!(
        output["subtasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "completed" && s["output"]["echo"]["part"].is_number())
    );
    assert_eq!(
        (by_id(ids[3]).status, by_id(ids[3]).last_error.as_deref()),
        (TaskStatus::Failed, Some("cannot be done"))
    );

    stop.send(()).unwrap();
    let report = worker.await.unwrap().unwrap();
    assert_eq!(
        (report.completed, report.failed, report.lost_leases),
        (5, 2, 0)
    );
    let agent = agents
        .list(Default::default())
        .await
        .unwrap()
        .items
        .pop()
        .unwrap();
    assert_eq!(agent.status, AgentStatus::Retired);
    assert!(
        mesh_store::verify_chain(store.provenance.as_ref())
            .await
            .unwrap()
            .is_ok()
    );
}

struct PatientAgent {
    first_slow_run: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl BaseAgent for PatientAgent {
    fn descriptor(&self) -> NewAgent {
        serde_json::from_value(json!({
            "name": "gpu-agent", "version": "1", "role": "custom", "riskTier": "low", "capabilities": ["gpu"]
        }))
        .unwrap()
    }

    async fn on_task_received(
        &self,
        _ctx: &TaskContext,
        task: &Task,
    ) -> Result<TaskOutcome, AgentError> {
        if task.priority < 100 && self.first_slow_run.swap(false, Ordering::SeqCst) {
            // Long work: only a yield request ends it.
            tokio::time::sleep(Duration::from_secs(600)).await;
        }
        Ok(TaskOutcome::Complete(json!({"priority": task.priority})))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_critical_task_preempts_running_work() {
    let dir = tempfile::tempdir().unwrap();
    let config = QueueConfig {
        critical_priority: 100,
        preempt_after_ms: 0,
        ..Default::default()
    };
    let (store, agents, queue) = cores(dir.path(), config).await;
    let submit = |priority: i32| {
        let queue = queue.clone();
        async move {
            let new: NewTask =
                serde_json::from_value(json!({"type": "gpu", "input": {}, "priority": priority}))
                    .unwrap();
            queue.enqueue(&principal(), new).await.unwrap().id
        }
    };
    let slow = submit(0).await;
    let client = MeshClient::in_process(queue.clone(), agents.clone(), principal());
    let options = WorkerOptions {
        concurrency: 1,
        lease_ms: 300,
        poll_interval: Duration::from_millis(10),
        ..Default::default()
    };
    let agent = PatientAgent {
        first_slow_run: std::sync::atomic::AtomicBool::new(true),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(Worker::new(agent, client, options).run(async {
        let _ = stopped.await;
    }));
    let status = |id| {
        let store = store.clone();
        async move { store.tasks.get_task(id).await.unwrap().unwrap() }
    };
    for _ in 0..200 {
        if status(slow).await.status == TaskStatus::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let urgent = submit(100).await;
    // The sweeper's job, run by hand: ask the running task to yield.
    for _ in 0..400 {
        queue.sweep().await.unwrap();
        if status(urgent).await.status == TaskStatus::Completed
            && status(slow).await.status == TaskStatus::Completed
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (urgent_task, slow_task) = (status(urgent).await, status(slow).await);
    assert_eq!(urgent_task.status, TaskStatus::Completed);
    assert_eq!(slow_task.status, TaskStatus::Completed);
    assert_eq!(slow_task.attempts, 1, "the yielded attempt was refunded");
    assert!(
        urgent_task.completed_at <= slow_task.completed_at,
        "the critical task finished first"
    );
    stop.send(()).unwrap();
    let report = worker.await.unwrap().unwrap();
    assert_eq!((report.completed, report.yielded), (2, 1));
}

/// One thread, so the handlers that finish together are all waiting on their reports
/// before the reporter runs: they go to the queue in one call, and each handler still
/// hears its own outcome.
#[tokio::test(flavor = "current_thread")]
async fn completions_that_finish_together_are_reported_together() {
    let dir = tempfile::tempdir().unwrap();
    let (store, agents, queue) = cores(dir.path(), QueueConfig::default()).await;
    let tasks: Vec<NewTask> = (0..16)
        .map(|i| serde_json::from_value(json!({"type": "echo", "input": {"n": i}})).unwrap())
        .collect();
    queue.enqueue_batch(&principal(), tasks).await.unwrap();
    let client = MeshClient::in_process(queue.clone(), agents.clone(), principal());
    let options = WorkerOptions {
        concurrency: 16,
        poll_interval: Duration::from_millis(10),
        ..Default::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = TestAgent {
        retire_calls: AtomicU32::new(0),
    };
    let worker = tokio::spawn(Worker::new(agent, client, options).run(async {
        let _ = stopped.await;
    }));
    let mut done = 0;
    for _ in 0..500 {
        let filter = mesh_types::task::TaskFilter {
            status: Some(TaskStatus::Completed),
            ..Default::default()
        };
        let page = mesh_types::PageRequest::new(Some(100), None);
        done = store
            .tasks
            .list_tasks(&filter, &page)
            .await
            .unwrap()
            .items
            .len();
        if done == 16 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(done, 16);
    stop.send(()).unwrap();
    let report = worker.await.unwrap().unwrap();
    assert_eq!((report.completed, report.failed), (16, 0));
    assert!(
        report.completion_reports < 16,
        "16 completions took {} calls",
        report.completion_reports
    );
}
