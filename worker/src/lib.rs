//! The build worker (`switchyard worker`): a WAMP callee that runs commands for a master.
//!
//! A worker joins a router's realm (default `buildbot`) with WAMP-CRA, `authid` = its name,
//! and registers four procedures. Masters anywhere on the bus call them; the router routes
//! the calls, so a master never needs to reach the worker's host directly.
//!
//! # Connecting
//!
//! The worker tries its router URLs in turn (`ws://host:port/path`, `wss://host:port/path`
//! with [`WorkerOptions::tls`], or `tcp://host:port`).
//! Connecting and joining have a 10 s timeout; after a failure it waits with exponential
//! backoff (0.5 s, ×1.5, at most 30 s, ±25 % jitter) before the next URL. A session that
//! lasted more than 10 s resets the backoff. If a procedure is already registered (another
//! process runs under the same worker name), the worker logs it, leaves and retries later:
//! it never takes the name over. When the connection drops, every command it was running is
//! killed (the master gets an error for the call from the router and can retry the build
//! elsewhere): a command never keeps running unsupervised.
//!
//! A router host can vanish without closing the TCP connection. While connected, the worker
//! therefore calls its own `info` every 30 s: no reply within 10 s (any reply counts, even
//! `wamp.error.not_authorized`) drops the connection. So does a router that takes no message
//! from the worker for 60 s.
//!
//! # The procedures (the contract the master relies on)
//!
//! All are `switchyard.worker.<name>.<procedure>` ([`worker_procedure`]), with keyword
//! arguments in and out. The worker joins with the role [`WORKER_ROLE`]; this crate owns
//! those names and the error URIs below ([`BUSY`], [`DRAINING`], [`SPAWN_FAILED`],
//! [`BAD_WORKDIR`]); the master (`switchyard_master::auth`) takes them from here.
//!
//! ## `info`
//!
//! Result kwargs: `name` (str), `version` (the switchyard version), `os` and `arch` (Rust's
//! `std::env::consts` names: `linux`, `x86_64`...), `hostname`, `basedir` (absolute path),
//! `running` (number of commands running now).
//!
//! ## `run`
//!
//! Runs one command; call it with `receive_progress: true`. Call kwargs:
//!
//! | key | type | meaning |
//! |---|---|---|
//! | `command` | str, or list of str | a string runs with `/bin/sh -c`; a list is an argv (no shell, `PATH` lookup) |
//! | `workdir` | str | relative to the worker's basedir, created if missing; absolute paths and `..` components get `switchyard.error.bad_workdir`. Default: the basedir |
//! | `env` | map str → str | added to the worker's environment |
//! | `timeout` | number (s) | wall-clock limit; default none |
//! | `max_output` | int (bytes) | limit on the output forwarded; default 64 MiB |
//! | `build`, `step` | int | for the worker's log lines only |
//!
//! Unknown keys are ignored. Progressive results (RESULT with `progress: true`) carry kwargs
//! `{"stream": "stdout" | "stderr", "data": str}` (UTF-8; invalid bytes replaced by U+FFFD,
//! a character split across reads is never broken). Output is coalesced: a chunk is sent when
//! 16 KiB are buffered or 50 ms after its first byte; order is kept within each stream. A slow
//! caller slows the command down (its pipes are read no faster than chunks are sent); memory
//! stays bounded. Without `receive_progress` the output is not sent.
//!
//! The final RESULT's kwargs: `{"rc": int, "timed_out": bool, "output_limit": bool,
//! "elapsed": float seconds}`. `rc` is the exit code, or **minus the signal number** when the
//! process was killed by a signal (`-15` for SIGTERM, `-9` for SIGKILL).
//!
//! The command runs in a process group of its own with stdin from `/dev/null`. Killing it
//! means SIGTERM to the whole group, then SIGKILL to whatever is left 3 s later. It is killed:
//! - at `timeout`: the final result has `timed_out: true`;
//! - when its output exceeds `max_output` (what fits is forwarded): `output_limit: true`;
//! - when the call is canceled (INTERRUPT, modes `kill` and `killnowait`): the call is then
//!   answered with ERROR `wamp.error.canceled` (after a `killnowait` the router has already
//!   answered the caller);
//! - when the connection to the router is lost, or the worker stops.
//!
//! When the main process exits, processes it left running in its group get 2 s to close the
//! output pipes, then are killed too; the result comes after that.
//!
//! Errors: `wamp.error.invalid_argument` (a malformed call, with a message),
//! `switchyard.error.bad_workdir`, `switchyard.error.spawn_failed` (args `[message]`: the
//! workdir cannot be created, the program cannot be started), `switchyard.error.busy` (already
//! running `max_commands` commands), `switchyard.error.draining` (the worker is about to
//! reconnect or stop and accepts no new command).
//!
//! ## `reconnect`
//!
//! Kwargs `{"urls": [str, ...], "reason": str, "deadline": seconds (default 3600)}`. Answers
//! `{}` at once, stops accepting `run` (`switchyard.error.draining`), waits for the running
//! commands to finish (at most `deadline`; then they are killed), leaves the session and
//! connects to `urls` first, then falls back to its own URL list. For a master's graceful
//! shutdown: it sends its workers to a live peer. If the connection drops while draining, the
//! commands are killed (as for any lost connection) and the worker still goes to `urls`.
//!
//! ## `shutdown`
//!
//! Kwargs `{"graceful": bool (default true), "deadline": seconds (default 3600)}`. Answers
//! `{}` at once. Graceful: stops accepting `run`, waits for the running commands (at most
//! `deadline`), then leaves and stops. Not graceful: leaves, kills the commands and stops.
//!
//! # Stopping
//!
//! Cancelling the `shutdown` token given to [`run_worker`] leaves the session (GOODBYE), kills
//! the running commands and returns `Ok(())`.

