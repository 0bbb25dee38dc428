//! The master's state store: one SQL schema (Buildbot's core tables) on embedded SQLite or
//! PostgreSQL, with versioned migrations run at start-up and the coordination operations
//! several masters use to share one queue (in `coord`) plus the record keeping around them
//! (in `records`).
//!
//! # Why `sqlx::Any` and not a trait with two implementations
//! Every query the store runs is portable SQL: `$N` placeholders (sqlx's SQLite driver binds
//! `$N` by number, as PostgreSQL does), `INSERT .. ON CONFLICT .. DO UPDATE`, `RETURNING`
//! (SQLite >= 3.35, which sqlx bundles), 64-bit integers for ids, times and flags. So one
//! code path over `AnyPool` runs on both, and the coordination logic, the part that must be
//! right, exists once and is tested on both backends. A trait would duplicate every query
//! for no gain. The two differ only in DDL (identity columns, BLOB/BYTEA), hence one
//! migration folder per backend, chosen from the URL at start-up. The price: no
//! compile-time checked queries (`query!` cannot target `Any`), which the tests on both
//! backends make up for.
//!
//! # Concurrency model
//! Every coordination operation is one transaction whose FIRST statement updates the
//! calling master's own `masters` row (`active = 1` required). That row lock serialises the
//! operation against `expire_masters` on PostgreSQL (READ COMMITTED re-checks the row after
//! the lock is released). A master that was expired therefore cannot claim or complete
//! anything until it registers again.
//!
//! Every transaction that writes starts with `Store::begin_write`: `BEGIN IMMEDIATE` on
//! SQLite, so the write lock is taken (or waited for, up to `busy_timeout`) before the
//! first read. A deferred transaction that reads and then writes can be refused the upgrade
//! with SQLITE_BUSY at once, whatever the busy timeout; its retry then sleeps with the
//! caller's resources held (issue 15 measured workers idling behind such retries).
//!
//! # Faults
//! A transient failure (connection refused, reset or terminated, pool timeout, SQLite
//! busy, PostgreSQL deadlock or serialization failure) retries the whole transaction up to
//! `RetryPolicy::attempts` times with doubling backoff, then fails with
//! [`StoreError::Unavailable`]. Operations are written to be safe to repeat, since a commit
//! can succeed and its acknowledgement be lost: re-claiming what the master holds succeeds,
//! a repeated completion with the same result succeeds, and `add_build` returns the
//! request's unfinished build if it already made one.

mod coord;
mod links;
mod progress;
mod query;
mod records;
mod running;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor, Row};

use crate::StoreError;

pub use coord::Expiry;
pub use progress::StepStart;
pub use query::{
    BuildRequestRow, BuildRow, BuilderRow, BuildsetRow, ChangeRow, Cmp, Condition, LogChunkRow,
    LogRow, MasterRow, OrderKey, Page, PropertyRow, SchedulerRow, Selection, StepRow, Table,
    WorkerRow,
};
pub use records::{Build, BuildRequest};
pub use running::{
    ChangeId, ChangeRecord, LogId, NewBuildset, SchedulerId, StepId, WorkerLoad, WorkerSlot,
};

pub type MasterId = i64;
pub type BuilderId = i64;
pub type WorkerId = i64;
pub type BuildsetId = i64;
pub type BuildRequestId = i64;
pub type BuildId = i64;

/// Unix time in seconds, the unit of every time column (as in Buildbot).
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// Which database engine a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn from_url(url: &str) -> Result<Backend, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::UnsupportedUrl(url.to_string()))
        }
    }

    fn migrator(self) -> &'static Migrator {
        match self {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        }
    }
}

/// How hard to try before declaring the database unavailable.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Total tries per operation, the first included.
    pub attempts: u32,
    /// Wait before the second try; doubles after each failure.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        // With the default 5 s acquire timeout (during which the pool itself keeps
        // reconnecting), a dead database is reported after about 22 s: long enough to ride
        // out a PostgreSQL restart or failover, well inside a heartbeat timeout.
        RetryPolicy {
            attempts: 4,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(2),
        }
    }
}

/// Settings for [`Store::connect_with`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub max_connections: u32,
    /// Bounds how long one try waits for a pooled connection; sqlx keeps reconnecting
    /// meanwhile, so a try against a dead database lasts this long before it is retried.
    pub acquire_timeout: Duration,
    pub retry: RetryPolicy,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(5),
            retry: RetryPolicy::default(),
        }
    }
}

