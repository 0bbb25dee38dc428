//! `switchyard worker` running commands, as a user runs it: a real router process, a real
//! worker process, and a caller using switchyard's client to call the worker's `run` and
//! `info` as a master would: output streaming and limits, argv, env and workdir, refused
//! calls, timeouts and cancels killing whole process groups. Joining, moving and stopping the
//! worker are in `worker_lifecycle.rs`; the harness is `common/worker.rs`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::worker::{
    alive, finish, info, list, read_pid, run, start_run, wait_running, wait_until_async, Node,
    Password, Worker, DEADLINE, SECRET,
};
use switchyard_router::wire::{Dict, Value};

#[tokio::test]
async fn runs_a_command_and_streams_its_output() {
    let node = Node::start(0);
    let w = Worker::start("w1", &[node.url()], Password::Flag(SECRET), &[]);
    w.wait_connected(&node.url()).await;
    let c = node.caller().await;

    let o = run(
        &c,
        "w1",
        &[("command", Value::from("echo hello; echo err 1>&2; exit 3"))],
    )
    .await;
    assert_eq!(o.stdout, "hello\n");
    assert_eq!(o.stderr, "err\n");
    assert!(o.chunks >= 2, "{o:?}");
    let r = o.ok();
    assert_eq!(r["rc"], Value::Int(3));
    assert_eq!(r["timed_out"], Value::Bool(false));
    assert_eq!(r["output_limit"], Value::Bool(false));
    assert!(
        matches!(r["elapsed"], Value::Float(f) if (0.0..10.0).contains(&f)),
        "{r:?}"
    );

    // Much output: order kept, every byte arrives, in chunks of at most 16 KiB.
    let o = run(
        &c,
        "w1",
        &[(
            "command",
            Value::from("i=0; while [ $i -lt 30000 ]; do echo line $i; i=$((i+1)); done"),
        )],
    )
    .await;
    let expected: String = (0..30000).map(|i| format!("line {i}\n")).collect();
    assert!(
        o.stdout == expected,
        "stdout differs ({} bytes)",
        o.stdout.len()
    );
    assert!(o.chunks > 1 && o.chunks < 1000, "{} chunks", o.chunks);
    assert_eq!(o.ok()["rc"], Value::Int(0));

    // The output limit kills the command and says so.
    let o = run(
        &c,
        "w1",
        &[
            ("command", Value::from("yes")),
            ("max_output", Value::Int(50_000)),
        ],
    )
    .await;
    assert_eq!(o.stdout.len(), 50_000);
    assert_eq!(o.ok()["output_limit"], Value::Bool(true));
    assert_eq!(o.ok()["timed_out"], Value::Bool(false));

    // info describes the worker.
    let i = info(&c, "w1").await.unwrap();
    assert_eq!(i["name"], Value::from("w1"));
    assert_eq!(i["version"], Value::from(env!("CARGO_PKG_VERSION")));
    assert_eq!(i["os"], Value::from(std::env::consts::OS));
    assert_eq!(i["arch"], Value::from(std::env::consts::ARCH));
    assert!(!i["hostname"].as_str().unwrap().is_empty());
    let basedir = i["basedir"].as_str().unwrap();
    assert!(Path::new(basedir).is_absolute());
    assert_eq!(Path::new(basedir), w.basedir.canonicalize().unwrap());
    assert_eq!(i["running"], Value::Int(0));

    // The secret is never logged.
    assert!(!w.stderr().contains(SECRET), "{}", w.stderr());
}

