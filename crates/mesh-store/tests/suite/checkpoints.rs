use super::{Harness, event};
use mesh_store::{StoredCheckpoint, verify_chain};
use mesh_types::merkle::Frontier;
use mesh_types::proof::leaf_of;
use mesh_types::provenance::{BreachKind, GENESIS_HASH};
use serde_json::json;

async fn fill(h: &Harness, n: usize) -> Vec<mesh_types::ProvenanceEvent> {
    let drafts = (0..n)
        .map(|i| event("filler").payload(json!({"i": i})))
        .collect();
    h.store.provenance.append(drafts).await.unwrap();
    h.store.provenance.events_after(0, 10_000).await.unwrap()
}

/// The checkpoint of the first `size` events as they are stored now (unsigned: the
/// store only compares roots; signatures are the service's to check).
async fn checkpoint_of(h: &Harness, size: usize) -> StoredCheckpoint {
    let hashes = h
        .store
        .provenance
        .event_hashes(0, size as u32)
        .await
        .unwrap();
    let mut tree = Frontier::new();
    for (_, hash) in &hashes {
        tree.push(leaf_of(hash).unwrap());
    }
    assert_eq!(tree.size(), size as u64);
    StoredCheckpoint {
        tree_size: size as i64,
        root_hash: hex::encode(tree.root()),
        note: format!("test\n{size}\n"),
    }
}

pub async fn checkpoints_are_stored_once_per_size(h: &Harness) {
    let events = fill(h, 30).await;
    let first = checkpoint_of(h, 10).await;
    assert!(h.store.provenance.add_checkpoint(&first).await.unwrap());
    let forked = StoredCheckpoint {
        root_hash: "00".repeat(32),
        ..first.clone()
    };
    assert!(!h.store.provenance.add_checkpoint(&forked).await.unwrap());
    let second = checkpoint_of(h, 30).await;
    assert!(h.store.provenance.add_checkpoint(&second).await.unwrap());
    let all = h.store.provenance.checkpoints_after(0, 10).await.unwrap();
    assert_eq!(all, vec![first.clone(), second.clone()]);
    let later = h.store.provenance.checkpoints_after(10, 10).await.unwrap();
    assert_eq!(later, vec![second.clone()]);
    assert_eq!(
        h.store.provenance.latest_checkpoint().await.unwrap(),
        Some(second)
    );
    let hashes = h.store.provenance.event_hashes(5, 3).await.unwrap();
    let want: Vec<_> = events[5..8]
        .iter()
        .map(|e| (e.seq, e.hash.clone()))
        .collect();
    assert_eq!(hashes, want);
    assert_eq!(
        h.store.provenance.event(events[7].id).await.unwrap(),
        Some(events[7].clone())
    );
    assert_eq!(
        h.store
            .provenance
            .event(uuid::Uuid::now_v7())
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        verify_chain(h.store.provenance.as_ref()).await.unwrap(),
        Ok(30)
    );
}

pub async fn a_rewritten_log_fails_its_checkpoints(h: &Harness) {
    let events = fill(h, 40).await;
    for size in [16, 25, 40] {
        let c = checkpoint_of(h, size).await;
        h.store.provenance.add_checkpoint(&c).await.unwrap();
    }
    assert_eq!(
        verify_chain(h.store.provenance.as_ref()).await.unwrap(),
        Ok(40)
    );
    // Rewrite history from event 20 on, re-sealing the chain and the head so that the
    // hash chain alone still verifies: only the signed roots can tell.
    let mut prev = events[18].hash.clone();
    for original in &events[19..] {
        let mut e = original.clone();
        if e.seq == 20 {
            e.payload = json!({"i": "rewritten"});
        }
        e.prev_hash = prev.clone();
        e.hash = e.compute_hash();
        prev = e.hash.clone();
        h.exec(&format!(
            "UPDATE provenance_events SET payload = '{}', prev_hash = '{}', hash = '{}' WHERE seq = {}",
            serde_json::to_string(&e.payload).unwrap(),
            e.prev_hash,
            e.hash,
            e.seq
        ))
        .await;
    }
    h.exec(&format!(
        "UPDATE provenance_head SET last_hash = '{prev}' WHERE id = 1"
    ))
    .await;
    assert_ne!(prev, GENESIS_HASH);
    let breach = verify_chain(h.store.provenance.as_ref())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(breach.kind, BreachKind::CheckpointMismatch, "{breach:?}");
    assert_eq!(breach.seq, Some(25), "{breach:?}");
}

