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
use crate::session::{EncodeCache, SessionHandle};
use crate::uri::{errors, MatchPolicy};
use crate::wire::{Dict, Id, Message, Payload, Value};
use crate::WampError;

struct Subscription {
    id: Id,
    policy: MatchPolicy,
    topic: String,
    subscribers: IndexMap<Id, SessionHandle>,
}

#[derive(Default)]
struct State {
    subscriptions: HashMap<Id, Subscription>,
    index: UriIndex<Id>,
    hook: Option<Arc<dyn BrokerHook>>,
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

/// The mesh's view of a broker.
pub trait BrokerHook: Send + Sync {
    /// Local interest in (`policy`, `topic`) appeared (first local subscriber) or vanished (last
    /// one gone). Called under the broker's write lock, so calls come in the order of changes.
    fn interest(&self, policy: MatchPolicy, topic: &str, present: bool);
    /// A local session's publication, after local delivery.
    fn forward(&self, publication: &Publication<'_>);
}

/// A realm's subscriptions.
#[derive(Default)]
pub struct Broker {
    state: RwLock<State>,
}

/// What a subscription looks like from outside (meta API, tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionInfo {
    pub id: Id,
    pub policy: MatchPolicy,
    pub topic: String,
    pub subscribers: Vec<Id>,
}

/// Which subscribers of a publication receive it (`exclude_me`, black- and whitelists).
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

fn bad_option(key: &str, expected: &str) -> WampError {
    WampError::new(
        errors::INVALID_ARGUMENT,
        format!("option '{key}' must be {expected}"),
    )
}

/// Reads a boolean option; anything but a bool is an error.
pub(crate) fn bool_option(options: &Dict, key: &str) -> Result<Option<bool>, WampError> {
    match options.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(bad_option(key, "a boolean")),
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

    /// Calls `f` with every (policy, topic) that has local subscribers, under the read lock,
    /// so that a snapshot and the [`BrokerHook::interest`] calls are ordered.
    pub fn for_each_interest(&self, mut f: impl FnMut(MatchPolicy, &str)) {
        let st = self.state.read();
        for sub in st.subscriptions.values() {
            f(sub.policy, &sub.topic);
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
        let mut st = self.state.write();
        let id = match st.index.get(policy, topic) {
            Some(id) => *id,
            None => {
                let id = random_id();
                if let Some(hook) = &st.hook {
                    hook.interest(policy, topic, true);
                }
                st.index.insert(policy, topic, id);
                st.subscriptions.insert(
                    id,
                    Subscription {
                        id,
                        policy,
                        topic: topic.to_owned(),
                        subscribers: IndexMap::new(),
                    },
                );
                id
            }
        };
        let sub = st.subscriptions.get_mut(&id).expect("index and map agree");
        sub.subscribers.insert(session.id(), session.clone());
        session.send(Message::Subscribed {
            request,
            subscription: id,
        });
        id
    }

    /// Removes `session` from subscription `id`; deletes the subscription once it has no
    /// subscribers. Fails if the session was not subscribed.
    pub fn unsubscribe(&self, session: Id, id: Id) -> Result<(), WampError> {
        let mut st = self.state.write();
        let Some(sub) = st.subscriptions.get_mut(&id) else {
            return Err(WampError::new(
                errors::NO_SUCH_SUBSCRIPTION,
                format!("no subscription {id}"),
            ));
        };
        if sub.subscribers.swap_remove(&session).is_none() {
            return Err(WampError::new(
                errors::NO_SUCH_SUBSCRIPTION,
                format!("session is not subscribed to {id}"),
            ));
        }
        if sub.subscribers.is_empty() {
            let (policy, topic) = (sub.policy, sub.topic.clone());
            st.subscriptions.remove(&id);
            st.index.remove(policy, &topic);
            if let Some(hook) = &st.hook {
                hook.interest(policy, &topic, false);
            }
        }
        Ok(())
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
        let st = self.state.read();
        let mut matched: Vec<&Subscription> = Vec::new();
        st.index.for_each_match(p.topic, |_, id| {
            if let Some(s) = st.subscriptions.get(id) {
                matched.push(s)
            }
        });
        for sub in matched {
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
        Ok(st.hook.clone())
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
        st.subscriptions
            .values()
            .map(|s| SubscriptionInfo {
                id: s.id,
                policy: s.policy,
                topic: s.topic.clone(),
                subscribers: s.subscribers.keys().copied().collect(),
            })
            .collect()
    }
}