#[tokio::test]
async fn argv_env_workdir_and_refused_calls() {
    let node = Node::start(0);
    let w = Worker::start("w1", &[node.url()], Password::Env(SECRET), &[]);
    w.wait_connected(&node.url()).await;
    let c = node.caller().await;

    // argv (no shell: `$HOME` stays literal), env added, workdir created under the basedir.
    let mut env = Dict::new();
    env.insert("SWITCHYARD_TEST_VAR".into(), Value::from("from the master"));
    let o = run(
        &c,
        "w1",
        &[
            (
                "command",
                list(&[
                    "/bin/sh",
                    "-c",
                    "echo \"$SWITCHYARD_TEST_VAR\"; pwd; echo \"$0\"",
                    "$HOME",
                ]),
            ),
            ("workdir", Value::from("builds/b1")),
            ("env", Value::Dict(env)),
            ("build", Value::Int(7)),
            ("step", Value::Int(2)),
        ],
    )
    .await;
    assert_eq!(o.ok()["rc"], Value::Int(0));
    let workdir = w.basedir.join("builds/b1").canonicalize().unwrap();
    assert_eq!(
        o.stdout,
        format!("from the master\n{}\n$HOME\n", workdir.display())
    );
    let o = run(
        &c,
        "w1",
        &[("command", list(&["printf", "%s|", "a b", "c"]))],
    )
    .await;
    assert_eq!(o.stdout, "a b|c|");

    // Refused before anything runs.
    for (workdir, what) in [
        ("../escape", "parent"),
        ("/tmp", "absolute"),
        ("a/../../b", "nested parent"),
    ] {
        let o = run(
            &c,
            "w1",
            &[
                ("command", Value::from("touch escaped")),
                ("workdir", Value::from(workdir)),
            ],
        )
        .await;
        assert_eq!(o.error(), "switchyard.error.bad_workdir", "{what}");
    }
    assert!(!w.cwd.join("escape").exists());
    for bad in [
        vec![("command", Value::Int(5))],
        vec![],
        vec![
            ("command", Value::from("true")),
            ("timeout", Value::from("soon")),
        ],
        vec![("command", Value::from("true")), ("env", list(&["A=1"]))],
    ] {
        let o = run(&c, "w1", &bad).await;
        assert_eq!(o.error(), "wamp.error.invalid_argument", "{bad:?}");
        match &o.result {
            Some(Err((_, args))) => assert!(args[0].as_str().is_some_and(|m| !m.is_empty())),
            _ => unreachable!(),
        }
    }
    let o = run(&c, "w1", &[("command", list(&["/nonexistent/program"]))]).await;
    assert_eq!(o.error(), "switchyard.error.spawn_failed");
    // The worker is still fine.
    assert_eq!(info(&c, "w1").await.unwrap()["running"], Value::Int(0));
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let node = Node::start(0);
    let w = Worker::start("w1", &[node.url()], Password::Flag(SECRET), &[]);
    w.wait_connected(&node.url()).await;
    let c = node.caller().await;
    let t = Instant::now();
    let o = run(
        &c,
        "w1",
        &[
            (
                "command",
                Value::from("sleep 30 & echo $! > bg.pid; echo $$ > fg.pid; sleep 30"),
            ),
            ("workdir", Value::from("t")),
            ("timeout", Value::Float(1.0)),
        ],
    )
    .await;
    let took = t.elapsed();
    let r = o.ok();
    assert_eq!(r["timed_out"], Value::Bool(true));
    assert_eq!(r["output_limit"], Value::Bool(false));
    assert_eq!(r["rc"], Value::Int(-(libc::SIGTERM as i64)));
    assert!(took < Duration::from_secs(6), "took {took:?}");
    for f in ["bg.pid", "fg.pid"] {
        let pid = read_pid(&w.basedir.join("t").join(f)).await;
        assert!(!alive(pid), "{f}: {pid} survived the timeout");
    }
}

#[tokio::test]
async fn cancel_kills_the_command_and_busy_is_refused() {
    let node = Node::start(0);
    let w = Worker::start(
        "w1",
        &[node.url()],
        Password::Flag(SECRET),
        &["--max-commands", "1"],
    );
    w.wait_connected(&node.url()).await;
    let c = node.caller().await;
    for (i, mode) in ["kill", "killnowait"].into_iter().enumerate() {
        let pidfile = format!("sleep{i}.pid");
        let (req, rx) = start_run(
            &c,
            "w1",
            &[(
                "command",
                Value::from(format!("echo $$ > {pidfile}; exec sleep 30")),
            )],
        )
        .await;
        let pid = read_pid(&w.basedir.join(&pidfile)).await;
        assert!(alive(pid));
        // One command at a time: a second is refused.
        let busy = run(&c, "w1", &[("command", Value::from("true"))]).await;
        assert_eq!(busy.error(), "switchyard.error.busy");

        c.cancel(req, mode).await.unwrap();
        let o = finish(rx).await;
        assert_eq!(o.error(), "wamp.error.canceled", "{mode}");
        assert!(
            wait_until_async(DEADLINE, || !alive(pid)).await,
            "{mode}: the command survived the cancel"
        );
        // The slot is free again (after killnowait the router answered before the kill).
        assert!(
            wait_running(&c, "w1", 0).await,
            "{mode}: the command is still counted as running"
        );
    }
}
