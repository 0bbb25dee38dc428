//! Running one build: its steps, one after the other, each a `run` call on the worker with
//! progressive results carrying the output, which is stored in log chunks line by line and
//! published live (`logs.<id>.append`).
//!
//! How a build ends:
//! - every step ran (or a failing step halted it): the worst step result; the request
//!   completes with it, and its buildset when it was the last;
//! - the worker went away (its call failed with `wamp.error.canceled` because the callee
//!   left, or it is not registered at all), or this master is stopping: RETRY, and the
//!   request is released so it runs again (on any master);
//! - stopped through the API: CANCELLED, and the request completes CANCELLED;
//! - the worker refused the step (bad workdir, spawn failure): EXCEPTION.
//!
//! The worker slot is released in every case.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value as Json};
use switchyard_router::uri::errors;
use switchyard_router::wire::{Dict, Message, Payload, Value};
use tokio_util::sync::CancellationToken;

use super::events::to_wamp;
use super::git::{checkout_script, sh_quote, BadRef};
use super::{unix_now, Inner, RunningBuild};
use crate::auth::worker_procedure;
use crate::config::{StepCommand, StepConfig};
use crate::store::{Build, BuildId, BuildRequest, LogId, StepId, StepStart, WorkerId};
use crate::{Results, StoreError};

/// How long a worker has to answer after its command was interrupted.
const CANCEL_GRACE: Duration = Duration::from_secs(15);

/// How a step ended.
#[derive(Debug)]
enum StepEnd {
    /// The command ran: its exit code and whether it hit its timeout.
    Finished { rc: i64, timed_out: bool },
    /// The worker refused or failed to start it.
    Refused(String),
    /// The worker went away (or the session did).
    WorkerLost(String),
    /// Stopped from outside (API, shutdown).
    Stopped,
    /// Refused before it ran (a property made its command invalid): a FAILURE.
    Invalid(String),
}

