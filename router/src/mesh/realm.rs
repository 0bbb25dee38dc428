//! Per-realm mesh state: the broker/dealer hooks that announce local interest and forward
//! publications, the remote-interest index, and applying a peer's frames ([`LinkState`]).
//!
//! Remote subscriptions live in their own index keyed by (policy, topic) → set of link IDs,
//! never in the broker, so the broker only ever holds local sessions and only local interest
//! is announced. A forwarded publication is delivered locally and never forwarded again.
//! Every entry a peer created here is owned by that peer's [`LinkState`] and removed when its
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

use super::conflict::{add_remote_callee, Claim};
use super::frame::{Frame, Principal};
use super::link::LinkHandle;
use super::rpc::ReturnPath;
use super::{Inner, Mesh};
use crate::auth::Action;
use crate::broker::{BrokerHook, Interest, Publication, Publisher};
use crate::cluster::{Cluster, KillAnswer};
use crate::dealer::{DealerHook, ForwardedCall, RegistrationClaim};
use crate::directory::{Directory, RemoteCallee, RemoteSession};
use crate::kill::KillOrder;
use crate::logsafe::Trunc;
use crate::matcher::UriIndex;
use crate::outbound::Hold;
use crate::realm::{Realm, RealmHook};
use crate::session::SessionHandle;
use crate::uri::{errors, is_reserved, MatchPolicy};
use crate::wire::{Dict, Id, Payload, Value};

