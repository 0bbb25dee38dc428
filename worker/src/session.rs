//! The connection loop (URLs in turn, backoff) and one session: registering the procedures,
//! answering them, and tearing down cleanly (the commands of a lost connection are killed).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use switchyard_router::client::{CalleeMessage, Client, ClientAuth, ClientError, ClientOptions};
use switchyard_router::logsafe::Trunc;
use switchyard_router::uri::errors;
use switchyard_router::wire::{Dict, Id, Payload, Value};
use tokio::sync::{mpsc, watch, RwLock};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::command::{
    self, invalid, seconds, CallError, Cause, KillReason, OutputSink, RunRequest, Stream,
    KILL_GRACE,
};
use super::{valid_url, WorkerOptions, BUSY, DRAINING, SPAWN_FAILED};

/// Connecting plus joining, at most.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_FACTOR: f64 = 1.5;
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A session that lasted this long resets the backoff.
const STABLE_SESSION: Duration = Duration::from_secs(10);
/// `reconnect` and graceful `shutdown` wait this long for running commands by default.
const DEFAULT_DRAIN: Duration = Duration::from_secs(3600);
/// Waiting for the router's GOODBYE reply.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(2);
/// Waiting for killed commands to be gone before connecting again.
const COMMANDS_GONE_TIMEOUT: Duration = Duration::from_secs(10);
/// A message the router does not take within this long means it stopped reading: the
/// connection is dropped. (The router reads promptly even when a caller is slow: it
/// disconnects slow consumers rather than back-pressuring senders.)
const SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the worker checks that the router still answers (a call to its own `info`; any
/// reply, even an authorization error, proves the router alive). A router host that vanished
/// without closing the TCP connection is noticed within this plus [`CONNECT_TIMEOUT`].
const PROBE_INTERVAL: Duration = Duration::from_secs(30);

/// Exponential backoff with jitter.
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Backoff {
            next: BACKOFF_START,
        }
    }

    fn reset(&mut self) {
        self.next = BACKOFF_START;
    }

    /// The delay to wait now (±25 % around the current step); the step grows.
    fn delay(&mut self) -> Duration {
        let base = self.next;
        self.next = base.mul_f64(BACKOFF_FACTOR).min(BACKOFF_MAX);
        base.mul_f64(rand::rng().random_range(0.75..=1.25))
    }
}

/// How a session ended.
#[derive(Debug)]
enum End {
    /// Stop the worker (signal or `shutdown` call).
    Stop,
    /// A `reconnect` call: these URLs first.
    Reconnect(Vec<String>),
    /// The connection went away.
    Lost(String),
    /// The session was unusable (name taken, not authorized); already logged.
    Refused,
}

/// Running commands, by (connection, invocation), each with its kill switch.
struct Commands {
    map: parking_lot::Mutex<HashMap<(u64, Id), mpsc::Sender<KillReason>>>,
    count: watch::Sender<usize>,
}

impl Commands {
    fn new() -> Self {
        Commands {
            map: Default::default(),
            count: watch::Sender::new(0),
        }
    }

    fn len(&self) -> usize {
        self.map.lock().len()
    }

    /// Adds a command unless `max` are running.
    fn try_insert(&self, key: (u64, Id), kill: mpsc::Sender<KillReason>, max: usize) -> bool {
        let mut map = self.map.lock();
        if map.len() >= max {
            return false;
        }
        map.insert(key, kill);
        self.count.send_replace(map.len());
        true
    }

    fn remove(&self, key: (u64, Id)) {
        let mut map = self.map.lock();
        map.remove(&key);
        self.count.send_replace(map.len());
    }

    fn kill(&self, key: (u64, Id), reason: KillReason) -> bool {
        match self.map.lock().get(&key) {
            Some(k) => {
                let _ = k.try_send(reason);
                true
            }
            None => false,
        }
    }

    /// Kills every command of connection `conn`; returns how many.
    fn kill_connection(&self, conn: u64, reason: KillReason) -> usize {
        let map = self.map.lock();
        let mut n = 0;
        for ((c, _), k) in map.iter() {
            if *c == conn {
                let _ = k.try_send(reason);
                n += 1;
            }
        }
        n
    }

