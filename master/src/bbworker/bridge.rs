//! One stock worker's connection, bridged into the bus: an in-process WAMP session with the
//! worker role that answers the worker procedures by speaking Buildbot's msgpack protocol to
//! the worker.
//!
//! At start ([`super::startup`]) the bridge asks the worker `get_worker_info` and sends
//! `set_worker_settings` (output flushed every 100 ms), 10 s for both; then it joins the realm
//! and registers
//! `info`, `reconnect`, `shutdown` and, last, `run` (the engine's presence watches `run`). A
//! name already registered (the same worker connected elsewhere) closes the connection: the
//! name is never taken over.
//!
//! How the procedures map (the contract is in [`switchyard_worker`]):
//! - `info`: what `get_worker_info` returned — `version`, `os` (`posix` or `windows`, from
//!   Buildbot's `system`), `hostname` (the worker's `info/host` file), `basedir`, `admin`,
//!   `access_uri`, `numcpus` — plus `name`, `kind: "buildbot-worker"` and `running`. The
//!   worker's environment is not kept (it may hold secrets).
//! - `run`: a `start_command` of Buildbot's `shell` command: `command` (a string runs with
//!   `/bin/sh -c` on POSIX, a list is an argv), `workdir` (checked as for a switchyard
//!   worker, joined to the worker's basedir), `env`, `timeout` → `maxTime` (wall clock), no
//!   PTY. `stdout`/`stderr` updates become progressive results in order; `rc` the final
//!   result's `rc` (a killed command reports `-1`, Buildbot's convention); a `failure_reason`
//!   of `timeout` sets `timed_out`. Output past `max_output` is cut and the command
//!   interrupted (`output_limit`). A command that fails to start gets
//!   `switchyard.error.spawn_failed`. The `git` step reaches the worker as a POSIX shell
//!   script through the same `shell` command (so it needs `sh` and `git` on the worker).
//! - A cancelled call (INTERRUPT) sends `interrupt_command`: the worker kills the command's
//!   process group with SIGKILL; the call then ends with `wamp.error.canceled`.
//! - `reconnect`: answers at once, refuses new `run`s, waits for the running commands (at
//!   most `deadline`, then interrupts them), then closes the WebSocket so the worker
//!   reconnects through its own configured address; the port refuses new connections from
//!   then on. The `urls` are not used: a stock worker cannot be told where to go.
//! - `shutdown`: as `reconnect` (or at once when not graceful), then Buildbot's `shutdown`
//!   op, which stops the worker process.
//!
//! Bounds: at most [`MAX_COMMANDS`] commands at once (`switchyard.error.busy`); at most
//! [`OUT_QUEUE`] frames queued to the worker and 30 s for each write (else the connection
//! is dropped); a `keepalive` every 30 s that must be answered within 30 s. A malformed frame
//! from the worker drops its connection with the reason logged; other connections and
//! sessions are not affected. When the connection ends, the session leaves: the router
//! answers the calls still running with an error and the engine retries those builds.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Map, Value as Json};
use switchyard_router::protocol::Flow;
use switchyard_router::wire::{code, Dict, Id, Message, Payload, Value};
use switchyard_router::LocalSession;
use switchyard_worker::{CommandLine, RunRequest, BUSY, DRAINING, SPAWN_FAILED};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;

use super::codec::{self, FromWorker};
use super::startup::{clip, next_message, send_frame, start, End, Proc, Started, Ws, OUT_QUEUE};
use super::{Io, Port};
use crate::engine::events::to_wamp;

const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// Commands one worker runs at once.
pub const MAX_COMMANDS: usize = 32;
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// After Buildbot's `shutdown` op, how long the worker gets to answer and go.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);
/// After interrupting the commands at a drain deadline, how long they get to complete.
const INTERRUPT_WAIT: Duration = Duration::from_secs(10);

const CANCELED: &str = "wamp.error.canceled";

