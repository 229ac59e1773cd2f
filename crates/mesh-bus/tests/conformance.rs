//! One suite for every bus backend: embedded on SQLite, embedded on PostgreSQL (when
//! `MESH_TEST_POSTGRES_URL` is set), memory, and Redis Streams (when
//! `MESH_TEST_REDIS_URL` is set), and NATS JetStream (when `MESH_TEST_NATS_URL` is set).
//! Under CI the servers are required.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use mesh_bus::EventBus;
use mesh_store::{GroupRead, Outgoing, Store};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

struct Bus {
    bus: Arc<dyn EventBus>,
    store: Store,
    _dir: tempfile::TempDir,
}

fn required(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) => Some(v),
        Err(_) => {
            assert!(std::env::var_os("CI").is_none(), "CI must set {var}");
            eprintln!("SKIPPED: {var} is not set");
            None
        }
    }
}

async fn sqlite_store(dir: &tempfile::TempDir) -> Store {
    mesh_store::open(None, dir.path()).await.unwrap()
}

async fn embedded_sqlite() -> Option<Bus> {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir).await;
    Some(Bus {
        bus: mesh_bus::open(None, &store).await.unwrap(),
        store,
        _dir: dir,
    })
}

async fn embedded_postgres() -> Option<Bus> {
    let base = required("MESH_TEST_POSTGRES_URL")?;
    let schema = format!("bus_{}", Uuid::new_v4().simple());
    let (client, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
    let store = mesh_store::open(Some(&url), std::path::Path::new("."))
        .await
        .unwrap();
    Some(Bus {
        bus: mesh_bus::open(None, &store).await.unwrap(),
        store,
        _dir: tempfile::tempdir().unwrap(),
    })
}

async fn memory() -> Option<Bus> {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir).await;
    Some(Bus {
        bus: mesh_bus::open(Some("memory://"), &store).await.unwrap(),
        store,
        _dir: dir,
    })
}

async fn redis() -> Option<Bus> {
    let base = required("MESH_TEST_REDIS_URL")?;
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir).await;
    let url = format!("{base}?prefix=test-{}", Uuid::new_v4().simple());
    Some(Bus {
        bus: mesh_bus::open(Some(&url), &store).await.unwrap(),
        store,
        _dir: dir,
    })
}

async fn nats() -> Option<Bus> {
    let base = required("MESH_TEST_NATS_URL")?;
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir).await;
    let url = format!("{base}?prefix=test-{}", Uuid::new_v4().simple());
    Some(Bus {
        bus: mesh_bus::open(Some(&url), &store).await.unwrap(),
        store,
        _dir: dir,
    })
}

fn out(topic: &str, n: i64) -> Outgoing {
    Outgoing {
        topic: topic.into(),
        id: Uuid::now_v7(),
        payload: json!({"n": n}),
    }
}

fn read(topic: &str, consumer: &str, limit: u32, visibility_ms: i64) -> GroupRead {
    GroupRead {
        topic: topic.into(),
        group: "g".into(),
        consumer: consumer.into(),
        limit,
        now: mesh_types::time::now(),
        visibility_ms,
    }
}

