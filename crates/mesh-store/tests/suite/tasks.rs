use super::{Harness, event};
use mesh_store::StoreError;
use mesh_types::task::TaskFilter;
use mesh_types::{NewTask, PageRequest, Task, TaskStatus};
use serde_json::json;
use std::sync::Arc;
use uuid::Uuid;

pub fn new_task(task_type: &str, priority: i32, parent: Option<Uuid>) -> Task {
    let new: NewTask = serde_json::from_value(json!({
        "type": task_type,
        "input": {"spec": "refactor", "n": 1.5, "nested": {"b": [1, 2], "a": null}},
        "priority": priority,
        "metadata": {"requester": "user@example.com"},
        "riskTier": "high",
        "dataClassification": "confidential",
        "parentId": parent,
    }))
    .unwrap();
    new.into_task(Uuid::now_v7(), "acme", 3, mesh_types::time::now())
}

pub async fn tasks_round_trip(h: &Harness) {
    let s = &h.store;
    let task = new_task("code_refactor", 1, None);
    s.tasks
        .insert_task(&task, vec![event("task_created").task(task.id)])
        .await
        .unwrap();
    let back = s.tasks.get_task(task.id).await.unwrap().unwrap();
    assert_eq!(back, task);
    assert!(s.tasks.get_task(Uuid::now_v7()).await.unwrap().is_none());
    assert_eq!(s.provenance.head().await.unwrap().count, 1);
    let child = new_task("code_review", 0, Some(task.id));
    s.tasks.insert_task(&child, vec![]).await.unwrap();
    assert_eq!(
        s.tasks.get_task(child.id).await.unwrap().unwrap().parent_id,
        Some(task.id)
    );
}

pub async fn task_pagination_and_filters(h: &Harness) {
    let s = &h.store;
    let mut ids = Vec::new();
    for i in 0..7 {
        let t = new_task(if i % 2 == 0 { "even" } else { "odd" }, i, None);
        s.tasks.insert_task(&t, vec![]).await.unwrap();
        ids.push(t.id);
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = s
            .tasks
            .list_tasks(&TaskFilter::default(), &PageRequest::new(Some(3), cursor))
            .await
            .unwrap();
        seen.extend(page.items.iter().map(|t| t.id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids, "newest first, every task exactly once");
    let evens = s
        .tasks
        .list_tasks(
            &TaskFilter {
                task_type: Some("even".into()),
                ..Default::default()
            },
            &PageRequest::new(None, None),
        )
        .await
        .unwrap();
    assert_eq!(evens.items.len(), 4);
    let other_tenant = s
        .tasks
        .list_tasks(
            &TaskFilter {
                tenant: Some("other".into()),
                ..Default::default()
            },
            &PageRequest::new(None, None),
        )
        .await
        .unwrap();
    assert!(other_tenant.items.is_empty());
    let bad = s
        .tasks
        .list_tasks(
            &TaskFilter::default(),
            &PageRequest::new(None, Some("zzz".into())),
        )
        .await;
    assert!(matches!(bad, Err(StoreError::Invalid { .. })));
}

pub async fn cancel_cascades_to_descendants(h: &Harness) {
    let s = &h.store;
    let root = new_task("plan", 0, None);
    let child = new_task("code", 0, Some(root.id));
    let grandchild = new_task("test", 0, Some(child.id));
    let done = new_task("lint", 0, Some(root.id));
    for t in [&root, &child, &grandchild, &done] {
        s.tasks.insert_task(t, vec![]).await.unwrap();
    }
    let now = mesh_types::time::now();
    let lease = super::queue::claim_one(h, "lint", now).await.unwrap();
    s.queue
        .complete_task(done.id, lease.lease_token, Some(json!("ok")), now, "worker")
        .await
        .unwrap();
    let before = s.provenance.head().await.unwrap().count;
    let cancelled = s
        .tasks
        .cancel_task(
            root.id,
            now,
            Arc::new(|t: &Task| event("task_cancelled").task(t.id)),
        )
        .await
        .unwrap();
    assert_eq!(cancelled.len(), 3);
    assert_eq!(cancelled[0].id, root.id);
    assert!(cancelled.iter().all(|t| t.status == TaskStatus::Cancelled));
    assert_eq!(s.provenance.head().await.unwrap().count, before + 3);
    let untouched = s.tasks.get_task(done.id).await.unwrap().unwrap();
    assert_eq!(untouched.status, TaskStatus::Completed);
    let again = s
        .tasks
        .cancel_task(root.id, now, Arc::new(|t: &Task| event("x").task(t.id)))
        .await;
    assert!(matches!(again, Err(StoreError::Conflict(_))));
    let missing = s
        .tasks
        .cancel_task(
            Uuid::now_v7(),
            now,
            Arc::new(|t: &Task| event("x").task(t.id)),
        )
        .await;
    assert!(matches!(missing, Err(StoreError::NotFound(_))));
}

pub async fn task_lifecycle_and_queue_stats(h: &Harness) {
    let s = &h.store;
    let empty = s.tasks.queue_stats("build", 0).await.unwrap();
    assert_eq!(
        (empty.ahead, empty.samples, empty.mean_duration_ms),
        (0, 0, None)
    );
    let a = new_task("build", 5, None);
    let b = new_task("build", 0, None);
    s.tasks.insert_task(&a, vec![]).await.unwrap();
    s.tasks.insert_task(&b, vec![]).await.unwrap();
    assert_eq!(s.tasks.queue_stats("build", 0).await.unwrap().ahead, 2);
    assert_eq!(s.tasks.queue_stats("build", 5).await.unwrap().ahead, 1);
    assert_eq!(s.tasks.queue_stats("build", 6).await.unwrap().ahead, 0);

    let t0 = mesh_types::time::now();
    let lease = super::queue::claim_one(h, "build", t0).await.unwrap();
    assert_eq!(lease.task.id, a.id, "higher priority first");
    let t1 = t0 + chrono::Duration::milliseconds(1500);
    let done = s
        .queue
        .complete_task(
            a.id,
            lease.lease_token,
            Some(json!({"ok": true})),
            t1,
            "worker",
        )
        .await
        .unwrap();
    assert_eq!(done.completed_at, Some(t1));
    assert_eq!(done.output, Some(json!({"ok": true})));
    let stats = s.tasks.queue_stats("build", 0).await.unwrap();
    assert_eq!(stats.ahead, 1);
    assert_eq!(stats.samples, 1);
    let mean = stats.mean_duration_ms.unwrap();
    assert!((mean - 1500.0).abs() < 1.0, "mean {mean}");
    let twice = s
        .queue
        .complete_task(a.id, lease.lease_token, None, t1, "worker")
        .await;
    assert!(matches!(twice, Err(StoreError::Conflict(_))));
}
