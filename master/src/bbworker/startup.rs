//! A bridged connection's start-up: the worker's info and settings over the msgpack
//! protocol, then the in-process session with the worker role and its registrations (`run`
//! last: the engine's presence watches it). Also the frame helpers the bridge shares.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value as Json};
use switchyard_router::protocol::Flow;
use switchyard_router::wire::{Dict, Id, Message, Value};
use switchyard_router::LocalSession;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

use super::codec::{self, FromWorker};
use super::{Io, Port};
use crate::auth::{worker_procedure, WORKER_ROLE};
use crate::engine::events::to_wamp;

/// The start-up exchange and each registration, at most.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest string kept from the worker's info.
const MAX_INFO_STRING: usize = 1024;
/// Frames queued to the worker.
pub const OUT_QUEUE: usize = 1024;

pub(super) type Ws<S> = WebSocketStream<S>;
/// Why a connection ends: the reason is logged.
pub(super) type End = String;

/// The worker procedures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Proc {
    Info,
    Run,
    Reconnect,
    Shutdown,
}

/// A started connection: its session, registrations and what the worker said about itself.
pub(super) struct Started {
    pub session: LocalSession,
    pub registrations: HashMap<Id, Proc>,
    /// The `info` procedure's result (without `running`).
    pub info: Dict,
    /// The worker's basedir, and its path separator.
    pub basedir: String,
    pub separator: char,
}

pub(super) fn send_frame(out: &mpsc::Sender<WsMessage>, bytes: Vec<u8>) -> Result<(), End> {
    out.try_send(WsMessage::Binary(bytes.into()))
        .map_err(|_| format!("the worker does not read ({OUT_QUEUE} frames queued)"))
}

/// The next frame from the worker as a message.
pub(super) async fn next_message<S: Io>(
    stream: &mut futures_util::stream::SplitStream<Ws<S>>,
) -> Result<FromWorker, End> {
    loop {
        match stream.next().await {
            None => return Err("the worker closed the connection".into()),
            Some(Err(e)) => return Err(format!("connection error: {e}")),
            Some(Ok(WsMessage::Binary(b))) => {
                return codec::decode(&b).map_err(|e| {
                    format!(
                        "malformed frame from the worker: {}",
                        clip(&e.to_string(), 200)
                    )
                })
            }
            Some(Ok(WsMessage::Close(_))) => return Err("the worker closed the connection".into()),
            Some(Ok(WsMessage::Text(_))) => {
                return Err("the worker sent a text frame (the protocol uses binary frames)".into())
            }
            Some(Ok(_)) => {} // ping, pong
        }
    }
}

