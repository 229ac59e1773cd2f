//! Where policies come from: the bundle embedded in the binary, a directory of `.rego`
//! files with `data.json` documents, or an OPA bundle (`.tar.gz` with a `.manifest`).
//! Loading only reads and parses JSON; compiling the Rego is the engine's job.

use crate::PolicyError;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// One `.rego` file, named by its path inside the bundle.
#[derive(Debug, Clone)]
pub struct Module {
    pub path: String,
    pub source: String,
}

/// Everything a policy set is made of, before compilation.
#[derive(Debug, Clone)]
pub struct PolicySource {
    pub modules: Vec<Module>,
    /// The merged `data` document.
    pub data: Value,
    /// The manifest's revision, or a content hash when there is no manifest.
    pub revision: String,
    /// Where it came from, for status pages and logs.
    pub origin: String,
}

/// Where to load a policy set from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyLocation {
    /// The default bundle compiled into the binary (`policies/` in the repository).
    Embedded,
    Dir(PathBuf),
    Bundle(PathBuf),
}

impl PolicyLocation {
    /// A `.tar.gz`/`.tgz` file is a bundle; anything else is read as a directory.
    pub fn from_path(path: &Path) -> Self {
        let name = path.to_string_lossy();
        if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
            PolicyLocation::Bundle(path.to_path_buf())
        } else {
            PolicyLocation::Dir(path.to_path_buf())
        }
    }

    pub fn describe(&self) -> String {
        match self {
            PolicyLocation::Embedded => "embedded default bundle".into(),
            PolicyLocation::Dir(p) => format!("directory {}", p.display()),
            PolicyLocation::Bundle(p) => format!("bundle {}", p.display()),
        }
    }

    pub fn load(&self) -> Result<PolicySource, PolicyError> {
        let files = match self {
            PolicyLocation::Embedded => crate::embedded::FILES
                .iter()
                .map(|(path, text)| (path.to_string(), text.as_bytes().to_vec()))
                .collect(),
            PolicyLocation::Dir(dir) => read_dir_files(dir)?,
            PolicyLocation::Bundle(file) => read_tarball(file)?,
        };
        assemble(files, self.describe())
    }

    /// Cheap to compute, changes whenever a file is added, removed or rewritten: what
    /// the hot-reload loop polls. `None` for the embedded bundle, which never changes.
    pub fn fingerprint(&self) -> Option<String> {
        let mut hasher = Sha256::new();
        match self {
            PolicyLocation::Embedded => return None,
            PolicyLocation::Bundle(file) => stamp(&mut hasher, file),
            PolicyLocation::Dir(dir) => {
                let mut paths = Vec::new();
                walk(dir, &mut paths);
                paths.sort();
                for path in paths {
                    stamp(&mut hasher, &path);
                }
            }
        }
        Some(hex::encode(hasher.finalize()))
    }
}

fn stamp(hasher: &mut Sha256, path: &Path) {
    hasher.update(path.to_string_lossy().as_bytes());
    if let Ok(meta) = std::fs::metadata(path) {
        hasher.update(meta.len().to_le_bytes());
        let modified = meta
            .modified()
            .ok()
            .and_then(|m| m.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        hasher.update(modified.to_le_bytes());
    }
}

fn relevant(name: &str) -> bool {
    name.ends_with(".rego") || name.ends_with("data.json") || name.ends_with(".manifest")
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out);
        } else if relevant(&entry.file_name().to_string_lossy()) {
            out.push(path);
        }
    }
}

fn read_dir_files(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, PolicyError> {
    if !dir.is_dir() {
        return Err(PolicyError::Load(format!(
            "{} is not a directory or a .tar.gz bundle",
            dir.display()
        )));
    }
    let mut paths = Vec::new();
    walk(dir, &mut paths);
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path)
                .map_err(|e| PolicyError::Load(format!("{}: {e}", path.display())))?;
            let rel = path.strip_prefix(dir).unwrap_or(&path);
            Ok((rel.to_string_lossy().replace('\\', "/"), bytes))
        })
        .collect()
}

/// Largest uncompressed bundle accepted, so a hostile archive cannot exhaust memory.
const MAX_BUNDLE_BYTES: u64 = 64 * 1024 * 1024;

fn read_tarball(file: &Path) -> Result<Vec<(String, Vec<u8>)>, PolicyError> {
    let bad = |e: std::io::Error| PolicyError::Load(format!("{}: {e}", file.display()));
    let gz = std::fs::File::open(file).map_err(bad)?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    let mut files = Vec::new();
    let mut total = 0u64;
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(bad)?.to_string_lossy().to_string();
        let path = path
            .trim_start_matches("./")
            .trim_start_matches('/')
            .to_string();
        if !relevant(&path) {
            continue;
        }
        total += entry.header().size().map_err(bad)?;
        if total > MAX_BUNDLE_BYTES {
            return Err(PolicyError::Load(format!(
                "{}: bundle larger than {MAX_BUNDLE_BYTES} bytes uncompressed",
                file.display()
            )));
        }
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).map_err(bad)?;
        files.push((path, bytes));
    }
    files.sort();
    Ok(files)
}

