use mesh_store::Store;
use std::path::PathBuf;

/// A store under test plus a way to run raw SQL against it, as an attacker with
/// database access would.
pub struct Harness {
    pub store: Store,
    raw: Raw,
    _dir: Option<tempfile::TempDir>,
}

enum Raw {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Harness {
    pub fn is_postgres(&self) -> bool {
        matches!(self.raw, Raw::Postgres(_))
    }

    pub async fn exec(&self, sql: &str) {
        match &self.raw {
            Raw::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.execute_batch(sql).unwrap();
            }
            Raw::Postgres(url) => {
                let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                client.batch_execute(sql).await.unwrap();
            }
        }
    }
}

pub async fn sqlite_harness() -> Option<Harness> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mesh.db");
    let store = mesh_store::open(None, dir.path()).await.unwrap();
    Some(Harness {
        store,
        raw: Raw::Sqlite(path),
        _dir: Some(dir),
    })
}

/// A PostgreSQL store in a fresh schema of `MESH_TEST_POSTGRES_URL`, or `None` with a
/// notice when the variable is unset outside CI. Under CI an unset variable fails.
pub async fn postgres_harness() -> Option<Harness> {
    let Ok(base) = std::env::var("MESH_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must set MESH_TEST_POSTGRES_URL: PostgreSQL conformance cannot be skipped"
        );
        eprintln!("SKIPPED: MESH_TEST_POSTGRES_URL is not set; PostgreSQL conformance not run");
        return None;
    };
    let schema = format!("conformance_{}", uuid::Uuid::new_v4().simple());
    let (client, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
        .await
        .expect("MESH_TEST_POSTGRES_URL must name a reachable PostgreSQL");
    tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
    let store = mesh_store::open(Some(&url), std::path::Path::new("."))
        .await
        .unwrap();
    Some(Harness {
        store,
        raw: Raw::Postgres(url),
        _dir: None,
    })
}
