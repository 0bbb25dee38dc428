//! The broker: subscriptions and publication fan-out for one realm.
//!
//! Subscriptions are keyed by (match policy, topic pattern); every session subscribing to the
//! same pattern with the same policy shares one subscription ID, as the spec and Crossbar do.
//! A publish runs in the publisher's own task: match under a read lock, build one EVENT per
//! matching subscription, encode it at most once per serializer, and push the same bytes to
//! every eligible subscriber's queue. Per publisher→subscriber order follows from that: one
//! publisher's messages are routed one after another by one task into FIFO queues.
//!
//! The mesh plugs in through [`BrokerHook`]: it hears about local interest changes (first
//! subscriber, last unsubscriber) and about every local publication after local delivery;
//! publications from peers come back in through [`Broker::deliver_forwarded`], which delivers
//! to local subscribers only (one hop).

use std::collections::HashMap;
use std::sync::Arc;

use indexmap::IndexMap;
use parking_lot::RwLock;

use crate::id::random_id;
use crate::matcher::UriIndex;
use crate::options::{bad_option, bool_option};
use crate::session::{EncodeCache, SessionHandle};
use crate::uri::{errors, MatchPolicy};
use crate::wire::{Dict, Id, Message, Payload, Value};
use crate::WampError;

struct Subscription {
    id: Id,
    policy: MatchPolicy,
    topic: String,
    subscribers: IndexMap<Id, SessionHandle>,
    /// When the subscription was created (ISO 8601, for the meta API).
    created: String,
    /// Kept without subscribers: the realm keeps event history for it.
    persistent: bool,
}

impl Subscription {
    fn new(id: Id, policy: MatchPolicy, topic: &str, persistent: bool) -> Subscription {
        Subscription {
            id,
            policy,
            topic: topic.to_owned(),
            subscribers: IndexMap::new(),
            created: crate::timestamp::utc_timestamp(std::time::SystemTime::now()),
            persistent,
        }
    }

    fn interest(&self) -> Interest<'_> {
        Interest {
            id: self.id,
            policy: self.policy,
            topic: &self.topic,
            created: &self.created,
        }
    }

    fn info(&self) -> SubscriptionInfo {
        SubscriptionInfo {
            id: self.id,
            policy: self.policy,
            topic: self.topic.clone(),
            subscribers: self.subscribers.keys().copied().collect(),
            created: self.created.clone(),
        }
    }
}

#[derive(Default)]
struct State {
    /// The realm's name: subscription IDs are derived from it (see `id::scoped_id`).
    scope: String,
    subscriptions: HashMap<Id, Subscription>,
    index: UriIndex<Id>,
    hook: Option<Arc<dyn BrokerHook>>,
    /// The last publication with `retain: true` per topic (event retention).
    retained: HashMap<String, Retained>,
    /// Event history per subscription that has it: limit and events, oldest first.
    history: HashMap<Id, (usize, std::collections::VecDeque<Value>)>,
}

/// A retained event, replayed to subscribers that ask with `get_retained`.
struct Retained {
    publication: Id,
    eligibility: Eligibility,
    /// Publisher disclosure as the original EVENTs carried it.
    publisher: Option<Dict>,
    payload: Payload,
}

/// An event as `wamp.subscription.get_events` returns it (Crossbar's memory store format;
/// the meta API adds the realm).
fn stored_event(p: &Publication<'_>) -> Value {
    let time_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut d = Dict::new();
    d.insert("time_ns".into(), Value::from(time_ns));
    d.insert("session_id".into(), Value::from(p.publisher.id));
    d.insert("authid".into(), Value::from(p.publisher.authid));
    d.insert("authrole".into(), Value::from(p.publisher.authrole));
    d.insert("publication".into(), Value::from(p.id));
    d.insert("topic".into(), Value::from(p.topic));
    d.insert("args".into(), Value::List(p.payload.args().to_vec()));
    d.insert(
        "kwargs".into(),
        Value::Dict(p.payload.kwargs().cloned().unwrap_or_default()),
    );
    Value::Dict(d)
}

