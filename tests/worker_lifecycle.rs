//! `switchyard worker` joining, moving and stopping, as a user runs it: a TLS router verified
//! with its CA, reconnecting after a lost router (its commands killed), wrong passwords and
//! duplicate names retried with backoff, the `reconnect` and `shutdown` calls, SIGTERM, and
//! where the password comes from. Running commands is in `worker.rs`; the harness is
//! `common/worker.rs`.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::node::temp_dir;
use common::tls::TestCa;
use common::worker::{
    alive, collect_lines, finish, free_port, info, kw, list, procedure, read_pid, run, signal,
    start_run, wait_exit, wait_running, wait_until, wait_until_async, Node, Password, Worker, BIN,
    DEADLINE, SECRET,
};
use switchyard_router::client::ClientError;
use switchyard_router::wire::{Dict, Value};

#[tokio::test]
async fn joins_a_tls_router_verified_with_its_ca() {
    let ca = TestCa::generate("worker test CA");
    let node = Node::start_with(0, Some(&ca));
    let ca_file = node.dir.join("ca.pem");
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();
    let ca_arg = ca_file.to_str().unwrap();
    assert!(node.url().starts_with("wss://"));
    let w = Worker::start(
        "w1",
        &[node.url()],
        Password::Flag(SECRET),
        &["--tls-ca", ca_arg],
    );
    w.wait_connected(&node.url()).await;
    let c = node.caller().await;
    let o = run(&c, "w1", &[("command", Value::from("echo over tls"))]).await;
    assert_eq!(o.stdout, "over tls\n");
    assert_eq!(o.ok()["rc"], Value::Int(0));

    // A certificate from another CA is refused (and retried), never joined.
    let other = TestCa::generate("another CA");
    let other_file = node.dir.join("other.pem");
    std::fs::write(&other_file, &other.cert_pem).unwrap();
    let w2 = Worker::start(
        "w2",
        &[node.url()],
        Password::Flag(SECRET),
        &["--tls-ca", other_file.to_str().unwrap()],
    );
    w2.wait_stderr("UnknownIssuer").await;
    assert_eq!(w2.connected_lines(&node.url()), 0);

    // wss:// without a CA: refused at start, naming the option.
    let mut w3 = Worker::start("w2", &[node.url()], Password::Flag(SECRET), &[]);
    let status = wait_exit(&mut w3.child, DEADLINE).expect("worker exits");
    assert_eq!(status.code(), Some(2));
    w3.wait_stderr("--tls-ca").await;
}

#[tokio::test]
async fn reconnects_and_kills_the_commands_of_a_lost_connection() {
    // B's port is reserved but dead at first; the worker joins A.
    let port_b = free_port();
    let url_b = format!("ws://127.0.0.1:{port_b}/ws");
    let mut a = Node::start(0);
    let w = Worker::start("w1", &[url_b.clone(), a.url()], Password::Flag(SECRET), &[]);
    w.wait_connected(&a.url()).await;
    assert_eq!(w.connected_lines(&url_b), 0);
    assert!(
        w.count_stderr(&format!("cannot join {url_b}")) >= 1,
        "{}",
        w.stderr()
    );

    // A command runs when A dies.
    let c = a.caller().await;
    let (_req, _rx) = start_run(
        &c,
        "w1",
        &[("command", Value::from("echo $$ > lost.pid; exec sleep 30"))],
    )
    .await;
    let pid = read_pid(&w.basedir.join("lost.pid")).await;
    assert!(alive(pid));
    a.kill();
    assert!(
        wait_until_async(DEADLINE, || !alive(pid)).await,
        "the command outlived its connection"
    );
    w.wait_stderr(&format!("disconnected from {}", a.url()))
        .await;

    // B comes up: the worker joins it and serves calls there.
    let b = Node::start(port_b);
    assert_eq!(b.url(), url_b);
    w.wait_connected(&url_b).await;
    let c = b.caller().await;
    assert_eq!(info(&c, "w1").await.unwrap()["running"], Value::Int(0));
    let o = run(&c, "w1", &[("command", Value::from("echo back"))]).await;
    assert_eq!(o.stdout, "back\n");
}

