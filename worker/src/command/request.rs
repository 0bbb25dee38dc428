//! A `run` call's arguments, checked: [`RunRequest::parse`] turns the call's keyword arguments
//! into a [`RunRequest`] or a [`CallError`] (the WAMP error URI and message the call gets).
//! Part of the worker's contract: the master's bridge for stock Buildbot workers parses `run`
//! with it too.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use switchyard_router::wire::{Dict, Payload, Value};

use crate::BAD_WORKDIR;

/// `max_output` when the call does not give one.
pub(crate) const DEFAULT_MAX_OUTPUT: u64 = 64 * 1024 * 1024;

/// What to run: through `/bin/sh -c`, or an argv with no shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandLine {
    Shell(String),
    Argv(Vec<String>),
}

/// A `run` call's arguments, checked.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub command: CommandLine,
    /// Relative to the basedir; no `..`, not absolute (checked).
    pub workdir: PathBuf,
    pub env: Vec<(String, String)>,
    pub timeout: Option<Duration>,
    pub max_output: u64,
    pub build: Option<i64>,
    pub step: Option<i64>,
}

/// A call refused before anything ran: the WAMP error URI and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    pub uri: &'static str,
    pub message: String,
}

pub(crate) const INVALID_ARGUMENT: &str = "wamp.error.invalid_argument";

pub(crate) fn invalid(message: impl Into<String>) -> CallError {
    CallError {
        uri: INVALID_ARGUMENT,
        message: message.into(),
    }
}

/// A finite, non-negative number of seconds (int or float).
pub(crate) fn seconds(key: &str, v: &Value) -> Result<Duration, CallError> {
    let f = match *v {
        Value::Int(i) => i as f64,
        Value::UInt(u) => u as f64,
        Value::Float(f) => f,
        _ => {
            return Err(invalid(format!(
                "{key} must be a number of seconds, not a {}",
                v.type_name()
            )))
        }
    };
    // NaN fails this too.
    if f.is_nan() || f <= 0.0 {
        return Err(invalid(format!("{key} must be more than 0 seconds")));
    }
    Duration::try_from_secs_f64(f).map_err(|_| invalid(format!("{key} is out of range")))
}

fn optional_int(kwargs: &Dict, key: &str) -> Result<Option<i64>, CallError> {
    match kwargs.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Int(i)) => Ok(Some(*i)),
        Some(v) => Err(invalid(format!(
            "{key} must be an integer, not a {}",
            v.type_name()
        ))),
    }
}

fn no_nul(what: &str, s: &str) -> Result<(), CallError> {
    if s.contains('\0') {
        Err(invalid(format!("{what} contains a NUL character")))
    } else {
        Ok(())
    }
}

/// A workdir must stay under the basedir: relative, with no `..` component.
pub(crate) fn check_workdir(s: &str) -> Result<PathBuf, CallError> {
    let bad = |why: &str| CallError {
        uri: BAD_WORKDIR,
        message: format!("workdir {s:?} {why}"),
    };
    if s.contains('\0') {
        return Err(bad("contains a NUL character"));
    }
    let p = Path::new(s);
    if p.is_absolute() {
        return Err(bad(
            "is absolute: give a path relative to the worker's basedir",
        ));
    }
    for c in p.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err(bad("has a '..' component")),
            Component::RootDir | Component::Prefix(_) => return Err(bad("is absolute")),
        }
    }
    Ok(p.to_path_buf())
}

