//! The mesh directory of one realm: what peers announced about their sessions, their
//! subscriptions (with subscribers) and their callees, kept for the meta API only (routing
//! never reads it). The realm owns it (empty on a node without a mesh); the mesh fills it and
//! the meta API reads it, so neither needs the other.
//!
//! Every entry belongs to the peer link it arrived on (a link ID); the mesh removes a link's
//! entries when the link ends, as it does the routing state. So a dead peer's sessions vanish
//! from `wamp.session.count` as soon as its link is dropped, and a returning peer's resync
//! rebuilds them from scratch.
//!
//! Session IDs are drawn uniformly at random in [1, 2^53] by every node, as the WAMP spec
//! asks, so a mesh is as likely to see two equal IDs as one node with as many sessions (about
//! n²/2^54: 1 in 180 million for 10,000 sessions). Should two peers ever announce the same
//! session ID, the first announcement is kept and the other is ignored. Subscription IDs are
//! derived from (realm, policy, topic) (`crate::id::scoped_id`), so every node announces the
//! same ID for the same subscription, as one router would have one: an ID names the
//! subscription with its subscribers on every node.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use indexmap::IndexSet;
use parking_lot::RwLock;

use crate::matcher::UriIndex;
use crate::uri::MatchPolicy;
use crate::wire::{Dict, Id};

/// A session on another node, as its node announced it.
#[derive(Clone, Debug)]
pub struct RemoteSession {
    /// The node it is connected to.
    pub node: Arc<str>,
    pub authid: String,
    pub authrole: String,
    pub authmethod: String,
    pub authprovider: String,
    /// As `wamp.session.get` shows it on its own node.
    pub transport: Dict,
}

/// A subscription as the meta API describes it, on this node or on another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionView {
    pub id: Id,
    pub policy: MatchPolicy,
    pub topic: String,
    pub created: String,
}

/// One peer's subscription for a (policy, topic).
struct RemoteSub {
    link: u64,
    node: Arc<str>,
    id: Id,
    created: String,
    subscribers: IndexSet<Id>,
}

/// Every peer's subscription for one (policy, topic), ordered by node name: the first one is
/// the one this node answers with when it has no subscription of its own.
struct Topic {
    topic: String,
    subs: Vec<RemoteSub>,
}

impl Topic {
    fn view(&self, policy: MatchPolicy, sub: &RemoteSub) -> SubscriptionView {
        SubscriptionView {
            id: sub.id,
            policy,
            topic: self.topic.clone(),
            created: sub.created.clone(),
        }
    }
}

/// A remote callee's stand-in in this node's dealer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RemoteCallee {
    /// The registration and the callee session on the callee's node.
    pub(crate) registration: Id,
    pub(crate) callee: Id,
    /// This node's registration the stand-in is a callee of.
    pub(crate) local: Id,
}

#[derive(Default)]
struct Tables {
    /// Session ID → (owning link, session).
    sessions: HashMap<Id, (u64, RemoteSession)>,
    topics: UriIndex<Topic>,
    /// Remote subscription ID → (policy, topic), and the links that announced it.
    sub_ids: HashMap<Id, (MatchPolicy, String, HashSet<u64>)>,
    /// Stand-in session ID → the remote callee it stands for.
    callees: HashMap<Id, RemoteCallee>,
}

impl Tables {
    fn sub_mut(&mut self, link: u64, id: Id) -> Option<&mut RemoteSub> {
        let (policy, topic, links) = self.sub_ids.get(&id)?;
        if !links.contains(&link) {
            return None;
        }
        self.topics
            .get_mut(*policy, topic)?
            .subs
            .iter_mut()
            .find(|s| s.link == link)
    }

    /// Subscribers whose sessions this node knows (the others are hidden on their own node,
    /// or beyond this node's table bound).
    fn visible<'a>(&'a self, t: &'a Topic) -> impl Iterator<Item = Id> + 'a {
        t.subs
            .iter()
            .flat_map(|s| s.subscribers.iter().copied())
            .filter(|id| self.sessions.contains_key(id))
    }
}

/// What peers announced in one realm. Short read/write locks, never held across anything
/// else, so a link's reader never waits long here.
#[derive(Default)]
pub struct Directory {
    t: RwLock<Tables>,
}

impl Directory {
    /// Records a peer's session; `false` if the ID is taken (by another link: a collision).
    pub(crate) fn add_session(&self, link: u64, id: Id, session: RemoteSession) -> bool {
        match self.t.write().sessions.entry(id) {
            Entry::Vacant(e) => {
                e.insert((link, session));
                true
            }
            Entry::Occupied(_) => false,
        }
    }

