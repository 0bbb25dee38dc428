//! The integrated build master: workers, builders, schedulers and claimed build requests.
//!
//! The master's state store ([`Store`]) and the database claim protocol that
//! lets several masters share one queue of build requests (see `store` for the design), the
//! running master ([`engine`]), and the REST API and change hook ([`api`]) that read the store
//! and act through [`control::Control`], and the web UI with its live event stream ([`ui`]).
//!
//! The build worker (`switchyard worker`) is the crate [`switchyard_worker`]: the master
//! depends on its contract (the role, the procedure names, the `run` request) and never the
//! other way round.

pub mod api;
pub mod auth;
pub mod bbworker;
pub mod config;
pub mod control;
pub mod engine;
mod error;
mod results;
pub mod store;
pub mod ui;
pub mod www;

pub use error::StoreError;
pub use results::Results;
pub use store::{
    Backend, Build, BuildId, BuildRequest, BuildRequestId, BuilderId, BuildsetId, Clock, Expiry,
    MasterId, RetryPolicy, Store, StoreOptions, WorkerId,
};
