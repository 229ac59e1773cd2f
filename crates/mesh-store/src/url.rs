use crate::StoreError;
use std::path::{Path, PathBuf};

/// A parsed `--store` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Sqlite(SqliteOptions),
    Postgres(String),
}

/// Where the SQLite file lives and how hard it syncs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteOptions {
    pub path: PathBuf,
    /// `FULL` unless the URL says `?synchronous=normal`: every acknowledged commit is
    /// on disk before the caller hears of it.
    pub synchronous_full: bool,
}

impl StoreUrl {
    pub fn default_for(data_dir: &Path) -> Self {
        StoreUrl::Sqlite(SqliteOptions {
            path: data_dir.join("mesh.db"),
            synchronous_full: true,
        })
    }

    pub fn parse(url: &str) -> Result<Self, StoreError> {
        if let Some(rest) = url.strip_prefix("sqlite://") {
            let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
            if path.is_empty() {
                return Err(StoreError::BadUrl(format!(
                    "`{url}` has no file path; write sqlite://PATH/mesh.db"
                )));
            }
            let mut synchronous_full = true;
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                match pair.split_once('=') {
                    Some(("synchronous", v)) if v.eq_ignore_ascii_case("full") => {
                        synchronous_full = true
                    }
                    Some(("synchronous", v)) if v.eq_ignore_ascii_case("normal") => {
                        synchronous_full = false
                    }
                    _ => {
                        return Err(StoreError::BadUrl(format!(
                            "unknown SQLite option `{pair}` in `{url}`; supported: synchronous=full|normal"
                        )));
                    }
                }
            }
            return Ok(StoreUrl::Sqlite(SqliteOptions {
                path: PathBuf::from(path),
                synchronous_full,
            }));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(StoreUrl::Postgres(url.to_string()));
        }
        Err(StoreError::BadUrl(format!(
            "`{url}`: expected sqlite://PATH or postgres://USER@HOST:PORT/DB"
        )))
    }

    /// The URL without its password.
    pub fn display(&self) -> String {
        match self {
            StoreUrl::Sqlite(o) => format!("sqlite://{}", o.path.display()),
            StoreUrl::Postgres(url) => redact_password(url),
        }
    }
}

fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_supported_forms() {
        let StoreUrl::Sqlite(o) =
            StoreUrl::parse("sqlite://./x/mesh.db?synchronous=normal").unwrap()
        else {
            panic!("not sqlite");
        };
        assert_eq!(o.path, PathBuf::from("./x/mesh.db"));
        assert!(!o.synchronous_full);
        assert!(matches!(
            StoreUrl::parse("postgres://u@h/db").unwrap(),
            StoreUrl::Postgres(_)
        ));
        assert!(StoreUrl::parse("mysql://x").is_err());
        assert!(StoreUrl::parse("sqlite://").is_err());
        assert!(StoreUrl::parse("sqlite://a.db?journal=off").is_err());
        assert_eq!(
            StoreUrl::parse("postgres://u:secret@h/db")
                .unwrap()
                .display(),
            "postgres://u:***@h/db"
        );
    }
}
