//! Per-realm mesh state: the broker/dealer/realm hooks that announce local interest and
//! sessions and forward publications, and the remote-interest index that peers' frames fill
//! (applied by `super::state::LinkState`).
//!
//! Remote subscriptions live in their own index keyed by (policy, topic) → set of link IDs,
//! never in the broker, so the broker only ever holds local sessions and only local interest
//! is announced. A forwarded publication is delivered locally and never forwarded again.
//! Every entry a peer created here is owned by that peer's `LinkState` and removed when its
//! link ends.
//!
//! For the meta API, each node also announces its sessions (`session±`) and the subscribers
//! of its subscriptions (`subscriber±`), and keeps what peers announced in the realm's
//! [`Directory`]; callees need nothing more, since remote callees are stand-ins in the dealer
//! already. Sessions the meta API hides (router-internal, `trusted`) are not announced.
//!
//! No `wamp.*` registration crosses a link: each node's meta API service registers the
//! `wamp.*` procedures for itself (a peer's `wamp.session.count` would otherwise conflict
//! with ours, and the older claim would take over our meta API). Meta events do cross: each
//! node publishes them for its own sessions, and subscriptions to `wamp.*` topics are
//! announced like any other, so a client anywhere gets every node's events once. Peers
//! deliver forwarded meta events to their clients only, never to their own router sessions
//! (role `trusted`: masters follow their own node's workers).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock, Weak};

use parking_lot::{Mutex, RwLock};

use super::frame::{Frame, Principal};
use super::link::LinkHandle;
use super::Inner;
use crate::broker::{BrokerHook, Interest, Publication};
use crate::cluster::{Cluster, KillAnswer};
use crate::dealer::{DealerHook, RegistrationClaim};
use crate::directory::Directory;
use crate::kill::KillOrder;
use crate::matcher::UriIndex;
use crate::outbound::Hold;
use crate::realm::{Realm, RealmHook};
use crate::session::SessionHandle;
use crate::uri::is_reserved;
use crate::wire::Id;

/// The mesh side of one realm.
pub struct RealmMesh {
    name: String,
    mesh: OnceLock<Weak<Inner>>,
    /// (policy, topic) → links whose peer has local subscribers for it.
    pub(super) subs: RwLock<UriIndex<HashSet<u64>>>,
    /// Conflict claims of remote stand-in callees: stand-in ID → (created ms, node).
    pub(super) claims: Mutex<HashMap<Id, (u64, String)>>,
    /// What peers announced for the meta API: the realm's directory, filled from here.
    pub(super) directory: Arc<Directory>,
}

impl RealmMesh {
    pub(crate) fn new(name: &str, directory: Arc<Directory>) -> Self {
        RealmMesh {
            name: name.to_owned(),
            mesh: OnceLock::new(),
            subs: RwLock::new(UriIndex::default()),
            claims: Mutex::new(HashMap::new()),
            directory,
        }
    }

    /// What peers announced about their sessions, subscriptions and callees (the realm's).
    pub(crate) fn directory(&self) -> &Directory {
        &self.directory
    }

    pub(crate) fn bind(&self, mesh: Weak<Inner>) {
        let _ = self.mesh.set(mesh);
    }

    /// The mesh this realm is part of, while it runs.
    pub(crate) fn inner(&self) -> Option<Arc<Inner>> {
        self.mesh.get().and_then(Weak::upgrade)
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Sends a frame to every linked peer.
    fn broadcast(&self, frame: Frame) {
        self.broadcast_to(frame, |_| true);
    }

    /// Sends a meta directory frame to every linked peer that understands it.
    fn broadcast_meta(&self, frame: Frame) {
        self.broadcast_to(frame, |l| l.meta);
    }

    /// Sends a frame that changes what peers know of this node, numbered on each link (see
    /// [`super::fence`]).
    fn broadcast_to(&self, frame: Frame, to: impl Fn(&LinkHandle) -> bool) {
        let Some(inner) = self.inner() else {
            return;
        };
        let peers = inner.peers.lock();
        let mut bytes = None;
        for l in peers.links().filter(|l| to(l)) {
            l.send_interest(bytes.get_or_insert_with(|| frame.encode()).clone());
        }
    }

    /// Sends this realm's full local interest on a new link. Runs under the broker's (then
    /// the dealer's) lock, like the hooks, and the link is already in the peer table, so every
    /// later change reaches the peer after the snapshot and no change falls in between.
    ///
    /// Sessions go first, so a peer learns of a session before its subscriptions and
    /// registrations (as with live changes: a session joins before it subscribes).
    pub(crate) fn snapshot(&self, realm: &Realm, link: &LinkHandle) {
        if link.meta {
            realm.for_each_session_ordered(|s| {
                if !s.is_restricted() {
                    let _ = link.send(&session_add(&self.name, s));
                }
            });
        }
        realm.broker.for_each_interest(|sub, subscribers| {
            let _ = link.send(&sub_add(&self.name, sub));
            if link.meta && !is_reserved(sub.topic) {
                for s in subscribers.filter(|s| !s.is_restricted()) {
                    let _ = link.send(&Frame::SubscriberAdd {
                        realm: self.name.clone(),
                        subscription: sub.id,
                        session: s.id(),
                    });
                }
            }
        });
        realm.dealer.for_each_local_callee(|reg, callee| {
            if is_reserved(reg.procedure) {
                return;
            }
            let _ = link.send(&reg_add(&self.name, reg, callee));
        });
    }

    /// How many (policy, topic) entries peers have announced (tests, status).
    pub fn remote_subscription_count(&self) -> usize {
        self.subs.read().len()
    }
}

fn session_add(realm: &str, s: &SessionHandle) -> Frame {
    let i = &s.info;
    Frame::SessionAdd {
        realm: realm.to_owned(),
        session: i.id,
        authid: i.authid.clone(),
        authrole: i.authrole.clone(),
        authmethod: i.authmethod.clone(),
        authprovider: i.authprovider.clone(),
        transport: crate::session::transport_details(&i.transport),
    }
}

fn sub_add(realm: &str, sub: &Interest<'_>) -> Frame {
    Frame::SubAdd {
        realm: realm.to_owned(),
        policy: sub.policy,
        topic: sub.topic.to_owned(),
        meta: Some((sub.id, sub.created.to_owned())),
    }
}

fn reg_add(realm: &str, reg: &RegistrationClaim<'_>, callee: &SessionHandle) -> Frame {
    Frame::RegAdd {
        realm: realm.to_owned(),
        registration: reg.id,
        callee: callee.id(),
        policy: reg.policy,
        procedure: reg.procedure.to_owned(),
        invoke: reg.invoke,
        created_ms: reg.created_ms,
        by: Some(Principal {
            authid: callee.info.authid.clone(),
            authrole: callee.info.authrole.clone(),
        }),
    }
}

/// Joins and leaves, in their order (the realm calls under its membership lock).
impl RealmHook for RealmMesh {
    fn joined(&self, s: &SessionHandle) {
        if !s.is_restricted() {
            self.broadcast_meta(session_add(&self.name, s));
        }
    }