#[tokio::test]
async fn wrong_password_is_logged_and_retried_with_backoff() {
    let node = Node::start(0);
    let wrong = "not-the-Secret-0815";
    let mut w = Worker::start("w1", &[node.url()], Password::Flag(wrong), &[]);
    let t = Instant::now();
    w.wait_stderr("wamp.error.authentication_failed").await;
    // Keep watching for a few seconds: it retries, with backoff, and does not exit.
    let ok = wait_until_async(DEADLINE, || w.count_stderr("cannot join") >= 3).await;
    assert!(ok, "did not retry:\n{}", w.stderr());
    let _ = wait_until_async(Duration::from_secs(4), || false).await;
    let attempts = w.count_stderr("cannot join");
    let elapsed = t.elapsed().as_secs_f64();
    // 0.5 s, ×1.5, ±25 %: at most ~7 attempts in the first 6 s; a spin would make hundreds.
    assert!(
        (3..=10).contains(&attempts),
        "{attempts} attempts in {elapsed:.1}s:\n{}",
        w.stderr()
    );
    assert!(w.is_running(), "the worker exited:\n{}", w.stderr());
    assert_eq!(w.connected_lines(&node.url()), 0);
    assert!(!w.stderr().contains(wrong), "the password was logged");
    assert!(w.terminate().success());
}

#[tokio::test]
async fn a_second_worker_with_the_same_name_does_not_steal_it() {
    let node = Node::start(0);
    let first = Worker::start("w1", &[node.url()], Password::Flag(SECRET), &[]);
    first.wait_connected(&node.url()).await;
    let second = Worker::start("w1", &[node.url()], Password::Flag(SECRET), &[]);
    second
        .wait_stderr("wamp.error.procedure_already_exists")
        .await;
    assert_eq!(second.connected_lines(&node.url()), 0);
    // The first one still owns the name: info names its basedir.
    let c = node.caller().await;
    let i = info(&c, "w1").await.unwrap();
    assert_eq!(
        Path::new(i["basedir"].as_str().unwrap()),
        first.basedir.canonicalize().unwrap()
    );
    // The second keeps retrying (later, with backoff) without taking over.
    let ok = wait_until_async(DEADLINE, || {
        second.count_stderr("wamp.error.procedure_already_exists") >= 2
    })
    .await;
    assert!(ok, "{}", second.stderr());
    let i = info(&c, "w1").await.unwrap();
    assert_eq!(
        Path::new(i["basedir"].as_str().unwrap()),
        first.basedir.canonicalize().unwrap()
    );
}

#[tokio::test]
async fn reconnect_call_drains_and_moves_the_worker() {
    let a = Node::start(0);
    let b = Node::start(0);
    let w = Worker::start("w1", &[a.url()], Password::Flag(SECRET), &[]);
    w.wait_connected(&a.url()).await;
    let ca = a.caller().await;
    // A command is running: the worker waits for it before moving.
    let (_, running) = start_run(
        &ca,
        "w1",
        &[("command", Value::from("sleep 1; echo drained"))],
    )
    .await;
    assert!(wait_running(&ca, "w1", 1).await);
    let answer = ca
        .call(
            &procedure("w1", "reconnect"),
            Dict::new(),
            kw(&[
                ("urls", list(&[&b.url()])),
                ("reason", Value::from("master A stops")),
            ]),
        )
        .await
        .unwrap();
    assert!(answer.args().is_empty() && answer.kwargs().is_none());
    // Draining: no new command.
    let o = run(&ca, "w1", &[("command", Value::from("true"))]).await;
    assert_eq!(o.error(), "switchyard.error.draining");
    // The running command finishes normally, then the worker moves to B.
    let o = finish(running).await;
    assert_eq!(o.stdout, "drained\n");
    assert_eq!(o.ok()["rc"], Value::Int(0));
    w.wait_connected(&b.url()).await;
    let cb = b.caller().await;
    assert_eq!(info(&cb, "w1").await.unwrap()["name"], Value::from("w1"));
    match info(&ca, "w1").await {
        Err(ClientError::Wamp { uri, .. }) => assert_eq!(uri, "wamp.error.no_such_procedure"),
        other => panic!("still registered on A: {other:?}"),
    }
    // A malformed reconnect is refused and changes nothing.
    match cb
        .call(
            &procedure("w1", "reconnect"),
            Dict::new(),
            kw(&[("urls", Value::from("ws://x/ws"))]),
        )
        .await
    {
        Err(ClientError::Wamp { uri, .. }) => assert_eq!(uri, "wamp.error.invalid_argument"),
        other => panic!("{other:?}"),
    }
    assert!(info(&cb, "w1").await.is_ok());
}

