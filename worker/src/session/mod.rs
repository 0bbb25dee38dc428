//! One joined session: registering the four procedures, the loop that takes their calls
//! (and the drain a `reconnect` or graceful `shutdown` asks for), the liveness probe, and
//! tearing down cleanly (nothing sent after GOODBYE; the commands of a lost connection are
//! killed). The parts:
//! - `connect`: the connection loop (URLs in turn, backoff) and joining with WAMP-CRA;
//! - `procedures`: the procedures' handlers (`info`, `run`'s start, the arguments of
//!   `reconnect` and `shutdown`);
//! - `commands`: the running commands, each with its kill switch.

mod commands;
mod connect;
mod procedures;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use switchyard_router::client::{CalleeMessage, Client, ClientError};
use switchyard_router::uri::errors;
use switchyard_router::wire::{Dict, Id, Payload, Value};
use tokio::sync::{mpsc, RwLock};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::command::{KillReason, KILL_GRACE};
use super::WorkerOptions;
use commands::Commands;
use procedures::{hostname, parse_reconnect, parse_shutdown};

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
/// without closing the TCP connection is noticed within this plus [`CONNECT_TIMEOUT`](connect::CONNECT_TIMEOUT).
const PROBE_INTERVAL: Duration = Duration::from_secs(30);

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

/// The worker: its options, its base directory, its stop token and its running commands,
/// shared by the tasks of its sessions.
pub(crate) struct Worker {
    opts: WorkerOptions,
    basedir: PathBuf,
    shutdown: CancellationToken,
    commands: Commands,
    hostname: String,
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

    /// Registers the four procedures, in order: their invocation channels, or how the session
    /// ends instead (the name is taken, the router refused, the connection went, a stop).
    async fn register(
        &self,
        client: &Client,
        url: &str,
    ) -> Result<Vec<mpsc::Receiver<CalleeMessage>>, End> {
        let mut channels = Vec::with_capacity(4);
        for p in ["info", "run", "reconnect", "shutdown"] {
            let procedure = crate::worker_procedure(self.name(), p);
            let registered = tokio::select! {
                _ = self.shutdown.cancelled() => {
                    Self::leave(client).await;
                    return Err(End::Stop);
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
                    Self::leave(client).await;
                    return Err(End::Refused);
                }
                Err(ClientError::Wamp { uri, args }) => {
                    tracing::error!(
                        "worker {}: cannot register {procedure} at {url}: {uri} {args:?}; \
                         leaving, will retry later",
                        self.name()
                    );
                    Self::leave(client).await;
                    return Err(End::Refused);
                }
                Err(e) => {
                    client.disconnect();
                    return Err(End::Lost(format!("registering {procedure} failed: {e}")));
                }
            }
        }
        Ok(channels)
    }

    /// One joined session, from registering to leaving.
    async fn session(self: Arc<Self>, client: Client, url: &str, seq: u64) -> End {
        let mut channels = match self.register(&client, url).await {
            Ok(channels) => channels,
            Err(end) => return end,
        };
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
                        self.on_reconnect(&conn, request, &payload, &mut pending).await
                    }
                    Some(CalleeMessage::Interrupt { .. }) => {}
                    None => break lost(&client),
                },
                m = shutdown_rx.recv() => match m {
                    Some(CalleeMessage::Invocation { request, payload, .. }) => {
                        if let Some(end) = self.on_shutdown(&conn, request, &payload, &mut pending).await {
                            break end;
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
        self.teardown(&client, &conn, seq).await;
        end
    }

    /// `reconnect`: drain, then end with [`End::Reconnect`] to the given URLs (a pending stop
    /// stays a stop).
    async fn on_reconnect(
        &self,
        conn: &Conn,
        request: Id,
        payload: &Payload,
        pending: &mut Option<(End, Instant)>,
    ) {
        match parse_reconnect(payload) {
            Ok((urls, reason, deadline)) => {
                tracing::info!(
                    "worker {}: asked to reconnect to {urls:?} ({reason}); \
                     waiting for {} running command(s) first",
                    self.name(),
                    self.commands.len()
                );
                conn.draining.store(true, Ordering::Relaxed);
                conn.result(request, Dict::new()).await;
                if !matches!(pending, Some((End::Stop, _))) {
                    *pending = Some((End::Reconnect(urls), Instant::now() + deadline));
                }
            }
            Err(e) => conn.error(request, e.uri, e.message).await,
        }
    }

    /// `shutdown`: `Some(End::Stop)` to stop now; a graceful one drains first (`pending`).
    async fn on_shutdown(
        &self,
        conn: &Conn,
        request: Id,
        payload: &Payload,
        pending: &mut Option<(End, Instant)>,
    ) -> Option<End> {
        match parse_shutdown(payload) {
            Ok((graceful, deadline)) => {
                conn.draining.store(true, Ordering::Relaxed);
                conn.result(request, Dict::new()).await;
                if !graceful {
                    tracing::info!("worker {}: asked to stop now", self.name());
                    return Some(End::Stop);
                }
                tracing::info!(
                    "worker {}: asked to stop after {} running command(s)",
                    self.name(),
                    self.commands.len()
                );
                *pending = Some((End::Stop, Instant::now() + deadline));
            }
            Err(e) => conn.error(request, e.uri, e.message).await,
        }
        None
    }

    /// Closes the gate, says GOODBYE (if the connection is still there), kills the session's
    /// commands and waits (bounded) for them to be gone, then drops the connection.
    async fn teardown(&self, client: &Client, conn: &Conn, seq: u64) {
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