    pub(crate) fn remove_session(&self, link: u64, id: Id) -> bool {
        let mut t = self.t.write();
        if t.sessions.get(&id).is_some_and(|(owner, _)| *owner == link) {
            t.sessions.remove(&id);
            true
        } else {
            false
        }
    }

    /// Records a peer's subscription; `false` if its ID names another (policy, topic) here
    /// (a collision) or the link announced the same (policy, topic) already.
    pub(crate) fn add_subscription(
        &self,
        link: u64,
        node: &Arc<str>,
        (policy, topic): (MatchPolicy, &str),
        id: Id,
        created: String,
    ) -> bool {
        let mut t = self.t.write();
        if t.sub_ids
            .get(&id)
            .is_some_and(|(p, tp, _)| *p != policy || tp != topic)
        {
            return false;
        }
        let sub = RemoteSub {
            link,
            node: node.clone(),
            id,
            created,
            subscribers: IndexSet::new(),
        };
        match t.topics.get_mut(policy, topic) {
            Some(tp) => {
                if tp.subs.iter().any(|s| s.link == link) {
                    return false;
                }
                let at = tp.subs.partition_point(|s| s.node <= *node);
                tp.subs.insert(at, sub);
            }
            None => {
                t.topics.insert(
                    policy,
                    topic,
                    Topic {
                        topic: topic.to_owned(),
                        subs: vec![sub],
                    },
                );
            }
        }
        t.sub_ids
            .entry(id)
            .or_insert_with(|| (policy, topic.to_owned(), HashSet::new()))
            .2
            .insert(link);
        true
    }

    /// Forgets a peer's subscription and its subscribers; returns how many subscribers went
    /// with it.
    pub(crate) fn remove_subscription(&self, link: u64, policy: MatchPolicy, topic: &str) -> usize {
        let mut t = self.t.write();
        let Some(tp) = t.topics.get_mut(policy, topic) else {
            return 0;
        };
        let Some(at) = tp.subs.iter().position(|s| s.link == link) else {
            return 0;
        };
        let sub = tp.subs.remove(at);
        if tp.subs.is_empty() {
            t.topics.remove(policy, topic);
        }
        if let Some((_, _, links)) = t.sub_ids.get_mut(&sub.id) {
            links.remove(&link);
            if links.is_empty() {
                t.sub_ids.remove(&sub.id);
            }
        }
        sub.subscribers.len()
    }

    /// Adds a subscriber to one of the link's subscriptions; `false` if the subscription is
    /// unknown (not announced on this link) or the subscriber is already there.
    pub(crate) fn add_subscriber(&self, link: u64, subscription: Id, session: Id) -> bool {
        let mut t = self.t.write();
        t.sub_mut(link, subscription)
            .is_some_and(|s| s.subscribers.insert(session))
    }

    pub(crate) fn remove_subscriber(&self, link: u64, subscription: Id, session: Id) -> bool {
        let mut t = self.t.write();
        t.sub_mut(link, subscription)
            .is_some_and(|s| s.subscribers.swap_remove(&session))
    }

    pub(crate) fn add_callee(&self, stand_in: Id, callee: RemoteCallee) {
        self.t.write().callees.insert(stand_in, callee);
    }

    pub(crate) fn remove_callee(&self, stand_in: Id) {
        self.t.write().callees.remove(&stand_in);
    }

    /// A session on another node.
    pub fn session(&self, id: Id) -> Option<RemoteSession> {
        self.t.read().sessions.get(&id).map(|(_, s)| s.clone())
    }

    /// The IDs of the sessions on other nodes that pass `filter`.
    pub fn session_ids(&self, mut filter: impl FnMut(&RemoteSession) -> bool) -> Vec<Id> {
        self.t
            .read()
            .sessions
            .iter()
            .filter(|(_, (_, s))| filter(s))
            .map(|(id, _)| *id)
            .collect()
    }

    /// How many sessions other nodes announced.
    pub fn session_count(&self) -> usize {
        self.t.read().sessions.len()
    }

    /// A peer's subscription by its ID.
    pub fn subscription(&self, id: Id) -> Option<SubscriptionView> {
        let t = self.t.read();
        let (policy, topic, _) = t.sub_ids.get(&id)?;
        let tp = t.topics.get(*policy, topic)?;
        let sub = tp.subs.iter().find(|s| s.id == id)?;
        Some(tp.view(*policy, sub))
    }

