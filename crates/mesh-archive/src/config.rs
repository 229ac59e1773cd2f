//! `[archive]`: where payloads go, which classifications are archived, how long they
//! are kept, and where the keys come from. Credentials and the encryption key are
//! names of secrets in the mounted-secrets directory, never values.

use mesh_service::SecretDir;
use object_store::ObjectStore;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The secret holding the archive's AES-256 key (64 hex digits) unless configured.
pub const DEFAULT_KEY_SECRET: &str = "archive-key";
/// Where the embedded store keeps a generated key.
pub const KEY_FILE: &str = "archive.key";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveConfig {
    /// `false` turns archiving off: events still carry the hashes.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `s3://bucket[/prefix]`, or `file:///dir`; default `<data_dir>/archive`.
    pub url: Option<String>,
    /// S3-compatible endpoint (MinIO and others), e.g. `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Secrets holding the S3 access key id and secret access key.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Secret holding the encryption key.
    pub key: Option<String>,
    /// Secrets holding keys rotated out: objects they sealed are still read, nothing
    /// new is sealed with them. Drop one once what it sealed has expired.
    #[serde(default)]
    pub previous_keys: Vec<String>,
    #[serde(default)]
    pub store: ByClass<bool>,
    #[serde(default)]
    pub retention_days: ByClass<Option<u64>>,
}

fn yes() -> bool {
    true
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        ArchiveConfig {
            enabled: true,
            url: None,
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            key: None,
            previous_keys: Vec::new(),
            store: ByClass::default(),
            retention_days: ByClass::default(),
        }
    }
}

/// One setting per data classification; a classification left out keeps its default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(
    deny_unknown_fields,
    default,
    bound(deserialize = "T: Deserialize<'de>, ByClass<T>: Default")
)]
pub struct ByClass<T> {
    pub public: T,
    pub internal: T,
    pub confidential: T,
    pub restricted: T,
}

/// Everything but restricted payloads is archived; restricted ones are hash-only.
impl Default for ByClass<bool> {
    fn default() -> Self {
        ByClass {
            public: true,
            internal: true,
            confidential: true,
            restricted: false,
        }
    }
}

/// Kept until deleted by hand unless a retention is set.
impl Default for ByClass<Option<u64>> {
    fn default() -> Self {
        ByClass {
            public: None,
            internal: None,
            confidential: None,
            restricted: None,
        }
    }
}

impl<T: Copy> ByClass<T> {
    /// The setting for a classification by name; unknown names are treated as
    /// restricted (the strictest), though callers validate them first.
    pub fn get(&self, class: &str) -> T {
        match class {
            "public" => self.public,
            "internal" => self.internal,
            "confidential" => self.confidential,
            _ => self.restricted,
        }
    }
}

/// The object store `config` names; `data_dir` holds the embedded default.
pub fn object_store(
    config: &ArchiveConfig,
    data_dir: &Path,
    secrets: Option<&SecretDir>,
) -> Result<(Arc<dyn ObjectStore>, String), String> {
    let url = config.url.as_deref().unwrap_or("");
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err("[archive] url: s3://BUCKET[/prefix] names no bucket".into());
        }
        let secret = |name: &Option<String>, what: &str| -> Result<Option<String>, String> {
            name.as_ref()
                .map(|n| {
                    SecretDir::resolve(secrets, &format!("secret://{n}"))
                        .map_err(|e| format!("[archive] {what}: {e}"))
                })
                .transpose()
        };
        let mut builder = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(config.region.as_deref().unwrap_or("us-east-1"));
        if let Some(endpoint) = &config.endpoint {
            // Path-style addressing, as MinIO and most S3-compatible servers expect.
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        if let Some(id) = secret(&config.access_key_id, "access_key_id")? {
            builder = builder.with_access_key_id(id);
        }
        if let Some(key) = secret(&config.secret_access_key, "secret_access_key")? {
            builder = builder.with_secret_access_key(key);
        }
        let store = builder
            .build()
            .map_err(|e| format!("[archive] url {url}: {e}"))?;
        let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
            Arc::new(store)
        } else {
            Arc::new(object_store::prefix::PrefixStore::new(
                store,
                prefix.trim_end_matches('/'),
            ))
        };
        return Ok((store, url.to_string()));
    }
    let dir = match url.strip_prefix("file://") {
        Some(path) => PathBuf::from(path),
        None if url.is_empty() => data_dir.join("archive"),
        None => {
            return Err(format!(
                "[archive] url `{url}`: expected s3://BUCKET or file:///DIR"
            ));
        }
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)
        .map_err(|e| format!("archive directory {}: {e}", dir.display()))?;
    Ok((Arc::new(store), format!("file://{}", dir.display())))
}

/// Where the key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOrigin {
    Secret(String),
    DataDir(PathBuf),
    Generated(PathBuf),
}

/// The encryption key: the mounted secret, else (when `generate_in` is given — the
/// embedded store only, as with the provenance signing key) the key kept in the data
/// directory, generated there the first time. On a shared store no process may invent
/// a key (the others could not read what it wrote).
pub fn load_key(
    config: &ArchiveConfig,
    secrets: Option<&SecretDir>,
    generate_in: Option<&Path>,
) -> Result<(String, KeyOrigin), String> {
    let missing = match existing_key(config, secrets, generate_in) {
        Ok(found) => return Ok(found),
        Err(missing) => missing,
    };
    let Some(data_dir) = generate_in else {
        return Err(missing);
    };
    let path = data_dir.join(KEY_FILE);
    let key = crate::seal::Sealer::generate_hex()?;
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    mesh_service::secrets::write_private(&path, &key)
        .map_err(|e| format!("cannot write the archive key to {}: {e}", path.display()))?;
    Ok((key, KeyOrigin::Generated(path)))
}

/// The keys named by `previous_keys`, read from the secrets directory; a missing one
/// is an error naming it (a key that cannot be read would leave its objects unreadable).
pub fn load_previous_keys(
    config: &ArchiveConfig,
    secrets: Option<&SecretDir>,
) -> Result<Vec<String>, String> {
    config
        .previous_keys
        .iter()
        .map(|name| {
            let dir = secrets.ok_or_else(|| {
                format!("[archive] previous_keys names `{name}` but no [secrets] dir is set")
            })?;
            dir.read(name)
                .map_err(|e| format!("[archive] previous_keys: secret `{name}`: {e}"))
        })
        .collect()
}

/// The key [`load_key`] would use, without ever making one: the mounted secret, else
/// the one generated earlier into `data_dir`.
pub fn existing_key(
    config: &ArchiveConfig,
    secrets: Option<&SecretDir>,
    data_dir: Option<&Path>,
) -> Result<(String, KeyOrigin), String> {
    let name = config.key.as_deref().unwrap_or(DEFAULT_KEY_SECRET);
    if let Some(dir) = secrets
        && let Ok(key) = dir.read(name)
    {
        return Ok((key, KeyOrigin::Secret(name.to_string())));
    }
    if let Some(data_dir) = data_dir
        && let Ok(key) = std::fs::read_to_string(data_dir.join(KEY_FILE))
    {
        return Ok((
            key.trim().to_string(),
            KeyOrigin::DataDir(data_dir.join(KEY_FILE)),
        ));
    }
    Err(format!(
        "no archive key: mount a secret `{name}` (64 hex digits) in [secrets] dir"
    ))
}
