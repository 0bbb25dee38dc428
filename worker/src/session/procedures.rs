//! The procedures' handlers: `info`'s answer, `run` checked and its command started in a
//! task of its own (output as progressive results, the final result or error), and the
//! arguments of `reconnect` and `shutdown` (the session loop acts on them).

use std::sync::Arc;
use std::time::Duration;

use switchyard_router::uri::errors;
use switchyard_router::wire::{Dict, Id, Payload, Value};
use tokio::sync::mpsc;

use super::commands::Registered;
use super::{Conn, Worker};
use crate::command::{self, invalid, seconds, CallError, Cause, OutputSink, RunRequest, Stream};
use crate::{valid_url, BUSY, DRAINING, SPAWN_FAILED};

/// `reconnect` and graceful `shutdown` wait this long for running commands by default.
const DEFAULT_DRAIN: Duration = Duration::from_secs(3600);

/// A `run` call's output, as progressive results.
struct ProgressSink {
    conn: Arc<Conn>,
    request: Id,
    /// The caller asked for progressive results.
    enabled: bool,
}

impl OutputSink for ProgressSink {
    async fn send(&mut self, stream: Stream, data: String) {
        if !self.enabled {
            return;
        }
        let mut options = Dict::new();
        options.insert("progress".into(), Value::Bool(true));
        let mut kwargs = Dict::new();
        kwargs.insert("stream".into(), Value::from(stream.name()));
        kwargs.insert("data".into(), Value::from(data));
        self.conn.yield_kwargs(self.request, options, kwargs).await
    }
}

pub(super) fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it (or
    // truncates; the last byte stays 0 because we pass len - 1).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// A message's keyword arguments (empty if none).
fn kwargs_of(payload: &Payload) -> Dict {
    payload.kwargs().cloned().unwrap_or_default()
}

fn parse_deadline(kwargs: &Dict) -> Result<Duration, CallError> {
    match kwargs.get("deadline") {
        None | Some(Value::Null) => Ok(DEFAULT_DRAIN),
        Some(v) => seconds("deadline", v),
    }
}

/// `reconnect` kwargs: (urls, reason, deadline).
pub(super) fn parse_reconnect(
    payload: &Payload,
) -> Result<(Vec<String>, String, Duration), CallError> {
    let kwargs = kwargs_of(payload);
    let Some(list) = kwargs.get("urls").and_then(Value::as_list) else {
        return Err(invalid("reconnect needs `urls`, a list of router URLs"));
    };
    let mut urls = Vec::with_capacity(list.len());
    for u in list {
        match u.as_str() {
            Some(s) if valid_url(s) => urls.push(s.to_owned()),
            _ => {
                return Err(invalid(format!(
                    "urls: {u:?} is not a router URL (ws://host:port/path, wss://host:port/path or tcp://host:port)"
                )))
            }
        }
    }
    let reason = match kwargs.get("reason") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => {
            return Err(invalid(format!(
                "reason must be a string, not a {}",
                v.type_name()
            )))
        }
    };
    Ok((urls, reason, parse_deadline(&kwargs)?))
}

/// `shutdown` kwargs: (graceful, deadline).
pub(super) fn parse_shutdown(payload: &Payload) -> Result<(bool, Duration), CallError> {
    let kwargs = kwargs_of(payload);
    let graceful = match kwargs.get("graceful") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err(invalid(format!(
                "graceful must be a bool, not a {}",
                v.type_name()
            )))
        }
    };
    Ok((graceful, parse_deadline(&kwargs)?))
}

impl Worker {
    pub(super) fn info(&self) -> Dict {
        let mut k = Dict::new();
        k.insert("name".into(), Value::from(self.name()));
        k.insert("version".into(), Value::from(env!("CARGO_PKG_VERSION")));
        k.insert("os".into(), Value::from(std::env::consts::OS));
        k.insert("arch".into(), Value::from(std::env::consts::ARCH));
        k.insert("hostname".into(), Value::from(self.hostname.as_str()));
        k.insert(
            "basedir".into(),
            Value::from(self.basedir.to_string_lossy().into_owned()),
        );
        k.insert("running".into(), Value::from(self.commands.len() as u64));
        k
    }

