//! One command, run for a `run` call: its arguments checked, the child spawned in a process
//! group of its own, its output coalesced and forwarded, its limits enforced (timeout, output
//! size), and the whole group killed on cancel, on timeout or when the connection goes.
//!
//! Data flow, every hop bounded:
//!
//! ```text
//! child stdout ─ pump ─┐                                      ┌─ progressive YIELD
//!                      ├─ chunk channel (CHUNK_QUEUE) ─ forwarder ─┤  (OutputSink)
//! child stderr ─ pump ─┘                                      └─ output limit → kill
//! ```
//!
//! A pump reads at most [`FLUSH_BYTES`] before it must hand the chunk over; while the channel
//! is full it does not read, so the pipe fills and the child blocks on write: a slow caller
//! slows the command down instead of growing memory.

use std::future::Future;
use std::os::unix::process::ExitStatusExt;
use std::path::{Component, Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use switchyard_router::wire::{Dict, Payload, Value};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub(crate) use crate::BAD_WORKDIR;

/// `max_output` when the call does not give one.
pub(crate) const DEFAULT_MAX_OUTPUT: u64 = 64 * 1024 * 1024;
/// A pump hands its buffer over once it holds this much...
pub(crate) const FLUSH_BYTES: usize = 16 * 1024;
/// ...or this long after its first unflushed byte.
pub(crate) const FLUSH_DELAY: Duration = Duration::from_millis(50);
/// Between SIGTERM and SIGKILL.
pub(crate) const KILL_GRACE: Duration = Duration::from_secs(3);
/// After the main process exits, how long its pipes may stay open (held by processes it left
/// running) before those processes are killed.
const PIPE_GRACE: Duration = Duration::from_secs(2);
/// Chunks in flight between the pumps and the forwarder.
const CHUNK_QUEUE: usize = 4;
/// How often the group is checked while waiting for it to die.
const POLL: Duration = Duration::from_millis(50);

/// Which pipe a chunk of output came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Where forwarded output goes (progressive results on the call).
pub(crate) trait OutputSink: Send + 'static {
    fn send(&mut self, stream: Stream, data: String) -> impl Future<Output = ()> + Send;
}

/// Why a command is asked to die from outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KillReason {
    /// The caller canceled the call (INTERRUPT).
    Canceled,
    /// The connection is gone, or the worker is stopping: nobody supervises the command.
    Lost,
}

/// Why a command ended before its main process exited on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cause {
    Timeout,
    OutputLimit,
    Canceled,
    Lost,
}

/// How a command ended.
#[derive(Debug)]
pub(crate) struct Finished {
    /// The exit code; a signal as its negated number (`-15` for SIGTERM); `-1` if the exit
    /// status could not be read.
    pub rc: i64,
    /// Set when the worker killed the command (or the caller asked it to).
    pub cause: Option<Cause>,
    pub elapsed: Duration,
}

impl Finished {
    /// The final RESULT's kwargs.
    pub(crate) fn result_kwargs(&self) -> Dict {
        let mut k = Dict::new();
        k.insert("rc".into(), Value::Int(self.rc));
        k.insert(
            "timed_out".into(),
            Value::Bool(self.cause == Some(Cause::Timeout)),
        );
        k.insert(
            "output_limit".into(),
            Value::Bool(self.cause == Some(Cause::OutputLimit)),
        );
        k.insert("elapsed".into(), Value::Float(self.elapsed.as_secs_f64()));
        k
    }
}

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

/// Creates the workdir and starts the child: its own process group, stdin from /dev/null,
/// stdout and stderr piped.
async fn spawn(req: &RunRequest, basedir: &Path) -> Result<Child, String> {
    let dir = basedir.join(&req.workdir);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| format!("cannot create workdir {}: {e}", dir.display()))?;
    let (program, mut cmd) = match &req.command {
        CommandLine::Shell(s) => {
            let mut c = Command::new("/bin/sh");
            c.arg("-c").arg(s);
            ("/bin/sh", c)
        }
        CommandLine::Argv(argv) => {
            let mut c = Command::new(&argv[0]);
            c.args(&argv[1..]);
            (argv[0].as_str(), c)
        }
    };
    cmd.current_dir(&dir)
        .envs(req.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // pgid = the child's pid: signals to -pid reach everything it starts.
        .process_group(0)
        // Last resort if this task is dropped: the main process at least dies.
        .kill_on_drop(true);
    cmd.spawn()
        .map_err(|e| format!("cannot start {program} in {}: {e}", dir.display()))
}

