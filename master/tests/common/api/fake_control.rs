//! The fake engine: a `Control` that records every call and answers with fixed ids, or with
//! the failure set for the next call.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use switchyard_master::control::{
    Buildset, ChangeOutcome, Control, ControlError, ForceRequest, MasterAction, NewChange,
    WorkerAction,
};

use super::seed::Seed;

#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Force {
        scheduler: String,
        builder_names: Option<Vec<String>>,
        reason: Option<String>,
        owner: Option<String>,
        properties: BTreeMap<String, Value>,
    },
    StopBuild(i64, String),
    Rebuild(i64, String),
    Cancel(i64, String),
    Worker(i64, WorkerAction, String),
    Change(String),
    Master(i64, MasterAction),
    SchedulerEnabled(i64, bool),
}

pub type Failure = Box<dyn FnOnce() -> ControlError + Send>;

/// Records every call; answers with fixed ids, or with the failure set for the next call.
pub struct FakeControl {
    pub calls: Mutex<Vec<Call>>,
    pub changes: Mutex<Vec<NewChange>>,
    pub fail_next: Mutex<Option<Failure>>,
    /// Builder ids by name, for the buildsets it pretends to make.
    builders: BTreeMap<String, i64>,
}

impl FakeControl {
    pub fn new(seed: &Seed) -> Arc<FakeControl> {
        Arc::new(FakeControl {
            calls: Mutex::new(Vec::new()),
            changes: Mutex::new(Vec::new()),
            fail_next: Mutex::new(None),
            builders: [
                ("hello".to_owned(), seed.hello),
                ("linux".to_owned(), seed.linux),
            ]
            .into_iter()
            .collect(),
        })
    }

    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }

    pub fn fail_next(&self, f: impl FnOnce() -> ControlError + Send + 'static) {
        *self.fail_next.lock().unwrap() = Some(Box::new(f));
    }

    fn record(&self, call: Call) -> Result<(), ControlError> {
        self.calls.lock().unwrap().push(call);
        match self.fail_next.lock().unwrap().take() {
            Some(f) => Err(f()),
            None => Ok(()),
        }
    }

    fn buildset(&self, names: &[String]) -> Buildset {
        Buildset {
            buildset: 900,
            requests: names
                .iter()
                .enumerate()
                .map(|(i, n)| (self.builders[n], 901 + i as i64))
                .collect(),
        }
    }
}

#[async_trait::async_trait]
impl Control for FakeControl {
    async fn force(&self, r: ForceRequest) -> Result<Buildset, ControlError> {
        let names = r
            .builder_names
            .clone()
            .unwrap_or_else(|| vec!["hello".into(), "linux".into()]);
        self.record(Call::Force {
            scheduler: r.scheduler,
            builder_names: r.builder_names,
            reason: r.reason,
            owner: r.owner,
            properties: r.properties,
        })?;
        Ok(self.buildset(&names))
    }

    async fn stop_build(&self, build: i64, reason: String) -> Result<(), ControlError> {
        self.record(Call::StopBuild(build, reason))
    }

    async fn rebuild(&self, build: i64, reason: String) -> Result<Buildset, ControlError> {
        self.record(Call::Rebuild(build, reason))?;
        Ok(self.buildset(&["hello".to_owned()]))
    }

    async fn cancel_buildrequest(&self, brid: i64, reason: String) -> Result<(), ControlError> {
        self.record(Call::Cancel(brid, reason))
    }

    async fn worker_action(
        &self,
        worker: i64,
        action: WorkerAction,
        reason: String,
    ) -> Result<(), ControlError> {
        self.record(Call::Worker(worker, action, reason))
    }

    async fn add_change(&self, change: NewChange) -> Result<ChangeOutcome, ControlError> {
        self.record(Call::Change(change.author.clone()))?;
        self.changes.lock().unwrap().push(change);
        Ok(ChangeOutcome {
            changeid: 77,
            buildsets: vec![Buildset {
                buildset: 78,
                requests: vec![(self.builders["linux"], 79)],
            }],
        })
    }

    async fn master_action(
        &self,
        master: i64,
        action: MasterAction,
    ) -> Result<Value, ControlError> {
        self.record(Call::Master(master, action))?;
        Ok(json!({ "masterid": master, "state": "draining" }))
    }

    async fn set_scheduler_enabled(
        &self,
        scheduler: i64,
        enabled: bool,
    ) -> Result<(), ControlError> {
        self.record(Call::SchedulerEnabled(scheduler, enabled))
    }
}
