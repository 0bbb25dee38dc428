//! [`Control`] for a running master: what the REST API's JSON-RPC methods and the change
//! hook do. Anything that changes the queue is written to the database first, then
//! announced on the bus, where every master (this one included) reacts.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value as Json};
use switchyard_router::service::Answer;
use switchyard_router::wire::{Dict, Payload, Value};

use super::{stop_local_build, unix_now, Inner};
use crate::auth::worker_procedure;
use crate::config::{SchedulerConfig, SchedulerKind};
use crate::control::{
    Buildset, ChangeOutcome, Control, ControlError, ForceRequest, MasterAction, NewChange,
    WorkerAction,
};
use crate::store::{BuildId, BuildRequestId, MasterId, NewBuildset, WorkerId};

/// The running master's control surface.
pub struct MasterControl {
    inner: Arc<Inner>,
}

impl MasterControl {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        MasterControl { inner }
    }

    async fn queue(&self, bs: NewBuildset) -> Result<Buildset, ControlError> {
        let (bsid, requests) = self.inner.store.queue_buildset(&bs).await?;
        self.inner
            .publish_buildset_new(bsid, &bs.reason, &requests)
            .await;
        self.inner.wake.notify_one();
        Ok(Buildset {
            buildset: bsid,
            requests,
        })
    }
}

/// A scheduler's configured properties, source "Scheduler".
pub(crate) fn scheduler_properties(s: &SchedulerConfig) -> BTreeMap<String, (Json, String)> {
    s.properties
        .iter()
        .map(|(k, v)| (k.clone(), (v.clone(), "Scheduler".to_owned())))
        .collect()
}

#[async_trait::async_trait]
impl Control for MasterControl {
    async fn set_scheduler_enabled(
        &self,
        scheduler: i64,
        enabled: bool,
    ) -> Result<(), ControlError> {
        let inner = &self.inner;
        let name = inner
            .scheduler_ids
            .iter()
            .find(|(_, id)| **id == scheduler)
            .map(|(name, _)| name.clone());
        let found = inner
            .store
            .set_scheduler_enabled(scheduler, enabled)
            .await?;
        let (Some(name), true) = (name, found) else {
            return Err(ControlError::NotFound(format!("no scheduler {scheduler}")));
        };
        tracing::info!(scheduler = %name, enabled, "scheduler enabled state changed");
        // The whole entity, as the data API shows it (Buildbot's UI replaces its copy).
        let rows = inner.store.list_schedulers().await?;
        let master = rows
            .iter()
            .find(|r| r.id == scheduler)
            .and_then(|r| r.master.as_ref())
            .map(|m| {
                json!({"masterid": m.id, "name": m.name, "active": m.active,
                    "last_active": m.last_active, "state": m.state})
            });
        inner.bus.publish(
            &["schedulers", &scheduler.to_string(), "updated"],
            &json!({"schedulerid": scheduler, "name": name, "enabled": enabled,
                "master": master}),
        );
        Ok(())
    }

    async fn force(&self, request: ForceRequest) -> Result<Buildset, ControlError> {
        let inner = &self.inner;
        let s = inner.config.scheduler(&request.scheduler).ok_or_else(|| {
            ControlError::NotFound(format!("no scheduler named {:?}", request.scheduler))
        })?;
        if s.kind != SchedulerKind::Force {
            return Err(ControlError::Invalid(format!(
                "scheduler {:?} is not a force scheduler",
                s.name
            )));
        }
        if !inner.scheduler_is_enabled(&s.name).await? {
            return Err(ControlError::Invalid(format!(
                "scheduler {:?} is disabled",
                s.name
            )));
        }
        let names = match &request.builder_names {
            Some(n) if !n.is_empty() => n.clone(),
            _ => s.builders.clone(),
        };
        let mut builders = Vec::new();
        for n in &names {
            if !s.builders.contains(n) {
                return Err(ControlError::Invalid(format!(
                    "builder {n:?} is not one of force scheduler {:?}'s builders {:?}",
                    s.name, s.builders
                )));
            }
            builders.push(inner.all_builder_ids[n]);
        }
        let mut properties = scheduler_properties(s);
        for (k, v) in &request.properties {
            properties.insert(k.clone(), (v.clone(), "Force Build Form".into()));
        }
        properties.insert("scheduler".into(), (json!(s.name), "Scheduler".into()));
        let owner = request.owner.clone().unwrap_or_else(|| "anonymous".into());
        properties.insert("owner".into(), (json!(owner), "Force Build Form".into()));
        let reason = request
            .reason
            .clone()
            .filter(|r| !r.is_empty())
            .or_else(|| s.reason.clone())
            .unwrap_or_else(|| format!("A build was forced by '{owner}'"));
        properties.insert("reason".into(), (json!(reason), "Force Build Form".into()));
        self.queue(NewBuildset {
            reason,
            scheduler: Some(s.name.clone()),
            changeid: None,
            builders,
            priority: 0,
            properties,
        })
        .await
    }