/// Sends `sig` to every process of group `pgid` (never to pgid 0 or 1: those would mean our
/// own group or every process).
fn signal_group(pgid: i32, sig: libc::c_int) {
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) has no memory-safety preconditions; ESRCH (group gone) is ignored.
    unsafe {
        libc::kill(-pgid, sig);
    }
}

/// Whether any process of group `pgid` is still alive. Zombies do not count (they are dead;
/// an init that does not reap orphans keeps them around).
fn group_alive(pgid: i32) -> bool {
    if pgid <= 1 {
        return false;
    }
    if let Ok(dir) = std::fs::read_dir("/proc") {
        let mut scanned = false;
        for entry in dir.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            scanned = true;
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // "pid (comm) S ppid pgrp ...": comm may hold spaces and parentheses.
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            let mut fields = rest.split_whitespace();
            let state = fields.next().unwrap_or("");
            let pgrp = fields.nth(1).and_then(|f| f.parse::<i32>().ok());
            if pgrp == Some(pgid) && state != "Z" && state != "X" {
                return true;
            }
        }
        if scanned {
            return false;
        }
    }
    // No /proc: the group exists while kill(-pgid, 0) succeeds (zombies included).
    // SAFETY: signal 0 only checks existence and permission.
    unsafe { libc::kill(-pgid, 0) == 0 }
}

/// SIGTERM to the group; SIGKILL to whatever is still alive after [`KILL_GRACE`]; the main
/// process reaped into `status`.
async fn kill_group(child: &mut Child, status: &mut Option<ExitStatus>, pgid: i32) {
    signal_group(pgid, libc::SIGTERM);
    let deadline = Instant::now() + KILL_GRACE;
    loop {
        if status.is_some() && !group_alive(pgid) {
            return;
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::select! {
            st = child.wait(), if status.is_none() => *status = Some(reaped(st)),
            _ = tokio::time::sleep(POLL) => {}
        }
    }
    tracing::info!(
        pgid,
        "processes still running {KILL_GRACE:?} after SIGTERM: SIGKILL"
    );
    signal_group(pgid, libc::SIGKILL);
    if status.is_none() {
        match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
            Ok(st) => *status = Some(reaped(st)),
            Err(_) => tracing::error!(pgid, "the command's main process survived SIGKILL"),
        }
    }
}

fn reaped(st: std::io::Result<ExitStatus>) -> ExitStatus {
    st.unwrap_or_else(|e| {
        tracing::warn!("cannot read a command's exit status: {e}");
        // Reported as exit code 255.
        ExitStatus::from_raw(0xff00)
    })
}

/// The reported rc: the exit code, or the negated signal number.
fn rc_of(status: Option<ExitStatus>) -> i64 {
    match status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(c), _) => i64::from(c),
            (None, Some(sig)) => -i64::from(sig),
            (None, None) => -1,
        },
        None => -1,
    }
}

/// Sleeps until `at`, or forever if there is no deadline.
async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn kill_cause(r: Option<KillReason>) -> Cause {
    match r {
        Some(KillReason::Canceled) => Cause::Canceled,
        // The sender gone: nobody can supervise the command any more.
        Some(KillReason::Lost) | None => Cause::Lost,
    }
}