    /// Checks a `run` call and starts its command in a task of its own.
    pub(super) async fn start_run(
        self: &Arc<Self>,
        conn: &Arc<Conn>,
        request: Id,
        details: &Dict,
        payload: &Payload,
    ) {
        if conn.draining() {
            conn.error(
                request,
                DRAINING,
                "the worker is draining (about to reconnect or stop): run the command elsewhere",
            )
            .await;
            return;
        }
        let req = match RunRequest::parse(payload) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("worker {}: refused a run call: {}", self.name(), e.message);
                conn.error(request, e.uri, e.message).await;
                return;
            }
        };
        let key = (conn.seq, request);
        let (kill_tx, kill_rx) = mpsc::channel(2);
        let max = self.opts.max_commands;
        if !self.commands.try_insert(key, kill_tx, max) {
            conn.error(
                request,
                BUSY,
                format!("the worker already runs {max} commands"),
            )
            .await;
            return;
        }
        let registered = Registered {
            worker: self.clone(),
            key,
        };
        let enabled = details.get("receive_progress") == Some(&Value::Bool(true));
        let conn = conn.clone();
        let label = req.label();
        tracing::info!(
            "worker {}: {label}: running in {:?} (call {request})",
            self.name(),
            self.basedir.join(&req.workdir)
        );
        tracing::debug!("worker {}: {label}: command {:?}", self.name(), req.command);
        tokio::spawn(async move {
            let w = registered.worker.clone();
            let sink = ProgressSink {
                conn: conn.clone(),
                request,
                enabled,
            };
            match command::execute(&req, &w.basedir, sink, kill_rx).await {
                Err(message) => {
                    tracing::warn!("worker {}: {label}: {message}", w.name());
                    conn.error(request, SPAWN_FAILED, message).await;
                }
                Ok(f) => {
                    tracing::info!(
                        "worker {}: {label}: finished, rc {} after {:.2}s{}",
                        w.name(),
                        f.rc,
                        f.elapsed.as_secs_f64(),
                        match f.cause {
                            None => "",
                            Some(Cause::Timeout) => " (timed out)",
                            Some(Cause::OutputLimit) => " (output limit)",
                            Some(Cause::Canceled) => " (canceled)",
                            Some(Cause::Lost) => " (connection lost)",
                        }
                    );
                    match f.cause {
                        Some(Cause::Canceled) => {
                            conn.error(
                                request,
                                errors::CANCELED,
                                "the call was canceled: the command was killed",
                            )
                            .await
                        }
                        // Nobody to tell: the session is gone.
                        Some(Cause::Lost) => {}
                        _ => conn.result(request, f.result_kwargs()).await,
                    }
                }
            }
            drop(registered);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_and_shutdown_arguments() {
        let kw = |pairs: &[(&str, Value)]| {
            Payload::new(
                vec![],
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.clone()))
                    .collect(),
            )
        };
        let (urls, reason, deadline) = parse_reconnect(&kw(&[
            (
                "urls",
                Value::List(vec![Value::from("ws://127.0.0.1:1/ws")]),
            ),
            ("reason", Value::from("master stopping")),
        ]))
        .unwrap();
        assert_eq!(urls, ["ws://127.0.0.1:1/ws"]);
        assert_eq!(reason, "master stopping");
        assert_eq!(deadline, DEFAULT_DRAIN);
        for bad in [
            kw(&[]),
            kw(&[("urls", Value::from("ws://x/ws"))]),
            kw(&[("urls", Value::List(vec![Value::from("http://x")]))]),
            kw(&[("urls", Value::List(vec![])), ("deadline", Value::Int(-1))]),
        ] {
            assert_eq!(
                parse_reconnect(&bad).unwrap_err().uri,
                command::INVALID_ARGUMENT
            );
        }
        assert!(parse_shutdown(&kw(&[])).unwrap().0);
        assert!(
            !parse_shutdown(&kw(&[("graceful", Value::Bool(false))]))
                .unwrap()
                .0
        );
        assert!(parse_shutdown(&kw(&[("graceful", Value::from("no"))])).is_err());
    }

    #[test]
    fn hostname_is_known() {
        assert!(!hostname().is_empty());
    }
}