    /// Resolves when no command runs.
    async fn all_done(&self) {
        let mut rx = self.count.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

/// Removes a command from [`Commands`] when its task ends, however it ends.
struct Registered {
    worker: Arc<Worker>,
    key: (u64, Id),
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.worker.commands.remove(self.key);
    }
}

/// One joined session: everything sent on it goes through the gate, which closes before
/// GOODBYE (or once the connection is lost), so nothing follows GOODBYE.
struct Conn {
    client: Client,
    seq: u64,
    open: RwLock<bool>,
    draining: AtomicBool,
    /// Cancelled when the connection is found unusable (with the reason in `broken_reason`).
    broken: CancellationToken,
    broken_reason: parking_lot::Mutex<Option<String>>,
}

impl Conn {
    fn new(client: Client, seq: u64) -> Self {
        Conn {
            client,
            seq,
            open: RwLock::new(true),
            draining: AtomicBool::new(false),
            broken: CancellationToken::new(),
            broken_reason: Default::default(),
        }
    }

    fn mark_broken(&self, reason: String) {
        self.broken_reason.lock().get_or_insert(reason);
        self.broken.cancel();
    }

    fn broken_reason(&self) -> String {
        self.broken_reason
            .lock()
            .clone()
            .unwrap_or_else(|| "the connection is unusable".into())
    }

    /// Sends one answer, bounded by [`SEND_TIMEOUT`].
    async fn send(
        &self,
        request: Id,
        fut: impl std::future::Future<Output = Result<(), ClientError>>,
    ) {
        match tokio::time::timeout(SEND_TIMEOUT, fut).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!("cannot answer invocation {request}: {e}"),
            Err(_) => self.mark_broken(format!(
                "the router took no message for {SEND_TIMEOUT:?} (it stopped reading)"
            )),
        }
    }

    async fn yield_kwargs(&self, request: Id, options: Dict, kwargs: Dict) {
        let open = self.open.read().await;
        if !*open {
            return;
        }
        self.send(
            request,
            self.client
                .yield_result(request, options, Payload::new(vec![], kwargs)),
        )
        .await
    }

    async fn result(&self, request: Id, kwargs: Dict) {
        self.yield_kwargs(request, Dict::new(), kwargs).await
    }

    async fn error(&self, request: Id, uri: &str, message: impl Into<String>) {
        let open = self.open.read().await;
        if !*open {
            return;
        }
        let payload = Payload::new(vec![Value::from(message.into())], Dict::new());
        self.send(request, self.client.yield_error(request, uri, payload))
            .await
    }

    async fn close(&self) {
        *self.open.write().await = false;
    }

    fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

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

pub(crate) struct Worker {
    opts: WorkerOptions,
    basedir: PathBuf,
    shutdown: CancellationToken,
    commands: Commands,
    hostname: String,
}

fn hostname() -> String {
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
fn parse_reconnect(payload: &Payload) -> Result<(Vec<String>, String, Duration), CallError> {
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
fn parse_shutdown(payload: &Payload) -> Result<(bool, Duration), CallError> {
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
    pub(crate) fn new(opts: WorkerOptions, basedir: PathBuf, shutdown: CancellationToken) -> Self {
        Worker {
            opts,
            basedir,
            shutdown,
            commands: Commands::new(),
            hostname: hostname(),
        }
    }

    fn name(&self) -> &str {
        &self.opts.name
    }

    /// The connection loop; returns when the worker is to stop.
    pub(crate) async fn run(self) {
        let this = Arc::new(self);
        let mut backoff = Backoff::new();
        let mut preferred: VecDeque<String> = VecDeque::new();
        let mut next = 0usize;
        let mut seq = 0u64;
        loop {
            let url = match preferred.pop_front() {
                Some(u) => u,
                None => {
                    let u = this.opts.urls[next % this.opts.urls.len()].clone();
                    next = next.wrapping_add(1);
                    u
                }
            };
            tracing::debug!(url, "worker {}: connecting", this.name());
            let attempt = tokio::select! {
                _ = this.shutdown.cancelled() => return,
                r = this.connect(&url) => r,
            };
            let mut wait = true;
            match attempt {
                Err(e) => {
                    let hint = match &e {
                        ClientError::Aborted { reason, .. }
                            if reason == errors::AUTHENTICATION_FAILED
                                || reason == errors::NO_SUCH_PRINCIPAL =>
                        {
                            " (check the worker's name and password)"
                        }
                        _ => "",
                    };
                    tracing::warn!("worker {}: cannot join {url}: {e}{hint}", this.name());
                }
                Ok(client) if !Self::authenticated(&client, this.name(), &url) => {
                    Self::leave(&client).await;
                }
                Ok(client) => {
                    seq += 1;
                    let joined = Instant::now();
                    match this.clone().session(client, &url, seq).await {
                        End::Stop => return,
                        End::Reconnect(urls) => {
                            preferred = urls.into();
                            backoff.reset();
                            wait = false;
                        }
                        End::Lost(cause) => {
                            let lasted = joined.elapsed();
                            tracing::warn!(
                                "worker {}: disconnected from {url} after {:.1}s: {cause}",
                                this.name(),
                                lasted.as_secs_f64()
                            );
                            if lasted > STABLE_SESSION {
                                backoff.reset();
                            }
                        }
                        End::Refused => {}
                    }
                }
            }
            if this.shutdown.is_cancelled() {
                return;
            }
            if wait {
                let d = backoff.delay();
                tracing::info!(
                    "worker {}: next connection attempt in {:.1}s",
                    this.name(),
                    d.as_secs_f64()
                );
                tokio::select! {
                    _ = this.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(d) => {}
                }
            }
        }
    }

    async fn connect(&self, url: &str) -> Result<Client, ClientError> {
        let mut o = ClientOptions::new(url, self.opts.realm.as_str());
        o.timeout = CONNECT_TIMEOUT;
        o.tls = self.opts.tls.clone();
        o.auth = Some(ClientAuth::wampcra(
            self.opts.name.as_str(),
            self.opts.password.as_str(),
        ));
        match tokio::time::timeout(CONNECT_TIMEOUT, Client::connect(&o)).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout(CONNECT_TIMEOUT)),
        }
    }

    /// Whether the router established the session through the WAMP-CRA challenge the worker
    /// asked for, as this worker with the worker role. Anything else (a router that
    /// welcomed it anonymously, under another role or name) could let anyone call it: the
    /// worker registers nothing there, says why, and retries with backoff.
    fn authenticated(client: &Client, name: &str, url: &str) -> bool {
        let text = |k: &str| {
            client
                .welcome_details()
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        let (method, role, authid) = (text("authmethod"), text("authrole"), text("authid"));
        let ok = client.was_challenged()
            && method == "wampcra"
            && role == crate::WORKER_ROLE
            && authid == name;
        if !ok {
            tracing::error!(
                "worker {name}: {url} let this worker join without the WAMP-CRA challenge it                  asked for (challenged: {}, authmethod {:?}, authrole {:?}, authid {:?}):                  refusing the session, registering nothing; is the worker configured in                  [master] workers on that node?",
                client.was_challenged(),
                Trunc(&method),
                Trunc(&role),
                Trunc(&authid)
            );
        }
        ok
    }

    /// Says GOODBYE and waits (bounded) for the router's reply; then drops the connection.
    async fn leave(client: &Client) {
        if !client.is_closed() {
            let _ = tokio::time::timeout(GOODBYE_TIMEOUT, async {
                if client.leave().await.is_ok() {
                    client.closed().await;
                }
            })
            .await;
        }
        client.disconnect();
    }

    /// One joined session, from registering to leaving.
    async fn session(self: Arc<Self>, client: Client, url: &str, seq: u64) -> End {
        let mut channels = Vec::with_capacity(4);
        for p in ["info", "run", "reconnect", "shutdown"] {
            let procedure = crate::worker_procedure(self.name(), p);
            let registered = tokio::select! {
                _ = self.shutdown.cancelled() => {
                    Self::leave(&client).await;
                    return End::Stop;
                }
                r = client.register(&procedure, Dict::new()) => r,
            };
            match registered {
                Ok((_, rx)) => channels.push(rx),
                Err(ClientError::Wamp { uri, .. }) if uri == errors::PROCEDURE_ALREADY_EXISTS => {
                    tracing::error!(
                        "worker {name}: {procedure} is already registered at {url} ({uri}): \
                         another worker named {name} is connected; leaving, will retry later",
                        name = self.name()
                    );
                    Self::leave(&client).await;
                    return End::Refused;
                }
                Err(ClientError::Wamp { uri, args }) => {
                    tracing::error!(
                        "worker {}: cannot register {procedure} at {url}: {uri} {args:?}; \
                         leaving, will retry later",
                        self.name()
                    );
                    Self::leave(&client).await;
                    return End::Refused;
                }
                Err(e) => {
                    client.disconnect();
                    return End::Lost(format!("registering {procedure} failed: {e}"));
                }
            }
        }
        let mut shutdown_rx = channels.pop().expect("four channels");
        let mut reconnect_rx = channels.pop().expect("four channels");
        let mut run_rx = channels.pop().expect("four channels");
        let mut info_rx = channels.pop().expect("four channels");
        tracing::info!(
            url,
            authrole = client.authrole().unwrap_or(""),
            "worker {} connected",
            self.name()
        );
        if let Some(cb) = &self.opts.on_connect {
            cb(url);
        }
        let conn = Arc::new(Conn::new(client.clone(), seq));
        let probe = tokio::spawn(probe(
            conn.clone(),
            crate::worker_procedure(self.name(), "info"),
        ));
        let lost = |client: &Client| {
            End::Lost(
                client
                    .close_reason()
                    .unwrap_or_else(|| "the connection closed".into()),
            )
        };
        // After `reconnect` or a graceful `shutdown`: how to end once drained, and by when.
        let mut pending: Option<(End, Instant)> = None;
        let end = loop {
            let drain_deadline = pending.as_ref().map(|p| p.1);
            tokio::select! {
                _ = self.shutdown.cancelled() => break End::Stop,
                _ = client.closed() => break lost(&client),
                _ = conn.broken.cancelled() => break End::Lost(conn.broken_reason()),
                m = run_rx.recv() => match m {
                    Some(CalleeMessage::Invocation { request, details, payload, .. }) => {
                        self.start_run(&conn, request, &details, &payload).await
                    }
                    Some(CalleeMessage::Interrupt { request, options }) => {
                        let mode = options.get("mode").and_then(Value::as_str).unwrap_or("");
                        if self.commands.kill((seq, request), KillReason::Canceled) {
                            tracing::info!(
                                "worker {}: call {request} canceled ({mode}): killing its command",
                                self.name()
                            );
                        }
                    }
                    None => break lost(&client),
                },
                m = info_rx.recv() => match m {
                    Some(CalleeMessage::Invocation { request, .. }) => {
                        conn.result(request, self.info()).await
                    }
                    Some(CalleeMessage::Interrupt { .. }) => {}
                    None => break lost(&client),
                },
                m = reconnect_rx.recv() => match m {
                    Some(CalleeMessage::Invocation { request, payload, .. }) => {
                        match parse_reconnect(&payload) {
                            Ok((urls, reason, deadline)) => {
                                tracing::info!(
                                    "worker {}: asked to reconnect to {urls:?} ({reason}); \
                                     waiting for {} running command(s) first",
                                    self.name(),
                                    self.commands.len()
                                );
                                conn.draining.store(true, Ordering::Relaxed);
                                conn.result(request, Dict::new()).await;
                                // A pending stop stays a stop.
                                if !matches!(pending, Some((End::Stop, _))) {
                                    pending = Some((End::Reconnect(urls), Instant::now() + deadline));
                                }
                            }
                            Err(e) => conn.error(request, e.uri, e.message).await,
                        }
                    }
                    Some(CalleeMessage::Interrupt { .. }) => {}
                    None => break lost(&client),
                },
                m = shutdown_rx.recv() => match m {
                    Some(CalleeMessage::Invocation { request, payload, .. }) => {
                        match parse_shutdown(&payload) {
                            Ok((graceful, deadline)) => {
                                conn.draining.store(true, Ordering::Relaxed);
                                conn.result(request, Dict::new()).await;
                                if !graceful {
                                    tracing::info!("worker {}: asked to stop now", self.name());
                                    break End::Stop;
                                }
                                tracing::info!(
                                    "worker {}: asked to stop after {} running command(s)",
                                    self.name(),
                                    self.commands.len()
                                );
                                pending = Some((End::Stop, Instant::now() + deadline));
                            }
                            Err(e) => conn.error(request, e.uri, e.message).await,
                        }
                    }
                    Some(CalleeMessage::Interrupt { .. }) => {}
                    None => break lost(&client),
                },
                _ = self.commands.all_done(), if pending.is_some() => {
                    if let Some((end, _)) = pending.take() {
                        break end;
                    }
                }
                _ = tokio::time::sleep_until(drain_deadline.unwrap_or_else(Instant::now)),
                    if drain_deadline.is_some() => {
                    tracing::warn!(
                        "worker {}: drain deadline passed with {} command(s) running: they \
                         will be killed",
                        self.name(),
                        self.commands.len()
                    );
                    if let Some((end, _)) = pending.take() {
                        break end;
                    }
                }
            }
        };
        // Lost while draining: the commands die with the connection, but the worker still
        // does what it was asked (stop, or go to the new URLs), after saying why.
        let end = match (end, pending) {
            (End::Lost(cause), Some((then, _))) => {
                tracing::warn!(
                    "worker {}: connection to {url} lost while draining: {cause}",
                    self.name()
                );
                then
            }
            (end, _) => end,
        };
        // Teardown: nothing more is sent but GOODBYE; the commands die with the session.
        probe.abort();
        if conn.broken.is_cancelled() {
            client.disconnect();
        }
        conn.close().await;
        let connected = !client.is_closed();
        if connected {
            let _ = tokio::time::timeout(GOODBYE_TIMEOUT, client.leave()).await;
        }
        let killed = self.commands.kill_connection(seq, KillReason::Lost);
        if killed > 0 {
            tracing::warn!(
                "worker {}: killing {killed} command(s) of the session",
                self.name()
            );
            if tokio::time::timeout(COMMANDS_GONE_TIMEOUT, self.commands.all_done())
                .await
                .is_err()
            {
                tracing::error!(
                    "worker {}: {} command(s) still running {COMMANDS_GONE_TIMEOUT:?} after \
                     the kill",
                    self.name(),
                    self.commands.len()
                );
            }
        }
        if connected {
            let _ = tokio::time::timeout(GOODBYE_TIMEOUT, client.closed()).await;
        }
        client.disconnect();
        end
    }

    fn info(&self) -> Dict {
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
    async fn start_run(
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

/// Calls `procedure` every [`PROBE_INTERVAL`]; no reply within the client's timeout marks the
/// connection broken.
async fn probe(conn: Arc<Conn>, procedure: String) {
    let start = Instant::now() + PROBE_INTERVAL;
    let mut tick = tokio::time::interval_at(start, PROBE_INTERVAL);
    loop {
        tick.tick().await;
        match conn
            .client
            .call(&procedure, Dict::new(), Payload::default())
            .await
        {
            Ok(_) | Err(ClientError::Wamp { .. }) => {}
            Err(ClientError::Timeout(t)) => {
                conn.mark_broken(format!("the router did not answer a probe within {t:?}"));
                return;
            }
            Err(_) => return,
        }
    }
}

// KILL_GRACE bounds how long teardown waits; keep the constants consistent.
const _: () = assert!(COMMANDS_GONE_TIMEOUT.as_secs() > KILL_GRACE.as_secs() + 2);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::new();
        let d = b.delay();
        assert!(
            d >= Duration::from_millis(375) && d <= Duration::from_millis(625),
            "{d:?}"
        );
        let d = b.delay();
        assert!(
            d >= Duration::from_millis(562) && d <= Duration::from_millis(938),
            "{d:?}"
        );
        for _ in 0..30 {
            b.delay();
        }
        let d = b.delay();
        assert!(
            d >= Duration::from_millis(22_500) && d <= Duration::from_millis(37_500),
            "{d:?}"
        );
        b.reset();
        assert!(b.delay() <= Duration::from_millis(625));
    }

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
