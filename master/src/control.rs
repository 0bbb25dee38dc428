//! What the outside may ask of a running master: the REST API's JSON-RPC control methods and
//! the change hook go through [`Control`], which the engine implements. Keeping the HTTP layer
//! behind this trait lets the API be tested without a master and the engine without HTTP.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::store::{BuildId, BuildRequestId, BuilderId, BuildsetId, MasterId, WorkerId};
use crate::StoreError;

/// Why a control request failed; the API maps each kind onto an HTTP status and a JSON-RPC
/// error.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The named thing does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed or names something invalid for it (400).
    #[error("{0}")]
    Invalid(String),
    /// The thing is in a state that forbids the action, e.g. a finished build (409).
    #[error("{0}")]
    Conflict(String),
    /// This master does not do that (yet) (JSON-RPC -32601).
    #[error("{0}")]
    NotImplemented(String),
    /// The database failed (503 when unavailable, else 500).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `force` on a force scheduler.
#[derive(Debug, Clone, Default)]
pub struct ForceRequest {
    pub scheduler: String,
    /// Builders to force (must belong to the scheduler); `None` means all of them.
    pub builder_names: Option<Vec<String>>,
    pub reason: Option<String>,
    /// Who asked (the API user), recorded as the `owner` property.
    pub owner: Option<String>,
    /// Extra build properties (for instance `branch`), source `Force Build Form`.
    pub properties: BTreeMap<String, Value>,
}

/// A buildset made by force, rebuild, a change or a periodic scheduler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buildset {
    pub buildset: BuildsetId,
    /// `(builderid, brid)` per builder.
    pub requests: Vec<(BuilderId, BuildRequestId)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerAction {
    /// Finish running builds, then disconnect (Buildbot's graceful worker stop).
    Stop,
    /// Kill running builds and disconnect.
    Kill,
    /// Take no new builds.
    Pause,
    Unpause,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MasterAction {
    /// Stop the master: gracefully (claim nothing new, let running builds finish, move the
    /// workers, then exit) or at once (running builds end as RETRY).
    Stop { graceful: bool },
    /// Cancel a pending graceful stop.
    CancelStop,
}

/// A change as the base change hook receives it (Buildbot's `base` dialect): the record the
/// store keeps.
pub use crate::store::ChangeRecord as NewChange;

/// What a change led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeOutcome {
    pub changeid: i64,
    /// Buildsets the change schedulers made for it.
    pub buildsets: Vec<Buildset>,
}

/// The master's control surface.
#[async_trait::async_trait]
pub trait Control: Send + Sync + 'static {
    async fn force(&self, request: ForceRequest) -> Result<Buildset, ControlError>;
    /// Stops a running build (wherever it runs: the owning master hears it on the bus); it
    /// ends CANCELLED.
    async fn stop_build(&self, build: BuildId, reason: String) -> Result<(), ControlError>;
    /// Rebuilds a finished build: a new buildset for the same builder and properties.
    async fn rebuild(&self, build: BuildId, reason: String) -> Result<Buildset, ControlError>;
    /// Cancels a request that has not started: it completes as CANCELLED.
    async fn cancel_buildrequest(
        &self,
        brid: BuildRequestId,
        reason: String,
    ) -> Result<(), ControlError>;
    async fn worker_action(
        &self,
        worker: WorkerId,
        action: WorkerAction,
        reason: String,
    ) -> Result<(), ControlError>;
    async fn add_change(&self, change: NewChange) -> Result<ChangeOutcome, ControlError>;
    /// Master lifecycle (graceful shutdown); returns the master's new state as JSON.
    async fn master_action(
        &self,
        master: MasterId,
        action: MasterAction,
    ) -> Result<Value, ControlError>;

    /// Enables or disables a scheduler (Buildbot's `enable`): a disabled periodic or change
    /// scheduler queues nothing, a disabled force scheduler refuses to force.
    async fn set_scheduler_enabled(
        &self,
        scheduler: i64,
        enabled: bool,
    ) -> Result<(), ControlError>;

    /// The master this control surface belongs to (`/api/v2/masters/self`).
    fn local_master(&self) -> Option<MasterId> {
        None
    }
}