    /// The subscription this node answers with for (policy, topic) when it has none of its
    /// own: that of the peer with the smallest node name.
    pub fn subscription_for(&self, policy: MatchPolicy, topic: &str) -> Option<SubscriptionView> {
        let t = self.t.read();
        let tp = t.topics.get(policy, topic)?;
        tp.subs.first().map(|s| tp.view(policy, s))
    }

    /// The subscribers of (policy, topic) on every other node (those whose sessions are
    /// known here).
    pub fn subscribers(&self, policy: MatchPolicy, topic: &str) -> Vec<Id> {
        let t = self.t.read();
        match t.topics.get(policy, topic) {
            Some(tp) => t.visible(tp).collect(),
            None => Vec::new(),
        }
    }

    /// One subscription per (policy, pattern) peers announced that covers `topic`.
    pub fn matching(&self, topic: &str) -> Vec<SubscriptionView> {
        let t = self.t.read();
        let mut found = Vec::new();
        t.topics.for_each_match(topic, |policy, tp| {
            if let Some(s) = tp.subs.first() {
                found.push(tp.view(policy, s));
            }
        });
        found
    }

    /// One subscription per (policy, topic) peers announced, with how many visible
    /// subscribers it has across them.
    pub fn subscriptions(&self) -> Vec<(SubscriptionView, usize)> {
        let t = self.t.read();
        let mut out = Vec::new();
        for (id, (policy, topic, _)) in &t.sub_ids {
            let Some(tp) = t.topics.get(*policy, topic) else {
                continue;
            };
            match tp.subs.first() {
                Some(first) if first.id == *id => {
                    out.push((tp.view(*policy, first), t.visible(tp).count()));
                }
                _ => {}
            }
        }
        out
    }

    /// The remote callee a stand-in session stands for: its session ID on its node, if that
    /// session is known here (sessions hidden on their own node stay hidden).
    pub fn callee(&self, stand_in: Id) -> Option<Id> {
        let t = self.t.read();
        let c = t.callees.get(&stand_in)?;
        t.sessions.contains_key(&c.callee).then_some(c.callee)
    }

    /// This node's registration holding a callee of another node's registration `id`.
    pub fn local_registration(&self, remote: Id) -> Option<Id> {
        self.t
            .read()
            .callees
            .values()
            .find(|c| c.registration == remote)
            .map(|c| c.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(node: &Arc<str>, role: &str) -> RemoteSession {
        RemoteSession {
            node: node.clone(),
            authid: "x".into(),
            authrole: role.into(),
            authmethod: "anonymous".into(),
            authprovider: "static".into(),
            transport: Dict::new(),
        }
    }

    #[test]
    fn entries_belong_to_their_link() {
        let d = Directory::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        assert!(d.add_session(1, 10, session(&a, "user")));
        // The same ID from another link (a collision) is ignored; its removal too.
        assert!(!d.add_session(2, 10, session(&b, "other")));
        assert!(!d.remove_session(2, 10));
        assert_eq!(d.session(10).unwrap().authrole, "user");
        assert!(d.add_session(2, 20, session(&b, "user")));

        let key = (MatchPolicy::Exact, "t");
        assert!(d.add_subscription(2, &b, key, 200, "c".into()));
        assert!(d.add_subscription(1, &a, key, 100, "c".into()));
        assert!(
            !d.add_subscription(1, &a, key, 101, "c".into()),
            "one per link"
        );
        // The smallest node name answers for the topic.
        assert_eq!(d.subscription_for(key.0, key.1).unwrap().id, 100);
        assert!(d.add_subscriber(1, 100, 10));
        assert!(d.add_subscriber(2, 200, 20));
        assert!(
            !d.add_subscriber(1, 200, 10),
            "not this link's subscription"
        );
        assert!(
            d.add_subscriber(2, 200, 99),
            "unknown session: kept, not shown"
        );
        let mut subs = d.subscribers(key.0, key.1);
        subs.sort();
        assert_eq!(subs, vec![10, 20]);
        assert_eq!(d.subscriptions(), vec![(d.subscription(100).unwrap(), 2)]);
        assert_eq!(d.matching("t").len(), 1);

        // Link 1 goes: its subscription, subscribers and session go with it.
        assert_eq!(d.remove_subscription(1, key.0, key.1), 1);
        assert!(d.remove_session(1, 10));
        assert_eq!(d.subscription_for(key.0, key.1).unwrap().id, 200);
        assert_eq!(d.subscribers(key.0, key.1), vec![20]);
        assert_eq!(d.session_ids(|_| true), vec![20]);
    }
}
