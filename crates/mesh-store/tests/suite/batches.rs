//! Batch submission (all or none) and batch completion (each stands alone).

use super::queue::claim_one;
use super::tasks::new_task;
use super::{Harness, event};
use mesh_store::{Completion, StoreError};
use mesh_types::TaskStatus;
use uuid::Uuid;

pub async fn batch_inserts_are_all_or_nothing(h: &Harness) {
    let s = &h.store;
    let head = s.provenance.head().await.unwrap();
    let parent = new_task("batch", 0, None);
    // A child may name a parent earlier in the same batch.
    let child = new_task("batch", 0, Some(parent.id));
    let mut keyed = new_task("batch", 0, None);
    keyed.idempotency_key = Some("batch-key".into());
    let mut same_key = new_task("batch", 0, None);
    same_key.idempotency_key = Some("batch-key".into());
    let stored = s
        .tasks
        .insert_tasks(vec![
            (parent.clone(), vec![event("task_created").task(parent.id)]),
            (child.clone(), vec![event("task_created").task(child.id)]),
            (keyed.clone(), vec![event("task_created").task(keyed.id)]),
            (
                same_key.clone(),
                vec![event("task_created").task(same_key.id)],
            ),
        ])
        .await
        .unwrap();
    let ids: Vec<Uuid> = stored.iter().map(|t| t.id).collect();
    assert_eq!(
        ids,
        vec![parent.id, child.id, keyed.id, keyed.id],
        "in order; a repeated key answers with the first task"
    );
    assert!(s.tasks.get_task(same_key.id).await.unwrap().is_none());
    let after = s.provenance.head().await.unwrap();
    assert_eq!(after.count, head.count + 3, "no event for the repeat");

    // One bad task (a parent that exists nowhere) and nothing of the batch is stored.
    let fine = new_task("batch", 0, None);
    let orphan = new_task("batch", 0, Some(Uuid::now_v7()));
    let refused = s
        .tasks
        .insert_tasks(vec![
            (fine.clone(), vec![event("task_created").task(fine.id)]),
            (orphan.clone(), vec![event("task_created").task(orphan.id)]),
        ])
        .await;
    assert!(
        matches!(refused, Err(StoreError::Invalid { .. })),
        "{refused:?}"
    );
    assert!(s.tasks.get_task(fine.id).await.unwrap().is_none());
    assert_eq!(s.provenance.head().await.unwrap(), after, "nothing written");
}

pub async fn batch_completions_stand_alone(h: &Harness) {
    let s = &h.store;
    let mut leases = Vec::new();
    for _ in 0..3 {
        let task = new_task("batch-complete", 0, None);
        s.tasks.insert_task(&task, vec![]).await.unwrap();
        let now = mesh_types::time::now();
        leases.push(claim_one(h, "batch-complete", now).await.unwrap());
    }
    let now = mesh_types::time::now();
    let head = s.provenance.head().await.unwrap();
    let missing = Uuid::now_v7();
    let completions = vec![
        Completion {
            task_id: leases[0].task.id,
            token: leases[0].lease_token,
            output: Some(serde_json::json!({"ok": 0})),
        },
        Completion {
            task_id: leases[1].task.id,
            token: Uuid::now_v7(), // stale
            output: None,
        },
        Completion {
            task_id: missing,
            token: leases[2].lease_token,
            output: None,
        },
        Completion {
            task_id: leases[2].task.id,
            token: leases[2].lease_token,
            output: None,
        },
        Completion {
            task_id: leases[2].task.id,
            token: leases[2].lease_token,
            output: None,
        },
    ];
    let results = s
        .queue
        .complete_tasks(completions, now, "worker")
        .await
        .unwrap();
    assert_eq!(results.len(), 5);
    let done = results[0].as_ref().unwrap();
    assert_eq!(done.status, TaskStatus::Completed);
    assert_eq!(done.output, Some(serde_json::json!({"ok": 0})));
    assert!(
        matches!(results[1], Err(StoreError::Conflict(_))),
        "{:?}",
        results[1]
    );
    assert!(
        matches!(results[2], Err(StoreError::NotFound(_))),
        "{:?}",
        results[2]
    );
    assert_eq!(results[3].as_ref().unwrap().status, TaskStatus::Completed);
    assert!(
        matches!(results[4], Err(StoreError::Conflict(_))),
        "completing twice in one batch: {:?}",
        results[4]
    );
    let stored = |i: usize| s.tasks.get_task(leases[i].task.id);
    assert_eq!(
        stored(0).await.unwrap().unwrap().status,
        TaskStatus::Completed
    );
    assert_eq!(
        stored(1).await.unwrap().unwrap().status,
        TaskStatus::Running,
        "the refused completion changed nothing"
    );
    assert_eq!(
        stored(2).await.unwrap().unwrap().status,
        TaskStatus::Completed
    );
    assert_eq!(
        s.provenance.head().await.unwrap().count,
        head.count + 2,
        "one task_completed each for the two that stood"
    );
}