impl RunRequest {
    /// Checks a `run` call's keyword arguments (unknown keys are ignored, for masters newer
    /// than this worker).
    pub fn parse(payload: &Payload) -> Result<RunRequest, CallError> {
        let empty = Dict::new();
        let kwargs = payload.kwargs().unwrap_or(&empty);
        let command = match kwargs.get("command") {
            None => return Err(invalid("run needs a `command` keyword argument")),
            Some(Value::String(s)) if s.trim().is_empty() => {
                return Err(invalid("command is empty"))
            }
            Some(Value::String(s)) => {
                no_nul("command", s)?;
                CommandLine::Shell(s.clone())
            }
            Some(Value::List(items)) => {
                if items.is_empty() {
                    return Err(invalid("command is an empty list"));
                }
                let mut argv = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let Some(s) = item.as_str() else {
                        return Err(invalid(format!(
                            "command[{i}] must be a string, not a {}",
                            item.type_name()
                        )));
                    };
                    no_nul("command", s)?;
                    argv.push(s.to_owned());
                }
                if argv[0].is_empty() {
                    return Err(invalid("command[0] (the program) is empty"));
                }
                CommandLine::Argv(argv)
            }
            Some(v) => {
                return Err(invalid(format!(
                    "command must be a string or a list of strings, not a {}",
                    v.type_name()
                )))
            }
        };
        let workdir = match kwargs.get("workdir") {
            None | Some(Value::Null) => PathBuf::new(),
            Some(Value::String(s)) => check_workdir(s)?,
            Some(v) => {
                return Err(invalid(format!(
                    "workdir must be a string, not a {}",
                    v.type_name()
                )))
            }
        };
        let mut env = Vec::new();
        match kwargs.get("env") {
            None | Some(Value::Null) => {}
            Some(Value::Dict(d)) => {
                for (k, v) in d {
                    if k.is_empty() || k.contains('=') || k.contains('\0') {
                        return Err(invalid(format!("env: {k:?} is not a valid variable name")));
                    }
                    let Some(v) = v.as_str() else {
                        return Err(invalid(format!(
                            "env: the value of {k} must be a string, not a {}",
                            v.type_name()
                        )));
                    };
                    no_nul("env", v)?;
                    env.push((k.clone(), v.to_owned()));
                }
            }
            Some(v) => {
                return Err(invalid(format!(
                    "env must be a map of strings, not a {}",
                    v.type_name()
                )))
            }
        }
        let timeout = match kwargs.get("timeout") {
            None | Some(Value::Null) => None,
            Some(v) => Some(seconds("timeout", v)?),
        };
        let max_output = match kwargs.get("max_output") {
            None | Some(Value::Null) => DEFAULT_MAX_OUTPUT,
            Some(v) => v.as_u64().ok_or_else(|| {
                invalid(format!(
                    "max_output must be a non-negative integer (bytes), not a {}",
                    v.type_name()
                ))
            })?,
        };
        Ok(RunRequest {
            command,
            workdir,
            env,
            timeout,
            max_output,
            build: optional_int(kwargs, "build")?,
            step: optional_int(kwargs, "step")?,
        })
    }

    /// For logs: `build 12 step 3` (or less).
    pub fn label(&self) -> String {
        match (self.build, self.step) {
            (Some(b), Some(s)) => format!("build {b} step {s}"),
            (Some(b), None) => format!("build {b}"),
            (None, Some(s)) => format!("step {s}"),
            (None, None) => "command".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_map(req: &RunRequest) -> HashMap<&str, &str> {
        req.env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    fn kwargs(pairs: &[(&str, Value)]) -> Payload {
        Payload::new(
            vec![],
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        )
    }

    #[test]
    fn parses_run_arguments() {
        let mut env = Dict::new();
        env.insert("A".into(), Value::from("1"));
        let r = RunRequest::parse(&kwargs(&[
            ("command", Value::from("echo hi")),
            ("workdir", Value::from("b/src")),
            ("env", Value::Dict(env)),
            ("timeout", Value::Float(1.5)),
            ("max_output", Value::Int(10)),
            ("build", Value::Int(3)),
            ("step", Value::Int(4)),
            ("future_key", Value::Bool(true)),
        ]))
        .unwrap();
        assert_eq!(r.command, CommandLine::Shell("echo hi".into()));
        assert_eq!(r.workdir, PathBuf::from("b/src"));
        assert_eq!(env_map(&r)["A"], "1");
        assert_eq!(r.timeout, Some(Duration::from_millis(1500)));
        assert_eq!(r.max_output, 10);
        assert_eq!(r.label(), "build 3 step 4");

        let r = RunRequest::parse(&kwargs(&[(
            "command",
            Value::List(vec![Value::from("ls"), Value::from("-l")]),
        )]))
        .unwrap();
        assert_eq!(r.command, CommandLine::Argv(vec!["ls".into(), "-l".into()]));
        assert_eq!(r.workdir, PathBuf::new());
        assert_eq!(r.timeout, None);
        assert_eq!(r.max_output, DEFAULT_MAX_OUTPUT);
    }

    #[test]
    fn rejects_bad_arguments() {
        let cases: Vec<(Payload, &str)> = vec![
            (Payload::default(), INVALID_ARGUMENT),
            (kwargs(&[("command", Value::Int(1))]), INVALID_ARGUMENT),
            (kwargs(&[("command", Value::from(" "))]), INVALID_ARGUMENT),
            (
                kwargs(&[("command", Value::List(vec![]))]),
                INVALID_ARGUMENT,
            ),
            (
                kwargs(&[("command", Value::List(vec![Value::Int(1)]))]),
                INVALID_ARGUMENT,
            ),
            (
                kwargs(&[
                    ("command", Value::from("x")),
                    ("timeout", Value::Float(-1.0)),
                ]),
                INVALID_ARGUMENT,
            ),
            (
                kwargs(&[
                    ("command", Value::from("x")),
                    ("timeout", Value::Float(f64::NAN)),
                ]),
                INVALID_ARGUMENT,
            ),
            (
                kwargs(&[
                    ("command", Value::from("x")),
                    ("timeout", Value::Float(1e300)),
                ]),
                INVALID_ARGUMENT,
            ),
            (
                kwargs(&[("command", Value::from("x")), ("timeout", Value::from("5"))]),
                INVALID_ARGUMENT,
            ),
            (
                kwargs(&[
                    ("command", Value::from("x")),
                    ("max_output", Value::Int(-1)),
                ]),
                INVALID_ARGUMENT,
            ),
            (
                kwargs(&[("command", Value::from("x")), ("env", Value::Int(1))]),
                INVALID_ARGUMENT,
            ),
            (
                kwargs(&[("command", Value::from("x")), ("build", Value::from("1"))]),
                INVALID_ARGUMENT,
            ),
            (
                kwargs(&[
                    ("command", Value::from("x")),
                    ("workdir", Value::from("/tmp")),
                ]),
                BAD_WORKDIR,
            ),
            (
                kwargs(&[
                    ("command", Value::from("x")),
                    ("workdir", Value::from("a/../..")),
                ]),
                BAD_WORKDIR,
            ),
            (
                kwargs(&[
                    ("command", Value::from("x")),
                    ("workdir", Value::from("..")),
                ]),
                BAD_WORKDIR,
            ),
        ];
        for (p, uri) in cases {
            let e = RunRequest::parse(&p).unwrap_err();
            assert_eq!(e.uri, uri, "{p:?}: {}", e.message);
            assert!(!e.message.is_empty());
        }
        let mut env = Dict::new();
        env.insert("A=B".into(), Value::from("1"));
        assert!(RunRequest::parse(&kwargs(&[
            ("command", Value::from("x")),
            ("env", Value::Dict(env))
        ]))
        .is_err());
        let mut env = Dict::new();
        env.insert("A".into(), Value::Int(1));
        assert!(RunRequest::parse(&kwargs(&[
            ("command", Value::from("x")),
            ("env", Value::Dict(env))
        ]))
        .is_err());
    }
}
