//! Publishing the master's state changes on the WAMP bus under Buildbot's routing keys
//! (`org.buildbot.mq.<key joined with dots>`, payload `args = [dict]`, `exclude_me: false`),
//! so tools that watch a Buildbot bus — and other masters — see switchyard's.
//!
//! Each resource goes out under every routing key Buildbot uses for it (a build under
//! `builds.<id>.<ev>`, `builders.<b>.builds.<n>.<ev>` and `workers.<w>.builds.<id>.<ev>`).
//! The payload dicts carry the data API's field names.

use std::sync::Arc;

use serde::de::DeserializeSeed;
use serde_json::{json, Value as Json};
use switchyard_router::service::ServiceClient;
use switchyard_router::wire::{BinaryForm, Dict, Payload, Value, ValueSeed, ValueSer};

use crate::store::{Build, BuildRequest};

/// The topic prefix Buildbot's WAMP MQ uses.
pub const MQ_PREFIX: &str = "org.buildbot.mq.";

/// The bus, as the master publishes on it.
#[derive(Clone)]
pub struct Bus {
    client: Arc<ServiceClient>,
}

/// JSON → WAMP value (the payloads are built as JSON for readability), through the wire
/// module's own JSON reading, so binary strings follow WAMP's JSON convention.
pub fn to_wamp(v: &Json) -> Value {
    ValueSeed(BinaryForm::Base64String)
        .deserialize(v)
        .unwrap_or(Value::Null)
}

/// WAMP value → JSON (for worker answers and events read back), through the wire module's
/// JSON writing.
pub fn to_json(v: &Value) -> Json {
    serde_json::to_value(ValueSer(v, BinaryForm::Base64String)).unwrap_or(Json::Null)
}

impl Bus {
    pub fn new(client: Arc<ServiceClient>) -> Bus {
        Bus { client }
    }

    /// Publishes `data` under one routing key.
    pub fn publish(&self, key: &[&str], data: &Json) {
        let topic = format!("{MQ_PREFIX}{}", key.join("."));
        let mut options = Dict::new();
        options.insert("exclude_me".into(), Value::Bool(false));
        // Masters and the UI act only on what masters published, which they tell by the
        // publisher's identity: the router (or the peer it crossed from) adds it.
        options.insert("disclose_me".into(), Value::Bool(true));
        self.client.publish_unacknowledged(
            &topic,
            options,
            Payload::new(vec![to_wamp(data)], Dict::new()),
        );
    }

    pub fn master(&self, master: i64, name: &str, active: bool, event: &str) {
        let data = json!({"masterid": master, "name": name, "active": active,
            "last_active": crate::engine::unix_now()});
        self.publish(&["masters", &master.to_string(), event], &data);
    }

    pub fn worker(&self, worker: i64, name: &str, master: i64, event: &str) {
        let data = json!({"workerid": worker, "name": name, "masterid": master});
        self.publish(&["workers", &worker.to_string(), event], &data);
    }

    pub fn buildset(&self, bsid: i64, data: &Json, event: &str) {
        self.publish(&["buildsets", &bsid.to_string(), event], data);
    }

    pub fn buildrequest(&self, r: &BuildRequest, event: &str) {
        let data = buildrequest_json(r);
        let (bs, b, br) = (
            r.buildsetid.to_string(),
            r.builderid.to_string(),
            r.id.to_string(),
        );
        self.publish(
            &[
                "buildsets",
                &bs,
                "builders",
                &b,
                "buildrequests",
                &br,
                event,
            ],
            &data,
        );
        self.publish(&["buildrequests", &br, event], &data);
        self.publish(&["builders", &b, "buildrequests", &br, event], &data);
    }

    pub fn build(&self, b: &Build, event: &str) {
        let data = build_json(b);
        let (id, builder, number) = (
            b.id.to_string(),
            b.builderid.to_string(),
            b.number.to_string(),
        );
        self.publish(&["builders", &builder, "builds", &number, event], &data);
        self.publish(&["builds", &id, event], &data);
        if let Some(w) = b.workerid {
            self.publish(&["workers", &w.to_string(), "builds", &id, event], &data);
        }
    }

    pub fn step(&self, build: i64, step: i64, data: &Json, event: &str) {
        let (b, s) = (build.to_string(), step.to_string());
        self.publish(&["builds", &b, "steps", &s, event], data);
        self.publish(&["steps", &s, event], data);
    }

    pub fn log(&self, step: i64, log: i64, slug: &str, data: &Json, event: &str) {
        let (s, l) = (step.to_string(), log.to_string());
        self.publish(&["logs", &l, event], data);
        self.publish(&["steps", &s, "logs", slug, event], data);
    }
}

pub fn buildrequest_json(r: &BuildRequest) -> Json {
    json!({
        "buildrequestid": r.id,
        "buildsetid": r.buildsetid,
        "builderid": r.builderid,
        "priority": r.priority,
        "claimed": r.claimed_by_masterid.is_some(),
        "claimed_at": r.claimed_at,
        "claimed_by_masterid": r.claimed_by_masterid,
        "complete": r.complete,
        "results": r.results.map(|x| x.code()),
        "submitted_at": r.submitted_at,
        "complete_at": r.complete_at,
        "waited_for": false,
    })
}

pub fn build_json(b: &Build) -> Json {
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
        "state_string": b.state_string,
        "results": b.results.map(|x| x.code()),
    })
}