/// A handle on the master's database; cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    retry: RetryPolicy,
    clock: Clock,
    /// SQLite: write transactions of this store take turns here (see [`Store::begin_write`]).
    write_gate: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// The default store: SQLite in `<data_dir>/state.sqlite`, folder and file created as
    /// needed.
    pub async fn open_data_dir(data_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.display().to_string(),
            source,
        })?;
        let url = format!(
            "sqlite://{}?mode=rwc",
            data_dir.join("state.sqlite").display()
        );
        Store::connect(&url).await
    }

    /// Connects to `sqlite:...` or `postgres://...` and brings the schema up to date.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        Store::connect_with(url, StoreOptions::default()).await
    }

    pub async fn connect_with(url: &str, options: StoreOptions) -> Result<Store, StoreError> {
        let backend = Backend::from_url(url)?;
        sqlx::any::install_default_drivers();
        let retry = options.retry;
        let pool = retrying(backend, retry, "connect", || async {
            let pool = AnyPoolOptions::new()
                .max_connections(options.max_connections)
                .acquire_timeout(options.acquire_timeout)
                .after_connect(move |conn, _meta| {
                    Box::pin(async move {
                        if backend == Backend::Sqlite {
                            // WAL lets readers run beside the one writer; the busy timeout
                            // makes writers queue instead of failing at once when several
                            // pools (masters) share the file; sqlx already turns
                            // foreign keys on, but say so rather than rely on it.
                            conn.execute("PRAGMA journal_mode = WAL").await?;
                            // In WAL mode NORMAL syncs at checkpoints, not at every
                            // commit: a commit survives the process being killed, but
                            // an OS crash or power loss may roll back the last ones
                            // (never corrupt). FULL's fsync per commit capped a
                            // master at about 100 builds/s (18 commits a build).
                            conn.execute("PRAGMA synchronous = NORMAL").await?;
                            conn.execute("PRAGMA busy_timeout = 10000").await?;
                            conn.execute("PRAGMA foreign_keys = ON").await?;
                        }
                        Ok(())
                    })
                })
                .connect(url)
                .await?;
            Ok(pool)
        })
        .await?;
        let store = Store {
            pool,
            backend,
            retry,
            clock: Arc::new(unix_now),
            write_gate: Arc::default(),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Replaces the clock (tests use this to make a master look silent without sleeping).
    pub fn with_clock(mut self, clock: Clock) -> Store {
        self.clock = clock;
        self
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Applies pending migrations. Idempotent; on PostgreSQL sqlx holds an advisory lock
    /// while migrating, so masters starting together do not race.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.backend.migrator().run(&self.pool).await?;
        Ok(())
    }

    /// The highest applied migration version.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        self.retrying("schema_version", || async {
            let row: AnyRow =
                sqlx::query("SELECT MAX(version) AS v FROM _sqlx_migrations WHERE success = TRUE")
                    .fetch_one(&self.pool)
                    .await?;
            Ok(row.try_get::<Option<i64>, _>("v")?.unwrap_or(0))
        })
        .await
    }

    /// Closes the pool (waits for connections to be returned).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    fn now(&self) -> i64 {
        (self.clock)()
    }

    /// Starts a transaction that will write. On SQLite it is `BEGIN IMMEDIATE`: the write
    /// lock is taken up front (waiting out `busy_timeout` if another connection holds it),
    /// so a transaction that reads before it writes is never refused the upgrade of its read
    /// lock (SQLITE_BUSY, which no busy timeout covers). PostgreSQL locks rows as it goes.
    ///
    /// On SQLite the store's own write transactions also queue on an async mutex first: the
    /// database has one writer anyway, and a connection waiting in SQLite's busy handler
    /// sleeps in steps of up to 100 ms however soon the lock is free, which put 100-200 ms
    /// into the queue's latency tail under load (issue 15). Other processes sharing the
    /// file still meet `busy_timeout`.
    async fn begin_write(&self) -> Result<WriteTx, sqlx::Error> {
        Ok(match self.backend {
            Backend::Sqlite => {
                let gate = self.write_gate.clone().lock_owned().await;
                WriteTx {
                    tx: self.pool.begin_with("BEGIN IMMEDIATE").await?,
                    _gate: Some(gate),
                }
            }
            Backend::Postgres => WriteTx {
                tx: self.pool.begin().await?,
                _gate: None,
            },
        })
    }

    async fn retrying<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        retrying(self.backend, self.retry, op, f).await
    }
}

/// A write transaction from [`Store::begin_write`]: statements run on `&mut *tx` (the
/// connection), as on a `sqlx::Transaction`; dropped without `commit`, it rolls back.
struct WriteTx {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    /// Held until the transaction ends (SQLite only).
    _gate: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl WriteTx {
    async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

impl std::ops::Deref for WriteTx {
    type Target = sqlx::AnyConnection;
    fn deref(&self) -> &sqlx::AnyConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.tx
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Runs `f` until it succeeds, fails for good, or the retry budget is spent.
async fn retrying<T, F, Fut>(
    backend: Backend,
    policy: RetryPolicy,
    op: &'static str,
    mut f: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut backoff = policy.initial_backoff;
    let mut attempt = 1;
    loop {
        match f().await {
            Err(StoreError::Db(e)) if is_transient(backend, &e) => {
                if attempt >= policy.attempts.max(1) {
                    return Err(StoreError::Unavailable {
                        op,
                        attempts: attempt,
                        source: e,
                    });
                }
                tracing::warn!(op, attempt, error = %e, "database operation failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(policy.max_backoff);
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Whether an error is worth retrying the whole transaction for.
fn is_transient(backend: Backend, e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let Some(code) = db.code() else { return false };
            match backend {
                // Class 08: connection exceptions; 57P01-03: server shutting down or
                // starting; 40001/40P01: serialization failure, deadlock (the victim retries).
                Backend::Postgres => {
                    code.starts_with("08")
                        || matches!(&*code, "57P01" | "57P02" | "57P03" | "40001" | "40P01")
                }
                // SQLITE_BUSY (5) and SQLITE_LOCKED (6), extended codes included.
                Backend::Sqlite => code
                    .parse::<i32>()
                    .map(|c| matches!(c & 0xff, 5 | 6))
                    .unwrap_or(false),
            }
        }
        _ => false,
    }
}

/// Whether an error is a unique-key violation (the claim protocol's "someone else won").
fn is_unique_violation(e: &StoreError) -> bool {
    matches!(e, StoreError::Db(sqlx::Error::Database(db))
        if db.kind() == sqlx::error::ErrorKind::UniqueViolation)
}

/// Whether an error is a foreign-key violation (a claim on a request that does not exist).
fn is_foreign_key_violation(e: &StoreError) -> bool {
    matches!(e, StoreError::Db(sqlx::Error::Database(db))
        if db.kind() == sqlx::error::ErrorKind::ForeignKeyViolation)
}

/// `$start, $start+1, ...` (`n` placeholders) for an `IN (...)` list or a VALUES row.
fn placeholders(start: usize, n: usize) -> String {
    (start..start + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}