pub async fn a_checkpoint_beyond_the_log_is_a_breach(h: &Harness) {
    fill(h, 12).await;
    let c = checkpoint_of(h, 12).await;
    h.store.provenance.add_checkpoint(&c).await.unwrap();
    h.exec("DELETE FROM provenance_events WHERE seq > 10").await;
    h.exec("UPDATE provenance_head SET count = 10, last_hash = (SELECT hash FROM provenance_events WHERE seq = 10) WHERE id = 1")
        .await;
    let breach = verify_chain(h.store.provenance.as_ref())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(breach.kind, BreachKind::CheckpointMismatch, "{breach:?}");
}

pub async fn subtree_roots_are_kept_once_and_differences_reported(h: &Harness) {
    use mesh_store::StoredSubtree;
    let log = &h.store.provenance;
    let subtree = |level, index, hash: &str| StoredSubtree {
        level,
        index,
        hash: hash.repeat(64),
    };
    let first = [subtree(8, 0, "a"), subtree(8, 1, "b"), subtree(16, 0, "c")];
    assert!(log.add_subtrees(&first).await.unwrap().is_empty());
    // Stored again, by this process or another: nothing changes, nothing is reported.
    assert!(log.add_subtrees(&first[..2]).await.unwrap().is_empty());
    // Another root for a stored subtree is kept out and reported with the stored one.
    let differing = log
        .add_subtrees(&[subtree(8, 1, "d"), subtree(8, 2, "e")])
        .await
        .unwrap();
    assert_eq!(differing, vec![subtree(8, 1, "b")]);
    assert!(log.add_subtrees(&[]).await.unwrap().is_empty());

    let level8 = log.subtrees(8, 0, 10).await.unwrap();
    assert_eq!(
        level8,
        vec![subtree(8, 0, "a"), subtree(8, 1, "b"), subtree(8, 2, "e")]
    );
    assert_eq!(
        log.subtrees(8, 1, 1).await.unwrap(),
        vec![subtree(8, 1, "b")]
    );
    assert_eq!(
        log.subtrees(16, 0, 4).await.unwrap(),
        vec![subtree(16, 0, "c")]
    );
    assert!(log.subtrees(24, 0, 4).await.unwrap().is_empty());
    assert!(log.subtrees(8, 3, 100).await.unwrap().is_empty());
}

pub async fn an_altered_subtree_root_is_a_breach(h: &Harness) {
    use mesh_store::StoredSubtree;
    let events = fill(h, 600).await;
    let mut tree = Frontier::new();
    let mut completed = Vec::new();
    for e in &events {
        tree.push_reporting(leaf_of(&e.hash).unwrap(), &mut completed);
    }
    let rows: Vec<StoredSubtree> = completed
        .iter()
        .map(|(t, root)| StoredSubtree::new(*t, root))
        .collect();
    assert_eq!(rows.len(), 2, "600 events hold two 256-leaf subtrees");
    h.store.provenance.add_subtrees(&rows).await.unwrap();
    let log = h.store.provenance.as_ref();
    assert_eq!(verify_chain(log).await.unwrap(), Ok(600));

    let zeros = "00".repeat(32);
    h.exec(&format!(
        "UPDATE provenance_subtrees SET hash = '{zeros}' WHERE level = 8 AND idx = 1"
    ))
    .await;
    let breach = verify_chain(log).await.unwrap().unwrap_err();
    assert_eq!(breach.kind, BreachKind::SubtreeMismatch, "{breach:?}");
    assert_eq!(breach.seq, Some(257), "{breach:?}");
    assert!(breach.message.contains("events 257..=512"), "{breach:?}");
}
