//! The integrated build master: workers, builders, schedulers and claimed build requests.
//!
//! Built so far: the master's state store ([`Store`]) and the database claim protocol that
//! lets several masters share one queue of build requests (see `store` for the design), and
//! the REST API and change hook ([`api`]) that read the store and act through
//! [`control::Control`]. Workers, schedulers and the build runner (the engine implementing
//! `Control`) come next (issue 6) and sit on top of it.

pub mod api;
pub mod config;
pub mod control;
mod error;
mod results;
pub mod store;

pub use error::StoreError;
pub use results::Results;
pub use store::{
    Backend, Build, BuildId, BuildRequest, BuildRequestId, BuilderId, BuildsetId, Clock, Expiry,
    MasterId, RetryPolicy, Store, StoreOptions, WorkerId,
};