/// The mesh side of one realm.
pub struct RealmMesh {
    name: String,
    mesh: OnceLock<Weak<Inner>>,
    /// (policy, topic) → links whose peer has local subscribers for it.
    subs: RwLock<UriIndex<HashSet<u64>>>,
    /// Conflict claims of remote stand-in callees: stand-in ID → (created ms, node).
    pub(super) claims: Mutex<HashMap<Id, (u64, String)>>,
    /// What peers announced for the meta API: the realm's directory, filled from here.
    directory: Arc<Directory>,
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
fn is_meta_event(topic: &str) -> bool {
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

/// What one peer link created in one realm here.
#[derive(Default)]
struct LinkRealm {
    /// The peer's sessions recorded in the directory.
    sessions: HashSet<Id>,
    subs: HashSet<(MatchPolicy, String)>,
    /// (remote registration, remote callee) → (stand-in, our registration ID), or `None`
    /// when the claim lost a conflict here (its node revokes it).
    proxies: HashMap<(Id, Id), Option<(SessionHandle, Id)>>,
    /// The caller of calls forwarded to us over this link.
    ret: Option<(SessionHandle, Arc<ReturnPath>)>,
}

/// How much of this node's directory one peer fills, against the configured bounds.
#[derive(Default)]
struct DirectoryUse {
    sessions: usize,
    subscribers: usize,
    /// A bound was reached (logged once per link).
    sessions_full: bool,
    subscribers_full: bool,
}

/// Everything a peer created on this node through one link; owned by the link's reader.
pub(crate) struct LinkState {
    link: Arc<LinkHandle>,
    node: Arc<str>,
    realms: HashMap<String, LinkRealm>,
    used: DirectoryUse,
}

impl LinkState {
    pub(crate) fn new(link: Arc<LinkHandle>) -> Self {
        LinkState {
            node: link.node.as_str().into(),
            link,
            realms: HashMap::new(),
            used: DirectoryUse::default(),
        }
    }

    /// Applies one frame from the peer.
    pub(crate) fn apply(&mut self, mesh: &Mesh, frame: Frame) {
        let realm_of = |name: &str| -> Option<(Arc<Realm>, Arc<RealmMesh>)> {
            Some((
                mesh.inner.router.realm(name)?,
                mesh.inner.realms.get(name)?.clone(),
            ))
        };
        match frame {
            Frame::Ping => {}
            Frame::Peers(list) => mesh.learn(list),
            Frame::SyncDone => self.link.set_synced(),
            Frame::SubAdd {
                realm,
                policy,
                topic,
                meta,
            } => {
                let Some((_, rm)) = realm_of(&realm) else {
                    return;
                };
                let lr = self.realms.entry(realm).or_default();
                if lr.subs.insert((policy, topic.clone())) {
                    {
                        let mut subs = rm.subs.write();
                        match subs.get_mut(policy, &topic) {
                            Some(set) => {
                                set.insert(self.link.id);
                            }
                            None => {
                                subs.insert(policy, &topic, HashSet::from([self.link.id]));
                            }
                        }
                    }
                    if let Some((id, created)) = meta {
                        let key = (policy, topic.as_str());
                        if !rm.directory.add_subscription(
                            self.link.id,
                            &self.node,
                            key,
                            id,
                            created,
                        ) {
                            tracing::debug!(peer = %self.link.node, subscription = id, "peer's subscription ID is taken; not shown by the meta API");
                        }
                    }
                }
            }
            Frame::SubDel {
                realm,
                policy,
                topic,
            } => {
                let Some((_, rm)) = realm_of(&realm) else {
                    return;
                };
                let lr = self.realms.entry(realm).or_default();
                if lr.subs.remove(&(policy, topic.clone())) {
                    remove_sub(&rm, policy, &topic, self.link.id);
                    let gone = rm
                        .directory
                        .remove_subscription(self.link.id, policy, &topic);
                    self.used.subscribers = self.used.subscribers.saturating_sub(gone);
                }
            }
            Frame::SessionAdd {
                realm,
                session,
                authid,
                authrole,
                authmethod,
                authprovider,
                transport,
            } => {
                let Some((_, rm)) = realm_of(&realm) else {
                    return;
                };
                let lr = self.realms.entry(realm).or_default();
                if lr.sessions.contains(&session) {
                    return;
                }
                let max = mesh.inner.config.max_remote_sessions;
                if self.used.sessions >= max {
                    if !self.used.sessions_full {
                        self.used.sessions_full = true;
                        tracing::warn!(peer = %self.link.node, "mesh peer '{}' announced more than {max} sessions; the meta API on this node leaves out the rest (mesh.max_remote_sessions)", self.link.node);
                    }
                    return;
                }
                let remote = RemoteSession {
                    node: self.node.clone(),
                    authid,
                    authrole,
                    authmethod,
                    authprovider,
                    transport,
                };
                if rm.directory.add_session(self.link.id, session, remote) {
                    lr.sessions.insert(session);
                    self.used.sessions += 1;
                } else {
                    tracing::warn!(peer = %self.link.node, session, "mesh peer announced a session ID another node uses; the meta API shows the first one");
                }
            }
            Frame::SessionDel { realm, session } => {
                let Some((_, rm)) = realm_of(&realm) else {
                    return;
                };
                let lr = self.realms.entry(realm).or_default();
                if lr.sessions.remove(&session) {
                    rm.directory.remove_session(self.link.id, session);
                    self.used.sessions = self.used.sessions.saturating_sub(1);
                }
            }
            Frame::SubscriberAdd {
                realm,
                subscription,
                session,
            } => {
                let Some((_, rm)) = realm_of(&realm) else {
                    return;
                };
                let max = mesh.inner.config.max_remote_subscribers;
                if self.used.subscribers >= max {
                    if !self.used.subscribers_full {
                        self.used.subscribers_full = true;
                        tracing::warn!(peer = %self.link.node, "mesh peer '{}' announced more than {max} subscribers; the meta API on this node leaves out the rest (mesh.max_remote_subscribers)", self.link.node);
                    }
                    return;
                }
                if rm
                    .directory
                    .add_subscriber(self.link.id, subscription, session)
                {
                    self.used.subscribers += 1;
                }
            }
            Frame::SubscriberDel {
                realm,
                subscription,
                session,
            } => {
                let Some((_, rm)) = realm_of(&realm) else {
                    return;
                };
                if rm
                    .directory
                    .remove_subscriber(self.link.id, subscription, session)
                {
                    self.used.subscribers = self.used.subscribers.saturating_sub(1);
                }
            }
            Frame::RegAdd {
                realm,
                registration,
                callee,
                policy,
                procedure,
                invoke,
                created_ms,
                by,
            } => {
                let Some((r, rm)) = realm_of(&realm) else {
                    return;
                };
                if is_reserved(&procedure) {
                    tracing::debug!(peer = %self.link.node, procedure, "ignoring a peer's router procedure");
                    return;
                }
                if !self.allowed(
                    mesh,
                    &realm,
                    by.as_ref(),
                    &procedure,
                    Action::Register,
                    policy,
                ) {
                    return;
                }
                let lr = self.realms.entry(realm.clone()).or_default();
                if lr.proxies.contains_key(&(registration, callee)) {
                    return;
                }
                let claim = Claim {
                    created_ms,
                    node: self.link.node.clone(),
                };
                let entry = add_remote_callee(
                    mesh,
                    &self.link,
                    &r,
                    &rm,
                    (registration, callee),
                    policy,
                    &procedure,
                    invoke,
                    claim,
                );
                if let Some((proxy, local)) = &entry {
                    let c = RemoteCallee {
                        registration,
                        callee,
                        local: *local,
                    };
                    rm.directory.add_callee(proxy.id(), c);
                }
                lr.proxies.insert((registration, callee), entry);
            }
            Frame::RegDel {
                realm,
                registration,
                callee,
            } => {
                let Some((r, rm)) = realm_of(&realm) else {
                    return;
                };
                let lr = self.realms.entry(realm).or_default();
                if let Some(Some((proxy, local))) = lr.proxies.remove(&(registration, callee)) {
                    r.dealer.remove_session(proxy.id(), [local]);
                    rm.claims.lock().remove(&proxy.id());
                    rm.directory.remove_callee(proxy.id());
                }
            }
            Frame::Publish {
                realm,
                publication,
                topic,
                options,
                publisher,
                authid,
                authrole,
                payload,
            } => {
                let Some((r, _)) = realm_of(&realm) else {
                    return;
                };
                let by = Principal { authid, authrole };
                let exact = MatchPolicy::Exact;
                let mut options = options;
                if is_reserved(&topic) {
                    // A peer's meta event (its router publishes there, no client can): for
                    // our clients, not our own router sessions.
                    if !is_meta_event(&topic) {
                        return;
                    }
                    let mut roles = match options.remove("exclude_authrole") {
                        Some(Value::List(l)) => l,
                        _ => Vec::new(),
                    };
                    roles.push(Value::from("trusted"));
                    options.insert("exclude_authrole".into(), Value::List(roles));
                } else if !self.allowed(mesh, &realm, Some(&by), &topic, Action::Publish, exact) {
                    return;
                }
                let (authid, authrole) = (by.authid, by.authrole);
                let p = Publication {
                    id: publication,
                    topic: &topic,
                    options: &options,
                    publisher: Publisher {
                        id: publisher,
                        authid: &authid,
                        authrole: &authrole,
                    },
                    payload: &payload,
                };
                if let Err(e) = r.broker.deliver_forwarded(&p) {
                    tracing::debug!(peer = %self.link.node, "forwarded publication not delivered: {e}");
                }
            }
            Frame::Call {
                realm,
                proxy,
                request,
                registration,
                callee,
                procedure,
                details,
                payload,
                by,
            } => {
                let refuse = |error: &str, message: String| {
                    let _ = self.link.send(&Frame::Error {
                        realm: realm.clone(),
                        proxy,
                        request,
                        error: error.into(),
                        payload: Payload::new(vec![Value::from(message)], Dict::new()),
                    });
                };
                let Some((r, _)) = realm_of(&realm) else {
                    refuse(errors::NO_SUCH_REALM, format!("no realm {}", Trunc(&realm)));
                    return;
                };
                let exact = MatchPolicy::Exact;
                if !self.allowed(mesh, &realm, by.as_ref(), &procedure, Action::Call, exact) {
                    refuse(
                        errors::NOT_AUTHORIZED,
                        format!("not authorized to call '{}'", Trunc(&procedure)),
                    );
                    return;
                }
                let link = self.link.clone();
                let lr = self.realms.entry(realm.clone()).or_default();
                let (caller, ret) = lr
                    .ret
                    .get_or_insert_with(|| ReturnPath::new(&link, &realm))
                    .clone();
                let local = ret.begin(proxy, request);
                let call = ForwardedCall {
                    registration,
                    callee,
                    procedure: &procedure,
                    details: &details,
                };
                if let Err(e) = r.dealer.invoke_forwarded(&caller, local, call, payload) {
                    ret.end(local);
                    let _ = self.link.send(&Frame::Error {
                        realm,
                        proxy,
                        request,
                        error: e.uri,
                        payload: Payload::new(vec![Value::from(e.message)], Dict::new()),
                    });
                }
            }
            Frame::Cancel {
                realm,
                proxy,
                request,
                mode,
                reason,
            } => {
                let Some((r, _)) = realm_of(&realm) else {
                    return;
                };
                let Some(lr) = self.realms.get(&realm) else {
                    return;
                };
                if let Some((caller, ret)) = &lr.ret {
                    if let Some(local) = ret.lookup(proxy, request) {
                        let mut options = Dict::new();
                        options.insert("mode".into(), Value::from(mode));
                        options.insert("reason".into(), Value::from(reason));
                        let _ = r.dealer.cancel(caller.id(), local, &options);
                    }
                }
            }
            Frame::Result {
                realm,
                proxy,
                request,
                progress,
                payload,
            } => {
                let Some((r, _)) = realm_of(&realm) else {
                    return;
                };
                let mut options = Dict::new();
                if progress {
                    options.insert("progress".into(), Value::Bool(true));
                }
                r.dealer.yield_result(proxy, request, &options, payload);
            }
            Frame::Error {
                realm,
                proxy,
                request,
                error,
                payload,
            } => {
                if let Some((r, _)) = realm_of(&realm) {
                    r.dealer.invocation_error(proxy, request, error, payload);
                }
            }
            Frame::Fence { seq } => {
                let _ = self.link.send(&Frame::Fenced { seq });
            }
            Frame::Fenced { seq } => self.link.fence_state.confirmed(seq),
            Frame::Kill {
                realm,
                request,
                order,
                by,
            } => {
                let (procedure, exact) = (order.target.procedure(), MatchPolicy::Exact);
                let ok = self.allowed(mesh, &realm, by.as_ref(), procedure, Action::Call, exact);
                super::kill::serve(mesh, &self.link, realm, request, &order, ok);
            }
            Frame::Killed {
                request,
                sessions,
                error,
                ..
            } => (mesh.inner.kills).answered(self.link.id, request, sessions, error),
            other @ (Frame::Hello { .. }
            | Frame::Challenge { .. }
            | Frame::Auth { .. }
            | Frame::Welcome { .. }
            | Frame::Refuse { .. }) => {
                tracing::debug!(peer = %self.link.node, "ignoring handshake frame on an established link: {other:?}");
            }
        }
    }

    /// Whether a peer's session may do `action` on `uri` here: this node's own authorizer
    /// decides, against the identity the peer vouches for (its word is trusted: it proved the
    /// mesh secret). An older peer that names nobody is authorized as role `""`, which no
    /// rule grants anything protected. A refusal is logged at debug, values truncated.
    fn allowed(
        &self,
        mesh: &Mesh,
        realm: &str,
        by: Option<&Principal>,
        uri: &str,
        action: Action,
        policy: MatchPolicy,
    ) -> bool {
        let (authid, authrole) = by.map_or(("", ""), |p| (&p.authid, &p.authrole));
        let authorizer = mesh.inner.router.authorizer();
        let allowed = authorizer
            .authorize_match(realm, authrole, authid, uri, action, policy)
            .allow;
        if !allowed {
            tracing::debug!(peer = %self.link.node, authid = %Trunc(authid),
                authrole = %Trunc(authrole), uri = %Trunc(uri),
                "refused a forwarded {}: not authorized here", action.name());
        }
        allowed
    }

    /// The link ended: remove everything the peer had here. Callers waiting on its callees
    /// get an error now; our callees working for its callers are interrupted.
    pub(crate) fn drop_all(&mut self, mesh: &Mesh) {
        for (name, lr) in self.realms.drain() {
            let (Some(r), Some(rm)) =
                (mesh.inner.router.realm(&name), mesh.inner.realms.get(&name))
            else {
                continue;
            };
            for (policy, topic) in &lr.subs {
                remove_sub(rm, *policy, topic, self.link.id);
                rm.directory
                    .remove_subscription(self.link.id, *policy, topic);
            }
            for (proxy, local) in lr.proxies.into_values().flatten() {
                r.dealer.remove_session(proxy.id(), [local]);
                rm.claims.lock().remove(&proxy.id());
                rm.directory.remove_callee(proxy.id());
            }
            for session in lr.sessions {
                rm.directory.remove_session(self.link.id, session);
            }
            if let Some((caller, _)) = lr.ret {
                r.dealer.remove_session(caller.id(), []);
            }
        }
    }
}

fn remove_sub(rm: &RealmMesh, policy: MatchPolicy, topic: &str, link: u64) {
    let mut subs = rm.subs.write();
    if let Some(set) = subs.get_mut(policy, topic) {
        set.remove(&link);
        if set.is_empty() {
            subs.remove(policy, topic);
        }
    }
}