pub(super) async fn run(
    inner: Arc<Inner>,
    request: BuildRequest,
    worker: WorkerId,
    worker_name: String,
    slot: i64,
) {
    let stop = CancellationToken::new();
    // As Buildbot: the request is claimed (its UI moves it out of the pending list). The
    // events of a build carry what this task wrote (times are this host's clock, as the
    // database's are), rather than reading each row back: four reads a build fewer.
    let mut request = request;
    request.claimed_by_masterid = Some(inner.master);
    request.claimed_at = Some(unix_now());
    inner.bus.buildrequest(&request, "claimed");
    let started = inner
        .store
        .add_build(inner.master, request.id, Some(worker), "starting")
        .await;
    let (build, number) = match started {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(brid = request.id, error = %e, "cannot start build; releasing the request");
            release(&inner, request.id, worker, slot).await;
            return;
        }
    };
    let running = Arc::new(RunningBuild {
        stop: stop.clone(),
        reason: parking_lot::Mutex::new(None),
    });
    inner.running.lock().insert(build, running.clone());
    let mut record = Build {
        id: build,
        number,
        builderid: request.builderid,
        buildrequestid: request.id,
        workerid: Some(worker),
        masterid: inner.master,
        started_at: unix_now(),
        complete_at: None,
        state_string: "starting".into(),
        results: None,
    };
    inner.bus.build(&record, "new");
    let builder = inner
        .builder(request.builderid)
        .expect("claimed only for our builders")
        .clone();
    tracing::info!(build, number, builder = %builder.name, worker = %worker_name, brid = request.id, "build started");

    let mut props = inner
        .store
        .buildset_properties(request.buildsetid)
        .await
        .unwrap_or_default();
    for (k, v) in [
        ("buildername", json!(builder.name)),
        ("buildnumber", json!(number)),
        ("workername", json!(worker_name)),
        ("masterid", json!(inner.master)),
    ] {
        props.insert(k.into(), (v, "Build".into()));
    }

    let mut result = Results::Success;
    let mut halted = false;
    let mut infrastructure: Option<Results> = None;
    for (i, step) in builder.steps.iter().enumerate() {
        if halted {
            break;
        }
        let outcome = run_step(
            &inner,
            build,
            i as i64,
            step,
            &builder.name,
            &worker_name,
            &props,
            &stop,
        )
        .await;
        let step_result = match outcome {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(build, error = %e, "database failed during the build");
                Results::Retry
            }
        };
        match step_result {
            Results::Retry | Results::Cancelled | Results::Exception => {
                infrastructure = Some(step_result);
                break;
            }
            Results::Failure if step.warn_on_failure => result = result.worst(Results::Warnings),
            r => {
                result = result.worst(r);
                if r == Results::Failure && step.halt_on_failure {
                    halted = true;
                }
            }
        }
    }
    let stopped_reason = running.reason.lock().clone();
    let final_result = match infrastructure {
        // A stop from this master's own shutdown or expiry is a RETRY, not the user's cancel.
        Some(Results::Cancelled)
            if matches!(
                stopped_reason.as_deref(),
                Some("master shutting down" | "master expired")
            ) =>
        {
            Results::Retry
        }
        Some(r) => r,
        None => result,
    };
    let state = match (&final_result, &stopped_reason) {
        (Results::Cancelled, Some(reason)) => format!("cancelled: {reason}"),
        (Results::Retry, Some(reason)) => format!("retry: {reason}"),
        (Results::Retry, None) => "retry: worker lost".into(),
        (r, _) => r.name().to_owned(),
    };
    // The worker is done with this build: free its slot before any bookkeeping (which may
    // wait out database retries), so the worker never idles behind it.
    if final_result == Results::Retry && stopped_reason.is_none() {
        // The worker was lost: do not hand it the next request right away.
        inner
            .quarantine
            .lock()
            .insert(worker, std::time::Instant::now() + Duration::from_secs(5));
    }
    if let Err(e) = inner
        .store
        .release_worker_slot(inner.master, worker, slot)
        .await
    {
        tracing::warn!(error = %e, "cannot release worker slot (the heartbeat's repair will)");
    }
    inner.wake.notify_one();
    if stopped_reason.as_deref() != Some("master expired") {
        record.state_string = state;
        record_end(&inner, request, &mut record, final_result).await;
        tracing::info!(build, number, builder = %builder.name, result = %final_result, "build finished");
    } else {
        // The master that expired this one finished the build and released the request.
        let _ = inner.store.set_build_state(build, &state).await;
    }
    // Only now is the build off this master's books: a stop waits for this, so a
    // completion is never abandoned half-way.
    inner.running.lock().remove(&build);
}

/// Records a build's end: the build row, its request (completed, or released to run again
/// after a RETRY), and the buildset when this was its last request.
async fn record_end(inner: &Inner, mut request: BuildRequest, build: &mut Build, result: Results) {
    let (id, state) = (build.id, build.state_string.as_str());
    let set = if result == Results::Retry {
        inner
            .store
            .end_build(inner.master, id, result, state)
            .await
            .map(|()| None)
    } else {
        // The build's end and its request's completion are one transaction: a kill between
        // them would let the request run a second time.
        inner
            .store
            .finish_build_and_request(
                inner.master,
                id,
                state,
                request.id,
                request.buildsetid,
                result,
            )
            .await
    };
    let set = match set {
        Ok(set) => set,
        Err(e) => {
            tracing::warn!(build = id, brid = request.id, error = %e, "cannot record the build's end (this master may have been expired)");
            return;
        }
    };
    build.complete_at = Some(unix_now());
    build.results = Some(result);
    inner.bus.build(build, "finished");
    if result == Results::Retry {
        unclaim(inner, request.id).await;
        return;
    }
    request.complete = true;
    request.results = Some(result);
    request.complete_at = build.complete_at;
    inner.bus.buildrequest(&request, "complete");
    if let Some(results) = set {
        inner.publish_buildset_complete(request.buildsetid, results);
    }
}

/// Gives a request back to the queue.
async fn unclaim(inner: &Inner, brid: i64) {
    match inner
        .store
        .unclaim_buildrequests(inner.master, &[brid])
        .await
    {
        Ok(released) if !released.is_empty() => inner.publish_request(brid, "unclaimed").await,
        Ok(_) => {}
        Err(e) => tracing::warn!(brid, error = %e, "cannot release the build request"),
    }
}