/// Whether a subscription pattern covers a concrete topic.
fn covers(policy: MatchPolicy, pattern: &str, topic: &str) -> bool {
    match policy {
        MatchPolicy::Exact => pattern == topic,
        MatchPolicy::Prefix => topic.starts_with(pattern),
        MatchPolicy::Wildcard => {
            let (p, t): (Vec<&str>, Vec<&str>) =
                (pattern.split('.').collect(), topic.split('.').collect());
            p.len() == t.len() && p.iter().zip(&t).all(|(p, t)| p.is_empty() || p == t)
        }
    }
}

/// Who published, as subscribers may see it (`disclose_me`) and eligibility rules test it.
#[derive(Clone, Copy, Debug)]
pub struct Publisher<'a> {
    pub id: Id,
    pub authid: &'a str,
    pub authrole: &'a str,
}

/// A publication as it crosses the mesh: everything a remote node needs to evaluate
/// eligibility and disclosure where its subscribers live. The ID is minted at the origin.
#[derive(Clone, Copy, Debug)]
pub struct Publication<'a> {
    pub id: Id,
    pub topic: &'a str,
    pub options: &'a Dict,
    pub publisher: Publisher<'a>,
    pub payload: &'a Payload,
}

/// A subscription as the mesh announces it to peers.
#[derive(Clone, Copy, Debug)]
pub struct Interest<'a> {
    pub id: Id,
    pub policy: MatchPolicy,
    pub topic: &'a str,
    /// When it was created (ISO 8601, as the meta API shows it).
    pub created: &'a str,
}