/// What a request to the worker was, awaiting its response.
enum Pending {
    Start(String),
    Interrupt,
    Keepalive,
    Shutdown,
}

/// A running `shell` command and the `run` call it answers.
struct Cmd {
    invocation: Id,
    progress: bool,
    max_output: u64,
    sent: u64,
    rc: Option<i64>,
    elapsed: Option<f64>,
    timed_out: bool,
    output_limit: bool,
    cancelled: bool,
    interrupted: bool,
    started: Instant,
}

/// What a drain ends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    /// Close the connection (the worker reconnects through its own address).
    Close,
    /// Send Buildbot's `shutdown` (the worker process stops).
    StopWorker,
}

struct Drain {
    deadline: Instant,
    then: Then,
    /// Set once the commands were interrupted at the deadline, or `shutdown` was sent.
    cutoff: Option<Instant>,
}

struct Bridge {
    port: Arc<Port>,
    name: String,
    out: mpsc::Sender<WsMessage>,
    session: LocalSession,
    seq: u64,
    pending: HashMap<u64, Pending>,
    commands: HashMap<String, Cmd>,
    by_invocation: HashMap<Id, String>,
    next_command: u64,
    registrations: HashMap<Id, Proc>,
    info: Dict,
    basedir: String,
    separator: char,
    drain: Option<Drain>,
    /// When the oldest unanswered keepalive was sent.
    keepalive_sent: Option<Instant>,
}

pub(super) async fn run<S: Io>(
    port: Arc<Port>,
    ws: Ws<S>,
    name: String,
    peer: SocketAddr,
    stop: CancellationToken,
) {
    let (sink, mut stream) = ws.split();
    let (out, out_rx) = mpsc::channel(OUT_QUEUE);
    let writer_dead = CancellationToken::new();
    let writer = tokio::spawn(write_loop(sink, out_rx, writer_dead.clone()));
    let end = match start(&port, &name, &out, &mut stream).await {
        Err(e) => e,
        Ok(started) => {
            let mut bridge = Bridge::new(port, &name, out.clone(), started);
            bridge.serve(&mut stream, &stop, &writer_dead).await
        }
    };
    tracing::info!(worker = %name, %peer, reason = %end, "buildbot worker disconnected");
    let _ = out.try_send(WsMessage::Close(None));
    drop(out);
    let _ = tokio::time::timeout(Duration::from_secs(3), writer).await;
}

async fn write_loop<S: Io>(
    mut sink: futures_util::stream::SplitSink<Ws<S>, WsMessage>,
    mut rx: mpsc::Receiver<WsMessage>,
    dead: CancellationToken,
) {
    while let Some(m) = rx.recv().await {
        let close = matches!(m, WsMessage::Close(_));
        match tokio::time::timeout(WRITE_TIMEOUT, sink.send(m)).await {
            Ok(Ok(())) => {}
            _ => {
                dead.cancel();
                return;
            }
        }
        if close {
            break;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), sink.close()).await;
}

fn kwargs_payload(kwargs: Dict) -> Payload {
    Payload::new(Vec::new(), kwargs)
}

impl Bridge {
    fn new(port: Arc<Port>, name: &str, out: mpsc::Sender<WsMessage>, s: Started) -> Bridge {
        Bridge {
            port,
            name: name.to_owned(),
            out,
            session: s.session,
            // 0 and 1 were get_worker_info and set_worker_settings.
            seq: 2,
            pending: HashMap::new(),
            commands: HashMap::new(),
            by_invocation: HashMap::new(),
            next_command: 1,
            registrations: s.registrations,
            info: s.info,
            basedir: s.basedir,
            separator: s.separator,
            drain: None,
            keepalive_sent: None,
        }
    }

