#![allow(dead_code)] // each test binary uses a different part of these helpers
//! Test databases: a fresh SQLite file in a temp folder, or a fresh PostgreSQL database
//! created on the server named by SWITCHYARD_TEST_POSTGRES and dropped afterwards, so tests
//! (and concurrent runs) never see each other's rows.
//!
//! `api` is the harness of the REST API tests (`api_*.rs`), `engine` that of the engine tests
//! (`engine*.rs`).

#[macro_use]
pub mod api;
pub mod engine;

use std::path::PathBuf;
use std::time::Duration;

use rand::Rng;
use sqlx::{Connection, Executor};
use switchyard_master::{RetryPolicy, Store, StoreOptions};

pub const PG_ENV: &str = "SWITCHYARD_TEST_POSTGRES";

/// The admin URL of the test PostgreSQL server. Fails, never skips, when unset: a green run
/// must mean the PostgreSQL tests ran.
pub fn pg_admin_url() -> String {
    std::env::var(PG_ENV).unwrap_or_else(|_| {
        panic!(
            "{PG_ENV} is not set. Set it to a PostgreSQL URL whose user may CREATE DATABASE, \
             e.g. {PG_ENV}=postgres://postgres@127.0.0.1:5432/test"
        )
    })
}

/// `url` with its database name replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let (prefix, rest) = base.split_once("://").expect("URL has a scheme");
    let host = rest.split('/').next().unwrap();
    format!("{prefix}://{host}/{db}{query}")
}

pub enum TestDb {
    Sqlite {
        dir: PathBuf,
        url: String,
    },
    Postgres {
        admin: String,
        name: String,
        url: String,
    },
}

impl TestDb {
    pub async fn sqlite() -> TestDb {
        let dir = std::env::temp_dir().join(format!("switchyard-master-{}", suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.join("state.sqlite").display());
        TestDb::Sqlite { dir, url }
    }

    pub async fn postgres() -> TestDb {
        let admin = pg_admin_url();
        sqlx::any::install_default_drivers();
        let name = format!("switchyard_test_{}", suffix());
        let mut conn = sqlx::AnyConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {PG_ENV}={admin}: {e}"));
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap();
        conn.close().await.unwrap();
        let url = with_database(&admin, &name);
        TestDb::Postgres { admin, name, url }
    }

    pub fn url(&self) -> &str {
        match self {
            TestDb::Sqlite { url, .. } | TestDb::Postgres { url, .. } => url,
        }
    }

    /// A new store with its own pool: one per simulated master.
    pub async fn store(&self) -> Store {
        Store::connect_with(
            self.url(),
            StoreOptions {
                max_connections: 4,
                acquire_timeout: Duration::from_secs(30),
                retry: RetryPolicy::default(),
            },
        )
        .await
        .unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match self {
            TestDb::Sqlite { dir, .. } => {
                let _ = std::fs::remove_dir_all(dir);
            }
            TestDb::Postgres { admin, name, .. } => {
                // Drop runs inside the test's runtime, which cannot block on async work: use
                // a thread with its own. FORCE ends connections a failed test left open.
                let (admin, name) = (admin.clone(), name.clone());
                let db = name.clone();
                let dropped = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    rt.block_on(async {
                        let mut conn = sqlx::AnyConnection::connect(&admin).await?;
                        conn.execute(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)").as_str())
                            .await?;
                        conn.close().await
                    })
                })
                .join();
                if let Ok(Err(e)) = dropped {
                    eprintln!("could not drop test database {name}: {e}");
                }
            }
        }
    }
}

fn suffix() -> String {
    let n: u64 = rand::rng().random();
    format!("{}_{n:016x}", std::process::id())
}
