//! `wamp.subscription.*`: subscriptions by ID, URI or match, with their subscribers on every
//! node, and event history.

use super::args::{by_policy, id_arg, ids, match_option, no_such_procedure, one, str_arg};
use super::Call;
use crate::broker::SubscriptionInfo;
use crate::directory::SubscriptionView;
use crate::realm::Realm;
use crate::uri::{errors, MatchPolicy};
use crate::wire::{Dict, Id, Payload, Value};
use crate::WampError;

/// Runs one `wamp.subscription.*` procedure.
pub(super) fn call(c: &Call<'_>, name: &str) -> Result<Payload, WampError> {
    let (realm, args, kwargs) = (c.realm, c.args, c.kwargs);
    match name {
        "wamp.subscription.list" => list(c),
        "wamp.subscription.lookup" => {
            let topic = str_arg(args, 0, "topic")?;
            let policy = match_option(args, kwargs)?;
            let found = realm.broker.lookup(policy, topic).or_else(|| {
                realm
                    .directory()
                    .subscription_for(policy, topic)
                    .map(|s| s.id)
            });
            one(found
                .filter(|_| !c.hidden(topic))
                .map_or(Value::Null, Value::from))
        }
        "wamp.subscription.match" => matching(c, str_arg(args, 0, "topic")?),
        "wamp.subscription.get" => {
            let s = subscription(c, id_arg(args, 0, "subscription_id")?)?;
            one(view_details(&s))
        }
        "wamp.subscription.list_subscribers" | "wamp.subscription.count_subscribers" => {
            let s = subscription(c, id_arg(args, 0, "subscription_id")?)?;
            let subscribers = mesh_subscribers(realm, s.policy, &s.topic);
            if name.ends_with("count_subscribers") {
                one(Value::from(subscribers.len() as u64))
            } else {
                one(ids(subscribers))
            }
        }
        "wamp.subscription.get_events" => events(c),
        other => Err(no_such_procedure(other)),
    }
}

/// A subscription by ID (this node's or a peer's), refused if it is reserved to the router.
fn subscription(c: &Call<'_>, id: Id) -> Result<SubscriptionView, WampError> {
    let s = subscription_view(c.realm, id).ok_or_else(|| no_such_subscription(id))?;
    c.protected(&s.topic)?;
    Ok(s)
}

/// `wamp.subscription.list`: every subscription with a subscriber the API shows, by policy.
fn list(c: &Call<'_>) -> Result<Payload, WampError> {
    let realm = c.realm;
    let local = realm.broker.subscriptions();
    let mut listed: Vec<(MatchPolicy, Id)> = local
        .iter()
        .filter(|s| !c.hidden(&s.topic) && !mesh_subscribers(realm, s.policy, &s.topic).is_empty())
        .map(|s| (s.policy, s.id))
        .collect();
    // Peers' subscriptions this node has none of its own for.
    for (s, visible) in realm.directory().subscriptions() {
        if visible > 0 && !c.hidden(&s.topic) && realm.broker.lookup(s.policy, &s.topic).is_none() {
            listed.push((s.policy, s.id));
        }
    }
    one(by_policy(listed.into_iter()))
}

/// `wamp.subscription.match(topic)`: every subscription (on any node) an event on `topic`
/// would reach, or null.
fn matching(c: &Call<'_>, topic: &str) -> Result<Payload, WampError> {
    let realm = c.realm;
    let mut found = realm.broker.matching(topic);
    found.retain(|id| {
        realm
            .broker
            .subscription(*id)
            .is_some_and(|s| !c.hidden(&s.topic))
    });
    for s in realm.directory().matching(topic) {
        if !c.hidden(&s.topic) && realm.broker.lookup(s.policy, &s.topic).is_none() {
            found.push(s.id);
        }
    }
    one(if found.is_empty() {
        Value::Null
    } else {
        ids(found)
    })
}

/// `wamp.subscription.get_events(subscription_id, limit?)`: the history kept for it.
fn events(c: &Call<'_>) -> Result<Payload, WampError> {
    let (realm, args) = (c.realm, c.args);
    let id = id_arg(args, 0, "subscription_id")?;
    let limit = args
        .get(1)
        .or_else(|| c.kwargs.get("limit"))
        .and_then(Value::as_u64)
        .unwrap_or(10) as usize;
    let s = subscription(c, id)?;
    // History is kept where it is configured: this node's subscription for the URI.
    let here = realm.broker.lookup(s.policy, &s.topic).unwrap_or(id);
    match realm.broker.events(here, limit) {
        Some(mut events) => {
            for e in &mut events {
                if let Value::Dict(d) = e {
                    d.insert("realm".into(), Value::from(realm.name()));
                }
            }
            one(Value::List(events))
        }
        None => Err(WampError::new(
            "wamp.error.history_unavailable",
            "event history for the given subscription is not available or enabled",
        )),
    }
}

fn view_of(s: &SubscriptionInfo) -> SubscriptionView {
    SubscriptionView {
        id: s.id,
        policy: s.policy,
        topic: s.topic.clone(),
        created: s.created.clone(),
    }
}

pub(super) fn subscription_details(s: &SubscriptionInfo) -> Value {
    view_details(&view_of(s))
}

fn view_details(s: &SubscriptionView) -> Value {
    let mut d = Dict::new();
    d.insert("id".into(), Value::from(s.id));
    d.insert("created".into(), Value::from(s.created.as_str()));
    d.insert("uri".into(), Value::from(s.topic.as_str()));
    d.insert("match".into(), Value::from(s.policy.name()));
    Value::Dict(d)
}

/// Only the IDs of sessions the API shows.
fn visible_ids(realm: &Realm, sessions: &[Id]) -> Vec<Id> {
    sessions
        .iter()
        .copied()
        .filter(|id| realm.session(*id).is_some_and(|s| !s.is_restricted()))
        .collect()
}

/// A subscription by ID: this node's, or one a peer announced.
fn subscription_view(realm: &Realm, id: Id) -> Option<SubscriptionView> {
    match realm.broker.subscription(id) {
        Some(s) => Some(view_of(&s)),
        None => realm.directory().subscription(id),
    }
}

/// The subscribers the API shows for (policy, topic) on every node: this node's first.
fn mesh_subscribers(realm: &Realm, policy: MatchPolicy, topic: &str) -> Vec<Id> {
    let mut out = match realm
        .broker
        .lookup(policy, topic)
        .and_then(|id| realm.broker.subscription(id))
    {
        Some(s) => visible_ids(realm, &s.subscribers),
        None => Vec::new(),
    };
    for id in realm.directory().subscribers(policy, topic) {
        if !out.contains(&id) {
            out.push(id);
        }
    }
    out
}

fn no_such_subscription(id: Id) -> WampError {
    WampError::new(
        errors::NO_SUCH_SUBSCRIPTION,
        format!("no subscription with ID {id} exists on this realm"),
    )
}