    async fn serve<S: Io>(
        &mut self,
        stream: &mut futures_util::stream::SplitStream<Ws<S>>,
        stop: &CancellationToken,
        writer_dead: &CancellationToken,
    ) -> End {
        let mut keepalive = tokio::time::interval(KEEPALIVE_INTERVAL);
        keepalive.tick().await;
        let mut drain_tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            let step = tokio::select! {
                _ = stop.cancelled() => Err("the master stopped".to_string()),
                _ = writer_dead.cancelled() => Err("cannot write to the worker".to_string()),
                m = next_message(stream) => match m {
                    Ok(m) => self.on_worker(m),
                    Err(e) => Err(e),
                },
                m = self.session.recv() => match m {
                    Some(m) => self.on_router(m),
                    None => Err("the router closed the session".to_string()),
                },
                _ = keepalive.tick() => self.keepalive(),
                _ = drain_tick.tick(), if self.drain.is_some() => self.check_drain(),
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    fn send(&mut self, op: &str, rest: Json, pending: Pending) -> Result<(), End> {
        let seq = self.seq;
        self.seq += 1;
        self.pending.insert(seq, pending);
        send_frame(&self.out, codec::request(op, seq, rest))
    }

    fn send_to_router(&mut self, msg: Message) -> Result<(), End> {
        match self.session.send(msg) {
            Flow::Continue => Ok(()),
            Flow::Close => Err("the router closed the session".into()),
        }
    }

    fn yield_result(&mut self, request: Id, options: Dict, kwargs: Dict) -> Result<(), End> {
        self.send_to_router(Message::Yield {
            request,
            options,
            payload: kwargs_payload(kwargs),
        })
    }

    fn yield_error(&mut self, request: Id, error: &str, message: &str) -> Result<(), End> {
        self.send_to_router(Message::Error {
            request_type: code::INVOCATION,
            request,
            details: Dict::new(),
            error: error.into(),
            payload: Payload::new(vec![Value::from(message)], Dict::new()),
        })
    }

    fn keepalive(&mut self) -> Result<(), End> {
        if let Some(at) = self.keepalive_sent {
            if at.elapsed() >= KEEPALIVE_INTERVAL {
                return Err(format!(
                    "no answer to a keepalive within {KEEPALIVE_INTERVAL:?}"
                ));
            }
            return Ok(());
        }
        self.keepalive_sent = Some(Instant::now());
        self.send("keepalive", json!({}), Pending::Keepalive)
    }

    // ---- the worker's side ----

    fn on_worker(&mut self, msg: FromWorker) -> Result<(), End> {
        match msg {
            FromWorker::Response {
                seq,
                result,
                is_exception,
            } => self.response(seq, result, is_exception),
            FromWorker::Update {
                seq,
                command_id,
                args,
            } => {
                let known = self.commands.contains_key(&command_id);
                send_frame(
                    &self.out,
                    codec::response(seq, (!known).then_some("unknown command_id")),
                )?;
                for (key, value) in args {
                    self.update(&command_id, &key, &value)?;
                }
                Ok(())
            }
            FromWorker::Complete {
                seq,
                command_id,
                failure,
            } => {
                let known = self.commands.contains_key(&command_id);
                send_frame(
                    &self.out,
                    codec::response(seq, (!known).then_some("unknown command_id")),
                )?;
                self.complete(&command_id, failure)
            }
            FromWorker::Other { seq, op } => {
                tracing::debug!(worker = %self.name, op = %clip(&op, 64), "unsupported op from the worker");
                send_frame(
                    &self.out,
                    codec::response(seq, Some("this operation is not supported by switchyard")),
                )
            }
        }
    }

    fn response(&mut self, seq: u64, result: Json, is_exception: bool) -> Result<(), End> {
        match self.pending.remove(&seq) {
            Some(Pending::Keepalive) => {
                self.keepalive_sent = None;
                Ok(())
            }
            Some(Pending::Start(cid)) if is_exception => {
                let message = match &result {
                    Json::String(s) => clip(s, 1000),
                    other => clip(&other.to_string(), 1000),
                };
                let Some(cmd) = self.commands.remove(&cid) else {
                    return Ok(());
                };
                self.by_invocation.remove(&cmd.invocation);
                self.yield_error(
                    cmd.invocation,
                    SPAWN_FAILED,
                    &format!("the worker cannot start the command: {message}"),
                )
            }
            Some(Pending::Shutdown) => Err("the worker shut down on request".into()),
            Some(Pending::Start(_)) | Some(Pending::Interrupt) | None => Ok(()),
        }
    }

    fn update(&mut self, cid: &str, key: &str, value: &Json) -> Result<(), End> {
        let Some(cmd) = self.commands.get_mut(cid) else {
            return Ok(());
        };
        match key {
            "stdout" | "stderr" => {
                let Some(text) = codec::output_text(value) else {
                    return Ok(());
                };
                if cmd.output_limit || !cmd.progress || text.is_empty() {
                    return Ok(());
                }
                let room = cmd.max_output.saturating_sub(cmd.sent);
                let mut data = text;
                let mut cut = false;
                if data.len() as u64 > room {
                    let mut end = room as usize;
                    while !data.is_char_boundary(end) {
                        end -= 1;
                    }
                    data = &data[..end];
                    cut = true;
                }
                cmd.sent += data.len() as u64;
                let invocation = cmd.invocation;
                if cut {
                    cmd.output_limit = true;
                }
                if !data.is_empty() {
                    let mut options = Dict::new();
                    options.insert("progress".into(), Value::Bool(true));
                    let mut kwargs = Dict::new();
                    kwargs.insert("stream".into(), Value::from(key));
                    kwargs.insert("data".into(), Value::from(data));
                    self.yield_result(invocation, options, kwargs)?;
                }
                if cut {
                    self.interrupt(cid, "output limit")?;
                }
            }
            "rc" => cmd.rc = value.as_i64(),
            "elapsed" => cmd.elapsed = value.as_f64(),
            "failure_reason" => {
                if matches!(value.as_str(), Some("timeout" | "timeout_without_output")) {
                    cmd.timed_out = true;
                }
            }
            _ => {} // header lines, log files
        }
        Ok(())
    }

    fn complete(&mut self, cid: &str, failure: Option<String>) -> Result<(), End> {
        let Some(cmd) = self.commands.remove(cid) else {
            return Ok(());
        };
        self.by_invocation.remove(&cmd.invocation);
        if cmd.cancelled {
            return self.yield_error(cmd.invocation, CANCELED, "the command was interrupted");
        }
        if let (Some(f), None) = (&failure, cmd.rc) {
            return self.yield_error(
                cmd.invocation,
                SPAWN_FAILED,
                &format!("the command failed on the worker: {}", clip(f, 1000)),
            );
        }
        let elapsed = cmd
            .elapsed
            .unwrap_or_else(|| cmd.started.elapsed().as_secs_f64());
        let kwargs = match to_wamp(&json!({"rc": cmd.rc.unwrap_or(-1),
            "timed_out": cmd.timed_out, "output_limit": cmd.output_limit, "elapsed": elapsed}))
        {
            Value::Dict(d) => d,
            _ => Dict::new(),
        };
        self.yield_result(cmd.invocation, Dict::new(), kwargs)?;
        self.check_drain()
    }

    fn interrupt(&mut self, cid: &str, why: &str) -> Result<(), End> {
        let Some(cmd) = self.commands.get_mut(cid) else {
            return Ok(());
        };
        if cmd.interrupted {
            return Ok(());
        }
        cmd.interrupted = true;
        self.send(
            "interrupt_command",
            json!({"command_id": cid, "why": why}),
            Pending::Interrupt,
        )
    }

    fn interrupt_all(&mut self, why: &str) -> Result<(), End> {
        let ids: Vec<String> = self.commands.keys().cloned().collect();
        for cid in ids {
            self.interrupt(&cid, why)?;
        }
        Ok(())
    }

    // ---- the router's side ----

    fn on_router(&mut self, msg: Message) -> Result<(), End> {
        match msg {
            Message::Invocation {
                request,
                registration,
                details,
                payload,
            } => match self.registrations.get(&registration).copied() {
                Some(Proc::Info) => {
                    let mut kwargs = self.info.clone();
                    kwargs.insert("running".into(), Value::from(self.commands.len() as u64));
                    self.yield_result(request, Dict::new(), kwargs)
                }
                Some(Proc::Run) => self.run(request, &details, &payload),
                Some(Proc::Reconnect) => {
                    self.yield_result(request, Dict::new(), Dict::new())?;
                    self.port.closing.store(true, Ordering::Relaxed);
                    self.start_drain(&payload, Then::Close)
                }
                Some(Proc::Shutdown) => {
                    self.yield_result(request, Dict::new(), Dict::new())?;
                    let graceful = payload
                        .kwargs()
                        .and_then(|k| k.get("graceful"))
                        .and_then(Value::as_bool)
                        .unwrap_or(true);
                    if !graceful {
                        self.interrupt_all("the worker is shutting down")?;
                    }
                    self.start_drain(&payload, Then::StopWorker)
                }
                None => self.yield_error(
                    request,
                    "wamp.error.no_such_procedure",
                    "unknown registration",
                ),
            },
            Message::Interrupt { request, .. } => {
                let Some(cid) = self.by_invocation.get(&request).cloned() else {
                    return Ok(());
                };
                if let Some(cmd) = self.commands.get_mut(&cid) {
                    cmd.cancelled = true;
                }
                self.interrupt(&cid, "cancelled by the master")
            }
            Message::Goodbye { reason, .. } | Message::Abort { reason, .. } => {
                Err(format!("the router ended the session: {reason}"))
            }
            _ => Ok(()),
        }
    }

    fn run(&mut self, request: Id, details: &Dict, payload: &Payload) -> Result<(), End> {
        if self.drain.is_some() {
            return self.yield_error(
                request,
                DRAINING,
                "the worker is about to reconnect or stop",
            );
        }
        if self.commands.len() >= MAX_COMMANDS {
            return self.yield_error(
                request,
                BUSY,
                &format!("the worker already runs {MAX_COMMANDS} commands"),
            );
        }
        let req = match RunRequest::parse(payload) {
            Ok(r) => r,
            Err(e) => return self.yield_error(request, e.uri, &e.message),
        };
        let args = shell_args(&self.basedir, self.separator, &req);
        let cid = self.next_command.to_string();
        self.next_command += 1;
        let progress = details.get("receive_progress").and_then(Value::as_bool) == Some(true);
        self.commands.insert(
            cid.clone(),
            Cmd {
                invocation: request,
                progress,
                max_output: req.max_output,
                sent: 0,
                rc: None,
                elapsed: None,
                timed_out: false,
                output_limit: false,
                cancelled: false,
                interrupted: false,
                started: Instant::now(),
            },
        );
        self.by_invocation.insert(request, cid.clone());
        tracing::debug!(worker = %self.name, command = %cid, what = %req.label(), "start_command shell");
        self.send(
            "start_command",
            json!({"command_id": cid, "command_name": "shell", "args": args}),
            Pending::Start(cid.clone()),
        )
    }

    fn start_drain(&mut self, payload: &Payload, then: Then) -> Result<(), End> {
        let deadline = payload
            .kwargs()
            .and_then(|k| k.get("deadline"))
            .and_then(|v| match v {
                Value::Int(i) => Some(*i as f64),
                Value::Float(f) => Some(*f),
                _ => None,
            })
            .filter(|d| d.is_finite() && *d >= 0.0)
            .unwrap_or(3600.0)
            .min(7.0 * 86400.0);
        if self
            .drain
            .as_ref()
            .is_some_and(|d| d.then == Then::StopWorker)
        {
            return Ok(()); // a shutdown already under way wins
        }
        tracing::info!(worker = %self.name, running = self.commands.len(), ?then, "draining the buildbot worker");
        self.drain = Some(Drain {
            deadline: Instant::now() + Duration::from_secs_f64(deadline),
            then,
            cutoff: None,
        });
        self.check_drain()
    }

    /// Moves a drain on: when no command runs, close or stop the worker; at the deadline,
    /// interrupt what still runs.
    fn check_drain(&mut self) -> Result<(), End> {
        let Some(drain) = &self.drain else {
            return Ok(());
        };
        let (then, deadline, cutoff) = (drain.then, drain.deadline, drain.cutoff);
        if let Some(at) = cutoff {
            if at.elapsed() >= SHUTDOWN_WAIT.max(INTERRUPT_WAIT) {
                return Err("the worker did not finish in time after a drain".into());
            }
        }
        if self.commands.is_empty() {
            return match then {
                Then::Close => Err(
                    "drained for a reconnect: closing so that the worker reconnects through its \
                     configured address"
                        .into(),
                ),
                Then::StopWorker => {
                    if self
                        .pending
                        .values()
                        .any(|p| matches!(p, Pending::Shutdown))
                    {
                        return Ok(());
                    }
                    if let Some(d) = self.drain.as_mut() {
                        d.cutoff = Some(Instant::now());
                    }
                    self.send("shutdown", json!({}), Pending::Shutdown)
                }
            };
        }
        if Instant::now() >= deadline && cutoff.is_none() {
            if let Some(d) = self.drain.as_mut() {
                d.cutoff = Some(Instant::now());
            }
            return self.interrupt_all("drain deadline reached");
        }
        Ok(())
    }
}

/// Buildbot `shell` arguments for a checked `run` request.
fn shell_args(basedir: &str, separator: char, req: &RunRequest) -> Json {
    let command = match &req.command {
        CommandLine::Shell(s) => Json::from(s.as_str()),
        CommandLine::Argv(v) => Json::from(v.clone()),
    };
    let mut workdir = basedir.to_owned();
    for c in req.workdir.components() {
        if let std::path::Component::Normal(s) = c {
            if !workdir.ends_with(separator) {
                workdir.push(separator);
            }
            workdir.push_str(&s.to_string_lossy());
        }
    }
    let env: Map<String, Json> = req
        .env
        .iter()
        .map(|(k, v)| (k.clone(), Json::from(v.as_str())))
        .collect();
    json!({
        "command": command,
        "workdir": workdir,
        "env": env,
        "maxTime": req.timeout.map(|t| t.as_secs_f64()),
        "timeout": null,
        "want_stdout": true,
        "want_stderr": true,
        "usePTY": false,
        "logEnviron": false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_router::wire::Payload;

    fn request(kwargs: Json) -> RunRequest {
        let Value::Dict(d) = to_wamp(&kwargs) else {
            panic!()
        };
        RunRequest::parse(&Payload::new(Vec::new(), d)).unwrap()
    }

    #[test]
    fn run_maps_to_buildbot_shell_arguments() {
        let req = request(json!({"command": ["make", "-j2"], "workdir": "app/build",
            "env": {"CI": "1"}, "timeout": 90}));
        let a = shell_args("/var/w", '/', &req);
        assert_eq!(a["command"], json!(["make", "-j2"]));
        assert_eq!(a["workdir"], "/var/w/app/build");
        assert_eq!(a["env"], json!({"CI": "1"}));
        assert_eq!(a["maxTime"], json!(90.0));
        assert_eq!(
            a["timeout"],
            Json::Null,
            "no idle timeout: switchyard's is wall clock"
        );
        assert_eq!(a["usePTY"], false);
        let req = request(json!({"command": "echo hi"}));
        let a = shell_args("C:\\w\\", '\\', &req);
        assert_eq!(a["command"], "echo hi");
        assert_eq!(a["workdir"], "C:\\w\\");
        assert_eq!(a["maxTime"], Json::Null);
        let req = request(json!({"command": "x", "workdir": "./a/b"}));
        assert_eq!(shell_args("C:\\w", '\\', &req)["workdir"], "C:\\w\\a\\b");
    }
}