async fn publish_and_replay(b: Bus) {
    let published = b
        .bus
        .publish((1..=5).map(|n| out("orders", n)).collect(), vec![], None)
        .await
        .unwrap();
    assert_eq!(published.len(), 5);
    let all = b.bus.read("orders", None, 100).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.id).collect::<Vec<_>>(),
        published.iter().map(|e| e.id).collect::<Vec<_>>()
    );
    assert_eq!(all[0].payload, json!({"n": 1}));
    let tail = b
        .bus
        .read("orders", Some(&all[2].offset), 100)
        .await
        .unwrap();
    assert_eq!(
        tail.iter()
            .map(|e| e.payload["n"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [4, 5]
    );
    let page = b.bus.read("orders", None, 2).await.unwrap();
    assert_eq!(page.len(), 2);
    assert!(b.bus.read("empty", None, 10).await.unwrap().is_empty());
    let bad = b
        .bus
        .read("orders", Some("not-an-offset"), 10)
        .await
        .unwrap_err();
    assert_eq!(bad.status.as_u16(), 400);
}

async fn groups_redeliver_until_acked(b: Bus) {
    b.bus
        .publish((1..=3).map(|n| out("jobs", n)).collect(), vec![], None)
        .await
        .unwrap();
    let first = b.bus.read_group(&read("jobs", "a", 2, 300)).await.unwrap();
    let second = b.bus.read_group(&read("jobs", "b", 5, 300)).await.unwrap();
    assert_eq!(
        first.len() + second.len(),
        3,
        "every event to exactly one member"
    );
    assert_eq!(second.len(), 1);
    let mut acked: Vec<String> = first
        .iter()
        .skip(1)
        .map(|d| d.event.offset.clone())
        .collect();
    acked.push(second[0].event.offset.clone());
    assert_eq!(b.bus.ack("jobs", "g", &acked).await.unwrap(), 2);
    assert!(
        b.bus
            .read_group(&read("jobs", "b", 5, 300))
            .await
            .unwrap()
            .is_empty()
    );
    // Wait out the visibility window (a state change, not a timing assertion).
    tokio::time::sleep(Duration::from_millis(400)).await;
    let again = b.bus.read_group(&read("jobs", "b", 5, 300)).await.unwrap();
    assert_eq!(again.len(), 1, "the unacknowledged event comes back");
    assert_eq!(again[0].event.id, first[0].event.id);
    assert!(again[0].deliveries >= 2);
    assert_eq!(
        b.bus
            .ack("jobs", "g", &[again[0].event.offset.clone()])
            .await
            .unwrap(),
        1
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        b.bus
            .read_group(&read("jobs", "b", 5, 300))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn cursors_and_audit(b: Bus) {
    assert_eq!(b.bus.cursor("relay").await.unwrap(), 0);
    let audit = mesh_types::EventDraft::new("event_published", "test", "topic", Some("t".into()));
    b.bus
        .publish(vec![out("t", 1)], vec![audit], Some(("relay".into(), 7)))
        .await
        .unwrap();
    assert_eq!(b.bus.cursor("relay").await.unwrap(), 7);
    assert_eq!(b.store.provenance.head().await.unwrap().count, 1);
}

macro_rules! suite {
    ($backend:ident) => {
        mod $backend {
            #[tokio::test]
            async fn publish_and_replay() {
                if let Some(b) = super::$backend().await {
                    super::publish_and_replay(b).await
                }
            }
            #[tokio::test]
            async fn groups_redeliver_until_acked() {
                if let Some(b) = super::$backend().await {
                    super::groups_redeliver_until_acked(b).await
                }
            }
            #[tokio::test]
            async fn cursors_and_audit() {
                if let Some(b) = super::$backend().await {
                    super::cursors_and_audit(b).await
                }
            }
        }
    };
}

suite!(embedded_sqlite);
suite!(embedded_postgres);
suite!(memory);
suite!(redis);
suite!(nats);

#[tokio::test]
async fn unknown_and_unreachable_backends_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir).await;
    let err = mesh_bus::open(Some("kafka://x"), &store)
        .await
        .err()
        .unwrap();
    assert!(err.message.contains("kafka://x"), "{}", err.message);
    let err = mesh_bus::open(Some("redis://127.0.0.1:1"), &store)
        .await
        .err()
        .unwrap();
    assert!(
        err.message.contains("redis://127.0.0.1:1"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn a_malformed_prefix_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir).await;
    let err = mesh_bus::open(Some("redis://127.0.0.1:6379?prefix=Bad Prefix"), &store)
        .await
        .err()
        .unwrap();
    assert!(err.message.contains("prefix"), "{}", err.message);
    let err = mesh_bus::open(Some("nats://127.0.0.1:4222?prefix="), &store)
        .await
        .err()
        .unwrap();
    assert!(err.message.contains("prefix"), "{}", err.message);
}
