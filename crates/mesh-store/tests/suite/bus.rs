use super::{Harness, event};
use mesh_store::{GroupRead, Outgoing};
use mesh_types::time::Timestamp;
use serde_json::json;
use uuid::Uuid;

fn out(topic: &str, n: i64) -> Outgoing {
    Outgoing {
        topic: topic.into(),
        id: Uuid::now_v7(),
        payload: json!({"n": n}),
    }
}

fn group(topic: &str, consumer: &str, limit: u32, now: Timestamp) -> GroupRead {
    GroupRead {
        topic: topic.into(),
        group: "workers".into(),
        consumer: consumer.into(),
        limit,
        now,
        visibility_ms: 1_000,
    }
}

pub async fn bus_topics_are_ordered_and_replayable(h: &Harness) {
    let s = &h.store;
    let now = mesh_types::time::now();
    let batch: Vec<_> = (1..=5).map(|n| out("orders", n)).collect();
    let published = s
        .bus
        .publish(batch, now, vec![event("event_published")], None)
        .await
        .unwrap();
    assert_eq!(
        published
            .iter()
            .map(|e| e.offset.as_str())
            .collect::<Vec<_>>(),
        ["1", "2", "3", "4", "5"]
    );
    s.bus
        .publish(vec![out("other", 1)], now, vec![], None)
        .await
        .unwrap();
    let all = s.bus.read("orders", 0, 100).await.unwrap();
    assert_eq!(all, published, "replay returns what was published");
    let tail = s.bus.read("orders", 3, 100).await.unwrap();
    assert_eq!(
        tail.iter()
            .map(|e| e.payload["n"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [4, 5]
    );
    assert!(s.bus.read("missing", 0, 10).await.unwrap().is_empty());
    assert_eq!(s.provenance.head().await.unwrap().count, 1);
}

pub async fn consumer_groups_deliver_at_least_once(h: &Harness) {
    let s = &h.store;
    let now = mesh_types::time::now();
    s.bus
        .publish((1..=4).map(|n| out("jobs", n)).collect(), now, vec![], None)
        .await
        .unwrap();
    let a = s.bus.read_group(&group("jobs", "a", 3, now)).await.unwrap();
    let b = s.bus.read_group(&group("jobs", "b", 3, now)).await.unwrap();
    assert_eq!(
        a.iter()
            .map(|d| d.event.offset.as_str())
            .collect::<Vec<_>>(),
        ["1", "2", "3"]
    );
    assert_eq!(
        b.iter()
            .map(|d| d.event.offset.as_str())
            .collect::<Vec<_>>(),
        ["4"],
        "each event to one member"
    );
    assert!(a.iter().all(|d| d.deliveries == 1));
    assert_eq!(
        s.bus.ack("jobs", "workers", &[1, 2, 4, 99]).await.unwrap(),
        3
    );
    // Event 3 was never acknowledged: after the visibility window another member gets it.
    assert!(
        s.bus
            .read_group(&group("jobs", "b", 10, now))
            .await
            .unwrap()
            .is_empty()
    );
    let later = now + mesh_types::time::millis(1_500);
    let again = s
        .bus
        .read_group(&group("jobs", "b", 10, later))
        .await
        .unwrap();
    assert_eq!(
        (
            again.len(),
            again[0].event.offset.as_str(),
            again[0].deliveries
        ),
        (1, "3", 2)
    );
    assert_eq!(s.bus.ack("jobs", "workers", &[3]).await.unwrap(), 1);
    // Another group sees the whole topic from the start.
    let mut fresh = group("jobs", "c", 10, later);
    fresh.group = "auditors".into();
    assert_eq!(s.bus.read_group(&fresh).await.unwrap().len(), 4);
}

pub async fn cursors_move_with_their_batch(h: &Harness) {
    let s = &h.store;
    assert_eq!(s.bus.cursor("relay").await.unwrap(), 0);
    let now = mesh_types::time::now();
    s.bus
        .publish(
            vec![out("task.queued", 1)],
            now,
            vec![],
            Some(("relay".into(), 42)),
        )
        .await
        .unwrap();
    assert_eq!(s.bus.cursor("relay").await.unwrap(), 42);
    s.bus
        .publish(vec![], now, vec![], Some(("relay".into(), 43)))
        .await
        .unwrap();
    assert_eq!(s.bus.cursor("relay").await.unwrap(), 43);
}

/// A lifecycle topic is the provenance log's events of its action: nothing is copied,
/// offsets are log positions, and consumer groups work on it as on any topic.
pub async fn lifecycle_topics_are_read_from_the_log(h: &Harness) {
    let s = &h.store;
    let now = mesh_types::time::now();
    let task = Uuid::now_v7();
    let appended = s
        .provenance
        .append(vec![
            event("task_queued").task(task),
            event("key_created"),
            event("task_completed")
                .task(task)
                .payload(json!({"output": 1})),
            event("task_queued"),
        ])
        .await
        .unwrap();
    let seqs: Vec<i64> = appended.iter().map(|e| e.seq).collect();

    let queued = s.bus.read("task.queued", 0, 10).await.unwrap();
    assert_eq!(
        queued.iter().map(|e| e.offset.clone()).collect::<Vec<_>>(),
        [seqs[0].to_string(), seqs[3].to_string()]
    );
    assert_eq!(queued[0].id, appended[0].id, "the provenance event's id");
    assert_eq!(queued[0].topic, "task.queued");
    assert_eq!(queued[0].payload["action"], "task_queued");
    assert_eq!(queued[0].payload["provenanceSeq"], seqs[0]);
    assert_eq!(queued[0].payload["taskId"], json!(task));
    let tail = s.bus.read("task.queued", seqs[0], 10).await.unwrap();
    assert_eq!(tail.len(), 1);
    let completed = s.bus.read("task.completed", 0, 10).await.unwrap();
    assert_eq!(completed.len(), 1);
    assert_eq!(completed[0].payload["data"]["output"], 1);

    let first = s
        .bus
        .read_group(&group("task.queued", "a", 1, now))
        .await
        .unwrap();
    assert_eq!(first[0].event, queued[0]);
    let second = s
        .bus
        .read_group(&group("task.queued", "b", 5, now))
        .await
        .unwrap();
    assert_eq!(second.len(), 1, "each event to one member");
    assert_eq!(second[0].event, queued[1]);
    assert_eq!(
        s.bus
            .ack("task.queued", "workers", &[seqs[0]])
            .await
            .unwrap(),
        1
    );
    // The unacknowledged one comes back after the visibility window.
    let later = now + mesh_types::time::millis(1_500);
    let again = s
        .bus
        .read_group(&group("task.queued", "c", 5, later))
        .await
        .unwrap();
    assert_eq!((again.len(), again[0].deliveries), (1, 2));
    assert_eq!(again[0].event, queued[1]);
}
