//! The archive on a local directory: content addressing, encryption at rest,
//! dedup, hash-only classifications and retention.

use mesh_archive::{Archive, ArchiveConfig, Sealer, config, sha256_hex};
use std::sync::Arc;

fn metrics(archive: &Arc<Archive>) -> String {
    let mut out = String::new();
    (archive.collector("routing-gateway"))(&mut out);
    out
}

#[tokio::test]
async fn archives_encrypted_once_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = ArchiveConfig::default();
    settings.retention_days.public = Some(30);
    let (store, location) = config::object_store(&settings, dir.path(), None).unwrap();
    assert!(location.ends_with("/archive"), "{location}");
    let (key, origin) = config::load_key(&settings, None, Some(dir.path())).unwrap();
    assert!(matches!(origin, mesh_archive::KeyOrigin::Generated(_)));
    let (again, origin) = config::load_key(&settings, None, Some(dir.path())).unwrap();
    assert_eq!(
        (
            again.as_str(),
            matches!(origin, mesh_archive::KeyOrigin::DataDir(_))
        ),
        (key.as_str(), true)
    );
    let (archive, writer) = Archive::spawn(
        store,
        None,
        location,
        Sealer::from_hex(&key).unwrap(),
        &settings,
        None,
    );

    let prompt = b"{\"role\":\"user\",\"content\":\"the secret plan\"}".to_vec();
    let sha = archive.submit("internal", prompt.clone());
    assert_eq!(sha, sha256_hex(&prompt));
    assert_eq!(archive.submit("internal", prompt.clone()), sha);
    let hidden = archive.submit("restricted", b"restricted words".to_vec());
    archive.submit("public", b"public words".to_vec());
    archive.flush().await;

    let on_disk = std::fs::read(dir.path().join("archive/internal").join(&sha)).unwrap();
    assert!(
        !on_disk.windows(10).any(|w| w == b"secret pla"),
        "stored in the clear"
    );
    assert_eq!(archive.get(&sha).await.unwrap(), Some(prompt));
    assert_eq!(
        archive
            .get(&sha.to_uppercase())
            .await
            .unwrap()
            .map(|b| b.len()),
        Some(43)
    );
    assert_eq!(
        archive.get(&hidden).await.unwrap(),
        None,
        "restricted is hash-only"
    );
    assert!(!dir.path().join("archive/restricted").exists());
    assert_eq!(archive.get("../etc/passwd").await.unwrap(), None);
    let m = metrics(&archive);
    assert!(
        m.contains("mesh_archive_objects_written_total{service=\"routing-gateway\"} 2\n"),
        "{m}"
    );
    assert!(
        m.contains("mesh_archive_deduplicated_total{service=\"routing-gateway\"} 1\n"),
        "{m}"
    );
    assert!(
        m.contains("mesh_archive_hash_only_total{service=\"routing-gateway\"} 1\n"),
        "{m}"
    );

    // Only public payloads have a retention; a sweep 31 days on deletes just those.
    let later = chrono::Utc::now() + chrono::Duration::days(31);
    assert_eq!(archive.sweep(chrono::Utc::now()).await.unwrap(), 0);
    assert_eq!(archive.sweep(later).await.unwrap(), 1);
    assert!(archive.get(&sha).await.unwrap().is_some());
    assert_eq!(
        archive.get(&sha256_hex(b"public words")).await.unwrap(),
        None
    );

    drop(archive);
    writer.await.unwrap();
}

#[tokio::test]
async fn failed_writes_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let settings = ArchiveConfig::default();
    let (store, location) = config::object_store(&settings, dir.path(), None).unwrap();
    let key = Sealer::generate_hex().unwrap();
    let (archive, _writer) = Archive::spawn(
        store,
        None,
        location,
        Sealer::from_hex(&key).unwrap(),
        &settings,
        None,
    );
    // A file where the class directory should be makes every write fail.
    std::fs::write(dir.path().join("archive/internal"), b"in the way").unwrap();
    archive.submit("internal", b"lost".to_vec());
    archive.flush().await;
    let m = metrics(&archive);
    assert!(
        m.contains(
            "mesh_archive_write_failures_total{service=\"routing-gateway\",reason=\"store\"} 1\n"
        ),
        "{m}"
    );
    assert!(
        m.contains("mesh_archive_objects_written_total{service=\"routing-gateway\"} 0\n"),
        "{m}"
    );
}