/// Gives a request back to the queue and frees the worker slot.
async fn release(inner: &Inner, brid: i64, worker: WorkerId, slot: i64) {
    unclaim(inner, brid).await;
    if let Err(e) = inner
        .store
        .release_worker_slot(inner.master, worker, slot)
        .await
    {
        tracing::warn!(error = %e, "cannot release worker slot");
    }
}

fn step_json(
    step: StepId,
    build: BuildId,
    number: i64,
    name: &str,
    result: Option<Results>,
    state: &str,
) -> Json {
    json!({"stepid": step, "number": number, "name": name, "buildid": build,
        "started_at": unix_now(), "complete": result.is_some(),
        "complete_at": result.map(|_| unix_now()), "state_string": state,
        "results": result.map(|r| r.code()), "urls": [], "hidden": false})
}

/// The worker's `command` argument for a step, and a header line for the log; refused if a
/// property would put a malformed ref (or an option) on git's command line.
fn command_for(
    step: &StepConfig,
    props: &BTreeMap<String, (Json, String)>,
) -> Result<(Value, String), BadRef> {
    let prop = |name: &str| {
        props
            .get(name)
            .and_then(|(v, _)| v.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    Ok(match step.command() {
        StepCommand::Shell(s) => (Value::from(s.as_str()), s),
        StepCommand::Argv(argv) => (
            Value::List(argv.iter().map(|a| Value::from(a.as_str())).collect()),
            argv.iter()
                .map(|a| sh_quote(a))
                .collect::<Vec<_>>()
                .join(" "),
        ),
        StepCommand::Git { repo, branch } => {
            // A change's or a forced build's branch/revision wins over the step's default.
            let branch = prop("branch").or(branch);
            let revision = prop("revision");
            let header = format!(
                "git checkout of {repo} ({})",
                revision
                    .clone()
                    .or(branch.clone())
                    .unwrap_or_else(|| "default branch".into())
                    .chars()
                    .take(100)
                    .collect::<String>()
            );
            let script = checkout_script(&repo, branch.as_deref(), revision.as_deref())?;
            (Value::from(script.as_str()), header)
        }
    })
}

/// Splits streamed output into whole lines for the log (a partial line waits for the rest).
#[derive(Default)]
struct LineBuffer {
    pending: String,
}

impl LineBuffer {
    fn push(&mut self, data: &str) -> Option<String> {
        self.pending.push_str(data);
        let cut = self.pending.rfind('\n')? + 1;
        let rest = self.pending.split_off(cut);
        Some(std::mem::replace(&mut self.pending, rest))
    }

    fn finish(&mut self) -> Option<String> {
        if self.pending.is_empty() {
            None
        } else {
            let mut s = std::mem::take(&mut self.pending);
            s.push('\n');
            Some(s)
        }
    }
}

struct LogWriter<'a> {
    inner: &'a Inner,
    step: StepId,
    log: LogId,
    lines: i64,
}

impl LogWriter<'_> {
    async fn write(&mut self, text: &str) -> Result<(), StoreError> {
        let (first, last) = self.inner.store.append_log(self.log, text).await?;
        self.appended(first, last, text);
        Ok(())
    }

    /// Publishes lines `first..=last`, written to the store by the caller.
    fn appended(&mut self, first: i64, last: i64, text: &str) {
        self.lines = last + 1;
        let data = json!({"logid": self.log, "stepid": self.step, "name": "stdio",
            "slug": "stdio", "type": "t", "complete": false, "num_lines": self.lines,
            "first_line": first, "content": text});
        self.inner
            .bus
            .log(self.step, self.log, "stdio", &data, "append");
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_step(
    inner: &Inner,
    build: BuildId,
    number: i64,
    step: &StepConfig,
    builder: &str,
    worker: &str,
    props: &BTreeMap<String, (Json, String)>,
    stop: &CancellationToken,
) -> Result<Results, StoreError> {
    let command = command_for(step, props);
    let workdir = format!("{builder}/{}", step.workdir());
    let header = command
        .as_ref()
        .ok()
        .map(|(_, h)| format!("$ {h}\n  in {workdir} on worker {worker}\n"));
    let (stepid, log, lines) = inner
        .store
        .begin_step(&StepStart {
            build,
            number,
            name: &step.name,
            // The build's properties go in with its first step's transaction.
            properties: (number == 0).then_some(props),
            header: header.as_deref(),
        })
        .await?;
    inner.bus.step(
        build,
        stepid,
        &step_json(stepid, build, number, &step.name, None, "running"),
        "new",
    );
    inner.bus.log(
        stepid,
        log,
        "stdio",
        &json!({"logid": log, "stepid": stepid, "name": "stdio", "slug": "stdio", "type": "t",
            "complete": false, "num_lines": 0}),
        "new",
    );
    let mut out = LogWriter {
        inner,
        step: stepid,
        log,
        lines: 0,
    };
    if let Some(h) = &header {
        out.appended(0, lines - 1, h);
    }
    let end = match command {
        Ok((command, _)) => {
            call_worker(
                inner, &mut out, build, stepid, step, builder, worker, props, stop, command,
                &workdir,
            )
            .await?
        }
        Err(bad) => {
            tracing::info!(build, error = %bad, "step refused before it ran");
            StepEnd::Invalid(bad.to_string())
        }
    };
    let (result, state) = match &end {
        StepEnd::Finished { rc: 0, .. } => (Results::Success, step.name.clone()),
        StepEnd::Finished {
            timed_out: true, ..
        } => (Results::Failure, format!("{} (timed out)", step.name)),
        StepEnd::Finished { rc, .. } => (
            Results::Failure,
            format!("{} (failure: exit code {rc})", step.name),
        ),
        StepEnd::Refused(m) => (
            Results::Exception,
            format!("{} (exception: {m})", step.name),
        ),
        StepEnd::WorkerLost(m) => (Results::Retry, format!("{} (worker lost: {m})", step.name)),
        StepEnd::Stopped => (Results::Cancelled, format!("{} (cancelled)", step.name)),
        StepEnd::Invalid(_) => (
            Results::Failure,
            format!("{} (failure: refused)", step.name),
        ),
    };
    let footer = match &end {
        StepEnd::Finished { rc, timed_out } => {
            format!(
                "program finished with exit code {rc}{}\n",
                if *timed_out {
                    " (killed: timeout or output limit)"
                } else {
                    ""
                }
            )
        }
        StepEnd::Refused(m) => format!("the worker refused the command: {m}\n"),
        StepEnd::WorkerLost(m) => format!("lost the worker: {m}\n"),
        StepEnd::Stopped => "stopped\n".into(),
        StepEnd::Invalid(m) => format!("{m}\nthe step did not run\n"),
    };
    let (first, last) = inner
        .store
        .end_step(stepid, log, &footer, result, &state)
        .await?;
    out.appended(first, last, &footer);
    inner.bus.log(
        stepid,
        log,
        "stdio",
        &json!({"logid": log, "stepid": stepid, "name": "stdio", "slug": "stdio", "type": "t",
            "complete": true, "num_lines": out.lines}),
        "finished",
    );
    inner.bus.step(
        build,
        stepid,
        &step_json(stepid, build, number, &step.name, Some(result), &state),
        "finished",
    );
    Ok(result)
}

/// Runs a step's command on the worker, streaming its output into the log.
#[allow(clippy::too_many_arguments)]
async fn call_worker(
    inner: &Inner,
    out: &mut LogWriter<'_>,
    build: BuildId,
    stepid: StepId,
    step: &StepConfig,
    builder: &str,
    worker: &str,
    props: &BTreeMap<String, (Json, String)>,
    stop: &CancellationToken,
    command: Value,
    workdir: &str,
) -> Result<StepEnd, StoreError> {
    let mut kwargs = Dict::new();
    kwargs.insert("command".into(), command);
    kwargs.insert("workdir".into(), Value::from(workdir));
    let mut env: Dict = step
        .env
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
        .collect();
    for (k, v) in [
        ("BUILDBOT_BUILDERNAME", builder.to_owned()),
        ("SWITCHYARD_BUILD_ID", build.to_string()),
        (
            "BUILDBOT_BUILDNUMBER",
            props
                .get("buildnumber")
                .map(|(v, _)| v.to_string())
                .unwrap_or_default(),
        ),
    ] {
        env.entry(k.into())
            .or_insert_with(|| Value::from(v.as_str()));
    }
    kwargs.insert("env".into(), Value::Dict(env));
    if let Some(t) = step.timeout_s {
        kwargs.insert("timeout".into(), Value::Float(t));
    }
    kwargs.insert("build".into(), Value::Int(build));
    kwargs.insert("step".into(), Value::Int(stepid));
    kwargs.insert(
        "properties".into(),
        to_wamp(&Json::Object(
            props
                .iter()
                .map(|(k, (v, _))| (k.clone(), v.clone()))
                .collect(),
        )),
    );

    let (request, mut answers) = inner.client.call_progressive(
        &worker_procedure(worker, "run"),
        Dict::new(),
        Payload::new(Vec::new(), kwargs),
    );
    let mut stdout = LineBuffer::default();
    let mut stderr = LineBuffer::default();
    let mut canceled_at: Option<tokio::time::Instant> = None;
    let end = loop {
        let cancel_deadline = async {
            match canceled_at {
                Some(at) => tokio::time::sleep_until(at + CANCEL_GRACE).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.cancelled(), if canceled_at.is_none() => {
                inner.client.cancel(request, "kill");
                canceled_at = Some(tokio::time::Instant::now());
            }
            _ = cancel_deadline => break StepEnd::Stopped,
            msg = answers.recv() => {
                let Some(msg) = msg else {
                    break StepEnd::WorkerLost("the master's session closed".into());
                };
                match msg {
                    Message::Result { details, payload, .. }
                        if details.get("progress").and_then(Value::as_bool) == Some(true) =>
                    {
                        let Some(k) = payload.kwargs() else { continue };
                        let data = k.get("data").and_then(Value::as_str).unwrap_or("");
                        let buf = match k.get("stream").and_then(Value::as_str) {
                            Some("stderr") => &mut stderr,
                            _ => &mut stdout,
                        };
                        if let Some(lines) = buf.push(data) {
                            out.write(&lines).await?;
                        }
                    }
                    Message::Result { payload, .. } => {
                        let k = payload.kwargs();
                        let get = |n: &str| k.and_then(|k| k.get(n));
                        let rc = match get("rc") {
                            Some(Value::Int(i)) => *i,
                            Some(v) => v.as_u64().map(|u| u as i64).unwrap_or(-1),
                            None => -1,
                        };
                        let timed_out = get("timed_out").and_then(Value::as_bool).unwrap_or(false)
                            || get("output_limit").and_then(Value::as_bool).unwrap_or(false);
                        break if canceled_at.is_some() {
                            StepEnd::Stopped
                        } else {
                            StepEnd::Finished { rc, timed_out }
                        };
                    }
                    Message::Error { error, payload, .. } => {
                        let message = payload
                            .args()
                            .first()
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned();
                        break if canceled_at.is_some() {
                            StepEnd::Stopped
                        } else {
                            match error.as_str() {
                                switchyard_worker::BAD_WORKDIR
                                | switchyard_worker::SPAWN_FAILED
                                | errors::INVALID_ARGUMENT => {
                                    StepEnd::Refused(format!("{error}: {message}"))
                                }
                                _ => StepEnd::WorkerLost(format!("{error}: {message}")),
                            }
                        };
                    }
                    _ => {}
                }
            }
        }
    };
    for buf in [&mut stdout, &mut stderr] {
        if let Some(rest) = buf.finish() {
            out.write(&rest).await?;
        }
    }
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_buffer_keeps_partial_lines() {
        let mut b = LineBuffer::default();
        assert_eq!(b.push("abc"), None);
        assert_eq!(b.push("def\ngh"), Some("abcdef\n".into()));
        assert_eq!(b.push("i\nj\n"), Some("ghi\nj\n".into()));
        assert_eq!(b.finish(), None);
        b.push("tail");
        assert_eq!(b.finish(), Some("tail\n".into()));
    }
}