#[tokio::test]
async fn sigterm_leaves_and_kills_running_commands() {
    let node = Node::start(0);
    let mut w = Worker::start("w1", &[node.url()], Password::Flag(SECRET), &[]);
    w.wait_connected(&node.url()).await;
    let c = node.caller().await;
    let (_, rx) = start_run(
        &c,
        "w1",
        &[("command", Value::from("echo $$ > term.pid; exec sleep 30"))],
    )
    .await;
    let pid = read_pid(&w.basedir.join("term.pid")).await;
    let status = w.terminate();
    assert!(status.success(), "{status:?}\n{}", w.stderr());
    assert!(
        wait_until_async(DEADLINE, || !alive(pid)).await,
        "the command outlived the worker"
    );
    // The caller learns the call failed (the worker left), rather than waiting forever.
    let o = finish(rx).await;
    assert_eq!(o.error(), "wamp.error.canceled");
    match info(&c, "w1").await {
        Err(ClientError::Wamp { uri, .. }) => assert_eq!(uri, "wamp.error.no_such_procedure"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn shutdown_call_stops_the_worker() {
    let node = Node::start(0);
    // Graceful: the running command finishes and is answered, new ones are refused.
    let mut w = Worker::start("w1", &[node.url()], Password::Flag(SECRET), &[]);
    w.wait_connected(&node.url()).await;
    let c = node.caller().await;
    let (_, running) = start_run(
        &c,
        "w1",
        &[("command", Value::from("sleep 1; echo finished"))],
    )
    .await;
    assert!(wait_running(&c, "w1", 1).await);
    c.call(
        &procedure("w1", "shutdown"),
        Dict::new(),
        kw(&[("graceful", Value::Bool(true))]),
    )
    .await
    .unwrap();
    let o = run(&c, "w1", &[("command", Value::from("true"))]).await;
    assert_eq!(o.error(), "switchyard.error.draining");
    let o = finish(running).await;
    assert_eq!(o.stdout, "finished\n");
    assert_eq!(o.ok()["rc"], Value::Int(0));
    let status = wait_exit(&mut w.child, DEADLINE).expect("the worker did not stop");
    assert!(status.success(), "{status:?}");

    // Not graceful: stops at once.
    let mut w = Worker::start("w1", &[node.url()], Password::Flag(SECRET), &[]);
    w.wait_connected(&node.url()).await;
    c.call(
        &procedure("w1", "shutdown"),
        Dict::new(),
        kw(&[("graceful", Value::Bool(false))]),
    )
    .await
    .unwrap();
    let status = wait_exit(&mut w.child, DEADLINE).expect("the worker did not stop");
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn password_sources() {
    let node = Node::start(0);
    // None at all: exit 2, naming the options.
    let mut w = Worker::start("w1", &[node.url()], Password::None, &[]);
    let status = wait_exit(&mut w.child, DEADLINE).expect("the worker did not exit");
    assert_eq!(status.code(), Some(2));
    assert!(wait_until(DEADLINE, || w
        .stderr()
        .contains("--password-file")));
    let e = w.stderr();
    assert!(
        e.contains("--password") && e.contains("SWITCHYARD_WORKER_PASSWORD"),
        "{e}"
    );

    // The file the master writes for its embedded worker, in the current directory...
    let w = Worker::start(
        "w1",
        &[node.url()],
        Password::None,
        &["--data-dir", "elsewhere"],
    );
    let status = {
        let mut child = w;
        wait_exit(&mut child.child, DEADLINE)
    };
    assert_eq!(status.and_then(|s| s.code()), Some(2));
    let cwd = temp_dir("worker-data");
    std::fs::create_dir_all(cwd.join("switchyard-data/workers")).unwrap();
    std::fs::write(
        cwd.join("switchyard-data/workers/w2.password"),
        format!("{SECRET}\n"),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["worker", "--name", "w2", "--connect", &node.url()])
        .current_dir(&cwd)
        .env_remove("SWITCHYARD_WORKER_PASSWORD")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = collect_lines(child.stdout.take().unwrap());
    let joined = wait_until(DEADLINE, || {
        out.lock()
            .unwrap()
            .iter()
            .any(|l| l == &format!("switchyard worker w2 connected to {}", node.url()))
    });
    signal(&child, libc::SIGTERM);
    let status = wait_exit(&mut child, DEADLINE);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    // ...with the default basedir, created in the current directory.
    let default_basedir = cwd.join("switchyard-worker").is_dir();
    let _ = std::fs::remove_dir_all(&cwd);
    assert!(joined, "the worker did not join with the data-dir password");
    assert!(status.is_some_and(|s| s.success()));
    assert!(default_basedir);

    // --password-file.
    let cwd = temp_dir("worker-pwfile");
    let file = cwd.join("pw");
    std::fs::write(&file, SECRET).unwrap();
    let w = Worker::start(
        "w2",
        &[node.url()],
        Password::None,
        &["--password-file", file.to_str().unwrap()],
    );
    w.wait_connected(&node.url()).await;
    let _ = std::fs::remove_dir_all(&cwd);
}