/// The mesh's view of a broker.
pub trait BrokerHook: Send + Sync {
    /// Local interest in (`policy`, `topic`) appeared (the subscription was created) or
    /// vanished (deleted). Called under the broker's write lock, so calls come in the order
    /// of changes.
    fn interest(&self, interest: &Interest<'_>, present: bool);
    /// A local session joined (`present`) or left a subscription; after the subscription's
    /// `interest(.., true)` and before its `interest(.., false)`, under the same lock.
    fn subscriber(&self, subscription: &Interest<'_>, session: &SessionHandle, present: bool);
    /// A local session's publication, after local delivery.
    fn forward(&self, publication: &Publication<'_>);
}

/// A realm's subscriptions.
#[derive(Default)]
pub struct Broker {
    state: RwLock<State>,
}

impl Broker {
    /// The broker of realm `name` (its subscription IDs are derived from the name).
    pub fn for_realm(name: &str) -> Broker {
        let b = Broker::default();
        b.state.write().scope = name.to_owned();
        b
    }
}

impl State {
    /// The mesh-wide ID of the subscription for (`policy`, `topic`).
    fn new_id(&self, policy: MatchPolicy, topic: &str) -> Id {
        crate::id::scoped_id(&self.scope, "subscription", policy, topic, |id| {
            self.subscriptions.contains_key(&id)
        })
    }
}

/// What a subscription looks like from outside (meta API, tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionInfo {
    pub id: Id,
    pub policy: MatchPolicy,
    pub topic: String,
    pub subscribers: Vec<Id>,
    pub created: String,
}

/// Which subscribers of a publication receive it (`exclude_me`, black- and whitelists).
#[derive(Clone)]
struct Eligibility {
    publisher: Id,
    exclude_me: bool,
    exclude: Vec<Id>,
    exclude_authid: Vec<String>,
    exclude_authrole: Vec<String>,
    eligible: Option<Vec<Id>>,
    eligible_authid: Option<Vec<String>>,
    eligible_authrole: Option<Vec<String>>,
}

fn id_list(options: &Dict, key: &str) -> Result<Option<Vec<Id>>, WampError> {
    match options.get(key) {
        None => Ok(None),
        Some(Value::List(items)) => items
            .iter()
            .map(|v| {
                v.as_u64()
                    .ok_or_else(|| bad_option(key, "a list of session IDs"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(bad_option(key, "a list of session IDs")),
    }
}

fn string_list(options: &Dict, key: &str) -> Result<Option<Vec<String>>, WampError> {
    match options.get(key) {
        None => Ok(None),
        // Crossbar accepts a single string as well as a list.
        Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
        Some(Value::List(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| bad_option(key, "a list of strings"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(bad_option(key, "a list of strings")),
    }
}

impl Eligibility {
    fn from_options(publisher: Id, options: &Dict) -> Result<Self, WampError> {
        Ok(Eligibility {
            publisher,
            exclude_me: bool_option(options, "exclude_me")?.unwrap_or(true),
            exclude: id_list(options, "exclude")?.unwrap_or_default(),
            exclude_authid: string_list(options, "exclude_authid")?.unwrap_or_default(),
            exclude_authrole: string_list(options, "exclude_authrole")?.unwrap_or_default(),
            eligible: id_list(options, "eligible")?,
            eligible_authid: string_list(options, "eligible_authid")?,
            eligible_authrole: string_list(options, "eligible_authrole")?,
        })
    }

    fn allows(&self, s: &SessionHandle) -> bool {
        let info = &s.info;
        if self.exclude_me && info.id == self.publisher {
            return false;
        }
        if self.exclude.contains(&info.id)
            || self.exclude_authid.contains(&info.authid)
            || self.exclude_authrole.contains(&info.authrole)
        {
            return false;
        }
        self.eligible.as_ref().is_none_or(|l| l.contains(&info.id))
            && self
                .eligible_authid
                .as_ref()
                .is_none_or(|l| l.contains(&info.authid))
            && self
                .eligible_authrole
                .as_ref()
                .is_none_or(|l| l.contains(&info.authrole))
    }
}

impl Broker {
    /// Installs the mesh hook (once, when the mesh starts).
    pub fn set_hook(&self, hook: Arc<dyn BrokerHook>) {
        self.state.write().hook = Some(hook);
    }

    /// Calls `f` with every subscription and its subscribers, under the read lock, so that a
    /// snapshot and the [`BrokerHook`] calls are ordered.
    pub fn for_each_interest(
        &self,
        mut f: impl FnMut(&Interest<'_>, &mut dyn Iterator<Item = &SessionHandle>),
    ) {
        let st = self.state.read();
        for sub in st.subscriptions.values() {
            f(&sub.interest(), &mut sub.subscribers.values());
        }
    }

    /// Adds `session` to the subscription for (`policy`, `topic`), creating it if needed,
    /// and answers SUBSCRIBED for `request`. Returns the subscription ID.
    ///
    /// SUBSCRIBED is queued while the write lock is held: a publish that can see the new
    /// subscription runs after the lock is released, so SUBSCRIBED precedes any EVENT.
    pub fn subscribe(
        &self,
        session: &SessionHandle,
        request: Id,
        policy: MatchPolicy,
        topic: &str,
    ) -> Id {
        self.subscribe_tracked(session, request, policy, topic, false)
            .0
    }

    /// [`Broker::subscribe`], also saying whether the subscription was created (meta events);
    /// with `get_retained`, the retained events the subscription covers follow SUBSCRIBED,
    /// marked `retained`.
    pub fn subscribe_tracked(
        &self,
        session: &SessionHandle,
        request: Id,
        policy: MatchPolicy,
        topic: &str,
        get_retained: bool,
    ) -> (Id, bool) {
        let mut guard = self.state.write();
        let st = &mut *guard;
        let mut created = false;
        let id = match st.index.get(policy, topic) {
            Some(id) => *id,
            None => {
                created = true;
                let id = st.new_id(policy, topic);
                let sub = Subscription::new(id, policy, topic, false);
                if let Some(hook) = &st.hook {
                    hook.interest(&sub.interest(), true);
                }
                st.index.insert(policy, topic, id);
                st.subscriptions.insert(id, sub);
                id
            }
        };
        let sub = st.subscriptions.get_mut(&id).expect("index and map agree");
        if sub
            .subscribers
            .insert(session.id(), session.clone())
            .is_none()
        {
            if let Some(hook) = &st.hook {
                hook.subscriber(&sub.interest(), session, true);
            }
        }
        session.send(Message::Subscribed {
            request,
            subscription: id,
        });
        if get_retained {
            for (t, r) in &st.retained {
                if !covers(policy, topic, t) || !r.eligibility.allows(session) {
                    continue;
                }
                let mut details = r.publisher.clone().unwrap_or_default();
                details.insert("retained".into(), Value::Bool(true));
                if policy != MatchPolicy::Exact {
                    details.insert("topic".into(), Value::from(t.as_str()));
                }
                session.send(Message::Event {
                    subscription: id,
                    publication: r.publication,
                    details,
                    payload: r.payload.clone(),
                });
            }
        }
        (id, created)
    }

    /// Removes `session` from subscription `id`; deletes the subscription once it has no
    /// subscribers. Fails if the session was not subscribed.
    pub fn unsubscribe(&self, session: Id, id: Id) -> Result<(), WampError> {
        self.unsubscribe_tracked(session, id).map(|_| ())
    }

    /// [`Broker::unsubscribe`], also saying whether the subscription was deleted, and its
    /// topic (meta events).
    pub fn unsubscribe_tracked(&self, session: Id, id: Id) -> Result<(bool, String), WampError> {
        let mut guard = self.state.write();
        let st = &mut *guard;
        let Some(sub) = st.subscriptions.get_mut(&id) else {
            return Err(WampError::new(
                errors::NO_SUCH_SUBSCRIPTION,
                format!("no subscription {id}"),
            ));
        };
        let Some(removed) = sub.subscribers.swap_remove(&session) else {
            return Err(WampError::new(
                errors::NO_SUCH_SUBSCRIPTION,
                format!("session is not subscribed to {id}"),
            ));
        };
        if let Some(hook) = &st.hook {
            hook.subscriber(&sub.interest(), &removed, false);
        }
        let topic = sub.topic.clone();
        if sub.subscribers.is_empty() && !sub.persistent {
            let sub = st.subscriptions.remove(&id).expect("just found");
            st.index.remove(sub.policy, &topic);
            if let Some(hook) = &st.hook {
                hook.interest(&sub.interest(), false);
            }
            return Ok((true, topic));
        }
        Ok((false, topic))
    }

    /// Routes a publication to every eligible local subscriber, then hands it to the mesh,
    /// and returns its publication ID.
    pub fn publish(
        &self,
        publisher: &SessionHandle,
        topic: &str,
        options: &Dict,
        payload: Payload,
    ) -> Result<Id, WampError> {
        let publication = Publication {
            id: random_id(),
            topic,
            options,
            publisher: Publisher {
                id: publisher.id(),
                authid: &publisher.info.authid,
                authrole: &publisher.info.authrole,
            },
            payload: &payload,
        };
        let hook = self.deliver(&publication)?;
        // Meta events (`wamp.*`) too: the mesh forwards them to peers that take them.
        if let Some(hook) = hook {
            hook.forward(&publication);
        }
        Ok(publication.id)
    }

    /// Delivers a publication that came from a peer node to local subscribers only.
    pub fn deliver_forwarded(&self, publication: &Publication<'_>) -> Result<(), WampError> {
        self.deliver(publication).map(|_| ())
    }

    /// Local delivery; returns the mesh hook (if any) for the caller to forward with.
    fn deliver(&self, p: &Publication<'_>) -> Result<Option<Arc<dyn BrokerHook>>, WampError> {
        let eligibility = Eligibility::from_options(p.publisher.id, p.options)?;
        let disclose = bool_option(p.options, "disclose_me")?.unwrap_or(false);
        let retain = bool_option(p.options, "retain")?.unwrap_or(false);
        if retain {
            let publisher = disclose.then(|| {
                let mut d = Dict::new();
                d.insert("publisher".into(), Value::from(p.publisher.id));
                d.insert("publisher_authid".into(), Value::from(p.publisher.authid));
                d.insert(
                    "publisher_authrole".into(),
                    Value::from(p.publisher.authrole),
                );
                d
            });
            self.state.write().retained.insert(
                p.topic.to_owned(),
                Retained {
                    publication: p.id,
                    eligibility: eligibility.clone(),
                    publisher,
                    payload: p.payload.clone(),
                },
            );
        }
        let st = self.state.read();
        let mut matched: Vec<&Subscription> = Vec::new();
        st.index.for_each_match(p.topic, |_, id| {
            if let Some(s) = st.subscriptions.get(id) {
                matched.push(s)
            }
        });
        let mut history: Vec<Id> = Vec::new();
        for sub in matched {
            if st.history.contains_key(&sub.id) {
                history.push(sub.id);
            }
            let mut details = Dict::new();
            if sub.policy != MatchPolicy::Exact {
                details.insert("topic".into(), Value::from(p.topic));
            }
            if disclose {
                details.insert("publisher".into(), Value::from(p.publisher.id));
                details.insert("publisher_authid".into(), Value::from(p.publisher.authid));
                details.insert(
                    "publisher_authrole".into(),
                    Value::from(p.publisher.authrole),
                );
            }
            let event = Message::Event {
                subscription: sub.id,
                publication: p.id,
                details,
                payload: p.payload.clone(),
            };
            let mut cache = EncodeCache::new(&event);
            for s in sub.subscribers.values() {
                if eligibility.allows(s) {
                    s.send_cached(&mut cache);
                }
            }
        }
        let hook = st.hook.clone();
        drop(st);
        if !history.is_empty() {
            let event = stored_event(p);
            let mut st = self.state.write();
            for id in history {
                if let Some((limit, events)) = st.history.get_mut(&id) {
                    if events.len() == *limit {
                        events.pop_front();
                    }
                    events.push_back(event.clone());
                }
            }
        }
        Ok(hook)
    }

    /// Keeps the last `limit` events published to (`policy`, `uri`) for
    /// `wamp.subscription.get_events`; the subscription exists from now on, subscribers or not.
    pub fn keep_history(&self, policy: MatchPolicy, uri: &str, limit: usize) -> Id {
        let mut st = self.state.write();
        let id = match st.index.get(policy, uri) {
            Some(id) => *id,
            None => {
                let id = st.new_id(policy, uri);
                let sub = Subscription::new(id, policy, uri, true);
                if let Some(hook) = &st.hook {
                    hook.interest(&sub.interest(), true);
                }
                st.index.insert(policy, uri, id);
                st.subscriptions.insert(id, sub);
                id
            }
        };
        if let Some(s) = st.subscriptions.get_mut(&id) {
            s.persistent = true;
        }
        st.history
            .insert(id, (limit.max(1), std::collections::VecDeque::new()));
        id
    }

    /// Up to `limit` of the subscription's stored events, newest first; `None` if it keeps no
    /// history.
    pub fn events(&self, subscription: Id, limit: usize) -> Option<Vec<Value>> {
        let st = self.state.read();
        let (_, events) = st.history.get(&subscription)?;
        Some(events.iter().rev().take(limit).cloned().collect())
    }

    pub fn has_history(&self) -> bool {
        !self.state.read().history.is_empty()
    }

    /// One subscription, for the meta API.
    pub fn subscription(&self, id: Id) -> Option<SubscriptionInfo> {
        self.state
            .read()
            .subscriptions
            .get(&id)
            .map(Subscription::info)
    }

    /// The subscription for exactly (`policy`, `topic`), if any.
    pub fn lookup(&self, policy: MatchPolicy, topic: &str) -> Option<Id> {
        self.state.read().index.get(policy, topic).copied()
    }

    /// Every subscription a publication to `topic` would reach.
    pub fn matching(&self, topic: &str) -> Vec<Id> {
        let st = self.state.read();
        let mut ids = Vec::new();
        st.index.for_each_match(topic, |_, id| ids.push(*id));
        ids
    }

    /// Removes a departing session from the given subscriptions.
    pub fn remove_session(&self, session: Id, subscriptions: impl IntoIterator<Item = Id>) {
        for id in subscriptions {
            let _ = self.unsubscribe(session, id);
        }
    }

    /// A snapshot of every subscription, for meta APIs and tests.
    pub fn subscriptions(&self) -> Vec<SubscriptionInfo> {
        let st = self.state.read();
        st.subscriptions.values().map(Subscription::info).collect()
    }
}
