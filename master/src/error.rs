//! The store's typed errors: protocol outcomes a caller acts on (lost a claim race, was
//! expired) are kept apart from infrastructure failures (database unreachable after retries).

/// What a [`crate::Store`] operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another master holds (or already completed) at least one of the requests; nothing was
    /// claimed. The normal outcome of losing a race: not a fault.
    #[error("build request already claimed by another master")]
    AlreadyClaimed,
    /// A request id that does not exist; nothing was claimed.
    #[error("unknown build request")]
    UnknownBuildRequest,
    /// The caller tried to complete or build requests it does not hold a claim on (it may
    /// have been expired and its claims released).
    #[error("build request not claimed by master {masterid}")]
    NotClaimed { masterid: i64 },
    /// The master is marked inactive (another master expired it, or it was never
    /// registered): it holds no claims and must register again before claiming.
    #[error("master {masterid} is not active (expired or never registered); register again")]
    MasterInactive { masterid: i64 },
    /// The database URL names a backend the store does not support.
    #[error("unsupported database URL {0:?}: expected sqlite:... or postgres://...")]
    UnsupportedUrl(String),
    /// Creating the data folder for the embedded SQLite database failed.
    #[error("cannot create data folder {path}: {source}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A schema migration failed at start-up.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database stayed unreachable (connection lost, refused, busy) through every retry.
    #[error("database unavailable: {op} failed {attempts} times, last error: {source}")]
    Unavailable {
        op: &'static str,
        attempts: u32,
        #[source]
        source: sqlx::Error,
    },
    /// Any other database error (a bug or a schema mismatch, not worth retrying).
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}
