//! The master's bus listeners: the wake-up events that send the queue looking for work, and
//! the control topics (`control.builds.<id>.stop`, `control.masters.<id>.stop|cancel_stop`),
//! each acted on only when a master (or a trusted role) published it.

use std::sync::Arc;

use switchyard_router::logsafe::Trunc;
use switchyard_router::service::SubscriptionEvent;
use switchyard_router::wire::{Dict, Value};

use super::stop::{begin_graceful_stop, cancel_graceful_stop, stop_local_build, stop_now};
use super::{Inner, MasterError};
use crate::auth::BusTrust;
use crate::store::BuildId;

pub(super) async fn subscribe(
    inner: &Inner,
    topic: &str,
    policy: Option<&str>,
) -> Result<tokio::sync::mpsc::Receiver<SubscriptionEvent>, MasterError> {
    let mut options = Dict::new();
    if let Some(p) = policy {
        options.insert("match".into(), Value::from(p));
    }
    inner
        .client
        .subscribe(topic, options)
        .await
        .map(|(_, rx)| rx)
        .map_err(|reason| MasterError::Subscribe {
            topic: topic.into(),
            reason,
        })
}

/// Events after which the queue may have work: new or released requests, finished builds.
pub(super) async fn subscribe_wakers(
    inner: &Inner,
) -> Result<Vec<tokio::sync::mpsc::Receiver<SubscriptionEvent>>, MasterError> {
    let mut v = Vec::new();
    for t in [
        "org.buildbot.mq.buildrequests..new",
        "org.buildbot.mq.buildrequests..unclaimed",
        "org.buildbot.mq.builds..finished",
        "org.buildbot.mq.workers..connected",
    ] {
        v.push(subscribe(inner, t, Some("wildcard")).await?);
    }
    Ok(v)
}

pub(super) async fn wake_on_events(
    inner: Arc<Inner>,
    subs: Vec<tokio::sync::mpsc::Receiver<SubscriptionEvent>>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    for mut s in subs {
        let tx = tx.clone();
        let trust = inner.trust.clone();
        tokio::spawn(async move {
            while let Some(ev) = s.recv().await {
                if from_master(&trust, &ev) {
                    let _ = tx.try_send(());
                }
            }
        });
    }
    drop(tx);
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            got = rx.recv() => {
                if got.is_none() {
                    return;
                }
                inner.wake.notify_one();
            }
        }
    }
}

/// `control.masters.<id>.stop|cancel_stop` from another master's API.
pub(super) async fn lifecycle_listener(
    inner: Arc<Inner>,
    mut events: tokio::sync::mpsc::Receiver<SubscriptionEvent>,
) {
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            ev = events.recv() => {
                let Some(ev) = ev else { return };
                if !from_master(&inner.trust, &ev) {
                    continue;
                }
                let Some(topic) = ev.details.get("topic").and_then(Value::as_str) else { continue };
                let graceful = ev
                    .payload
                    .args()
                    .first()
                    .and_then(Value::as_dict)
                    .and_then(|d| d.get("graceful"))
                    .and_then(Value::as_bool)
                    .unwrap_or(true);
                if topic.ends_with(".cancel_stop") {
                    cancel_graceful_stop(&inner);
                } else if topic.ends_with(".stop") {
                    if graceful {
                        begin_graceful_stop(&inner);
                    } else {
                        let inner = inner.clone();
                        tokio::spawn(async move { stop_now(&inner).await });
                    }
                }
            }
        }
    }
}

pub(super) async fn stop_listener(
    inner: Arc<Inner>,
    mut stops: tokio::sync::mpsc::Receiver<SubscriptionEvent>,
) {
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            ev = stops.recv() => {
                let Some(ev) = ev else { return };
                if !from_master(&inner.trust, &ev) {
                    continue;
                }
                // The topic is org.buildbot.mq.control.builds.<id>.stop.
                let Some(topic) = ev.details.get("topic").and_then(Value::as_str) else { continue };
                let Some(id) = topic
                    .strip_prefix("org.buildbot.mq.control.builds.")
                    .and_then(|r| r.strip_suffix(".stop"))
                    .and_then(|r| r.parse::<BuildId>().ok())
                else {
                    continue;
                };
                let reason = ev
                    .payload
                    .args()
                    .first()
                    .and_then(Value::as_dict)
                    .and_then(|d| d.get("reason"))
                    .and_then(Value::as_str)
                    .unwrap_or("stopped")
                    .to_owned();
                stop_local_build(&inner, id, reason);
            }
        }
    }
}

/// Whether a bus event comes from a master (this one or a peer, or a configured trusted
/// role): anything else on `org.buildbot.mq.*` (an anonymous client, a Buildbot master on
/// the same realm) is ignored, with a debug line naming the sender.
pub(super) fn from_master(trust: &BusTrust, ev: &SubscriptionEvent) -> bool {
    let ok = trust.published_by_master(&ev.details);
    if !ok {
        let topic = ev
            .details
            .get("topic")
            .and_then(Value::as_str)
            .unwrap_or("?");
        tracing::debug!(topic = %Trunc(topic), publisher = %BusTrust::publisher(&ev.details),
            "ignoring a bus message that no master published");
    }
    ok
}
