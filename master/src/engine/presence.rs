//! Worker presence: which configured workers are connected to this node's router, from the
//! meta API's registration events for `switchyard.worker.<name>.run`, recorded in
//! `connected_workers` and published as `workers.<id>.connected|disconnected`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use switchyard_router::service::SubscriptionEvent;
use switchyard_router::wire::Value;

use super::events::to_json;
use super::listen::subscribe;
use super::{Inner, Lifecycle, MasterError};
use crate::auth::{worker_procedure, WORKER_NAMESPACE};
use crate::store::WorkerId;

/// Registrations of worker procedures on this node, from the meta API.
pub(super) struct Presence {
    created: tokio::sync::mpsc::Receiver<SubscriptionEvent>,
    deleted: tokio::sync::mpsc::Receiver<SubscriptionEvent>,
}

pub(super) async fn subscribe_presence(inner: &Inner) -> Result<Presence, MasterError> {
    Ok(Presence {
        created: subscribe(inner, "wamp.registration.on_create", None).await?,
        deleted: subscribe(inner, "wamp.registration.on_delete", None).await?,
    })
}

/// The worker a `switchyard.worker.<name>.run` URI names, if configured.
pub(super) fn worker_of_run_uri<'a>(inner: &'a Inner, uri: &str) -> Option<(&'a str, WorkerId)> {
    let name = uri.strip_prefix(WORKER_NAMESPACE)?.strip_suffix(".run")?;
    inner
        .worker_ids
        .get_key_value(name)
        .map(|(k, v)| (k.as_str(), *v))
}

pub(super) async fn presence_task(inner: Arc<Inner>, mut p: Presence) {
    // Registration id of each connected worker's `run` → worker id.
    let mut registrations: HashMap<u64, WorkerId> = HashMap::new();
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            Some(ev) = p.created.recv() => {
                // args: [session, {id, uri, match, invoke, created}]
                let Some(details) = ev.payload.args().get(1).and_then(Value::as_dict) else { continue };
                let Some(uri) = details.get("uri").and_then(Value::as_str) else { continue };
                let Some(reg) = details.get("id").and_then(Value::as_u64) else { continue };
                let Some((name, wid)) = worker_of_run_uri(&inner, uri) else { continue };
                registrations.insert(reg, wid);
                inner.local_workers.lock().insert(wid, name.to_owned());
                let name = name.to_owned();
                let inner = inner.clone();
                // Asking the worker about itself also proves it answers.
                tokio::spawn(async move { worker_appeared(&inner, &name, wid).await });
            }
            Some(ev) = p.deleted.recv() => {
                // args: [session, registration id]
                let Some(reg) = ev.payload.args().get(1).and_then(Value::as_u64) else { continue };
                let Some(wid) = registrations.remove(&reg) else { continue };
                if registrations.values().any(|w| *w == wid) {
                    // The worker already registered again (a reconnect whose on_create was
                    // read first: the two subscriptions are not ordered between them).
                    continue;
                }
                inner.local_workers.lock().remove(&wid);
                let name = inner.worker_name(wid).unwrap_or("?").to_owned();
                tracing::info!(worker = %name, "worker disconnected");
                if let Err(e) = inner.store.worker_disconnected(inner.master, wid).await {
                    tracing::warn!(worker = %name, error = %e, "cannot record worker disconnect");
                }
                inner.bus.worker(wid, &name, inner.master, "disconnected");
            }
            else => return,
        }
    }
}

pub(super) async fn worker_appeared(inner: &Inner, name: &str, wid: WorkerId) {
    let procedure = worker_procedure(name, "info");
    let info = inner.client.call(&procedure, Default::default());
    let info = match tokio::time::timeout(Duration::from_secs(10), info).await {
        Ok(switchyard_router::service::Answer::Result(p)) => p
            .kwargs()
            .map(|k| to_json(&Value::Dict(k.clone())))
            .unwrap_or_else(|| json!({})),
        other => {
            tracing::warn!(worker = name, answer = ?other.ok(), "worker registered but its info call failed");
            json!({})
        }
    };
    if let Err(e) = inner.store.set_worker_info(wid, &info).await {
        tracing::warn!(worker = name, error = %e, "cannot store worker info");
    }
    if *inner.lifecycle.lock() != Lifecycle::Running {
        return; // a draining master gives no worker new work
    }
    if let Err(e) = inner.store.worker_connected(inner.master, wid).await {
        tracing::warn!(worker = name, error = %e, "cannot record worker connection");
        return;
    }
    inner.quarantine.lock().remove(&wid);
    tracing::info!(worker = name, "worker connected");
    inner.bus.worker(wid, name, inner.master, "connected");
    inner.wake.notify_one();
}
