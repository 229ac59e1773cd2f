//! Payload archives end to end: a mesh makes a model call through the gateway (`sim`)
//! and a tool call, and the prompt, response, arguments and output land in object
//! storage under their SHA-256 — encrypted, stored once, readable back through the
//! provenance service, and not at all for restricted data. Once on the embedded
//! default (a local directory) and once on S3 against a real S3-compatible server
//! (`moto_server` from PyPI's moto[server]; `.ci/run` installs it and sets
//! `MESH_TEST_S3_SERVER_BIN`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Api, MeshProcess, Reply, events_when, wait_for};
use futures_util::StreamExt;
use object_store::ObjectStore;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// Where the archive's objects are, read without the mesh (and without its key).
enum Backend {
    Dir(PathBuf),
    /// The bucket, read with the same credentials the mesh has (moto refuses
    /// unsigned reads) but without the archive key.
    S3(Arc<dyn ObjectStore>),
}

impl Backend {
    async fn raw(&self, class: &str, sha: &str) -> Option<Vec<u8>> {
        match self {
            Backend::Dir(dir) => std::fs::read(dir.join(class).join(sha)).ok(),
            Backend::S3(store) => match store.get(&format!("{class}/{sha}").into()).await {
                Ok(got) => Some(got.bytes().await.unwrap().to_vec()),
                Err(object_store::Error::NotFound { .. }) => None,
                Err(e) => panic!("{e}"),
            },
        }
    }

    /// Every object's name, `class/sha256`.
    async fn objects(&self) -> BTreeSet<String> {
        match self {
            Backend::Dir(dir) => std::fs::read_dir(dir)
                .map(|classes| {
                    classes
                        .flat_map(|c| {
                            let c = c.unwrap();
                            let class = c.file_name().to_string_lossy().to_string();
                            std::fs::read_dir(c.path()).unwrap().map(move |o| {
                                format!("{class}/{}", o.unwrap().file_name().to_string_lossy())
                            })
                        })
                        .collect()
                })
                .unwrap_or_default(),
            Backend::S3(store) => {
                let listed: Vec<_> = store.list(None).collect().await;
                listed
                    .into_iter()
                    .map(|meta| meta.unwrap().location.to_string())
                    .collect()
            }
        }
    }
}