    async fn stop_build(&self, build: BuildId, reason: String) -> Result<(), ControlError> {
        let inner = &self.inner;
        let b = inner
            .store
            .get_build(build)
            .await?
            .ok_or_else(|| ControlError::NotFound(format!("no build {build}")))?;
        if b.complete_at.is_some() {
            return Err(ControlError::Conflict(format!(
                "build {build} already finished"
            )));
        }
        if !stop_local_build(inner, build, reason.clone()) {
            // Another master runs it: it listens for this on the bus.
            inner.bus.publish(
                &["control", "builds", &build.to_string(), "stop"],
                &json!({"reason": reason}),
            );
        }
        Ok(())
    }

    async fn rebuild(&self, build: BuildId, reason: String) -> Result<Buildset, ControlError> {
        let inner = &self.inner;
        let b = inner
            .store
            .get_build(build)
            .await?
            .ok_or_else(|| ControlError::NotFound(format!("no build {build}")))?;
        let request = inner
            .store
            .get_buildrequest(b.buildrequestid)
            .await?
            .ok_or_else(|| ControlError::NotFound(format!("no request for build {build}")))?;
        if !inner.all_builder_ids.values().any(|id| *id == b.builderid) {
            return Err(ControlError::Invalid(format!(
                "build {build}'s builder is not configured on this master"
            )));
        }
        let mut properties = inner.store.buildset_properties(request.buildsetid).await?;
        properties.insert("rebuild_of".into(), (json!(build), "Rebuild".into()));
        let reason = if reason.is_empty() {
            format!("rebuild of build {build}")
        } else {
            reason
        };
        self.queue(NewBuildset {
            reason,
            scheduler: Some("rebuild".into()),
            changeid: None,
            builders: vec![b.builderid],
            priority: request.priority,
            properties,
        })
        .await
    }

    async fn cancel_buildrequest(
        &self,
        brid: BuildRequestId,
        reason: String,
    ) -> Result<(), ControlError> {
        let inner = &self.inner;
        let r = inner
            .store
            .get_buildrequest(brid)
            .await?
            .ok_or_else(|| ControlError::NotFound(format!("no build request {brid}")))?;
        if r.complete {
            return Err(ControlError::Conflict(format!(
                "build request {brid} is already complete"
            )));
        }
        if r.claimed_by_masterid.is_some()
            || !inner.store.cancel_buildrequest(inner.master, brid).await?
        {
            return Err(ControlError::Conflict(format!(
                "build request {brid} has started: stop its build instead"
            )));
        }
        tracing::info!(brid, %reason, "build request cancelled");
        inner.publish_request(brid, "cancel").await;
        inner.publish_request(brid, "complete").await;
        inner.maybe_complete_buildset(r.buildsetid).await;
        Ok(())
    }