/// Runs one command to its end. `Err` is a spawn failure (nothing ran); a kill request on
/// `kill` ends it early. Output goes to `sink` (all of it before this returns).
pub(crate) async fn execute<O: OutputSink>(
    req: &RunRequest,
    basedir: &Path,
    sink: O,
    mut kill: mpsc::Receiver<KillReason>,
) -> Result<Finished, String> {
    let started = Instant::now();
    let mut child = spawn(req, basedir).await?;
    let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) else {
        return Err("the command exited before it could be supervised".into());
    };
    let (tx, rx) = mpsc::channel(CHUNK_QUEUE);
    let mut pumps = Vec::new();
    if let Some(out) = child.stdout.take() {
        pumps.push(tokio::spawn(pump(out, Stream::Stdout, tx.clone())));
    }
    if let Some(err) = child.stderr.take() {
        pumps.push(tokio::spawn(pump(err, Stream::Stderr, tx.clone())));
    }
    drop(tx);
    let limit = CancellationToken::new();
    let mut forwarder = tokio::spawn(forward(rx, sink, req.max_output, limit.clone()));
    let timeout_at = req.timeout.map(|t| started + t);

    // 1. Until the main process exits, or something asks it to die.
    let mut status = None;
    let mut cause = tokio::select! {
        st = child.wait() => { status = Some(reaped(st)); None }
        _ = sleep_until_opt(timeout_at) => Some(Cause::Timeout),
        _ = limit.cancelled() => Some(Cause::OutputLimit),
        r = kill.recv() => Some(kill_cause(r)),
    };
    if let Some(c) = cause {
        tracing::info!(pid, ?c, "{}: killing the command", req.label());
        kill_group(&mut child, &mut status, pid).await;
    }

    // 2. The output: until the pipes close. Processes the command left running may hold
    // them; they get PIPE_GRACE, then are killed like the command (a kill request or the
    // timeout still applies meanwhile).
    let mut forwarded = false;
    if cause.is_none() {
        tokio::select! {
            _ = &mut forwarder => forwarded = true,
            _ = tokio::time::sleep(PIPE_GRACE) => {}
            _ = sleep_until_opt(timeout_at) => cause = Some(Cause::Timeout),
            _ = limit.cancelled() => cause = Some(Cause::OutputLimit),
            r = kill.recv() => cause = Some(kill_cause(r)),
        }
        if !forwarded {
            tracing::info!(
                pid,
                "{}: the main process exited, processes it started keep running: killing them",
                req.label()
            );
            kill_group(&mut child, &mut status, pid).await;
        }
    }
    if !forwarded {
        // Killed processes close their pipes at once; a process that escaped the group
        // (setsid) may not: stop reading after a second.
        if tokio::time::timeout(Duration::from_secs(1), &mut forwarder)
            .await
            .is_err()
        {
            tracing::warn!(
                pid,
                "{}: output pipes still open; closing them",
                req.label()
            );
            for p in &pumps {
                p.abort();
            }
            let _ = (&mut forwarder).await;
        }
    }
    // 3. Nothing of the command may outlive it.
    if group_alive(pid) {
        tracing::info!(
            pid,
            "{}: killing processes the command left running",
            req.label()
        );
        kill_group(&mut child, &mut status, pid).await;
    }
    Ok(Finished {
        rc: rc_of(status),
        cause,
        elapsed: started.elapsed(),
    })
}

/// One chunk of a stream's output.
struct Chunk {
    stream: Stream,
    text: String,
}

/// How many bytes at the end of `b` are an incomplete UTF-8 sequence (kept for the next
/// chunk, so a character split across reads is not mangled).
pub(crate) fn incomplete_utf8_tail(b: &[u8]) -> usize {
    for i in 1..=b.len().min(3) {
        let byte = b[b.len() - i];
        if byte & 0xC0 == 0x80 {
            continue; // a continuation byte: look further back for the lead byte
        }
        let needed = match byte {
            0xF0..=0xF7 => 4,
            0xE0..=0xEF => 3,
            0xC0..=0xDF => 2,
            _ => 1,
        };
        return if needed > i { i } else { 0 };
    }
    0
}

/// Reads one pipe, coalescing: a chunk goes out when [`FLUSH_BYTES`] are buffered or
/// [`FLUSH_DELAY`] after the first unflushed byte, and at EOF.
async fn pump(mut pipe: impl AsyncRead + Unpin, stream: Stream, tx: mpsc::Sender<Chunk>) {
    let mut buf: Vec<u8> = Vec::with_capacity(FLUSH_BYTES);
    let mut first_at: Option<Instant> = None;
    let mut read_buf = vec![0u8; FLUSH_BYTES];
    loop {
        let room = FLUSH_BYTES.saturating_sub(buf.len()).max(1);
        let flush = tokio::select! {
            r = pipe.read(&mut read_buf[..room]) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf.extend_from_slice(&read_buf[..n]);
                    first_at.get_or_insert_with(Instant::now);
                    buf.len() >= FLUSH_BYTES
                }
            },
            _ = sleep_until_opt(first_at.map(|t| t + FLUSH_DELAY)) => true,
        };
        if flush {
            let keep = incomplete_utf8_tail(&buf);
            let cut = buf.len() - keep;
            // Only an incomplete character buffered: wait for the rest of it.
            first_at = None;
            if cut == 0 {
                continue;
            }
            let text = String::from_utf8_lossy(&buf[..cut]).into_owned();
            buf.drain(..cut);
            if tx.send(Chunk { stream, text }).await.is_err() {
                return;
            }
        }
    }
    if !buf.is_empty() {
        let text = String::from_utf8_lossy(&buf).into_owned();
        let _ = tx.send(Chunk { stream, text }).await;
    }
}

