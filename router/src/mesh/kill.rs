//! The meta API's kills across the mesh: `wamp.session.kill`, `kill_by_authid`,
//! `kill_by_authrole` and `kill_all` reach sessions on every node, as on one router.
//!
//! The node whose meta API is called kills its own sessions and sends a `kill` order, with
//! the caller's identity, to the node of the victim (`kill` of a session a peer announced) or
//! to every peer (the group kills, and a session no peer announced yet). Each node authorizes
//! the order itself, as it authorizes a forwarded call: the caller's identity must be allowed
//! to call the kill procedure there, so the worker guard holds on the victim's node whatever
//! the caller's node allowed. It answers `killed` with the sessions it ended (or the error),
//! and the caller gets the union. An answer that does not come within `interest_ack_timeout`,
//! or from a link that ends, counts as "nothing killed there".

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::frame::{Frame, Principal};
use super::link::LinkHandle;
use super::realm::RealmMesh;
use super::Mesh;
use crate::cluster::KillAnswer;
use crate::kill::{kill_sessions, KillOrder, KillTarget};
use crate::realm::Realm;
use crate::uri::errors;
use crate::wire::Id;
use crate::WampError;

/// Most kill orders waiting for answers at once; beyond, a kill answers `unavailable`.
const MAX_PENDING: usize = 10_000;

/// A peer's answer to a kill order.
struct Answer {
    sessions: Vec<Id>,
    error: Option<String>,
}

/// Kill orders sent, by request ID, with the link each went to.
#[derive(Default)]
pub(crate) struct Pending {
    next: AtomicU64,
    waiting: Mutex<HashMap<Id, (u64, oneshot::Sender<Answer>)>>,
}

impl Pending {
    fn register(&self, link: u64) -> Option<(Id, oneshot::Receiver<Answer>)> {
        let mut w = self.waiting.lock();
        if w.len() >= MAX_PENDING {
            return None;
        }
        let request = self.next.fetch_add(1, Ordering::Relaxed) % crate::wire::MAX_ID + 1;
        let (tx, rx) = oneshot::channel();
        w.insert(request, (link, tx));
        Some((request, rx))
    }

    /// A peer answered `killed`; an answer from another link than the order went to, or to
    /// an order nobody waits for any more, is ignored.
    pub(crate) fn answered(
        &self,
        link: u64,
        request: Id,
        sessions: Vec<Id>,
        error: Option<String>,
    ) {
        let mut w = self.waiting.lock();
        if w.get(&request).is_some_and(|(l, _)| *l == link) {
            if let Some((_, tx)) = w.remove(&request) {
                let _ = tx.send(Answer { sessions, error });
            }
        }
    }

    fn forget(&self, request: Id) {
        self.waiting.lock().remove(&request);
    }
}

/// This node's sessions of `realm` the order is for, killed.
fn kill_here(realm: &Realm, order: &KillOrder) -> Vec<Id> {
    kill_sessions(|id| realm.session(id), || realm.sessions(), order)
}

/// Carries out a kill ordered through the meta API of `rm`'s realm on every node it
/// concerns, this one included (`Cluster::kill`).
pub(crate) fn across(rm: &RealmMesh, order: KillOrder) -> Option<KillAnswer> {
    let inner = rm.inner()?;
    let realm = inner.router.realm(rm.name())?;
    let links: Vec<Arc<LinkHandle>> = inner
        .peers
        .lock()
        .links()
        .filter(|l| l.kill)
        .cloned()
        .collect();
    if links.is_empty() {
        return None;
    }
    let targets: Vec<Arc<LinkHandle>> = match &order.target {
        KillTarget::Session(id) => {
            if realm.session(*id).is_some() {
                return None;
            }
            // Straight to the victim's node when a peer announced it; else ask every peer.
            let node = rm.directory().session(*id).map(|s| s.node);
            let at: Vec<_> = links
                .iter()
                .filter(|l| node.as_deref() == Some(l.node.as_str()))
                .cloned()
                .collect();
            if at.is_empty() {
                links
            } else {
                at
            }
        }
        _ => links,
    };
    let mut killed = match order.target {
        KillTarget::Session(_) => Vec::new(),
        _ => kill_here(&realm, &order),
    };
    let by = order
        .except
        .and_then(|id| realm.session(id))
        .map(|s| Principal {
            authid: s.info.authid.clone(),
            authrole: s.info.authrole.clone(),
        });
    let mut asked = Vec::with_capacity(targets.len());
    for l in targets {
        let Some((request, rx)) = inner.kills.register(l.id) else {
            tracing::warn!(
                "too many kill orders waiting for mesh peers; not asking '{}'",
                l.node
            );
            continue;
        };
        let frame = Frame::Kill {
            realm: realm.name().to_owned(),
            request,
            order: order.clone(),
            by: by.clone(),
        };
        let _ = l.send(&frame);
        asked.push((l, request, rx));
    }
    let deadline = tokio::time::Instant::now() + inner.config.interest_ack_timeout();
    Some(Box::pin(async move {
        let mut refused = Vec::new();
        for (link, request, rx) in asked {
            let answer = tokio::select! {
                a = rx => a.ok(),
                _ = link.ended() => None,
                _ = tokio::time::sleep_until(deadline) => None,
            };
            inner.kills.forget(request);
            match answer {
                Some(a) => {
                    killed.extend(a.sessions);
                    if let Some(e) = a.error {
                        refused.push((link.node.clone(), e));
                    }
                }
                None => tracing::debug!(peer = %link.node, "no answer to a kill order"),
            }
        }
        let done = !killed.is_empty() && matches!(order.target, KillTarget::Session(_));
        if refused.is_empty() || done {
            return order.answer(killed);
        }
        let by: Vec<String> = refused
            .iter()
            .map(|(n, e)| format!("node '{n}' ({e})"))
            .collect();
        Err(WampError::new(
            &refused[0].1,
            format!(
                "{} refused by {} (killed: {killed:?})",
                order.target.procedure(),
                by.join(", ")
            ),
        ))
    }))
}

/// Carries out a peer's kill order in `realm` if `allowed` (its caller may call the kill
/// procedure here) and answers it.
pub(crate) fn serve(
    mesh: &Mesh,
    link: &LinkHandle,
    realm: String,
    request: Id,
    order: &KillOrder,
    allowed: bool,
) {
    let (sessions, error) = match mesh.inner.router.realm(&realm) {
        None => (Vec::new(), Some(errors::NO_SUCH_REALM.to_owned())),
        Some(_) if !allowed => (Vec::new(), Some(errors::NOT_AUTHORIZED.to_owned())),
        Some(r) => (kill_here(&r, order), None),
    };
    if !sessions.is_empty() {
        tracing::info!(peer = %link.node, ?sessions, "sessions killed by a peer's {}", order.target.procedure());
    }
    let _ = link.send(&Frame::Killed {
        realm,
        request,
        sessions,
        error,
    });
}
