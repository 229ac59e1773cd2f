//! Where the log's checkpoint signing key comes from.
//!
//! First the mounted-secrets directory (`[secrets] dir`, secret `provenance_signing_key`
//! by default): an Ed25519 private key as PKCS#8 PEM (`openssl genpkey -algorithm
//! ed25519`) or its 32-byte seed in base64. Without one, a key kept in the data
//! directory — generated there on first start, but only on the embedded SQLite store:
//! processes sharing PostgreSQL each sign checkpoints of the same log, so they must
//! share one key, and only a mounted secret guarantees that.

use mesh_service::SecretDir;
use mesh_service::secrets::SecretError;
use mesh_types::checkpoint::NoteSigner;
use std::path::{Path, PathBuf};

/// The default secret name of the signing key.
pub const DEFAULT_KEY_SECRET: &str = "provenance_signing_key";
/// The default origin (first checkpoint line and key name) of the log.
pub const DEFAULT_ORIGIN: &str = "agentic-mesh.local/provenance";

/// How this process finds its checkpoint key.
#[derive(Debug, Clone)]
pub struct KeySource {
    pub origin: String,
    pub secrets: Option<SecretDir>,
    pub secret_name: String,
    /// Where a generated key is kept; `None` refuses to generate one.
    pub generate_in: Option<PathBuf>,
}

/// Where the key was found, for the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOrigin {
    Secret(String),
    DataDir(PathBuf),
    Generated(PathBuf),
}

impl KeySource {
    pub fn load(&self) -> Result<(NoteSigner, KeyOrigin), String> {
        let bad = |from: &str, e: mesh_types::checkpoint::NoteError| {
            format!("the provenance signing key in {from} is unusable: {e}")
        };
        if let Some(dir) = &self.secrets {
            match dir.read(&self.secret_name) {
                Ok(text) => {
                    let signer = NoteSigner::from_secret(&self.origin, &text)
                        .map_err(|e| bad(&format!("secret {}", self.secret_name), e))?;
                    return Ok((signer, KeyOrigin::Secret(self.secret_name.clone())));
                }
                Err(SecretError::Missing(_)) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        let Some(dir) = &self.generate_in else {
            return Err(format!(
                "no provenance signing key: processes sharing a PostgreSQL store must share one, mounted as secret `{}` in the secrets directory ([secrets] dir); an Ed25519 PKCS#8 PEM (openssl genpkey -algorithm ed25519) or a base64 32-byte seed",
                self.secret_name
            ));
        };
        let path = dir.join(&self.secret_name);
        if path.is_file() {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let signer = NoteSigner::from_secret(&self.origin, &text)
                .map_err(|e| bad(&path.display().to_string(), e))?;
            return Ok((signer, KeyOrigin::DataDir(path)));
        }
        let signer = generate(&self.origin, &path)?;
        Ok((signer, KeyOrigin::Generated(path)))
    }

    /// The key if one exists already (mounted or in the data directory); never
    /// generates one. For readers such as `mesh provenance verify`.
    pub fn load_existing(&self) -> Result<Option<NoteSigner>, String> {
        let kept = self
            .generate_in
            .as_ref()
            .is_some_and(|dir| dir.join(&self.secret_name).is_file());
        let mounted = self
            .secrets
            .as_ref()
            .is_some_and(|dir| dir.path().join(&self.secret_name).is_file());
        if !kept && !mounted {
            return Ok(None);
        }
        self.load().map(|(signer, _)| Some(signer))
    }
}

fn generate(origin: &str, path: &Path) -> Result<NoteSigner, String> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| format!("no randomness for a signing key: {e}"))?;
    let signer = NoteSigner::from_seed(origin, seed).map_err(|e| e.to_string())?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    mesh_service::secrets::write_private(path, &signer.to_pem())
        .map_err(|e| format!("cannot write the signing key to {}: {e}", path.display()))?;
    Ok(signer)
}
