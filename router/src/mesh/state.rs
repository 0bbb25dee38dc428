//! What a peer created on this node through one link ([`LinkState`], owned by the link's
//! reader), and applying the peer's frames to it: one method per kind of frame.
//!
//! Every entry a peer created here (remote interest, directory entries, stand-in callees, the
//! return path of its calls) is recorded per realm, so that [`LinkState::drop_all`] removes
//! exactly the peer's state when its link ends.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::conflict::{add_remote_callee, Claim};
use super::frame::{Frame, Principal};
use super::link::LinkHandle;
use super::realm::{is_meta_event, RealmMesh};
use super::rpc::ReturnPath;
use super::Mesh;
use crate::auth::Action;
use crate::broker::{Publication, Publisher};
use crate::dealer::ForwardedCall;
use crate::directory::{RemoteCallee, RemoteSession};
use crate::logsafe::Trunc;
use crate::realm::Realm;
use crate::session::SessionHandle;
use crate::uri::{errors, is_reserved, MatchPolicy};
use crate::wire::{Dict, Id, Payload, Value};

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

/// A realm by name, with its mesh side.
fn realm_of(mesh: &Mesh, name: &str) -> Option<(Arc<Realm>, Arc<RealmMesh>)> {
    Some((
        mesh.inner.router.realm(name)?,
        mesh.inner.realms.get(name)?.clone(),
    ))
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
        match frame {
            Frame::Ping => {}
            Frame::Peers(list) => mesh.learn(list),
            Frame::SyncDone => self.link.set_synced(),
            Frame::SubAdd {
                realm,
                policy,
                topic,
                meta,
            } => self.sub_add(mesh, realm, (policy, topic), meta),
            Frame::SubDel {
                realm,
                policy,
                topic,
            } => self.sub_del(mesh, realm, (policy, topic)),
            f @ Frame::SessionAdd { .. } => self.session_add(mesh, f),
            Frame::SessionDel { realm, session } => self.session_del(mesh, realm, session),
            Frame::SubscriberAdd {
                realm,
                subscription,
                session,
            } => self.subscriber_add(mesh, &realm, subscription, session),
            Frame::SubscriberDel {
                realm,
                subscription,
                session,
            } => self.subscriber_del(mesh, &realm, subscription, session),
            f @ Frame::RegAdd { .. } => self.reg_add(mesh, f),
            Frame::RegDel {
                realm,
                registration,
                callee,
            } => self.reg_del(mesh, realm, (registration, callee)),
            f @ Frame::Publish { .. } => self.publish(mesh, f),
            f @ Frame::Call { .. } => self.call(mesh, f),
            f @ (Frame::Cancel { .. } | Frame::Result { .. } | Frame::Error { .. }) => {
                self.call_progress(mesh, f)
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

    /// `sub+`: the peer has local subscribers for (policy, topic) now.
    fn sub_add(
        &mut self,
        mesh: &Mesh,
        realm: String,
        (policy, topic): (MatchPolicy, String),
        meta: Option<(Id, String)>,
    ) {
        let Some((_, rm)) = realm_of(mesh, &realm) else {
            return;
        };
        let lr = self.realms.entry(realm).or_default();
        if !lr.subs.insert((policy, topic.clone())) {
            return;
        }
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
            if !rm
                .directory
                .add_subscription(self.link.id, &self.node, key, id, created)
            {
                tracing::debug!(peer = %self.link.node, subscription = id, "peer's subscription ID is taken; not shown by the meta API");
            }
        }
    }

    /// `sub-`: the peer's last local subscriber of (policy, topic) left.
    fn sub_del(&mut self, mesh: &Mesh, realm: String, (policy, topic): (MatchPolicy, String)) {
        let Some((_, rm)) = realm_of(mesh, &realm) else {
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

    /// `session+`: a session joined the peer (filed in the directory, within its bound).
    fn session_add(&mut self, mesh: &Mesh, frame: Frame) {
        let Frame::SessionAdd {
            realm,
            session,
            authid,
            authrole,
            authmethod,
            authprovider,
            transport,
        } = frame
        else {
            return;
        };
        let Some((_, rm)) = realm_of(mesh, &realm) else {
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

    /// `session-`: a session left the peer.
    fn session_del(&mut self, mesh: &Mesh, realm: String, session: Id) {
        let Some((_, rm)) = realm_of(mesh, &realm) else {
            return;
        };
        let lr = self.realms.entry(realm).or_default();
        if lr.sessions.remove(&session) {
            rm.directory.remove_session(self.link.id, session);
            self.used.sessions = self.used.sessions.saturating_sub(1);
        }
    }

    /// `subscriber+`: a subscriber of the peer's (within the directory's bound).
    fn subscriber_add(&mut self, mesh: &Mesh, realm: &str, subscription: Id, session: Id) {
        let Some((_, rm)) = realm_of(mesh, realm) else {
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

    /// `subscriber-`.
    fn subscriber_del(&mut self, mesh: &Mesh, realm: &str, subscription: Id, session: Id) {
        let Some((_, rm)) = realm_of(mesh, realm) else {
            return;
        };
        if rm
            .directory
            .remove_subscriber(self.link.id, subscription, session)
        {
            self.used.subscribers = self.used.subscribers.saturating_sub(1);
        }
    }

    /// `reg+`: a callee of the peer's, registered here as a stand-in (authorized here, and
    /// subject to the conflict rule).
    fn reg_add(&mut self, mesh: &Mesh, frame: Frame) {
        let Frame::RegAdd {
            realm,
            registration,
            callee,
            policy,
            procedure,
            invoke,
            created_ms,
            by,
        } = frame
        else {
            return;
        };
        let Some((r, rm)) = realm_of(mesh, &realm) else {
            return;
        };
        if is_reserved(&procedure) {
            tracing::debug!(peer = %self.link.node, procedure, "ignoring a peer's router procedure");
            return;
        }
        let action = Action::Register;
        if !self.allowed(mesh, &realm, by.as_ref(), &procedure, action, policy) {
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

    /// `reg-`: the peer's callee is gone; so is its stand-in.
    fn reg_del(&mut self, mesh: &Mesh, realm: String, (registration, callee): (Id, Id)) {
        let Some((r, rm)) = realm_of(mesh, &realm) else {
            return;
        };
        let lr = self.realms.entry(realm).or_default();
        if let Some(Some((proxy, local))) = lr.proxies.remove(&(registration, callee)) {
            r.dealer.remove_session(proxy.id(), [local]);
            rm.claims.lock().remove(&proxy.id());
            rm.directory.remove_callee(proxy.id());
        }
    }

    /// `pub`: a publication to deliver to this node's subscribers (never forwarded again).
    fn publish(&mut self, mesh: &Mesh, frame: Frame) {
        let Frame::Publish {
            realm,
            publication,
            topic,
            mut options,
            publisher,
            authid,
            authrole,
            payload,
        } = frame
        else {
            return;
        };
        let Some((r, _)) = realm_of(mesh, &realm) else {
            return;
        };
        let by = Principal { authid, authrole };
        let exact = MatchPolicy::Exact;
        if is_reserved(&topic) {
            // A peer's meta event (its router publishes there, no client can): for our
            // clients, not our own router sessions.
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

    /// `call`: a call from the peer's caller to one of our callees, through the link's
    /// return path (authorized here first).
    fn call(&mut self, mesh: &Mesh, frame: Frame) {
        let Frame::Call {
            realm,
            proxy,
            request,
            registration,
            callee,
            procedure,
            details,
            payload,
            by,
        } = frame
        else {
            return;
        };
        let refuse = |error: &str, message: String| {
            let _ = self.link.send(&Frame::Error {
                realm: realm.clone(),
                proxy,
                request,
                error: error.into(),
                payload: Payload::new(vec![Value::from(message)], Dict::new()),
            });
        };
        let Some((r, _)) = realm_of(mesh, &realm) else {
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

    /// The rest of a call's life: `cancel` of a call the peer forwarded to us, and `result`
    /// or `error` for a call we forwarded to it (its stand-in callee is `proxy`).
    fn call_progress(&mut self, mesh: &Mesh, frame: Frame) {
        match frame {
            Frame::Cancel {
                realm,
                proxy,
                request,
                mode,
                reason,
            } => {
                let (Some((r, _)), Some(lr)) = (realm_of(mesh, &realm), self.realms.get(&realm))
                else {
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
                let Some((r, _)) = realm_of(mesh, &realm) else {
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
                if let Some((r, _)) = realm_of(mesh, &realm) {
                    r.dealer.invocation_error(proxy, request, error, payload);
                }
            }
            _ => {}
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
