//! The verifiable log from the CLI: signed checkpoints, inclusion and consistency
//! proofs verified offline (no mesh, no store), and tampering among thousands of
//! events caught by `verify` and by the proofs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::mesh;
use mesh_provenance::checkpointer::{CheckpointPolicy, Checkpointer};
use mesh_provenance::signing::{DEFAULT_KEY_SECRET, DEFAULT_ORIGIN, KeySource};
use mesh_types::EventDraft;
use mesh_types::checkpoint::NoteSigner;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const EVENTS: usize = 3_000;

/// Appends `n` events straight to the store and signs checkpoints the way the
/// service's background task does (every 1,000 events, then the rest).
async fn grow(data: &Path, n: usize) -> Arc<NoteSigner> {
    let store = mesh_store::open(None, data).await.unwrap();
    for chunk in 0..n / 500 {
        let drafts = (0..500)
            .map(|i| {
                EventDraft::new("filler", "tester", "test", None)
                    .payload(json!({"chunk": chunk, "i": i}))
            })
            .collect();
        store.provenance.append(drafts).await.unwrap();
    }
    let source = KeySource {
        origin: DEFAULT_ORIGIN.into(),
        secrets: None,
        secret_name: DEFAULT_KEY_SECRET.into(),
        generate_in: Some(data.to_path_buf()),
    };
    let signer = Arc::new(source.load().unwrap().0);
    let policy = CheckpointPolicy {
        every_events: 1_000,
        every: Duration::ZERO,
    };
    let mut checkpointer = Checkpointer::new(store.provenance.clone(), signer.clone(), policy);
    checkpointer.tick().await.unwrap();
    signer
}

