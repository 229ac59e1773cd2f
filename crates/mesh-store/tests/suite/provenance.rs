use super::tasks::new_task;
use super::{Harness, event};
use mesh_store::verify_chain;
use mesh_types::provenance::BreachKind;
use serde_json::json;

async fn fill(h: &Harness, n: usize) -> Vec<mesh_types::ProvenanceEvent> {
    for i in 0..n {
        h.store
            .provenance
            .append(vec![
                event("filler").payload(json!({"i": i, "ratio": i as f64 / 3.0})),
            ])
            .await
            .unwrap();
    }
    h.store.provenance.events_after(0, 10_000).await.unwrap()
}

pub async fn concurrent_appends_never_fork(h: &Harness) {
    let mut writers = Vec::new();
    for w in 0..8 {
        let store = h.store.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..25 {
                let task = new_task("concurrent", w, None);
                store
                    .tasks
                    .insert_task(
                        &task,
                        vec![
                            event("task_created")
                                .task(task.id)
                                .payload(json!({"w": w, "i": i})),
                        ],
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(
        verify_chain(h.store.provenance.as_ref()).await.unwrap(),
        Ok(200)
    );
}

/// The database refuses an event as it is written (here a guard on one action): the
/// write it belongs to commits nothing (its task row included, though written first),
/// and the connection it ran on goes on working, not left in an aborted transaction.
pub async fn a_failed_event_write_commits_nothing(h: &Harness) {
    if h.is_postgres() {
        h.exec("ALTER TABLE provenance_events ADD CONSTRAINT no_boom CHECK (action <> 'boom')")
            .await;
    } else {
        h.exec(
            "CREATE TRIGGER no_boom BEFORE INSERT ON provenance_events WHEN NEW.action = 'boom'
             BEGIN SELECT RAISE(ABORT, 'boom'); END;",
        )
        .await;
    }
    let s = &h.store;
    let head = s.provenance.head().await.unwrap();
    let refused = new_task("guarded", 0, None);
    let err = s
        .tasks
        .insert_task(&refused, vec![event("boom").task(refused.id)])
        .await;
    assert!(err.is_err(), "{err:?}");
    assert!(s.tasks.get_task(refused.id).await.unwrap().is_none());
    assert!(s.provenance.append(vec![event("boom")]).await.is_err());
    assert_eq!(s.provenance.head().await.unwrap(), head, "nothing appended");

    // More writes than the pool has connections, one at a time: each connection is
    // used again after the failures, and none is stuck in a transaction.
    for i in 0..64 {
        let task = new_task("guarded", 0, None);
        s.tasks
            .insert_task(
                &task,
                // Text the hash must cover byte for byte on either backend.
                vec![event("task_created").task(task.id).payload(
                    json!({"i": i, "note": "é ü \u{1F600} \"q\" \\ \n\t", "r": i as f64 / 7.0}),
                )],
            )
            .await
            .unwrap_or_else(|e| panic!("write {i} after the refused ones: {e}"));
        assert!(s.tasks.get_task(task.id).await.unwrap().is_some());
    }
    assert_eq!(
        verify_chain(s.provenance.as_ref()).await.unwrap(),
        Ok(head.count + 64)
    );
}

pub async fn tampering_is_detected(h: &Harness) {
    let events = fill(h, 12).await;
    assert_eq!(
        verify_chain(h.store.provenance.as_ref()).await.unwrap(),
        Ok(12)
    );
    let check = |kind: BreachKind, id: Option<uuid::Uuid>| async move {
        let breach = verify_chain(h.store.provenance.as_ref())
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(breach.kind, kind, "{breach:?}");
        if id.is_some() {
            assert_eq!(breach.event_id, id, "{breach:?}");
        }
    };

    // Altered: a payload rewritten in place.
    h.exec("UPDATE provenance_events SET payload = '{\"i\": 999}' WHERE seq = 3")
        .await;
    check(BreachKind::Altered, Some(events[2].id)).await;
    h.exec(&format!(
        "UPDATE provenance_events SET payload = '{}' WHERE seq = 3",
        serde_json::to_string(&events[2].payload).unwrap()
    ))
    .await;
    assert!(
        verify_chain(h.store.provenance.as_ref())
            .await
            .unwrap()
            .is_ok()
    );

    // Reordered: two events swap places.
    h.exec(
        "UPDATE provenance_events SET seq = -1 WHERE seq = 5;
         UPDATE provenance_events SET seq = 5 WHERE seq = 6;
         UPDATE provenance_events SET seq = 6 WHERE seq = -1;",
    )
    .await;
    check(BreachKind::Altered, Some(events[5].id)).await;
    h.exec(
        "UPDATE provenance_events SET seq = -1 WHERE seq = 5;
         UPDATE provenance_events SET seq = 5 WHERE seq = 6;
         UPDATE provenance_events SET seq = 6 WHERE seq = -1;",
    )
    .await;
    assert!(
        verify_chain(h.store.provenance.as_ref())
            .await
            .unwrap()
            .is_ok()
    );

    // Inserted: a forged event beyond the head.
    h.exec(
        "INSERT INTO provenance_events (seq, id, ts, action, actor, task_id, subject_type, subject_id, payload, prev_hash, hash)
         SELECT 13, '0190a000-0000-7000-8000-000000000001', ts, 'forged', actor, task_id, subject_type, subject_id, payload, hash, hash
         FROM provenance_events WHERE seq = 12",
    )
    .await;
    check(BreachKind::HeadMismatch, None).await;
    h.exec("DELETE FROM provenance_events WHERE seq = 13").await;
    assert!(
        verify_chain(h.store.provenance.as_ref())
            .await
            .unwrap()
            .is_ok()
    );

    // Truncated: the newest events removed.
    h.exec("DELETE FROM provenance_events WHERE seq > 10").await;
    check(BreachKind::Truncated, None).await;

    // Deleted from the middle.
    h.exec("DELETE FROM provenance_events WHERE seq = 7").await;
    check(BreachKind::Deleted, Some(events[7].id)).await;
}

pub async fn events_for_task_timeline(h: &Harness) {
    let task = new_task("timeline", 0, None);
    h.store
        .tasks
        .insert_task(
            &task,
            vec![
                event("task_created").task(task.id),
                event("task_queued").task(task.id),
            ],
        )
        .await
        .unwrap();
    h.store
        .provenance
        .append(vec![event("unrelated")])
        .await
        .unwrap();
    let timeline = h.store.provenance.events_for_task(task.id).await.unwrap();
    let actions: Vec<_> = timeline.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["task_created", "task_queued"]);
    assert_eq!(timeline[1].prev_hash, timeline[0].hash);
}

pub async fn events_are_read_by_action(h: &Harness) {
    for i in 0..6 {
        let action = if i % 2 == 0 {
            "policy_decision"
        } else {
            "filler"
        };
        h.store
            .provenance
            .append(vec![event(action).payload(json!({"i": i}))])
            .await
            .unwrap();
    }
    let decisions = h
        .store
        .provenance
        .events_with_action("policy_decision", 0, 10)
        .await
        .unwrap();
    let seen: Vec<_> = decisions.iter().map(|e| e.payload["i"].clone()).collect();
    assert_eq!(seen, vec![json!(0), json!(2), json!(4)]);
    let after_first = h
        .store
        .provenance
        .events_with_action("policy_decision", decisions[0].seq, 1)
        .await
        .unwrap();
    assert_eq!(after_first.len(), 1);
    assert_eq!(after_first[0].payload["i"], 2);
}