mod command;
mod session;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

pub use command::{CallError, CommandLine, RunRequest};
pub use tokio_util::sync::CancellationToken;

/// The role workers join with: the worker refuses a session the router gave it under any
/// other (and the master's authenticator grants it to configured workers only).
pub const WORKER_ROLE: &str = "switchyard.worker";
/// The namespace of worker procedures: `switchyard.worker.<name>.<procedure>`.
pub const WORKER_NAMESPACE: &str = "switchyard.worker.";

/// The URI of a worker's procedure.
pub fn worker_procedure(worker: &str, procedure: &str) -> String {
    format!("{WORKER_NAMESPACE}{worker}.{procedure}")
}

/// `run` refused: the worker already runs `max_commands` commands.
pub const BUSY: &str = "switchyard.error.busy";
/// `run` refused: the worker is about to reconnect or stop.
pub const DRAINING: &str = "switchyard.error.draining";
/// `run` failed before anything ran: the workdir cannot be created, the program not started.
pub const SPAWN_FAILED: &str = "switchyard.error.spawn_failed";
/// `run` refused: its `workdir` is absolute or has a `..` component.
pub const BAD_WORKDIR: &str = "switchyard.error.bad_workdir";

/// A callback told the router URL each time the worker has joined and registered.
pub type OnConnect = Arc<dyn Fn(&str) + Send + Sync>;

/// How to run a worker.
#[derive(Clone)]
pub struct WorkerOptions {
    /// The worker's name: its WAMP-CRA authid and the `<name>` in its procedure URIs
    /// (1 to 64 ASCII letters, digits, `_` or `-`).
    pub name: String,
    /// Router URLs, tried in turn.
    pub urls: Vec<String>,
    /// The realm to join (default `buildbot`).
    pub realm: String,
    /// The WAMP-CRA secret. Never logged.
    pub password: String,
    /// Commands run in workdirs under this directory (created if missing).
    pub basedir: PathBuf,
    /// More concurrent `run` calls get `switchyard.error.busy` (default 32).
    pub max_commands: usize,
    /// Called with the URL after each successful join (once the procedures are registered).
    pub on_connect: Option<OnConnect>,
    /// Trust anchors for `wss://` routers (required by them): the router's certificate is
    /// verified for the URL's host.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl WorkerOptions {
    pub fn new(name: impl Into<String>, urls: Vec<String>, password: impl Into<String>) -> Self {
        WorkerOptions {
            name: name.into(),
            urls,
            realm: "buildbot".into(),
            password: password.into(),
            basedir: PathBuf::from("switchyard-worker"),
            max_commands: 32,
            on_connect: None,
            tls: None,
        }
    }
}