/// Forwards chunks in order to `sink` until the pumps are done. Beyond `max` bytes it
/// cancels `limit` and discards the rest (still draining, so the pumps never block).
async fn forward<O: OutputSink>(
    mut rx: mpsc::Receiver<Chunk>,
    mut sink: O,
    max: u64,
    limit: CancellationToken,
) {
    let mut total: u64 = 0;
    while let Some(mut chunk) = rx.recv().await {
        if limit.is_cancelled() {
            continue;
        }
        let len = chunk.text.len() as u64;
        if total + len > max {
            let mut cut = (max - total) as usize;
            while !chunk.text.is_char_boundary(cut) {
                cut -= 1;
            }
            chunk.text.truncate(cut);
            if !chunk.text.is_empty() {
                sink.send(chunk.stream, chunk.text).await;
            }
            total = max;
            limit.cancel();
            continue;
        }
        total += len;
        sink.send(chunk.stream, chunk.text).await;
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

    #[test]
    fn utf8_tails() {
        assert_eq!(incomplete_utf8_tail(b"abc"), 0);
        let e = "é".as_bytes(); // 2 bytes
        assert_eq!(incomplete_utf8_tail(&e[..1]), 1);
        assert_eq!(incomplete_utf8_tail(e), 0);
        let euro = "€".as_bytes(); // 3 bytes
        assert_eq!(incomplete_utf8_tail(&[b'a', euro[0], euro[1]]), 2);
        assert_eq!(incomplete_utf8_tail(euro), 0);
        let emoji = "😀".as_bytes(); // 4 bytes
        assert_eq!(incomplete_utf8_tail(&emoji[..3]), 3);
        assert_eq!(incomplete_utf8_tail(emoji), 0);
        // Invalid bytes are not held back (lossy decoding replaces them).
        assert_eq!(incomplete_utf8_tail(&[0xff]), 0);
        assert_eq!(incomplete_utf8_tail(&[0x80, 0x80, 0x80, 0x80]), 0);
    }

    /// Collects forwarded output.
    struct Collect(std::sync::Arc<parking_lot::Mutex<Vec<(Stream, String)>>>);

    impl OutputSink for Collect {
        async fn send(&mut self, stream: Stream, data: String) {
            self.0.lock().push((stream, data));
        }
    }

    fn shell(cmd: &str) -> RunRequest {
        RunRequest::parse(&kwargs(&[("command", Value::from(cmd))])).unwrap()
    }

    async fn run(req: RunRequest) -> (Finished, Vec<(Stream, String)>) {
        let out = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
        let (_kill_tx, kill_rx) = mpsc::channel(1);
        let dir = std::env::temp_dir();
        let f = execute(&req, &dir, Collect(out.clone()), kill_rx)
            .await
            .unwrap();
        let v = out.lock().clone();
        (f, v)
    }

    fn joined(out: &[(Stream, String)], s: Stream) -> String {
        out.iter()
            .filter(|(st, _)| *st == s)
            .map(|(_, t)| t.as_str())
            .collect()
    }

    #[tokio::test]
    async fn output_exit_codes_and_signals() {
        let (f, out) = run(shell("echo out; echo err >&2; exit 3")).await;
        assert_eq!(f.rc, 3);
        assert_eq!(f.cause, None);
        assert_eq!(joined(&out, Stream::Stdout), "out\n");
        assert_eq!(joined(&out, Stream::Stderr), "err\n");
        let (f, _) = run(shell("kill -9 $$")).await;
        assert_eq!(f.rc, -9);
    }

    #[tokio::test]
    async fn coalesces_and_keeps_order_and_multibyte_characters() {
        // 100 000 lines of "é€😀<n>": far more than one chunk; reassembled exactly.
        let (f, out) = run(shell(
            "i=0; while [ $i -lt 20000 ]; do printf 'é€😀%d\\n' $i; i=$((i+1)); done",
        ))
        .await;
        assert_eq!(f.rc, 0);
        let text = joined(&out, Stream::Stdout);
        let expected: String = (0..20000).map(|i| format!("é€😀{i}\n")).collect();
        assert_eq!(text.len(), expected.len());
        assert!(text == expected, "output differs");
        assert!(out.len() > 1, "one chunk for {} bytes", text.len());
        assert!(out.iter().all(|(_, t)| t.len() <= FLUSH_BYTES));
    }

    #[tokio::test]
    async fn output_limit_kills() {
        let mut req = shell("yes");
        req.max_output = 100_000;
        let (f, out) = run(req).await;
        assert_eq!(f.cause, Some(Cause::OutputLimit));
        assert_eq!(joined(&out, Stream::Stdout).len(), 100_000);
        assert!(f.rc < 0, "{}", f.rc);
    }

    #[tokio::test]
    async fn timeout_kills_the_group() {
        let mut req = shell("sleep 30 & sleep 30");
        req.timeout = Some(Duration::from_millis(300));
        let t = std::time::Instant::now();
        let (f, _) = run(req).await;
        assert_eq!(f.cause, Some(Cause::Timeout));
        assert_eq!(f.rc, -libc::SIGTERM as i64);
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    }

    #[tokio::test]
    async fn leftover_background_processes_are_killed() {
        let t = std::time::Instant::now();
        let (f, _) = run(shell("sleep 30 & echo started")).await;
        assert_eq!(f.rc, 0);
        assert_eq!(f.cause, None);
        // PIPE_GRACE, then SIGTERM kills the sleep at once.
        assert!(
            t.elapsed() < PIPE_GRACE + Duration::from_secs(2),
            "{:?}",
            t.elapsed()
        );
    }

    /// A sink that takes nothing until opened: a caller that does not keep up.
    struct Gated {
        open: tokio::sync::watch::Receiver<bool>,
        bytes: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    impl OutputSink for Gated {
        async fn send(&mut self, _stream: Stream, data: String) {
            let _ = self.open.wait_for(|o| *o).await;
            self.bytes
                .fetch_add(data.len(), std::sync::atomic::Ordering::Relaxed);
        }
    }

    #[tokio::test]
    async fn a_slow_caller_slows_the_command_down() {
        let dir = std::env::temp_dir().join(format!("switchyard-bp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // 8 MB of output, then a marker file.
        let req = shell("head -c 8000000 /dev/zero | tr '\\0' a; touch done");
        let (open_tx, open) = tokio::sync::watch::channel(false);
        let bytes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let sink = Gated {
            open,
            bytes: bytes.clone(),
        };
        let (_kill_tx, kill_rx) = mpsc::channel(1);
        let task = {
            let dir = dir.clone();
            tokio::spawn(async move { execute(&req, &dir, sink, kill_rx).await })
        };
        // While the caller takes nothing, the command blocks on its full pipe: what is held
        // in memory is a few chunks, not the output.
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(
            !dir.join("done").exists(),
            "the command ran ahead of its caller"
        );
        assert_eq!(bytes.load(std::sync::atomic::Ordering::Relaxed), 0);
        open_tx.send_replace(true);
        let f = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(f.rc, 0);
        assert_eq!(bytes.load(std::sync::atomic::Ordering::Relaxed), 8_000_000);
        assert!(dir.join("done").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn spawn_failures() {
        let req = RunRequest::parse(&kwargs(&[(
            "command",
            Value::List(vec![Value::from("/nonexistent/program")]),
        )]))
        .unwrap();
        let (_tx, rx) = mpsc::channel(1);
        let out = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
        let e = execute(&req, &std::env::temp_dir(), Collect(out), rx)
            .await
            .unwrap_err();
        assert!(e.contains("/nonexistent/program"), "{e}");
    }
}
