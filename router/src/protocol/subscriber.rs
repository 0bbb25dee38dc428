//! The subscriber role: SUBSCRIBE and UNSUBSCRIBE. The broker queues SUBSCRIBED itself, under
//! its lock, so it precedes any EVENT; UNSUBSCRIBED is sent here.

use super::established::{match_policy, Established};
use crate::admission::cap_error;
use crate::auth::Action;
use crate::cluster::ReplyHold;
use crate::uri::{self, errors, MatchPolicy};
use crate::wire::{code, Dict, Id, Message, Value};
use crate::WampError;

/// SUBSCRIBE: checked, authorized and within the session's cap, then the broker's.
pub(super) fn subscribe(s: &mut Established<'_>, request: Id, options: &Dict, topic: &str) {
    // SUBSCRIBED waits for the mesh's peers to apply the change and to have its meta
    // events (cluster::ReplyHold).
    let hold = ReplyHold::begin(s.joined.realm.cluster(), &s.joined.session);
    let result = admit(s, options, topic).map(|policy| {
        let retained = matches!(options.get("get_retained"), Some(Value::Bool(true)));
        s.realm()
            .broker
            .subscribe_tracked(s.session(), request, policy, topic, retained)
    });
    let ok = result.is_ok();
    match result {
        Ok((subscription, created)) => {
            s.joined.subscriptions.insert(subscription);
            s.realm()
                .subscription_events(s.session(), subscription, topic, true, created);
        }
        Err(e) => s.error(e, code::SUBSCRIBE, request),
    }
    hold.finish(ok);
}

/// A subscription's match policy and URI, its authorization, and the session's cap.
fn admit(s: &Established<'_>, options: &Dict, topic: &str) -> Result<MatchPolicy, WampError> {
    let policy = match_policy(options)?;
    if !uri::is_valid(topic, s.uri_check(), policy) {
        return Err(WampError::new(
            errors::INVALID_URI,
            format!("invalid topic URI '{topic}' for match '{}'", policy.name()),
        ));
    }
    if !s.authorized(topic, Action::Subscribe, policy) {
        return Err(WampError::new(
            errors::NOT_AUTHORIZED,
            format!("not authorized to subscribe to '{topic}'"),
        ));
    }
    let max = s.ctx.limits().max_subscriptions_per_session;
    if !s.internal && s.joined.subscriptions.len() >= max {
        return Err(cap_error("subscriptions", max));
    }
    Ok(policy)
}

/// UNSUBSCRIBE of one of the session's own subscriptions.
pub(super) fn unsubscribe(s: &mut Established<'_>, request: Id, subscription: Id) {
    // UNSUBSCRIBED waits for the mesh's peers to apply the change and to have its meta
    // events (cluster::ReplyHold).
    let hold = ReplyHold::begin(s.joined.realm.cluster(), &s.joined.session);
    let result = if s.joined.subscriptions.remove(&subscription) {
        s.realm()
            .broker
            .unsubscribe_tracked(s.session().id(), subscription)
    } else {
        Err(WampError::new(
            errors::NO_SUCH_SUBSCRIPTION,
            format!("not subscribed to {subscription}"),
        ))
    };
    let ok = result.is_ok();
    match result {
        Ok((deleted, topic)) => {
            s.session().send(Message::Unsubscribed {
                request,
                details: None,
            });
            s.realm()
                .subscription_events(s.session(), subscription, &topic, false, deleted);
        }
        Err(e) => s.error(e, code::UNSUBSCRIBE, request),
    }
    hold.finish(ok);
}
