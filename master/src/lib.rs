//! The integrated build master: workers, builders, schedulers and claimed build requests.
//!
//! Built so far: the master's state store ([`Store`]) and the database claim protocol that
//! lets several masters share one queue of build requests (see `store` for the design), and
//! the build worker ([`worker`]: `switchyard worker`), which runs commands for masters over
//! WAMP. Schedulers, the build runner and the REST API come next (issue 6).

pub mod auth;
pub mod config;
pub mod control;
pub mod engine;
mod error;
mod results;
pub mod store;
pub mod worker;

pub use error::StoreError;
pub use results::Results;
pub use store::{
    Backend, Build, BuildId, BuildRequest, BuildRequestId, BuilderId, BuildsetId, Clock, Expiry,
    MasterId, RetryPolicy, Store, StoreOptions, WorkerId,
};