// The password never reaches Debug output.
impl fmt::Debug for WorkerOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerOptions")
            .field("name", &self.name)
            .field("urls", &self.urls)
            .field("realm", &self.realm)
            .field("basedir", &self.basedir)
            .field("max_commands", &self.max_commands)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// Why a worker cannot run. Connection problems are not errors: the worker retries.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("bad worker name {0:?}: use 1 to 64 ASCII letters, digits, '_' or '-'")]
    BadName(String),
    #[error("no router URL to connect to")]
    NoUrls,
    #[error(
        "bad router URL {0:?}: use ws://host:port/path, wss://host:port/path or tcp://host:port"
    )]
    BadUrl(String),
    #[error(
        "router URL {0:?} is wss://, but no CA certificate to verify it with is given (--tls-ca)"
    )]
    NoTrustAnchors(String),
    #[error("the worker password is empty")]
    EmptyPassword,
    #[error("max_commands must be at least 1")]
    NoCommands,
    #[error("cannot use the worker's base directory {path}: {source}")]
    Basedir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Whether `name` can be a worker name (an authid, a URI component, a file name).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether the client can dial `url`.
pub(crate) fn valid_url(url: &str) -> bool {
    ["ws://", "wss://", "tcp://", "rs://"]
        .iter()
        .any(|p| url.len() > p.len() && url.starts_with(p))
}

/// Runs the worker until `shutdown` is cancelled or a `shutdown` call stops it. Connection
/// failures are logged and retried, never returned.
pub async fn run_worker(
    opts: WorkerOptions,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    if !valid_name(&opts.name) {
        return Err(WorkerError::BadName(opts.name));
    }
    if opts.urls.is_empty() {
        return Err(WorkerError::NoUrls);
    }
    if let Some(bad) = opts.urls.iter().find(|u| !valid_url(u)) {
        return Err(WorkerError::BadUrl(bad.clone()));
    }
    if opts.tls.is_none() {
        if let Some(u) = opts.urls.iter().find(|u| u.starts_with("wss://")) {
            return Err(WorkerError::NoTrustAnchors(u.clone()));
        }
    }
    if opts.password.is_empty() {
        return Err(WorkerError::EmptyPassword);
    }
    if opts.max_commands == 0 {
        return Err(WorkerError::NoCommands);
    }
    let basedir_err = |source| WorkerError::Basedir {
        path: opts.basedir.clone(),
        source,
    };
    tokio::fs::create_dir_all(&opts.basedir)
        .await
        .map_err(basedir_err)?;
    let basedir = tokio::fs::canonicalize(&opts.basedir)
        .await
        .map_err(basedir_err)?;
    session::Worker::new(opts, basedir, shutdown).run().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_urls() {
        assert!(valid_name("w1"));
        assert!(valid_name("linux-x86_64"));
        for bad in ["", "a.b", "a b", "../x", "a/b", "é", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert!(valid_url("ws://127.0.0.1:8080/ws"));
        assert!(valid_url("tcp://127.0.0.1:8080"));
        assert!(valid_url("wss://node.example:8443/ws"));
        assert!(!valid_url("http://x"));
        assert!(!valid_url("ws://"));
    }

    #[test]
    fn debug_hides_the_password() {
        let o = WorkerOptions::new("w1", vec!["ws://x/ws".into()], "hunter2");
        assert!(!format!("{o:?}").contains("hunter2"));
    }

    #[tokio::test]
    async fn refuses_bad_options() {
        let ok = || WorkerOptions::new("w1", vec!["ws://127.0.0.1:1/ws".into()], "pw");
        let t = CancellationToken::new();
        let mut o = ok();
        o.name = "a.b".into();
        assert!(matches!(
            run_worker(o, t.clone()).await,
            Err(WorkerError::BadName(_))
        ));
        let mut o = ok();
        o.urls.clear();
        assert!(matches!(
            run_worker(o, t.clone()).await,
            Err(WorkerError::NoUrls)
        ));
        let mut o = ok();
        o.urls = vec!["http://x".into()];
        assert!(matches!(
            run_worker(o, t.clone()).await,
            Err(WorkerError::BadUrl(_))
        ));
        let mut o = ok();
        o.password.clear();
        assert!(matches!(
            run_worker(o, t.clone()).await,
            Err(WorkerError::EmptyPassword)
        ));
        let mut o = ok();
        o.basedir = PathBuf::from("/proc/version/x");
        assert!(matches!(
            run_worker(o, t.clone()).await,
            Err(WorkerError::Basedir { .. })
        ));
    }
}