/// Start-up: the worker's info and settings, then the session and its registrations.
pub(super) async fn start<S: Io>(
    port: &Arc<Port>,
    name: &str,
    out: &mpsc::Sender<WsMessage>,
    stream: &mut futures_util::stream::SplitStream<Ws<S>>,
) -> Result<Started, End> {
    send_frame(out, codec::request("get_worker_info", 0, json!({})))?;
    // Output is forwarded as it comes: flushed every 100 ms (Buildbot's master uses 5 s).
    let settings = json!({"args": {"newline_re": r"(\r\n|\r(?=.))", "max_line_length": 4096,
        "buffer_timeout": 0.1, "buffer_size": 64 * 1024}});
    send_frame(out, codec::request("set_worker_settings", 1, settings))?;
    let mut worker_info = None;
    let mut settings_done = false;
    let exchange = async {
        while worker_info.is_none() || !settings_done {
            match next_message(stream).await? {
                FromWorker::Response {
                    seq,
                    result,
                    is_exception,
                } => {
                    if is_exception {
                        return Err(format!(
                            "the worker refused request {seq}: {}",
                            clip(&result.to_string(), 200)
                        ));
                    }
                    match seq {
                        0 => worker_info = Some(result),
                        1 => settings_done = true,
                        _ => {}
                    }
                }
                other => {
                    return Err(format!(
                        "unexpected message during start-up: {}",
                        clip(&format!("{other:?}"), 200)
                    ))
                }
            }
        }
        Ok(())
    };
    tokio::time::timeout(REPLY_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer to get_worker_info within {REPLY_TIMEOUT:?}"))??;
    let raw = worker_info.unwrap_or_default();
    let Some(basedir) = raw.get("basedir").and_then(Json::as_str).map(str::to_owned) else {
        return Err("the worker's info has no basedir".into());
    };
    let info = info_kwargs(name, &raw);
    let separator = if raw.get("system").and_then(Json::as_str) == Some("nt") {
        '\\'
    } else {
        '/'
    };
    let mut session = port
        .router
        .connect_local_untrusted(&port.realm, name, WORKER_ROLE)
        .map_err(|e| format!("cannot join realm {:?}: {e}", port.realm))?;
    let registrations = register(&mut session, name).await?;
    Ok(Started {
        session,
        registrations,
        info,
        basedir,
        separator,
    })
}

pub(super) fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// The `info` result from Buildbot's worker info (without its environment).
fn info_kwargs(name: &str, raw: &Json) -> Dict {
    let text = |k: &str| {
        raw.get(k)
            .and_then(Json::as_str)
            .map(|s| Json::from(clip(s.trim(), MAX_INFO_STRING)))
            .unwrap_or(Json::Null)
    };
    let os = match raw.get("system").and_then(Json::as_str) {
        Some("nt") => "windows",
        _ => "posix",
    };
    let info = json!({
        "name": name,
        "kind": "buildbot-worker",
        "version": text("version"),
        "os": os,
        "hostname": text("host"),
        "host": text("host"),
        "admin": text("admin"),
        "access_uri": text("access_uri"),
        "basedir": text("basedir"),
        "numcpus": raw.get("numcpus").and_then(Json::as_u64),
    });
    match to_wamp(&info) {
        Value::Dict(d) => d,
        _ => Dict::new(),
    }
}

/// Registers the worker procedures, `run` last.
async fn register(session: &mut LocalSession, name: &str) -> Result<HashMap<Id, Proc>, End> {
    let mut registrations = HashMap::new();
    let procs = [
        (Proc::Info, "info"),
        (Proc::Reconnect, "reconnect"),
        (Proc::Shutdown, "shutdown"),
        (Proc::Run, "run"),
    ];
    for (i, (proc, suffix)) in procs.into_iter().enumerate() {
        let request = i as Id + 1;
        let procedure = worker_procedure(name, suffix);
        if let Flow::Close = session.send(Message::Register {
            request,
            options: Dict::new(),
            procedure: procedure.clone(),
        }) {
            return Err("the router closed the session".into());
        }
        let answer = tokio::time::timeout(REPLY_TIMEOUT, session.recv())
            .await
            .map_err(|_| format!("no answer to registering {procedure}"))?;
        match answer {
            Some(Message::Registered { registration, .. }) => {
                registrations.insert(registration, proc);
            }
            Some(Message::Error { error, .. })
                if error == "wamp.error.procedure_already_exists" =>
            {
                return Err(format!(
                    "{procedure} is already registered: a worker named {name:?} is connected \
                     elsewhere (closing this connection; the name is never taken over)"
                ))
            }
            other => return Err(format!("cannot register {procedure}: {other:?}")),
        }
    }
    Ok(registrations)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_keeps_no_environment_and_bounds_strings() {
        let raw = json!({"basedir": "/w", "system": "posix", "version": "4.3.0",
            "environ": {"SECRET": "x"}, "admin": "a".repeat(5000), "host": "h\n", "numcpus": 4});
        let info = info_kwargs("w1", &raw);
        assert!(!info.contains_key("environ"));
        assert_eq!(info.get("hostname").and_then(Value::as_str), Some("h"));
        assert_eq!(info.get("os").and_then(Value::as_str), Some("posix"));
        assert!(
            info.get("admin")
                .and_then(Value::as_str)
                .unwrap()
                .chars()
                .count()
                <= MAX_INFO_STRING + 1
        );
        assert_eq!(
            info.get("kind").and_then(Value::as_str),
            Some("buildbot-worker")
        );
    }

    #[test]
    fn clip_keeps_whole_characters() {
        assert_eq!(clip("ééé", 2), "éé…");
        assert_eq!(clip("ab", 5), "ab");
    }
}
