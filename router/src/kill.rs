//! Killing sessions for the meta API (`wamp.session.kill`, `kill_by_authid`,
//! `kill_by_authrole`, `kill_all`): the order, which sessions of a node it reaches, and the
//! meta API's answers. In a mesh, the same order also travels to the node of each victim
//! (`crate::cluster::Cluster::kill`, implemented by the mesh), which authorizes it there and
//! kills with [`kill_sessions`].
//!
//! Sessions the meta API hides (router-internal and `trusted` ones) are never killed; the
//! group kills spare the caller.

use crate::session::SessionHandle;
use crate::uri::errors;
use crate::wire::{Dict, Id, Payload, Value};
use crate::WampError;

/// Which sessions a kill is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KillTarget {
    Session(Id),
    Authid(String),
    Authrole(String),
    All,
}

impl KillTarget {
    /// The meta procedure that orders this kind of kill (what a node authorizes the caller for).
    pub fn procedure(&self) -> &'static str {
        match self {
            KillTarget::Session(_) => "wamp.session.kill",
            KillTarget::Authid(_) => "wamp.session.kill_by_authid",
            KillTarget::Authrole(_) => "wamp.session.kill_by_authrole",
            KillTarget::All => "wamp.session.kill_all",
        }
    }
}

/// A kill as the meta API was asked for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KillOrder {
    pub target: KillTarget,
    /// The GOODBYE's reason (`wamp.close.killed` unless the caller named one).
    pub reason: String,
    pub message: Option<String>,
    /// The caller: the group kills spare it.
    pub except: Option<Id>,
}

impl KillOrder {
    /// The order a call to meta procedure `name` gives, `None` if `name` is no kill.
    pub fn from_call(
        name: &str,
        caller: Option<Id>,
        args: &[Value],
        kwargs: &Dict,
    ) -> Option<Result<KillOrder, WampError>> {
        let (target, first) = match name {
            "wamp.session.kill" => (id_arg(args).map(KillTarget::Session), 1),
            "wamp.session.kill_by_authid" => (str_arg(args, "authid").map(KillTarget::Authid), 1),
            "wamp.session.kill_by_authrole" => {
                (str_arg(args, "authrole").map(KillTarget::Authrole), 1)
            }
            "wamp.session.kill_all" => (Ok(KillTarget::All), 0),
            _ => return None,
        };
        let get = |i: usize, k: &str| {
            args.get(i)
                .or_else(|| kwargs.get(k))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        Some(target.map(|target| KillOrder {
            target,
            reason: get(first, "reason").unwrap_or_else(|| errors::KILLED.to_owned()),
            message: get(first + 1, "message"),
            except: caller,
        }))
    }

    /// The meta API's answer once `killed` are the sessions it ended (on every node asked).
    pub fn answer(&self, killed: Vec<Id>) -> Result<Payload, WampError> {
        let one = |v: Value| Ok(Payload::new(vec![v], Dict::new()));
        match &self.target {
            KillTarget::Session(id) if killed.is_empty() => Err(no_such_session(*id)),
            KillTarget::Session(_) => Ok(Payload::default()),
            KillTarget::All => one(Value::from(killed.len() as u64)),
            _ => one(Value::List(killed.into_iter().map(Value::from).collect())),
        }
    }
}

fn id_arg(args: &[Value]) -> Result<Id, WampError> {
    args.first().and_then(Value::as_u64).ok_or_else(|| {
        WampError::new(
            errors::INVALID_ARGUMENT,
            "argument 0 (session_id) must be an ID",
        )
    })
}

fn str_arg(args: &[Value], name: &str) -> Result<String, WampError> {
    args.first()
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| {
            WampError::new(
                errors::INVALID_ARGUMENT,
                format!("argument 0 ({name}) must be a string"),
            )
        })
}

pub(crate) fn no_such_session(id: Id) -> WampError {
    WampError::new(
        errors::NO_SUCH_SESSION,
        format!("no session with ID {id} exists on this realm"),
    )
}

/// Kills the sessions the order is for among a realm's: `lookup` finds one by ID, `all` lists
/// every one. Returns their IDs.
pub fn kill_sessions(
    lookup: impl FnOnce(Id) -> Option<SessionHandle>,
    all: impl FnOnce() -> Vec<SessionHandle>,
    order: &KillOrder,
) -> Vec<Id> {
    let visible = |s: &SessionHandle| !s.is_restricted();
    let chosen: Vec<SessionHandle> = match &order.target {
        KillTarget::Session(id) => lookup(*id).filter(visible).into_iter().collect(),
        group => all()
            .into_iter()
            .filter(|s| visible(s) && Some(s.id()) != order.except)
            .filter(|s| match group {
                KillTarget::Authid(a) => s.info.authid == *a,
                KillTarget::Authrole(r) => s.info.authrole == *r,
                _ => true,
            })
            .collect(),
    };
    for s in &chosen {
        s.kill(&order.reason, order.message.clone());
    }
    chosen.iter().map(|s| s.id()).collect()
}

/// The answer when only this node carried the order out (no mesh, or no peer that takes kill
/// orders) and ended `killed`; `elsewhere` is the node a peer announced the victim of a
/// `kill` on, named in the error.
pub fn answer_here(
    order: &KillOrder,
    killed: Vec<Id>,
    elsewhere: Option<&str>,
) -> Result<Payload, WampError> {
    if let (KillTarget::Session(id), true, Some(node)) =
        (&order.target, killed.is_empty(), elsewhere)
    {
        return Err(WampError::new(
            errors::NO_SUCH_SESSION,
            format!(
                "session {id} is connected to mesh node '{node}', which does not take kill \
                 orders from this node (an older version)"
            ),
        ));
    }
    order.answer(killed)
}
