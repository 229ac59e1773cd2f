//! The mounted-secrets directory: one file per secret, the file name is the secret's
//! name, as Kubernetes and Docker mount them. Secrets never sit in config files or the
//! environment; config refers to them as `secret://NAME`.

use std::path::{Path, PathBuf};

/// Largest secret read.
const MAX_SECRET_BYTES: u64 = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretDir(PathBuf);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error(
        "`{0}` is not a secret name: 1-128 letters, digits, `_`, `-` or `.`, not starting with `.`"
    )]
    BadName(String),
    #[error("no secret named {0}")]
    Missing(String),
    #[error("secret {0}: {1}")]
    Unreadable(String, String),
}

impl SecretDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SecretDir(dir.into())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The secret's value, without a trailing newline.
    pub fn read(&self, name: &str) -> Result<String, SecretError> {
        let valid = !name.is_empty()
            && name.len() <= 128
            && !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !valid {
            return Err(SecretError::BadName(name.to_string()));
        }
        let path = self.0.join(name);
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() && meta.len() <= MAX_SECRET_BYTES => {
                std::fs::read_to_string(&path)
                    .map(|v| v.trim_end_matches(['\n', '\r']).to_string())
                    .map_err(|e| SecretError::Unreadable(name.into(), e.to_string()))
            }
            Ok(meta) if meta.is_file() => Err(SecretError::Unreadable(
                name.into(),
                format!("larger than {MAX_SECRET_BYTES} bytes"),
            )),
            _ => Err(SecretError::Missing(name.to_string())),
        }
    }

    /// Resolves a `secret://NAME` reference.
    pub fn resolve(dir: Option<&SecretDir>, reference: &str) -> Result<String, String> {
        let name = reference
            .strip_prefix("secret://")
            .ok_or("credentials are given as secret://NAME, never as values in the config file")?;
        let dir = dir.ok_or("no secret store is configured ([secrets] dir)")?;
        dir.read(name).map_err(|e| e.to_string())
    }
}

/// Writes a key the mesh generated for itself (into its data directory): a new file
/// only (an existing key is never overwritten), readable by its owner alone, synced.
#[cfg(unix)]
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// Writes a key the mesh generated for itself; a new file only.
#[cfg(not(unix))]
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_private_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        write_private(&path, "first").unwrap();
        assert!(write_private(&path, "second").is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "first");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn reads_by_name_and_refuses_paths() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "abc\n").unwrap();
        let secrets = SecretDir::new(dir.path());
        assert_eq!(secrets.read("token").unwrap(), "abc");
        assert_eq!(
            SecretDir::resolve(Some(&secrets), "secret://token").unwrap(),
            "abc"
        );
        assert!(matches!(
            secrets.read("../etc/passwd"),
            Err(SecretError::BadName(_))
        ));
        assert!(matches!(
            secrets.read(".hidden"),
            Err(SecretError::BadName(_))
        ));
        assert!(matches!(secrets.read("nope"), Err(SecretError::Missing(_))));
        assert!(
            SecretDir::resolve(Some(&secrets), "sk-live")
                .unwrap_err()
                .contains("secret://NAME")
        );
        assert!(
            SecretDir::resolve(None, "secret://token")
                .unwrap_err()
                .contains("[secrets] dir")
        );
    }
}