    fn left(&self, s: &SessionHandle) {
        if !s.is_restricted() {
            self.broadcast_meta(Frame::SessionDel {
                realm: self.name.clone(),
                session: s.id(),
            });
        }
    }
}

impl BrokerHook for RealmMesh {
    fn interest(&self, sub: &Interest<'_>, present: bool) {
        // `wamp.*` too: subscribers of meta events get every node's.
        self.broadcast(if present {
            sub_add(&self.name, sub)
        } else {
            Frame::SubDel {
                realm: self.name.clone(),
                policy: sub.policy,
                topic: sub.topic.to_owned(),
            }
        });
    }

    fn subscriber(&self, sub: &Interest<'_>, session: &SessionHandle, present: bool) {
        if is_reserved(sub.topic) || session.is_restricted() {
            return;
        }
        let (realm, subscription, session) = (self.name.clone(), sub.id, session.id());
        self.broadcast_meta(if present {
            Frame::SubscriberAdd {
                realm,
                subscription,
                session,
            }
        } else {
            Frame::SubscriberDel {
                realm,
                subscription,
                session,
            }
        });
    }

    fn forward(&self, p: &Publication<'_>) {
        // Only the meta service publishes under `wamp.`: meta events, for peers that take them.
        let meta = is_reserved(p.topic);
        if meta && !is_meta_event(p.topic) {
            return;
        }
        let mut targets: Vec<u64> = Vec::new();
        self.subs.read().for_each_match(p.topic, |_, links| {
            targets.extend(links.iter().copied());
        });
        if targets.is_empty() {
            return;
        }
        // One frame per peer however many of its subscriptions match: it matches again
        // locally, against its own subscribers.
        targets.sort_unstable();
        targets.dedup();
        let Some(inner) = self.mesh.get().and_then(Weak::upgrade) else {
            return;
        };
        let bytes = Frame::Publish {
            realm: self.name.clone(),
            publication: p.id,
            topic: p.topic.to_owned(),
            options: p.options.clone(),
            publisher: p.publisher.id,
            authid: p.publisher.authid.to_owned(),
            authrole: p.publisher.authrole.to_owned(),
            payload: p.payload.clone(),
        }
        .encode();
        let peers = inner.peers.lock();
        for id in targets {
            if let Some(l) = peers.link(id).filter(|l| l.meta_events || !meta) {
                l.send_bytes(bytes.clone());
            }
        }
    }
}

/// A meta event topic (`wamp.session.on_join`, `wamp.subscription.on_create`, ...).
pub(super) fn is_meta_event(topic: &str) -> bool {
    [
        "wamp.session.on_",
        "wamp.subscription.on_",
        "wamp.registration.on_",
    ]
    .iter()
    .any(|p| topic.starts_with(p))
}

/// Read-your-writes interest and kills across nodes, for the protocol and the meta API
/// (`super::fence`, `super::kill`).
impl Cluster for RealmMesh {
    fn holds_replies(&self) -> bool {
        self.inner()
            .is_some_and(|i| super::fence::any_confirming(&i))
    }

    fn release_when_applied(&self, hold: Hold) {
        if let Some(inner) = self.inner() {
            super::fence::release_when_applied(&inner, hold);
        }
    }

    fn kill(&self, order: KillOrder) -> Option<KillAnswer> {
        super::kill::across(self, order)
    }
}

impl DealerHook for RealmMesh {
    fn callee(&self, reg: &RegistrationClaim<'_>, callee: &SessionHandle, present: bool) {
        if is_reserved(reg.procedure) {
            return; // every node answers its own meta API (see the module docs)
        }
        self.broadcast(if present {
            reg_add(&self.name, reg, callee)
        } else {
            Frame::RegDel {
                realm: self.name.clone(),
                registration: reg.id,
                callee: callee.id(),
            }
        });
    }
}
