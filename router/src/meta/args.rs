//! Reading a meta procedure's arguments (positional, or keywords as autobahn passes them) and
//! shaping its answers.

use crate::uri::{errors, MatchPolicy};
use crate::wire::{Dict, Id, Payload, Value};
use crate::WampError;

pub(super) fn one(v: Value) -> Result<Payload, WampError> {
    Ok(Payload::new(vec![v], Dict::new()))
}

fn arg<'a>(args: &'a [Value], i: usize, name: &str) -> Result<&'a Value, WampError> {
    args.get(i).ok_or_else(|| {
        WampError::new(
            errors::INVALID_ARGUMENT,
            format!("missing argument {i} ({name})"),
        )
    })
}

pub(super) fn id_arg(args: &[Value], i: usize, name: &str) -> Result<Id, WampError> {
    arg(args, i, name)?.as_u64().ok_or_else(|| {
        WampError::new(
            errors::INVALID_ARGUMENT,
            format!("argument {i} ({name}) must be an ID"),
        )
    })
}

pub(super) fn str_arg<'a>(args: &'a [Value], i: usize, name: &str) -> Result<&'a str, WampError> {
    arg(args, i, name)?.as_str().ok_or_else(|| {
        WampError::new(
            errors::INVALID_ARGUMENT,
            format!("argument {i} ({name}) must be a string"),
        )
    })
}

/// `filter_authroles`: a list of roles, positional or keyword.
pub(super) fn role_filter(args: &[Value], kwargs: &Dict) -> Result<Option<Vec<String>>, WampError> {
    match args.first().or_else(|| kwargs.get("filter_authroles")) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::List(l)) => Ok(Some(
            l.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
        )),
        Some(_) => Err(WampError::new(
            errors::INVALID_ARGUMENT,
            "filter_authroles must be a list of roles",
        )),
    }
}

pub(super) fn match_option(args: &[Value], kwargs: &Dict) -> Result<MatchPolicy, WampError> {
    let m = args
        .get(1)
        .and_then(Value::as_dict)
        .and_then(|o| o.get("match"))
        .or_else(|| kwargs.get("match"))
        .and_then(Value::as_str);
    MatchPolicy::from_option(m).ok_or_else(|| {
        WampError::new(
            errors::INVALID_ARGUMENT,
            "option 'match' must be exact, prefix or wildcard",
        )
    })
}

pub(super) fn ids(v: impl IntoIterator<Item = Id>) -> Value {
    Value::List(v.into_iter().map(Value::from).collect())
}

/// Lists pattern IDs by match policy, as `wamp.*.list` returns them.
pub(super) fn by_policy(items: impl Iterator<Item = (MatchPolicy, Id)>) -> Value {
    let mut d = Dict::new();
    for p in [
        MatchPolicy::Exact,
        MatchPolicy::Prefix,
        MatchPolicy::Wildcard,
    ] {
        d.insert(p.name().into(), Value::List(Vec::new()));
    }
    for (p, id) in items {
        if let Some(Value::List(l)) = d.get_mut(p.name()) {
            l.push(Value::from(id));
        }
    }
    Value::Dict(d)
}

/// The answer to a name that is no meta procedure.
pub(super) fn no_such_procedure(name: &str) -> WampError {
    WampError::new(
        errors::NO_SUCH_PROCEDURE,
        format!("no meta procedure '{name}'"),
    )
}
