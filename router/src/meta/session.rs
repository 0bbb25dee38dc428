//! `wamp.session.*`: counting, listing and describing sessions (this node's and those peers
//! announced), killing them, and testaments.

use super::args::{id_arg, ids, no_such_procedure, one, role_filter, str_arg};
use super::Call;
use crate::context::Context;
use crate::directory::RemoteSession;
use crate::kill::{answer_here, kill_sessions, KillOrder, KillTarget};
use crate::realm::Realm;
use crate::session::{self, SessionHandle};
use crate::uri::{errors, MatchPolicy};
use crate::wire::{Dict, Id, Payload, Value};
use crate::WampError;

/// Runs one `wamp.session.*` procedure.
pub(super) fn call(c: &Call<'_>, name: &str) -> Result<Payload, WampError> {
    let (realm, args, kwargs) = (c.realm, c.args, c.kwargs);
    match name {
        "wamp.session.count" | "wamp.session.list" => {
            let sessions = listed(realm, role_filter(args, kwargs)?);
            if name == "wamp.session.count" {
                one(Value::from(sessions.len() as u64))
            } else {
                one(ids(sessions))
            }
        }
        "wamp.session.get" => {
            let id = id_arg(args, 0, "session_id")?;
            match realm.session(id) {
                Some(s) if !s.is_restricted() => one(s.info.details()),
                Some(_) => Err(no_such_session(id)),
                None => match realm.directory().session(id) {
                    Some(s) => one(remote_session_details(id, realm.name(), &s)),
                    None => Err(no_such_session(id)),
                },
            }
        }
        "wamp.session.kill"
        | "wamp.session.kill_by_authid"
        | "wamp.session.kill_by_authrole"
        | "wamp.session.kill_all" => kill(c, name),
        "wamp.session.add_testament" | "wamp.session.flush_testaments" => {
            let session = c
                .caller
                .and_then(|id| realm.session(id))
                .ok_or_else(|| WampError::new(errors::NO_SUCH_SESSION, "the caller is unknown"))?;
            testament(c.ctx, realm, &session, name, args, kwargs)
        }
        other => Err(no_such_procedure(other)),
    }
}

/// The sessions the API shows, on every node, with one of `roles` if given.
fn listed(realm: &Realm, roles: Option<Vec<String>>) -> Vec<Id> {
    let role_ok = |role: &String| roles.as_ref().is_none_or(|f| f.contains(role));
    let mut sessions: Vec<Id> = visible_sessions(realm)
        .into_iter()
        .filter(|s| role_ok(&s.info.authrole))
        .map(|s| s.id())
        .collect();
    // A remote ID equal to a local one (a collision) counts once.
    let remote = realm.directory().session_ids(|s| role_ok(&s.authrole));
    sessions.extend(remote.into_iter().filter(|id| realm.session(*id).is_none()));
    sessions
}

/// `wamp.session.kill*` answered by this node alone (no peer takes kill orders, or the
/// victim is a session of this node): the sessions of this node the order reaches.
fn kill(c: &Call<'_>, name: &str) -> Result<Payload, WampError> {
    let Some(order) = KillOrder::from_call(name, c.caller, c.args, c.kwargs) else {
        return Err(no_such_procedure(name));
    };
    let order = order?;
    let realm = c.realm;
    let killed = kill_sessions(|id| realm.session(id), || realm.sessions(), &order);
    let node = match order.target {
        KillTarget::Session(id) => realm.directory().session(id),
        _ => None,
    };
    answer_here(&order, killed, node.as_ref().map(|s| &*s.node))
}

fn visible_sessions(realm: &Realm) -> Vec<SessionHandle> {
    realm
        .sessions()
        .into_iter()
        .filter(|s| !s.is_restricted())
        .collect()
}

/// What `wamp.session.get` says about a session on another node: what its node would say.
fn remote_session_details(id: Id, realm: &str, s: &RemoteSession) -> Value {
    session::session_details(
        id,
        realm,
        [&s.authid, &s.authrole, &s.authmethod, &s.authprovider],
        s.transport.clone(),
    )
}

/// `add_testament(topic, args, kwargs, publish_options?, scope?)` and
/// `flush_testaments(scope?)`, as Crossbar defines them.
fn testament(
    ctx: &Context,
    realm: &Realm,
    session: &SessionHandle,
    name: &str,
    args: &[Value],
    kwargs: &Dict,
) -> Result<Payload, WampError> {
    let flush = name.ends_with("flush_testaments");
    let scope = match optional(args, kwargs, if flush { 0 } else { 4 }, "scope") {
        None => "destroyed".to_owned(),
        Some(Value::String(s)) if s == "destroyed" || s == "detached" => s.clone(),
        Some(_) => {
            return Err(WampError::new(
                "wamp.error.testament_error",
                "scope must be destroyed or detached",
            ))
        }
    };
    if flush {
        return one(Value::from(session.flush_testaments(&scope) as u64));
    }
    add_testament(ctx, realm, session, args, kwargs, scope)
}

/// An optional argument, positional or keyword; null is as absent.
fn optional<'a>(args: &'a [Value], kwargs: &'a Dict, i: usize, k: &str) -> Option<&'a Value> {
    args.get(i)
        .or_else(|| kwargs.get(k))
        .filter(|v| **v != Value::Null)
}

fn invalid_argument(message: &str) -> WampError {
    WampError::new(errors::INVALID_ARGUMENT, message)
}

/// Adds a testament. The publish permission is checked now (roles are static), so a caller
/// learns at once that it would be refused.
fn add_testament(
    ctx: &Context,
    realm: &Realm,
    session: &SessionHandle,
    args: &[Value],
    kwargs: &Dict,
    scope: String,
) -> Result<Payload, WampError> {
    let topic = str_arg(args, 0, "topic")?;
    let t_args = match optional(args, kwargs, 1, "args") {
        None => Vec::new(),
        Some(Value::List(l)) => l.clone(),
        Some(_) => return Err(invalid_argument("args must be a list")),
    };
    let t_kwargs = match optional(args, kwargs, 2, "kwargs") {
        None => Dict::new(),
        Some(Value::Dict(d)) => d.clone(),
        Some(_) => return Err(invalid_argument("kwargs must be a dict")),
    };
    let mut options = match optional(args, kwargs, 3, "publish_options") {
        None => Dict::new(),
        Some(Value::Dict(d)) => d.clone(),
        Some(_) => return Err(invalid_argument("publish_options must be a dict")),
    };
    options.remove("acknowledge");
    options.remove("exclude_me");
    if !crate::uri::is_valid(topic, realm.config.uri_check, MatchPolicy::Exact)
        || crate::uri::is_reserved(topic)
    {
        return Err(WampError::new(
            errors::INVALID_URI,
            format!("invalid testament topic '{topic}'"),
        ));
    }
    let auth = ctx.authorizer().authorize(
        realm.name(),
        &session.info.authrole,
        topic,
        crate::auth::Action::Publish,
    );
    if !auth.allow && !session.is_restricted() {
        return Err(WampError::new(
            errors::NOT_AUTHORIZED,
            format!("not authorized to publish to '{topic}'"),
        ));
    }
    if auth.disclose {
        options.insert("disclose_me".into(), Value::Bool(true));
    }
    session.add_testament(crate::session::Testament {
        topic: topic.to_owned(),
        options,
        payload: Payload::new(t_args, t_kwargs),
        scope,
    });
    one(Value::from(crate::id::random_id()))
}

fn no_such_session(id: Id) -> WampError {
    WampError::new(
        errors::NO_SUCH_SESSION,
        format!("no session with ID {id} exists on this realm"),
    )
}