async fn chat(api: &Api, mesh: &MeshProcess, key: &str, text: &str, class: Option<&str>) {
    let body = json!({"model": "sim-small", "messages": [{"role": "user", "content": text}]});
    let mut req = api
        .http
        .post(format!(
            "{}/v1/chat/completions",
            mesh.url("routing-gateway")
        ))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(class) = class {
        req = req.header("x-mesh-data-classification", class);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

/// A service's `/readyz` reply.
async fn readyz(api: &Api, mesh: &MeshProcess, service: &str) -> Reply {
    let url = format!("{}/readyz", mesh.url(service));
    api.call("GET", &url, None, None).await
}

fn sha_of(event: &Value, field: &str) -> String {
    let sha = event["payload"][field]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(sha.len(), 64, "{field} in {event}");
    sha
}

/// The model and tool calls, and every check on what they left in `backend`.
async fn exercise(mesh: &MeshProcess, backend: &Backend) {
    let key = mesh.admin_key.clone().unwrap();
    let api = Api::new();
    let prompt = "archive this prompt, please";
    chat(&api, mesh, &key, prompt, None).await;
    chat(&api, mesh, &key, prompt, None).await;
    chat(
        &api,
        mesh,
        &key,
        "restricted words stay out",
        Some("restricted"),
    )
    .await;

    let body = json!({"name": "archivist", "version": "1.0.0", "role": "custom",
                      "riskTier": "high", "capabilities": ["tools"]});
    let agents = format!("{}/api/v1/agents", mesh.url("agent-registry"));
    let agent = api.post(&agents, &key, &body.to_string()).await;
    assert_eq!(agent.status, 201, "{}", agent.body);
    let arguments = json!({"path": "archived.txt", "content": "tool payload words"});
    let invoke = format!(
        "{}/api/v1/tools/file_write/invoke",
        mesh.url("tool-registry")
    );
    let wrote = api
        .post(
            &invoke,
            &key,
            &json!({"agentId": agent.body["id"], "arguments": arguments}).to_string(),
        )
        .await;
    assert_eq!(wrote.status, 200, "{}", wrote.body);
    let restricted_args = json!({"path": "restricted.txt", "content": "restricted tool words"});
    let wrote = api
        .post(
            &invoke,
            &key,
            &json!({"agentId": agent.body["id"], "arguments": restricted_args,
                    "dataClassification": "restricted"})
            .to_string(),
        )
        .await;
    assert_eq!(wrote.status, 200, "{}", wrote.body);

    let events = events_when(&api, mesh, &key, |e| {
        common::count(e, "model_call") == 3 && common::count(e, "tool_call") == 2
    })
    .await;
    let calls: Vec<&Value> = events
        .iter()
        .filter(|e| e["action"] == "model_call")
        .collect();
    let (first, second, restricted) = (calls[0], calls[1], calls[2]);
    let tool = events.iter().find(|e| e["action"] == "tool_call").unwrap();
    let prompt_sha = sha_of(first, "promptSha256");
    let response_sha = sha_of(first, "responseSha256");
    assert_eq!(sha_of(second, "promptSha256"), prompt_sha);
    assert_eq!(sha_of(second, "responseSha256"), response_sha);
    let args_sha = sha_of(tool, "argumentsSha256");
    let output_sha = sha_of(tool, "outputSha256");
    let archived: BTreeSet<String> = [&prompt_sha, &response_sha, &args_sha, &output_sha]
        .iter()
        .map(|sha| format!("internal/{sha}"))
        .collect();

    // Written off the request path: wait for the four distinct payloads.
    let objects = wait_for(|| async {
        let objects = backend.objects().await;
        archived.is_subset(&objects).then_some(objects)
    })
    .await;
    // The same payload twice is one object; restricted data left nothing.
    assert_eq!(objects, archived, "exactly the four distinct payloads");
    let hidden_prompt = sha_of(restricted, "promptSha256");
    let hidden_response = sha_of(restricted, "responseSha256");
    let hidden_tool = events.iter().rfind(|e| e["action"] == "tool_call").unwrap();
    let hidden_args = sha_of(hidden_tool, "argumentsSha256");
    assert_ne!(hidden_args, args_sha);
    for sha in [&hidden_prompt, &hidden_response, &hidden_args] {
        for class in ["internal", "restricted"] {
            assert!(backend.raw(class, sha).await.is_none());
        }
    }

    // Encrypted at rest: the stored bytes are not the payload.
    let raw = backend.raw("internal", &prompt_sha).await.unwrap();
    assert!(
        !raw.windows(prompt.len()).any(|w| w == prompt.as_bytes()),
        "prompt stored in the clear"
    );
    let raw = backend.raw("internal", &args_sha).await.unwrap();
    assert!(!raw.windows(18).any(|w| w == b"tool payload words"));

    // Read back, decrypted, through the provenance service.
    let read = |sha: &str| {
        format!(
            "{}/api/v1/provenance/archive/{sha}",
            mesh.url("provenance-service")
        )
    };
    let got = api.get(&read(&prompt_sha), &key).await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.body, json!([{"role": "user", "content": prompt}]));
    let got = api.get(&read(&args_sha), &key).await;
    assert_eq!((got.status, &got.body), (200, &arguments));
    let got = api.get(&read(&response_sha), &key).await;
    assert!(
        got.body.as_str().is_some_and(|s| !s.is_empty()),
        "{}",
        got.body
    );
    for sha in [&hidden_prompt, &"0".repeat(64)] {
        assert_eq!(api.get(&read(sha), &key).await.status, 404);
    }
    let auditor = api.key(&mesh.url("mesh-orchestrator"), &key, "agent").await;
    let denied = api.get(&read(&prompt_sha), &auditor).await;
    assert_eq!(denied.status, 403, "{}", denied.body);

    let metrics = api
        .http
        .get(format!("{}/metrics", mesh.url("routing-gateway")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "mesh_archive_objects_written_total{service=\"routing-gateway\"} 4",
        "mesh_archive_deduplicated_total{service=\"routing-gateway\"} 2",
        "mesh_archive_hash_only_total{service=\"routing-gateway\"} 4",
        "mesh_archive_write_failures_total{service=\"routing-gateway\",reason=\"store\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn archives_to_the_data_directory_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = MeshProcess::up(dir.path(), &[]);
    let backend = Backend::Dir(dir.path().join(".mesh/archive"));
    exercise(&mesh, &backend).await;
    assert!(dir.path().join(".mesh/archive.key").exists());

    // A streamed call is archived when its stream ends.
    let key = mesh.admin_key.clone().unwrap();
    let api = Api::new();
    let body = json!({"model": "sim-small", "stream": true,
                      "messages": [{"role": "user", "content": "stream this one"}]});
    let r = api
        .http
        .post(format!(
            "{}/v1/chat/completions",
            mesh.url("routing-gateway")
        ))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let streamed_text = r.text().await.unwrap();
    assert!(streamed_text.contains("data:"), "{streamed_text}");
    let events = events_when(&api, &mesh, &key, |e| common::count(e, "model_call") == 4).await;
    let streamed = events
        .iter()
        .rfind(|e| e["action"] == "model_call")
        .unwrap();
    assert_eq!(streamed["payload"]["stream"], true);
    for field in ["promptSha256", "responseSha256"] {
        let sha = sha_of(streamed, field);
        wait_for(|| async { backend.raw("internal", &sha).await.map(|_| ()) }).await;
    }

    // The CLI reads it back from the data directory, decrypted, as the route does.
    let data = dir.path().join(".mesh");
    let data = data.to_str().unwrap();
    let prompt_sha = sha_of(streamed, "promptSha256");
    let out = common::mesh(&["provenance", "archived", &prompt_sha, "--data-dir", data]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        printed,
        json!([{"role": "user", "content": "stream this one"}])
    );
    let out = common::mesh(&[
        "provenance",
        "archived",
        &"0".repeat(64),
        "--data-dir",
        data,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no archived payload"));
    // Where nothing was ever archived there is no key, and reading makes none.
    let empty = tempfile::tempdir().unwrap();
    let out = common::mesh(&[
        "provenance",
        "archived",
        &prompt_sha,
        "--data-dir",
        empty.path().to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no archive key"),
        "{err}"
    );
    assert!(!empty.path().join("archive.key").exists());
    let ready = readyz(&Api::new(), &mesh, "provenance-service").await;
    let archive = &ready.body["checks"]["archive"];
    assert_eq!(archive["enabled"], true, "{}", ready.body);
    assert!(
        archive["location"]
            .as_str()
            .unwrap()
            .ends_with(".mesh/archive")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn archiving_off_keeps_the_hashes_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mesh.toml"), "[archive]\nenabled = false\n").unwrap();
    let mesh = MeshProcess::up(dir.path(), &["--config", "mesh.toml"]);
    let key = mesh.admin_key.clone().unwrap();
    let api = Api::new();
    chat(&api, &mesh, &key, "not archived", None).await;
    let events = events_when(&api, &mesh, &key, |e| common::count(e, "model_call") == 1).await;
    let call = events.iter().find(|e| e["action"] == "model_call").unwrap();
    let sha = sha_of(call, "promptSha256");
    let url = format!(
        "{}/api/v1/provenance/archive/{sha}",
        mesh.url("provenance-service")
    );
    let got = api.get(&url, &key).await;
    assert_eq!(
        (got.status, &got.body["error"]["code"]),
        (503, &json!("archive_off")),
        "{}",
        got.body
    );
    let ready = readyz(&api, &mesh, "routing-gateway").await;
    assert_eq!(
        ready.body["checks"]["archive"]["enabled"], false,
        "{}",
        ready.body
    );
    assert!(!dir.path().join(".mesh/archive").exists());
    assert!(!dir.path().join(".mesh/archive.key").exists());
}

/// `moto_server`, or `None` outside CI when it is not configured. Under CI a missing
/// server fails the test.
fn moto_bin() -> Option<PathBuf> {
    let bin = common::backend_from_env("MESH_TEST_S3_SERVER_BIN", ".ci/run installs moto[server]")?;
    let bin = PathBuf::from(bin);
    assert!(
        bin.exists(),
        "MESH_TEST_S3_SERVER_BIN={} is missing",
        bin.display()
    );
    Some(bin)
}

struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_moto(bin: &Path, port: u16) -> Moto {
    let child = Command::new(bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let moto = Moto(child);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "moto_server did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    moto
}

#[tokio::test(flavor = "multi_thread")]
async fn archives_to_s3_encrypted_and_deduplicated() {
    let Some(bin) = moto_bin() else { return };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let moto = start_moto(&bin, port);
    let endpoint = format!("http://127.0.0.1:{port}");
    make_bucket(&endpoint).await;
    let bucket = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name("mesh-archive")
        .with_region("us-east-1")
        .with_endpoint(&endpoint)
        .with_allow_http(true)
        .with_access_key_id("testing")
        .with_secret_access_key("testing")
        .build()
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    std::fs::write(secrets.join("s3-id"), "testing\n").unwrap();
    std::fs::write(secrets.join("s3-secret"), "testing\n").unwrap();
    std::fs::write(secrets.join("archive-key"), "ab".repeat(32)).unwrap();
    std::fs::write(
        dir.path().join("mesh.toml"),
        format!(
            "[secrets]\ndir = \"{}\"\n\n[archive]\nurl = \"s3://mesh-archive\"\nendpoint = \"{endpoint}\"\n\
             access_key_id = \"s3-id\"\nsecret_access_key = \"s3-secret\"\n",
            secrets.display()
        ),
    )
    .unwrap();
    let mesh = MeshProcess::up(dir.path(), &["--config", "mesh.toml"]);
    let bucket: Arc<dyn ObjectStore> = Arc::new(bucket);
    exercise(&mesh, &Backend::S3(bucket.clone())).await;
    // The mounted key was used: none was generated.
    assert!(!dir.path().join(".mesh/archive.key").exists());

    // An outage: the call still answers, its payloads wait in the spool, readable…
    drop(moto);
    let key = mesh.admin_key.clone().unwrap();
    let api = Api::new();
    let prompt = "said while the bucket was away";
    chat(&api, &mesh, &key, prompt, None).await;
    let counter = |name: &'static str| {
        let api = api.clone();
        let url = format!("{}/metrics", mesh.url("routing-gateway"));
        async move {
            let text = api.http.get(url).send().await.ok()?.text().await.ok()?;
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
        }
    };
    wait_until_n(
        || counter("mesh_archive_spooled_total{service=\"routing-gateway\"} "),
        2,
    )
    .await;
    let events = events_when(&api, &mesh, &key, |e| common::count(e, "model_call") == 4).await;
    let last = events
        .iter()
        .rfind(|e| e["action"] == "model_call")
        .unwrap();
    let prompt_sha = sha_of(last, "promptSha256");
    let read = format!(
        "{}/api/v1/provenance/archive/{prompt_sha}",
        mesh.url("provenance-service")
    );
    let got = api.get(&read, &key).await;
    assert_eq!(got.body, json!([{"role": "user", "content": prompt}]));
    // … and reach the bucket once it is back (moto forgets everything: a new bucket).
    let _moto = start_moto(&bin, port);
    make_bucket(&endpoint).await;
    wait_until_n(
        || counter("mesh_archive_replayed_total{service=\"routing-gateway\"} "),
        2,
    )
    .await;
    let backend = Backend::S3(bucket);
    assert!(backend.raw("internal", &prompt_sha).await.is_some());
    assert_eq!(
        counter("mesh_archive_write_failures_total{service=\"routing-gateway\",reason=\"store\"} ")
            .await,
        Some(0)
    );
}

async fn make_bucket(endpoint: &str) {
    let made = reqwest::Client::new()
        .put(format!("{endpoint}/mesh-archive"))
        .send()
        .await
        .unwrap();
    assert!(made.status().is_success(), "{}", made.status());
}

/// Waits (up to 30 s) until `probe` yields at least `n`.
async fn wait_until_n<F, Fut>(probe: F, n: u64)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<u64>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if probe().await.is_some_and(|v| v >= n) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "counter never reached {n}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The prompt of the newest model call in the log.
async fn last_prompt_sha(api: &Api, mesh: &MeshProcess, key: &str, calls: usize) -> String {
    let events = events_when(api, mesh, key, |e| common::count(e, "model_call") == calls).await;
    let call = events
        .iter()
        .rfind(|e| e["action"] == "model_call")
        .unwrap();
    sha_of(call, "promptSha256")
}

/// Rotating the archive key: the new key seals every new object, the old one, listed in
/// `previous_keys`, still opens what it sealed; without it those objects say which key
/// they need.
#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_archive_key_still_opens_what_it_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let objects = dir.path().join(".mesh/archive/internal");
    let api = Api::new();
    let mesh = MeshProcess::up(dir.path(), &[]);
    let key = mesh.admin_key.clone().unwrap();
    chat(&api, &mesh, &key, "sealed with the first key", None).await;
    let old_sha = last_prompt_sha(&api, &mesh, &key, 1).await;
    wait_for(|| async { objects.join(&old_sha).exists().then_some(()) }).await;
    drop(mesh);

    // The generated key becomes a previous key; a new one is mounted.
    let secrets = dir.path().join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    let first = std::fs::read_to_string(dir.path().join(".mesh/archive.key")).unwrap();
    std::fs::write(secrets.join("archive-key-2025"), &first).unwrap();
    std::fs::write(secrets.join("archive-key"), "42".repeat(32)).unwrap();
    // Absolute: the CLI below runs elsewhere, and a relative path is the working
    // directory's.
    let secrets_line = format!("[secrets]\ndir = {:?}\n", secrets.to_str().unwrap());
    let rotated = format!("{secrets_line}[archive]\nprevious_keys = [\"archive-key-2025\"]\n");
    std::fs::write(dir.path().join("rotated.toml"), rotated).unwrap();
    std::fs::write(dir.path().join("retired.toml"), &secrets_line).unwrap();

    let mesh = MeshProcess::up(dir.path(), &["--config", "rotated.toml"]);
    chat(&api, &mesh, &key, "sealed with the second key", None).await;
    let new_sha = last_prompt_sha(&api, &mesh, &key, 2).await;
    wait_for(|| async { objects.join(&new_sha).exists().then_some(()) }).await;
    let ready = readyz(&api, &mesh, "provenance-service").await;
    let archive = &ready.body["checks"]["archive"];
    assert_eq!(archive["previousKeys"], 1, "{archive}");
    let key_id = archive["keyId"].as_str().unwrap().to_string();
    let new_object = std::fs::read(objects.join(&new_sha)).unwrap();
    assert_eq!(
        (
            new_object[0],
            new_object[1..9]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        ),
        (2, key_id.clone()),
        "format 2, sealed with the new key"
    );
    let read = |sha: &str| {
        format!(
            "{}/api/v1/provenance/archive/{sha}",
            mesh.url("provenance-service")
        )
    };
    for (sha, text) in [
        (&old_sha, "sealed with the first key"),
        (&new_sha, "sealed with the second key"),
    ] {
        let got = api.get(&read(sha), &key).await;
        assert_eq!(got.status, 200, "{}", got.body);
        assert_eq!(got.body[0]["content"], text);
    }
    drop(mesh);

    // The old key retired: its objects name the key they need; new ones still open.
    let data = dir.path().join(".mesh");
    let cli = |sha: &str, config: &str| {
        let config = dir.path().join(config);
        common::mesh(&[
            "provenance",
            "archived",
            sha,
            "--data-dir",
            data.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ])
    };
    let out = cli(&new_sha, "retired.toml");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&old_sha, "retired.toml");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("previous_keys"),
        "{err}"
    );
    let out = cli(&old_sha, "rotated.toml");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