/// Turns raw files into a policy source: modules in path order, every `data.json`
/// merged at its directory's path (as OPA does), the manifest's revision.
fn assemble(files: Vec<(String, Vec<u8>)>, origin: String) -> Result<PolicySource, PolicyError> {
    let mut modules = Vec::new();
    let mut data = Value::Object(Map::new());
    let mut revision = None;
    let mut roots: Option<Vec<String>> = None;
    let mut hasher = Sha256::new();
    for (path, bytes) in files {
        hasher.update(path.as_bytes());
        hasher.update(&bytes);
        let text = String::from_utf8(bytes)
            .map_err(|_| PolicyError::Load(format!("{path}: not UTF-8 text")))?;
        if path.ends_with(".rego") {
            modules.push(Module { path, source: text });
        } else if path == ".manifest" || path.ends_with("/.manifest") {
            let manifest: Value = serde_json::from_str(&text)
                .map_err(|e| PolicyError::Load(format!("{path}: {e}")))?;
            revision = manifest
                .get("revision")
                .and_then(Value::as_str)
                .map(str::to_string);
            roots = manifest.get("roots").and_then(Value::as_array).map(|r| {
                r.iter()
                    .filter_map(Value::as_str)
                    .map(|s| s.trim_matches('/').to_string())
                    .collect()
            });
        } else {
            let doc: Value = serde_json::from_str(&text)
                .map_err(|e| PolicyError::Load(format!("{path}: {e}")))?;
            let prefix: Vec<&str> = path
                .trim_end_matches("data.json")
                .split('/')
                .filter(|s| !s.is_empty())
                .collect();
            merge_at(&mut data, &prefix, doc)
                .map_err(|e| PolicyError::Load(format!("{path}: {e}")))?;
        }
    }
    if modules.is_empty() {
        return Err(PolicyError::Load(format!("{origin}: no .rego files")));
    }
    if let Some(roots) = &roots {
        check_roots(roots, &modules, &data)?;
    }
    let revision = revision.unwrap_or_else(|| {
        let digest = hex::encode(hasher.finalize());
        format!("sha256:{}", &digest[..16])
    });
    Ok(PolicySource {
        modules,
        data,
        revision,
        origin,
    })
}

/// As OPA does: a bundle whose manifest lists roots may only define packages and data
/// under them (`""` claims everything).
fn check_roots(roots: &[String], modules: &[Module], data: &Value) -> Result<(), PolicyError> {
    if roots.iter().any(String::is_empty) {
        return Ok(());
    }
    let covered = |path: &str| {
        roots.iter().any(|r| {
            path == r || path.starts_with(&format!("{r}/")) || r.starts_with(&format!("{path}/"))
        })
    };
    for module in modules {
        if let Some(package) = crate::engine::package_of(&module.source) {
            let path = package.replace('.', "/");
            if !covered(&path) {
                return Err(PolicyError::Load(format!(
                    "{}: package {package} is outside the bundle's roots {roots:?}",
                    module.path
                )));
            }
        }
    }
    if let Value::Object(map) = data {
        for key in map.keys() {
            if !covered(key) {
                return Err(PolicyError::Load(format!(
                    "data.json: data.{key} is outside the bundle's roots {roots:?}"
                )));
            }
        }
    }
    Ok(())
}

fn merge_at(root: &mut Value, path: &[&str], doc: Value) -> Result<(), String> {
    let mut node = root;
    for segment in path {
        let Value::Object(map) = node else {
            return Err(format!("data path {} is not an object", path.join(".")));
        };
        node = map
            .entry(segment.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    merge(node, doc)
}

fn merge(into: &mut Value, doc: Value) -> Result<(), String> {
    match (into, doc) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(existing) => merge(existing, v).map_err(|e| format!("{k}.{e}"))?,
                    None => {
                        a.insert(k, v);
                    }
                }
            }
            Ok(())
        }
        _ => Err("conflicting data documents".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn data_documents_merge_at_their_directory() {
        let files = vec![
            ("a.rego".into(), b"package a".to_vec()),
            ("data.json".into(), br#"{"top": 1}"#.to_vec()),
            ("x/y/data.json".into(), br#"{"z": true}"#.to_vec()),
        ];
        let src = assemble(files, "test".into()).unwrap();
        assert_eq!(src.data, json!({"top": 1, "x": {"y": {"z": true}}}));
        assert!(src.revision.starts_with("sha256:"));
    }

    #[test]
    fn a_manifest_names_the_revision_and_conflicts_are_refused() {
        let files = vec![
            (
                ".manifest".into(),
                br#"{"revision": "v7", "roots": [""]}"#.to_vec(),
            ),
            ("a.rego".into(), b"package a".to_vec()),
        ];
        assert_eq!(assemble(files, "t".into()).unwrap().revision, "v7");
        let clash = vec![
            ("a.rego".into(), b"package a".to_vec()),
            ("data.json".into(), br#"{"x": 1}"#.to_vec()),
            ("x/data.json".into(), br#"{"y": 1}"#.to_vec()),
        ];
        let err = assemble(clash, "t".into()).unwrap_err().to_string();
        assert!(err.contains("x/data.json"), "{err}");
    }

    #[test]
    fn manifest_roots_bound_packages_and_data() {
        let bundle = |package: &str, data: &str| {
            vec![
                (
                    ".manifest".into(),
                    br#"{"revision": "r", "roots": ["mesh", "mesh_config"]}"#.to_vec(),
                ),
                ("a.rego".into(), format!("package {package}").into_bytes()),
                ("data.json".into(), data.as_bytes().to_vec()),
            ]
        };
        assert!(assemble(bundle("mesh.tools", r#"{"mesh_config": {}}"#), "t".into()).is_ok());
        let err = assemble(bundle("other", "{}"), "t".into())
            .unwrap_err()
            .to_string();
        assert!(err.contains("package other is outside"), "{err}");
        let err = assemble(bundle("mesh", r#"{"stray": 1}"#), "t".into())
            .unwrap_err()
            .to_string();
        assert!(err.contains("data.stray"), "{err}");
    }

    #[test]
    fn no_rego_is_an_error() {
        let err = assemble(vec![], "dir".into()).unwrap_err().to_string();
        assert!(err.contains("no .rego files"), "{err}");
    }
}
