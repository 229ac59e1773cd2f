//! `file_read` and `file_write`, confined to the allowlisted directories.
//!
//! A path is refused before any file is touched when it holds `..` (400), and after
//! resolution when it lands outside every allowed directory (403): both the file (or,
//! for a new file, its nearest existing ancestor) are canonicalized, so a symbolic link
//! pointing out of the workspace is caught, and `file_write` never writes through a
//! link. (A link swapped in between the check and the write is not caught; the
//! directories are meant to be the mesh's own.)

use super::MAX_BYTES;
use crate::tools::ToolsConfig;
use axum::http::StatusCode;
use mesh_service::ApiError;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

fn not_allowed(message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "path_not_allowed", message)
}

fn bad_path(message: impl Into<String>) -> ApiError {
    ApiError::invalid("arguments.path", message)
}

fn io_error(path: &str, e: std::io::Error) -> ApiError {
    match e.kind() {
        std::io::ErrorKind::NotFound => ApiError::not_found(format!("{path}: no such file")),
        std::io::ErrorKind::PermissionDenied => {
            not_allowed(format!("{path}: the mesh may not access it ({e})"))
        }
        _ => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "tool_failed",
            format!("{path}: {e}"),
        ),
    }
}

/// The allowed directories as they really are (symbolic links resolved).
fn roots(config: &ToolsConfig) -> Result<Vec<PathBuf>, ApiError> {
    let roots: Vec<PathBuf> = config
        .allowed_paths
        .iter()
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .collect();
    if roots.is_empty() {
        return Err(not_allowed(
            "no allowed directory exists ([tools] allowed_paths)".to_string(),
        ));
    }
    Ok(roots)
}

/// The path as asked for: `..` refused, relative paths taken from the first root.
fn requested(path: &str, roots: &[PathBuf]) -> Result<PathBuf, ApiError> {
    if path.contains('\0') {
        return Err(bad_path("arguments.path: must not contain NUL"));
    }
    let asked = Path::new(path);
    if asked.components().any(|c| c == Component::ParentDir) {
        return Err(bad_path(format!(
            "arguments.path: `{path}` must not contain `..`"
        )));
    }
    Ok(if asked.is_absolute() {
        asked.to_path_buf()
    } else {
        roots[0].join(asked)
    })
}

fn check_inside(path: &str, real: &Path, roots: &[PathBuf]) -> Result<(), ApiError> {
    if roots.iter().any(|root| real.starts_with(root)) {
        Ok(())
    } else {
        Err(not_allowed(format!(
            "{path} resolves to {}, outside the allowed directories",
            real.display()
        )))
    }
}

fn text_arg<'a>(arguments: &'a Value, name: &str) -> Result<&'a str, ApiError> {
    arguments[name].as_str().ok_or_else(|| {
        ApiError::invalid(
            format!("arguments.{name}"),
            format!("arguments.{name}: must be a string"),
        )
    })
}

pub(super) async fn read(config: &ToolsConfig, arguments: &Value) -> Result<Value, ApiError> {
    let path = text_arg(arguments, "path")?.to_string();
    let limit = arguments["maxBytes"]
        .as_u64()
        .unwrap_or(MAX_BYTES)
        .min(MAX_BYTES);
    let config = config.clone();
    blocking(move || {
        let roots = roots(&config)?;
        let real =
            std::fs::canonicalize(requested(&path, &roots)?).map_err(|e| io_error(&path, e))?;
        check_inside(&path, &real, &roots)?;
        if real.is_dir() {
            return Err(bad_path(format!("arguments.path: {path} is a directory")));
        }
        let file = std::fs::File::open(&real).map_err(|e| io_error(&path, e))?;
        let size = file.metadata().map_err(|e| io_error(&path, e))?.len();
        let mut bytes = Vec::new();
        file.take(limit)
            .read_to_end(&mut bytes)
            .map_err(|e| io_error(&path, e))?;
        let truncated = size > limit;
        let content = utf8(bytes, truncated)
            .ok_or_else(|| bad_path(format!("arguments.path: {path} is not UTF-8 text")))?;
        Ok(
            json!({"path": real.display().to_string(), "bytes": content.len(),
                  "content": content, "truncated": truncated}),
        )
    })
    .await
}

/// The bytes as text; a cut-off file may end in part of a character, which is dropped.
fn utf8(mut bytes: Vec<u8>, truncated: bool) -> Option<String> {
    match std::str::from_utf8(&bytes) {
        Ok(_) => {}
        Err(e) if truncated && e.error_len().is_none() => bytes.truncate(e.valid_up_to()),
        Err(_) => return None,
    }
    String::from_utf8(bytes).ok()
}

