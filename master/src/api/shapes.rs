//! The JSON shapes of the data API's entities: store rows under Buildbot's field names
//! (`buildbot/data/*.py`'s `EntityType`s), shared by the read endpoints, the compatibility
//! endpoints and the bus relays that send whole entities.

use serde_json::{json, Value};

use super::ApiState;
use crate::store::{
    BuildRequestRow, BuildRow, BuilderRow, BuildsetRow, ChangeRow, LogRow, MasterRow, SchedulerRow,
    StepRow, WorkerRow,
};

pub(super) fn master_json(m: &MasterRow) -> Value {
    json!({
        "masterid": m.id,
        "name": m.name,
        "active": m.active,
        "last_active": m.last_active,
        "state": m.state,
    })
}

pub(super) fn builder_json(b: &BuilderRow) -> Value {
    json!({
        "builderid": b.id,
        "name": b.name,
        "description": b.description,
        "masterids": b.masterids,
        "tags": [],
        // Buildbot's projects and description formats are not configurable here.
        "projectid": null,
        "description_format": null,
        "description_html": null,
    })
}

pub(super) fn buildset_json(s: &BuildsetRow) -> Value {
    json!({
        "bsid": s.id,
        "external_idstring": s.external_idstring,
        "reason": s.reason,
        "submitted_at": s.submitted_at,
        "complete": s.complete,
        "complete_at": s.complete_at,
        "results": s.results,
        "parent_buildid": s.parent_buildid,
        "parent_relationship": s.parent_relationship,
        // Filled from the buildset property `rebuild_of` (`compat::fill_rebuilt`).
        "rebuilt_buildid": null,
        // switchyard keeps no source stamps of its own (a change's is derived from it).
        "sourcestamps": [],
    })
}

pub(super) fn buildrequest_json(r: &BuildRequestRow) -> Value {
    json!({
        "buildrequestid": r.id,
        "buildsetid": r.buildsetid,
        "builderid": r.builderid,
        "priority": r.priority,
        "claimed": r.claimed_by_masterid.is_some(),
        "claimed_at": r.claimed_at,
        "claimed_by_masterid": r.claimed_by_masterid,
        "complete": r.complete,
        "results": r.results,
        "submitted_at": r.submitted_at,
        "complete_at": r.complete_at,
        "waited_for": r.waited_for,
        // As Buildbot: only filled when asked for (not supported here).
        "properties": null,
    })
}

pub(super) fn build_json(b: &BuildRow) -> Value {
    json!({
        "buildid": b.id,
        "number": b.number,
        "builderid": b.builderid,
        "buildrequestid": b.buildrequestid,
        "workerid": b.workerid,
        "masterid": b.masterid,
        "started_at": b.started_at,
        "complete": b.complete_at.is_some(),
        "complete_at": b.complete_at,
        "locks_duration_s": b.locks_duration_s,
        "state_string": b.state_string,
        "results": b.results,
    })
}

pub(super) fn step_json(s: &StepRow) -> Value {
    json!({
        "stepid": s.id,
        "number": s.number,
        "name": s.name,
        "buildid": s.buildid,
        "started_at": s.started_at,
        "complete": s.complete_at.is_some(),
        "complete_at": s.complete_at,
        "state_string": s.state_string,
        "results": s.results,
        "urls": s.urls,
        "hidden": s.hidden,
        // switchyard has no locks: a step holds what it needs from its start.
        "locks_acquired_at": s.started_at,
    })
}

pub(super) fn log_json(l: &LogRow) -> Value {
    json!({
        "logid": l.id,
        "name": l.name,
        "slug": l.slug,
        "stepid": l.stepid,
        "complete": l.complete,
        "num_lines": l.num_lines,
        "type": l.kind,
    })
}

pub(super) fn change_json(c: &ChangeRow) -> Value {
    json!({
        "changeid": c.id,
        "author": c.author,
        // Buildbot declares a string: without a committer, the author committed.
        "committer": c.committer.as_ref().unwrap_or(&c.author),
        "comments": c.comments,
        "branch": c.branch,
        "revision": c.revision,
        "revlink": c.revlink,
        "when_timestamp": c.when_timestamp,
        "category": c.category,
        "repository": c.repository,
        "codebase": c.codebase,
        "project": c.project,
        "properties": c.properties,
        "files": c.files,
        "parent_changeids": [],
        "sourcestamp": {
            "ssid": c.id,
            "branch": c.branch,
            "revision": c.revision,
            "project": c.project,
            "repository": c.repository,
            "codebase": c.codebase,
            "created_at": c.when_timestamp,
            "patch": null,
        },
    })
}

/// A worker; `configured_on` pairs each builder configured to use it with the masters
/// serving that builder.
pub(super) fn worker_json(w: &WorkerRow, state: &ApiState, builders: &[BuilderRow]) -> Value {
    let configured_on: Vec<Value> = state
        .config
        .builders
        .iter()
        .filter(|b| b.workers.contains(&w.name))
        .filter_map(|b| builders.iter().find(|row| row.name == b.name))
        .flat_map(|row| {
            row.masterids
                .iter()
                .map(move |m| json!({ "builderid": row.id, "masterid": m }))
        })
        .collect();
    let connected_to: Vec<Value> = w
        .connected_to
        .iter()
        .map(|m| json!({ "masterid": m }))
        .collect();
    json!({
        "workerid": w.id,
        "name": w.name,
        "paused": w.paused,
        "pause_reason": null,
        "graceful": w.graceful,
        "connected_to": connected_to,
        "configured_on": configured_on,
        "workerinfo": w.info,
    })
}

pub(super) fn scheduler_json(s: &SchedulerRow) -> Value {
    json!({
        "schedulerid": s.id,
        "name": s.name,
        "enabled": s.enabled,
        "master": s.master.as_ref().map(master_json),
    })
}