#[test]
fn config_refuses_values_and_unknown_urls() {
    let dir = tempfile::tempdir().unwrap();
    let on_pg = ArchiveConfig::default();
    let err = config::load_key(&on_pg, None, None).unwrap_err();
    assert!(err.contains("archive-key"), "{err}");
    let bad: ArchiveConfig = toml::from_str("url = \"ftp://x\"").unwrap();
    assert!(config::object_store(&bad, dir.path(), None).is_err());
    let s3: ArchiveConfig = toml::from_str(
        "url = \"s3://b\"\naccess_key_id = \"id\"\nstore = { public = true, internal = true, confidential = false, restricted = false }",
    )
    .unwrap();
    assert!(!s3.store.confidential);
    let partial: ArchiveConfig =
        toml::from_str("store = { restricted = true }\nretention_days = { public = 7 }").unwrap();
    assert_eq!(
        (partial.store.restricted, partial.store.internal),
        (true, true)
    );
    assert_eq!(
        (
            partial.retention_days.public,
            partial.retention_days.internal
        ),
        (Some(7), None)
    );
    assert!(toml::from_str::<ArchiveConfig>("store = { secret = true }").is_err());
    let err = config::object_store(&s3, dir.path(), None).err().unwrap();
    assert!(err.contains("[secrets] dir"), "{err}");
}

/// The queue holds 4,096 payloads. On this single-threaded runtime the writer cannot
/// run while the test submits, so the rest find it full: they are written at once to
/// the overflow directory — the store's own here, the spool for a remote store — and
/// none is lost.
#[tokio::test]
async fn a_full_queue_overflows_to_disk_instead_of_losing_payloads() {
    const PAYLOADS: usize = 5_000;
    let dir = tempfile::tempdir().unwrap();
    let settings = ArchiveConfig::default();
    let (store, location) = config::object_store(&settings, dir.path(), None).unwrap();
    let sealer = || Sealer::from_hex(&"ab".repeat(32)).unwrap();
    let overflow = mesh_archive::Overflow::into_store(dir.path().join("archive"));
    let (archive, writer) =
        Archive::spawn(store, None, location, sealer(), &settings, Some(overflow));
    let shas: Vec<String> = (0..PAYLOADS)
        .map(|i| archive.submit("internal", format!("payload {i}").into_bytes()))
        .collect();
    let m = metrics(&archive);
    assert!(
        m.contains("mesh_archive_queue_overflow_total{service=\"routing-gateway\"} 904\n"),
        "{m}"
    );
    archive.flush().await;
    for (i, sha) in shas.iter().enumerate() {
        let got = archive.get(sha).await.unwrap();
        assert_eq!(
            got,
            Some(format!("payload {i}").into_bytes()),
            "payload {i}"
        );
    }
    let m = metrics(&archive);
    for line in [
        "mesh_archive_objects_written_total{service=\"routing-gateway\"} 5000\n",
        "mesh_archive_write_failures_total{service=\"routing-gateway\",reason=\"queue_full\"} 0\n",
    ] {
        assert!(m.contains(line), "{line} not in\n{m}");
    }
    drop(archive);
    writer.await.unwrap();

    // A remote store's overflow is its spool: readable at once, replayed later.
    let remote_dir = tempfile::tempdir().unwrap();
    let remote = mesh_archive::local_spool(&remote_dir.path().join("remote")).unwrap();
    let spool_dir = remote_dir.path().join("spool");
    let spool = mesh_archive::local_spool(&spool_dir).unwrap();
    let overflow = mesh_archive::Overflow::into_spool(spool_dir.clone());
    let (archive, _writer) = Archive::spawn(
        remote,
        Some(spool),
        "s3://remote".into(),
        sealer(),
        &settings,
        Some(overflow),
    );
    let shas: Vec<String> = (0..PAYLOADS)
        .map(|i| archive.submit("internal", format!("remote {i}").into_bytes()))
        .collect();
    let last = shas.last().unwrap();
    assert!(spool_dir.join("internal").join(last).exists());
    assert_eq!(
        archive.get(last).await.unwrap(),
        Some(format!("remote {}", PAYLOADS - 1).into_bytes())
    );
    archive.flush().await;
    assert_eq!(archive.replay().await.unwrap(), 904);
    assert!(!spool_dir.join("internal").join(last).exists());
    assert!(
        remote_dir
            .path()
            .join("remote/internal")
            .join(last)
            .exists()
    );
}

/// When the overflow directory cannot be written either (a file stands where it should
/// be), the payloads the queue had no room for are lost, and counted as such.
#[tokio::test]
async fn an_unwritable_overflow_counts_what_it_loses() {
    let dir = tempfile::tempdir().unwrap();
    let settings = ArchiveConfig::default();
    let (store, location) = config::object_store(&settings, dir.path(), None).unwrap();
    let blocked = dir.path().join("not-a-directory");
    std::fs::write(&blocked, b"in the way").unwrap();
    let (archive, _writer) = Archive::spawn(
        store,
        None,
        location,
        Sealer::from_hex(&"cd".repeat(32)).unwrap(),
        &settings,
        Some(mesh_archive::Overflow::into_store(blocked)),
    );
    for i in 0..4_100 {
        archive.submit("internal", format!("payload {i}").into_bytes());
    }
    let m = metrics(&archive);
    for line in [
        "mesh_archive_queue_overflow_total{service=\"routing-gateway\"} 0\n",
        "mesh_archive_write_failures_total{service=\"routing-gateway\",reason=\"queue_full\"} 4\n",
    ] {
        assert!(m.contains(line), "{line} not in\n{m}");
    }
}
