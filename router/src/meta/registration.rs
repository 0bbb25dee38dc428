//! `wamp.registration.*`: registrations by ID, URI or match, with their callees on every
//! node (remote callees are stand-ins in this node's dealer).

use super::args::{by_policy, id_arg, ids, match_option, no_such_procedure, one, str_arg};
use super::Call;
use crate::dealer::RegistrationInfo;
use crate::realm::Realm;
use crate::uri::errors;
use crate::wire::{Dict, Id, Payload, Value};
use crate::WampError;

/// Runs one `wamp.registration.*` procedure.
pub(super) fn call(c: &Call<'_>, name: &str) -> Result<Payload, WampError> {
    let (realm, args, kwargs) = (c.realm, c.args, c.kwargs);
    match name {
        "wamp.registration.list" => {
            let regs = realm.dealer.registrations();
            one(by_policy(
                regs.iter()
                    .filter(|r| {
                        !c.hidden(&r.procedure) && !visible_callees(realm, &r.callees).is_empty()
                    })
                    .map(|r| (r.policy, r.id)),
            ))
        }
        "wamp.registration.lookup" => {
            let procedure = str_arg(args, 0, "procedure")?;
            let policy = match_option(args, kwargs)?;
            one(realm
                .dealer
                .lookup(policy, procedure)
                .filter(|_| !c.hidden(procedure))
                .map_or(Value::Null, Value::from))
        }
        "wamp.registration.match" => {
            let procedure = str_arg(args, 0, "procedure")?;
            one(realm
                .dealer
                .best_match(procedure)
                .filter(|id| {
                    realm
                        .dealer
                        .registration(*id)
                        .is_some_and(|r| !c.hidden(&r.procedure))
                })
                .map_or(Value::Null, Value::from))
        }
        "wamp.registration.get" => {
            let r = registration(c, id_arg(args, 0, "registration_id")?)?;
            one(registration_details(&r))
        }
        "wamp.registration.list_callees" | "wamp.registration.count_callees" => {
            let r = registration(c, id_arg(args, 0, "registration_id")?)?;
            let callees = visible_callees(realm, &r.callees);
            if name.ends_with("count_callees") {
                one(Value::from(callees.len() as u64))
            } else {
                one(ids(callees))
            }
        }
        other => Err(no_such_procedure(other)),
    }
}

/// A registration by ID (this node's, or a peer's ID for it), refused if it is reserved to
/// the router.
fn registration(c: &Call<'_>, id: Id) -> Result<RegistrationInfo, WampError> {
    let realm = c.realm;
    let r = realm
        .dealer
        .registration(id)
        .or_else(|| {
            let local = realm.directory().local_registration(id)?;
            realm.dealer.registration(local)
        })
        .ok_or_else(|| no_such_registration(id))?;
    c.protected(&r.procedure)?;
    Ok(r)
}

pub(super) fn registration_details(r: &RegistrationInfo) -> Value {
    let mut d = Dict::new();
    d.insert("id".into(), Value::from(r.id));
    d.insert("created".into(), Value::from(r.created.as_str()));
    d.insert("uri".into(), Value::from(r.procedure.as_str()));
    d.insert("match".into(), Value::from(r.policy.name()));
    d.insert("invoke".into(), Value::from(r.invoke.name()));
    Value::Dict(d)
}

/// The callees of a registration the API shows: local ones by their session ID, and remote
/// ones (stand-ins here) by their session ID on their own node.
fn visible_callees(realm: &Realm, callees: &[Id]) -> Vec<Id> {
    let dir = realm.directory();
    callees
        .iter()
        .filter_map(|id| match realm.session(*id) {
            Some(s) => (!s.is_restricted()).then_some(*id),
            None => dir.callee(*id),
        })
        .collect()
}

fn no_such_registration(id: Id) -> WampError {
    WampError::new(
        errors::NO_SUCH_REGISTRATION,
        format!("no registration with ID {id} exists on this realm"),
    )
}