pub(super) async fn write(config: &ToolsConfig, arguments: &Value) -> Result<Value, ApiError> {
    let path = text_arg(arguments, "path")?.to_string();
    let content = text_arg(arguments, "content")?.to_string();
    let append = arguments["append"].as_bool().unwrap_or(false);
    let create_dirs = arguments["createDirs"].as_bool().unwrap_or(false);
    let config = config.clone();
    blocking(move || {
        let roots = roots(&config)?;
        let wanted = requested(&path, &roots)?;
        let (Some(parent), Some(name)) = (wanted.parent(), wanted.file_name()) else {
            return Err(bad_path(format!("arguments.path: {path} names no file")));
        };
        // The nearest ancestor that exists decides where the file would really land.
        let mut existing = parent;
        while !existing.exists() {
            existing = existing.parent().ok_or_else(|| {
                bad_path(format!("arguments.path: {path} has no existing ancestor"))
            })?;
        }
        let real_ancestor = std::fs::canonicalize(existing).map_err(|e| io_error(&path, e))?;
        check_inside(&path, &real_ancestor, &roots)?;
        if existing != parent {
            if !create_dirs {
                return Err(ApiError::not_found(format!(
                    "{path}: directory {} does not exist (set createDirs to make it)",
                    parent.display()
                )));
            }
            let missing = parent.strip_prefix(existing).unwrap_or(parent);
            std::fs::create_dir_all(real_ancestor.join(missing)).map_err(|e| io_error(&path, e))?;
        }
        let real_parent = std::fs::canonicalize(parent).map_err(|e| io_error(&path, e))?;
        check_inside(&path, &real_parent, &roots)?;
        let target = real_parent.join(name);
        if let Ok(meta) = std::fs::symlink_metadata(&target) {
            if meta.file_type().is_symlink() {
                return Err(not_allowed(format!(
                    "{path} is a symbolic link; the mesh does not write through links"
                )));
            }
            if meta.is_dir() {
                return Err(bad_path(format!("arguments.path: {path} is a directory")));
            }
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(append)
            .write(true)
            .truncate(!append)
            .open(&target)
            .map_err(|e| io_error(&path, e))?;
        file.write_all(content.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| io_error(&path, e))?;
        Ok(json!({"path": target.display().to_string(), "bytes": content.len()}))
    })
    .await
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("file tool: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> ToolsConfig {
        ToolsConfig {
            allowed_paths: vec![dir.join("workspace")],
            limits_store: None,
            secrets_dir: None,
        }
    }

    #[tokio::test]
    async fn files_stay_inside_the_allowed_directories() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        std::fs::create_dir_all(dir.path().join("workspace")).unwrap();
        std::fs::write(dir.path().join("secret.txt"), "outside").unwrap();

        let wrote = write(
            &config,
            &json!({"path": "notes/a.txt", "content": "héllo", "createDirs": true}),
        )
        .await
        .unwrap();
        assert_eq!(wrote["bytes"], 6);
        let read_back = read(&config, &json!({"path": "notes/a.txt"}))
            .await
            .unwrap();
        assert_eq!(read_back["content"], "héllo");
        let cut = read(&config, &json!({"path": "notes/a.txt", "maxBytes": 2}))
            .await
            .unwrap();
        assert_eq!(
            (cut["content"].as_str(), cut["truncated"].as_bool()),
            (Some("h"), Some(true))
        );
        write(
            &config,
            &json!({"path": "notes/a.txt", "content": "!", "append": true}),
        )
        .await
        .unwrap();
        let appended = read(&config, &json!({"path": "notes/a.txt"}))
            .await
            .unwrap();
        assert_eq!(appended["content"], "héllo!");

        let dotdot = read(&config, &json!({"path": "../secret.txt"}))
            .await
            .unwrap_err();
        assert_eq!(dotdot.status, StatusCode::BAD_REQUEST);
        let outside = dir.path().join("secret.txt");
        let absolute = read(&config, &json!({"path": outside})).await.unwrap_err();
        assert_eq!(
            absolute.status,
            StatusCode::FORBIDDEN,
            "{}",
            absolute.message
        );

        #[cfg(unix)]
        {
            let ws = dir.path().join("workspace");
            std::os::unix::fs::symlink(&outside, ws.join("link.txt")).unwrap();
            std::os::unix::fs::symlink(dir.path(), ws.join("up")).unwrap();
            let via_link = read(&config, &json!({"path": "link.txt"}))
                .await
                .unwrap_err();
            assert_eq!(via_link.code, "path_not_allowed", "{}", via_link.message);
            let through_dir = write(&config, &json!({"path": "up/new.txt", "content": "x"}))
                .await
                .unwrap_err();
            assert_eq!(through_dir.code, "path_not_allowed");
            let over_link = write(&config, &json!({"path": "link.txt", "content": "x"}))
                .await
                .unwrap_err();
            assert_eq!(over_link.code, "path_not_allowed");
            assert_eq!(std::fs::read_to_string(&outside).unwrap(), "outside");
            assert!(!dir.path().join("new.txt").exists());
        }
        let missing_dir = write(&config, &json!({"path": "x/y/z.txt", "content": "x"}))
            .await
            .unwrap_err();
        assert_eq!(missing_dir.status, StatusCode::NOT_FOUND);
    }
}
