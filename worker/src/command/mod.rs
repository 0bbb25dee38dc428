//! One command, run for a `run` call: the child spawned in a process group of its own, its
//! output forwarded, its limits enforced (timeout, output size), and the whole group killed on
//! cancel, on timeout or when the connection goes. [`execute`] is the sequence; the parts:
//! - `request`: the call's arguments, checked ([`RunRequest`], part of the contract);
//! - `output`: the pipes read, coalesced and forwarded, bounded at every hop;
//! - `group`: the process group killed, its survivors found, the exit status as `rc`.

mod group;
mod output;
mod request;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use switchyard_router::wire::{Dict, Value};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub(crate) use group::KILL_GRACE;
use group::{group_alive, kill_group, rc_of, reaped};
use output::{forward, pump, sleep_until_opt, CHUNK_QUEUE};
pub(crate) use output::{OutputSink, Stream};
#[cfg(test)]
pub(crate) use request::INVALID_ARGUMENT;
pub(crate) use request::{invalid, seconds};
pub use request::{CallError, CommandLine, RunRequest};

/// After the main process exits, how long its pipes may stay open (held by processes it left
/// running) before those processes are killed.
const PIPE_GRACE: Duration = Duration::from_secs(2);

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

#[cfg(test)]
mod tests {
    use super::output::FLUSH_BYTES;
    use super::*;
    use switchyard_router::wire::Payload;

    fn kwargs(pairs: &[(&str, Value)]) -> Payload {
        Payload::new(
            vec![],
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        )
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