fn hex_root(text: &str) -> [u8; 32] {
    let bytes: Vec<u8> = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect();
    bytes.try_into().unwrap()
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = mesh(args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn id_at(db: &rusqlite::Connection, seq: i64) -> String {
    db.query_row(
        "SELECT id FROM provenance_events WHERE seq = ?1",
        [seq],
        |r| r.get(0),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proofs_verify_offline_and_refuse_other_keys_and_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let d = data.to_str().unwrap();
    let signer = grow(&data, EVENTS).await;

    let (ok, key, err) = run(&["provenance", "public-key", "--data-dir", d]);
    assert!(ok, "{err}");
    assert_eq!(key.trim(), signer.verifier_key());
    let db = rusqlite::Connection::open(data.join("mesh.db")).unwrap();
    let id = id_at(&db, 1_234);
    let (ok, proof, err) = run(&["provenance", "proof", &id, "--data-dir", d]);
    assert!(ok, "{err}");
    let parsed: Value = serde_json::from_str(&proof).unwrap();
    assert_eq!(parsed["leafIndex"], 1_233);
    assert_eq!(parsed["treeSize"], EVENTS);
    let (ok, consistency, err) =
        run(&["provenance", "consistency", "1000", "3000", "--data-dir", d]);
    assert!(ok, "{err}");

    // Offline: only the files remain, far from the data directory.
    let away = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = away.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let key_file = file("key.pub", &key);
    let proof_file = file("proof.json", &proof);
    let consistency_file = file("consistency.json", &consistency);
    let moved = dir.path().join("gone");
    std::fs::rename(&data, &moved).unwrap();
    let verify =
        |proof: &str, key: &str| run(&["provenance", "verify-proof", proof, "--public-key", key]);
    let (ok, out, err) = verify(&proof_file, &key_file);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("event {id} is leaf 1233")), "{out}");
    let (ok, _, err) = verify(&consistency_file, &key_file);
    assert!(ok, "{err}");

    // Another key under the same name, another log's name, a tampered event, a bent
    // path, a file that is not a proof: each refused, saying why.
    let other = NoteSigner::from_seed(DEFAULT_ORIGIN, [9; 32]).unwrap();
    let other_key = file("other.pub", &other.verifier_key());
    let (ok, _, err) = verify(&proof_file, &other_key);
    assert!(!ok && err.contains("not signed by the key"), "{err}");
    let renamed = NoteSigner::from_seed("another.example/log", [9; 32]).unwrap();
    let renamed_key = file("renamed.pub", &renamed.verifier_key());
    let (ok, _, err) = verify(&proof_file, &renamed_key);
    assert!(
        !ok && err.contains("not signed by the key another.example/log"),
        "{err}"
    );
    let mut altered = parsed.clone();
    altered["event"]["actor"] = json!("mallory");
    let (ok, _, err) = verify(&file("altered.json", &altered.to_string()), &key_file);
    assert!(!ok && err.contains("was altered"), "{err}");
    let mut bent = parsed.clone();
    bent["inclusionPath"][3] = json!("00".repeat(32));
    let (ok, _, err) = verify(&file("bent.json", &bent.to_string()), &key_file);
    assert!(!ok && err.contains("does not lead to its root"), "{err}");
    let mut resized = parsed.clone();
    resized["treeSize"] = json!(EVENTS + 1);
    let (ok, _, err) = verify(&file("resized.json", &resized.to_string()), &key_file);
    assert!(!ok && err.contains("checkpoint signs"), "{err}");
    let (ok, _, err) = verify(&file("junk.json", "{not json"), &key_file);
    assert!(!ok && err.contains("is not JSON"), "{err}");
    let (ok, _, err) = verify(&proof_file, &file("bad.pub", "nonsense"));
    assert!(!ok && err.contains("not a log public key"), "{err}");
    std::fs::rename(&moved, &data).unwrap();
}

/// Re-seals every event from `from` on (chain and head) after changing event `from`,
/// so the hash chain verifies and only the signed checkpoints can tell.
fn rewrite_history(db: &rusqlite::Connection, from: i64) {
    let rows: Vec<(i64, String, String, String, String)> = db
        .prepare("SELECT seq, id, ts, actor, payload FROM provenance_events WHERE seq >= ?1 ORDER BY seq")
        .unwrap()
        .query_map([from], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut prev: String = db
        .query_row(
            "SELECT hash FROM provenance_events WHERE seq = ?1",
            [from - 1],
            |r| r.get(0),
        )
        .unwrap();
    for (seq, ..) in rows {
        if seq == from {
            db.execute(
                "UPDATE provenance_events SET actor = 'mallory' WHERE seq = ?1",
                [seq],
            )
            .unwrap();
        }
        db.execute(
            "UPDATE provenance_events SET prev_hash = ?1 WHERE seq = ?2",
            rusqlite::params![prev, seq],
        )
        .unwrap();
        // Read the row back as the store does and re-seal it.
        let store_event = read_event(db, seq);
        let hash = store_event.compute_hash();
        db.execute(
            "UPDATE provenance_events SET hash = ?1 WHERE seq = ?2",
            rusqlite::params![hash, seq],
        )
        .unwrap();
        prev = hash;
    }
    db.execute(
        "UPDATE provenance_head SET last_hash = ?1 WHERE id = 1",
        [prev],
    )
    .unwrap();
}

fn read_event(db: &rusqlite::Connection, seq: i64) -> mesh_types::ProvenanceEvent {
    db.query_row(
        "SELECT seq, id, ts, action, actor, task_id, subject_type, subject_id, payload, prev_hash, hash FROM provenance_events WHERE seq = ?1",
        [seq],
        |r| {
            let text = |i| r.get::<_, String>(i);
            let value = json!({
                "seq": r.get::<_, i64>(0)?, "id": text(1)?, "timestamp": text(2)?,
                "action": text(3)?, "actor": text(4)?, "taskId": r.get::<_, Option<String>>(5)?,
                "subjectType": text(6)?, "subjectId": r.get::<_, Option<String>>(7)?,
                "payload": serde_json::from_str::<Value>(&text(8)?).unwrap(),
                "prevHash": text(9)?, "hash": text(10)?,
            });
            Ok(serde_json::from_value(value).unwrap())
        },
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_among_thousands_is_caught_by_verify_and_the_proofs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let d = data.to_str().unwrap();
    let signer = grow(&data, EVENTS).await;
    let verify = || run(&["provenance", "verify", "--data-dir", d]);
    let (ok, out, err) = verify();
    assert!(
        ok && out.contains(&format!("intact: {EVENTS} events")),
        "{out}{err}"
    );
    let db = rusqlite::Connection::open(data.join("mesh.db")).unwrap();
    let exec = |sql: &str| db.execute_batch(sql).unwrap();

    // Altered in place, then its proof.
    let victim = id_at(&db, 1_777);
    exec("UPDATE provenance_events SET actor = 'mallory' WHERE seq = 1777");
    let (ok, out, _) = verify();
    assert!(
        !ok && out.contains("was altered") && out.contains(&victim),
        "{out}"
    );
    let (ok, proof, err) = run(&["provenance", "proof", &victim, "--data-dir", d]);
    assert!(ok, "{err}");
    let (_, key, _) = run(&["provenance", "public-key", "--data-dir", d]);
    let key_file = dir.path().join("key.pub");
    std::fs::write(&key_file, key).unwrap();
    let proof_file = dir.path().join("proof.json");
    // Writes a proof to a file and verifies it offline with the log's key.
    let verify_proof = |proof: &str| {
        std::fs::write(&proof_file, proof).unwrap();
        run(&[
            "provenance",
            "verify-proof",
            proof_file.to_str().unwrap(),
            "--public-key",
            key_file.to_str().unwrap(),
        ])
    };
    let (ok, _, err) = verify_proof(&proof);
    assert!(!ok && err.contains("was altered"), "{err}");
    exec("UPDATE provenance_events SET actor = 'tester' WHERE seq = 1777");
    assert!(verify().0);

    // Reordered, inserted, deleted.
    let swap = "UPDATE provenance_events SET seq = -1 WHERE seq = 2222;
         UPDATE provenance_events SET seq = 2222 WHERE seq = 2223;
         UPDATE provenance_events SET seq = 2223 WHERE seq = -1;";
    exec(swap);
    assert!(!verify().0, "a reordering passed");
    exec(swap);
    assert!(verify().0);
    exec("INSERT INTO provenance_events (seq, id, ts, action, actor, task_id, subject_type, subject_id, payload, prev_hash, hash)
          SELECT 3001, '0190a000-0000-7000-8000-000000000001', ts, 'forged', actor, task_id, subject_type, subject_id, payload, hash, hash
          FROM provenance_events WHERE seq = 3000");
    assert!(!verify().0, "an insertion passed");
    exec("DELETE FROM provenance_events WHERE seq = 3001");
    assert!(verify().0);

    // A checkpoint re-signed by another key (same size and root) is caught by its note.
    let (root, note): (String, String) = db
        .query_row(
            "SELECT root_hash, note FROM provenance_checkpoints WHERE tree_size = 2000",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let forger = NoteSigner::from_seed(DEFAULT_ORIGIN, [3; 32]).unwrap();
    let forged = forger.sign(&mesh_types::checkpoint::Checkpoint {
        origin: DEFAULT_ORIGIN.into(),
        size: 2000,
        root: hex_root(&root),
    });
    let set_note = |note: &str| {
        db.execute(
            "UPDATE provenance_checkpoints SET note = ?1 WHERE tree_size = 2000",
            [note],
        )
        .unwrap()
    };
    set_note(&forged);
    let (ok, out, _) = verify();
    assert!(
        !ok && out.contains("checkpoint 2000") && out.contains("not signed by"),
        "{out}"
    );
    set_note(&note);
    assert!(verify().0);

    // Consistency proofs hold on the intact log. Once history is rewritten (chain and
    // head re-sealed, so only the signed roots can tell), `verify` says so, the
    // rewritten events' inclusion proofs fail, and no checkpointer signs over it.
    let consistent = |from: &str, to: &str| {
        let (ok, text, err) = run(&["provenance", "consistency", from, to, "--data-dir", d]);
        assert!(ok, "{err}");
        verify_proof(&text)
    };
    for (from, to) in [
        ("1000", "2000"),
        ("1000", "3000"),
        ("2000", "3000"),
        ("3000", "3000"),
    ] {
        let (ok, _, err) = consistent(from, to);
        assert!(ok, "{from}->{to}: {err}");
    }
    rewrite_history(&db, 1_500);
    let (ok, out, _) = verify();
    assert!(!ok && out.contains("rewritten"), "{out}");
    let rewritten = id_at(&db, 1_500);
    let (ok, proof, err) = run(&["provenance", "proof", &rewritten, "--data-dir", d]);
    assert!(ok, "{err}");
    let (ok, _, err) = verify_proof(&proof);
    assert!(!ok, "the rewritten event's proof verified: {err}");
    let store = mesh_store::open(None, &data).await.unwrap();
    // One more event, so that there is something to sign.
    store
        .provenance
        .append(vec![EventDraft::new("filler", "tester", "test", None)])
        .await
        .unwrap();
    let fresh = CheckpointPolicy {
        every_events: 1_000,
        every: Duration::ZERO,
    };
    let refused = Checkpointer::new(store.provenance.clone(), signer, fresh)
        .tick()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("events 1281..=1536") && refused.contains("rewritten"),
        "{refused}"
    );
    drop(store);

    exec("DELETE FROM provenance_events WHERE seq = 2500");
    assert!(!verify().0, "a deletion passed");
}

/// Polls `url` until it answers 200 (the checkpointer signs within 500 ms).
async fn until_ok(api: &common::Api, url: &str, key: &str) -> common::Reply {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = api.get(url, key).await;
        if r.status == 200 || std::time::Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_mesh_signs_checkpoints_and_serves_proofs() {
    use mesh_types::checkpoint::NoteVerifier;
    use mesh_types::proof::{ConsistencyProof, InclusionProof};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let d = data.to_str().unwrap();
    let running = common::MeshProcess::up(dir.path(), &["--data-dir", d]);
    let key = running.admin_key.clone().unwrap();
    let api = common::Api::new();
    let prov = format!("{}/api/v1/provenance", running.url("provenance-service"));
    let orch = running.url("mesh-orchestrator");

    let r = api.get(&format!("{prov}/public-key"), &key).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let served = r.body.as_str().unwrap().to_string();
    let (ok, printed, err) = run(&["provenance", "public-key", "--data-dir", d]);
    assert!(ok, "{err}");
    assert_eq!(
        served, printed,
        "the endpoint and the CLI print the same key"
    );
    let verifier = NoteVerifier::parse(&served).unwrap();

    let tasks = format!("{orch}/api/v1/tasks");
    let submit = || api.post(&tasks, &key, r#"{"type":"echo","input":{}}"#);
    assert_eq!(submit().await.status, 201);
    let events = api.get(&format!("{prov}/events?limit=1"), &key).await;
    let first = events.body[0]["id"].as_str().unwrap().to_string();
    let r = until_ok(&api, &format!("{prov}/events/{first}/proof"), &key).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let early: InclusionProof = serde_json::from_value(r.body).unwrap();
    early.verify(&verifier).unwrap();

    // More events, a later checkpoint, and the proof that it extends the first.
    assert_eq!(submit().await.status, 201);
    let head = api.get(&format!("{prov}/verify"), &key).await;
    let count = head.body["head"]["count"].as_u64().unwrap();
    assert!(count > early.tree_size, "{}", head.body);
    let newest = api
        .get(&format!("{prov}/events?after={}&limit=1", count - 1), &key)
        .await;
    let newest = newest.body[0]["id"].as_str().unwrap().to_string();
    let r = until_ok(&api, &format!("{prov}/events/{newest}/proof"), &key).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let late: InclusionProof = serde_json::from_value(r.body).unwrap();
    late.verify(&verifier).unwrap();
    let url = format!(
        "{prov}/checkpoints/{}/{}/consistency",
        early.tree_size, late.tree_size
    );
    let r = api.get(&url, &key).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let consistency: ConsistencyProof = serde_json::from_value(r.body).unwrap();
    consistency.verify(&verifier).unwrap();
    assert_eq!(
        (consistency.from_size, consistency.to_size),
        (early.tree_size, late.tree_size)
    );
    let r = api
        .get(
            &format!("{prov}/checkpoints/0/{}/consistency", late.tree_size),
            &key,
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
    // A size never signed is refused saying which exist (they follow the signing
    // cadence).
    let r = api
        .get(
            &format!(
                "{prov}/checkpoints/{}/{}/consistency",
                early.tree_size,
                late.tree_size + 1_000_000
            ),
            &key,
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
    let message = r.body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("the latest is of"), "{message}");
    let r = api
        .get(&format!("{prov}/checkpoints/x/1/consistency"), &key)
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = api
        .get(
            &format!("{prov}/events/{}/proof", uuid::Uuid::now_v7()),
            &key,
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = api.get(&format!("{prov}/verify"), &key).await;
    assert_eq!(r.body["ok"], true, "{}", r.body);
    let doc = api
        .call(
            "GET",
            &format!("{}/openapi.json", running.url("provenance-service")),
            None,
            None,
        )
        .await;
    for path in [
        "/api/v1/provenance/public-key",
        "/api/v1/provenance/events/{id}/proof",
        "/api/v1/provenance/checkpoints/{from}/{to}/consistency",
    ] {
        assert!(doc.body["paths"].get(path).is_some(), "{path} undocumented");
    }
}

async fn append(store: &mesh_store::Store, n: usize) {
    let drafts = (0..n)
        .map(|i| EventDraft::new("filler", "tester", "test", None).payload(json!({"i": i})))
        .collect();
    store.provenance.append(drafts).await.unwrap();
}

async fn sizes(store: &mesh_store::Store) -> Vec<i64> {
    let all = store.provenance.checkpoints_after(0, 1_000).await.unwrap();
    all.iter().map(|c| c.tree_size).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpointers_sign_by_count_and_time_and_never_fork() {
    let dir = tempfile::tempdir().unwrap();
    let store = mesh_store::open(None, dir.path()).await.unwrap();
    let signer = Arc::new(NoteSigner::from_seed(DEFAULT_ORIGIN, [5; 32]).unwrap());
    let by_count = CheckpointPolicy {
        every_events: 1_000,
        every: Duration::from_secs(3_600),
    };
    // Two checkpointers on one log, as two processes sharing PostgreSQL would run.
    let mut a = Checkpointer::new(store.provenance.clone(), signer.clone(), by_count);
    let mut b = Checkpointer::new(store.provenance.clone(), signer.clone(), by_count);
    append(&store, 2_500).await;
    a.tick().await.unwrap();
    b.tick().await.unwrap();
    assert_eq!(sizes(&store).await, vec![1_000, 2_000], "by count only");
    append(&store, 1_700).await;
    b.tick().await.unwrap();
    a.tick().await.unwrap();
    assert_eq!(sizes(&store).await, vec![1_000, 2_000, 3_000, 4_000]);

    // Past the time bound, the rest of the log is signed too.
    let by_time = CheckpointPolicy {
        every_events: 1_000,
        every: Duration::ZERO,
    };
    let mut c = Checkpointer::new(store.provenance.clone(), signer.clone(), by_time);
    c.tick().await.unwrap();
    assert_eq!(sizes(&store).await, vec![1_000, 2_000, 3_000, 4_000, 4_200]);
    c.tick().await.unwrap();
    assert_eq!(sizes(&store).await.len(), 5, "nothing new, nothing signed");

    // Every pair of checkpoints is consistent and signed by the key; verify agrees.
    let verifier = mesh_types::checkpoint::NoteVerifier::parse(&signer.verifier_key()).unwrap();
    let all = sizes(&store).await;
    for (i, from) in all.iter().enumerate() {
        for to in &all[i..] {
            let proof = mesh_provenance::tree::consistency(
                store.provenance.as_ref(),
                *from as u64,
                *to as u64,
            )
            .await
            .unwrap();
            proof.verify(&verifier).unwrap();
        }
    }
    assert_eq!(
        mesh_store::verify_chain(store.provenance.as_ref())
            .await
            .unwrap(),
        Ok(4_200)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_store_without_a_mounted_key_records_but_does_not_sign() {
    let Some(store) = common::postgres_url().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let process = common::MeshProcess::up(dir.path(), &["--store", &store]);
    let admin = process.admin_key.clone().unwrap();
    let api = common::Api::new();
    let prov = process.url("provenance-service");
    let ready = api.call("GET", &format!("{prov}/readyz"), None, None).await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(
        ready.body["checks"]["checkpoints"]["signing"], false,
        "{}",
        ready.body
    );
    assert!(
        ready.body["checks"]["checkpoints"]["reason"]
            .as_str()
            .unwrap()
            .contains(DEFAULT_KEY_SECRET),
        "{}",
        ready.body
    );
    let key = api
        .get(&format!("{prov}/api/v1/provenance/public-key"), &admin)
        .await;
    assert_eq!(key.status, 503, "{}", key.body);
    assert_eq!(key.body["error"]["code"], "no_signing_key");
    // Still recorded and chained.
    let verify = api
        .get(&format!("{prov}/api/v1/provenance/verify"), &admin)
        .await;
    assert_eq!(verify.body["ok"], true, "{}", verify.body);
    assert!(verify.body["events"].as_i64().unwrap() > 0);
}

/// A graceful stop signs the rest of the log: with the time and count bounds far
/// off, the only checkpoint covering the task's events is the one signed on the way out,
/// after the servers and decision-log writers have appended their last events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_signs_the_rest_of_the_log() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mesh.toml"),
        "[checkpoints]\nevery_events = 1000000\nevery_ms = 3600000\n",
    )
    .unwrap();
    let mut mesh = common::MeshProcess::up(dir.path(), &["--config", "mesh.toml"]);
    let key = mesh.admin_key.clone().unwrap();
    let orch = mesh.url("mesh-orchestrator");
    let r = common::Api::new()
        .post(&format!("{orch}/api/v1/tasks"), &key, common::SEED_TASK)
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    mesh.signal("TERM");
    assert_eq!(
        mesh.wait(Duration::from_secs(30)),
        Some(0),
        "{}",
        mesh.stderr()
    );
    let log = mesh.stderr();
    let complaints = log
        .lines()
        .filter(|l| (l.contains("WARN") || l.contains("ERROR")) && l.contains("checkpoint"));
    assert_eq!(
        complaints.count(),
        0,
        "checkpoint warnings on the way out:\n{log}"
    );

    let store = mesh_store::open(None, &dir.path().join(".mesh"))
        .await
        .unwrap();
    let head = store.provenance.head().await.unwrap();
    let latest = store.provenance.latest_checkpoint().await.unwrap();
    assert_eq!(
        latest.map(|c| c.tree_size),
        Some(head.count),
        "the last checkpoint covers every event"
    );
}

/// Proofs are the same whether the subtree roots they are built from are stored, some
/// are missing, or none are (a log not yet followed by a checkpointer since the
/// upgrade that added them): missing roots are computed from further down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proofs_do_not_depend_on_stored_subtree_roots() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let signer = grow(&data, EVENTS).await;
    let verifier = mesh_types::checkpoint::NoteVerifier::parse(&signer.verifier_key()).unwrap();
    let db = rusqlite::Connection::open(data.join("mesh.db")).unwrap();
    let stored = |db: &rusqlite::Connection| -> i64 {
        db.query_row("SELECT count(*) FROM provenance_subtrees", [], |r| r.get(0))
            .unwrap()
    };
    // 3,000 events: eleven complete 256-event subtrees.
    assert_eq!(stored(&db), 11);
    let store = mesh_store::open(None, &data).await.unwrap();
    let log = store.provenance.as_ref();
    let ids: Vec<uuid::Uuid> = [1, 700, 1_777, 2_999, 3_000]
        .iter()
        .map(|seq| id_at(&db, *seq).parse().unwrap())
        .collect();
    let proofs = || async {
        let mut all = Vec::new();
        for id in &ids {
            let p = mesh_provenance::tree::inclusion(log, *id, None)
                .await
                .unwrap();
            p.verify(&verifier).unwrap();
            all.push(p.inclusion_path);
        }
        let c = mesh_provenance::tree::consistency(log, 1_000, 3_000)
            .await
            .unwrap();
        c.verify(&verifier).unwrap();
        all.push(c.proof);
        all
    };
    let with_all = proofs().await;
    db.execute("DELETE FROM provenance_subtrees WHERE idx = 3", [])
        .unwrap();
    assert_eq!(proofs().await, with_all, "one root missing");
    db.execute("DELETE FROM provenance_subtrees", []).unwrap();
    assert_eq!(proofs().await, with_all, "none stored");
}