    async fn worker_action(
        &self,
        worker: WorkerId,
        action: WorkerAction,
        reason: String,
    ) -> Result<(), ControlError> {
        let inner = &self.inner;
        let name = inner
            .store
            .worker_name(worker)
            .await?
            .ok_or_else(|| ControlError::NotFound(format!("no worker {worker}")))?;
        let act = match action {
            WorkerAction::Pause => "pause",
            WorkerAction::Unpause => "unpause",
            WorkerAction::Stop => "stop",
            WorkerAction::Kill => "kill",
        };
        match action {
            WorkerAction::Pause | WorkerAction::Unpause => {
                inner
                    .store
                    .set_worker_paused(worker, action == WorkerAction::Pause)
                    .await?;
                inner
                    .bus
                    .worker(worker, &name, inner.master, "state_updated");
                if action == WorkerAction::Unpause {
                    inner.wake.notify_one();
                }
            }
            WorkerAction::Stop | WorkerAction::Kill => {
                let mut kwargs = Dict::new();
                kwargs.insert("graceful".into(), Value::Bool(action == WorkerAction::Stop));
                kwargs.insert("reason".into(), Value::from(reason.as_str()));
                let answer = tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    inner.client.call(
                        &worker_procedure(&name, "shutdown"),
                        Payload::new(Vec::new(), kwargs),
                    ),
                )
                .await;
                match answer {
                    Ok(Answer::Result(_)) => {}
                    Ok(Answer::Error(uri, _)) if uri == "wamp.error.no_such_procedure" => {
                        return Err(ControlError::Conflict(format!(
                            "worker {name:?} is not connected"
                        )))
                    }
                    Ok(Answer::Error(uri, p)) => {
                        return Err(ControlError::Conflict(format!(
                            "worker {name:?} answered {uri} {:?}",
                            p.args()
                        )))
                    }
                    Ok(_) | Err(_) => {
                        return Err(ControlError::Conflict(format!(
                            "worker {name:?} did not answer"
                        )))
                    }
                }
            }
        }
        inner.bus.publish(
            &["control", "worker", &worker.to_string(), act],
            &json!({"reason": reason}),
        );
        Ok(())
    }

    async fn add_change(&self, c: NewChange) -> Result<ChangeOutcome, ControlError> {
        let inner = &self.inner;
        if c.author.trim().is_empty() {
            return Err(ControlError::Invalid("a change needs an author".into()));
        }
        let changeid = inner.store.add_change(&c).await?;
        inner.bus.publish(
            &["changes", &changeid.to_string(), "new"],
            &json!({"changeid": changeid, "author": c.author, "branch": c.branch,
                "revision": c.revision, "repository": c.repository, "project": c.project,
                "comments": c.comments, "when_timestamp": c.when_timestamp.unwrap_or_else(unix_now)}),
        );
        let mut buildsets = Vec::new();
        for s in &inner.config.schedulers {
            if s.kind != SchedulerKind::Change || !inner.scheduler_is_enabled(&s.name).await? {
                continue;
            }
            if s.branch
                .as_ref()
                .is_some_and(|b| Some(b) != c.branch.as_ref())
            {
                continue;
            }
            if s.project.as_ref().is_some_and(|p| *p != c.project) {
                continue;
            }
            let mut properties = scheduler_properties(s);
            for (k, v) in &c.properties {
                properties.insert(k.clone(), (v.clone(), "Change".into()));
            }
            for (k, v) in [
                ("branch", c.branch.clone()),
                ("revision", c.revision.clone()),
                ("repository", Some(c.repository.clone())),
                ("project", Some(c.project.clone())),
                ("codebase", Some(c.codebase.clone())),
            ] {
                properties.insert(k.into(), (json!(v), "Build".into()));
            }
            properties.insert("scheduler".into(), (json!(s.name), "Scheduler".into()));
            let bs = self
                .queue(NewBuildset {
                    reason: format!(
                        "The change scheduler named '{}' triggered this build",
                        s.name
                    ),
                    scheduler: Some(s.name.clone()),
                    changeid: Some(changeid),
                    builders: s
                        .builders
                        .iter()
                        .map(|b| inner.all_builder_ids[b])
                        .collect(),
                    priority: 0,
                    properties,
                })
                .await?;
            buildsets.push(bs);
        }
        tracing::info!(changeid, branch = ?c.branch, buildsets = buildsets.len(), "change received");
        Ok(ChangeOutcome {
            changeid,
            buildsets,
        })
    }

    async fn master_action(
        &self,
        master: MasterId,
        action: MasterAction,
    ) -> Result<Json, ControlError> {
        let inner = &self.inner;
        if master != inner.master {
            // Another master: it hears this on the bus (masters share one through the mesh).
            match inner.store.master_active(master).await? {
                None => return Err(ControlError::NotFound(format!("no master {master}"))),
                Some(false) => {
                    return Err(ControlError::Conflict(format!(
                        "master {master} is not running"
                    )))
                }
                Some(true) => {}
            }
            let (event, graceful) = match action {
                MasterAction::Stop { graceful } => ("stop", graceful),
                MasterAction::CancelStop => ("cancel_stop", true),
            };
            inner.bus.publish(
                &["control", "masters", &master.to_string(), event],
                &json!({"graceful": graceful}),
            );
            return Ok(json!({"masterid": master, "requested": event, "graceful": graceful}));
        }
        match action {
            MasterAction::Stop { graceful: true } => {
                if !super::begin_graceful_stop(inner) {
                    return Err(ControlError::Conflict("this master has stopped".into()));
                }
            }
            MasterAction::Stop { graceful: false } => {
                let inner = inner.clone();
                tokio::spawn(async move { super::stop_now(&inner).await });
            }
            MasterAction::CancelStop => {
                if !super::cancel_graceful_stop(inner) {
                    return Err(ControlError::Conflict(
                        "no graceful stop is pending on this master".into(),
                    ));
                }
            }
        }
        let state = match action {
            MasterAction::Stop { graceful: true } => "draining",
            MasterAction::Stop { graceful: false } => "stopping",
            MasterAction::CancelStop => "running",
        };
        Ok(json!({"masterid": master, "name": inner.name, "state": state}))
    }

    fn local_master(&self) -> Option<MasterId> {
        Some(self.inner.master)
    }
}
