//! `switchyard worker` as a user runs it: real router processes (a Crossbar node directory
//! with WAMP-CRA worker users and anonymous callers), real worker processes, and a caller
//! using switchyard's client to call the worker's procedures as a master would.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::node::temp_dir;
use common::tls::TestCa;
use switchyard_router::client::{Client, ClientError, ClientOptions};
use switchyard_router::wire::{Dict, Id, Message, Payload, Value};
use tokio::sync::mpsc;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
const SECRET: &str = "w1-Secret-4711";
/// Every wait in these tests ends by this deadline at the latest.
const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `cond` every 20 ms until it holds or `within` passes; returns whether it held.
fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn wait_until_async(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether process `pid` is alive (a zombie is dead: this VM's init may not reap orphans).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            let state = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next())
                .unwrap_or("");
            state != "Z" && state != "X"
        }
    }
}

/// Waits for a pid file written by a command and returns the pid.
async fn read_pid(path: &Path) -> i32 {
    let mut pid = None;
    assert!(
        wait_until_async(DEADLINE, || {
            pid = std::fs::read_to_string(path)
                .ok()
                .and_then(|s| s.trim().parse().ok());
            pid.is_some()
        })
        .await,
        "no pid file {}",
        path.display()
    );
    pid.unwrap()
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

/// Waits (bounded) for a child to exit.
fn wait_exit(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let mut status = None;
    wait_until(within, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    status
}

/// A free loopback port (nothing listens on it once this returns).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A router process running a Crossbar node directory: realm `buildbot`, WAMP-CRA users
/// `w1` and `w2` (role `switchyard.worker`, may register `switchyard.worker.*`) and anonymous
/// callers (may call anything, register nothing).
struct Node {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
    /// Serving TLS (wss://) with a certificate from this CA.
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Node {
    fn start(port: u16) -> Node {
        Self::start_with(port, None)
    }

    /// With `ca`: the node serves TLS with a certificate from it for 127.0.0.1.
    fn start_with(port: u16, ca: Option<&TestCa>) -> Node {
        let dir = temp_dir("worker-node");
        let mut endpoint =
            serde_json::json!({"type": "tcp", "interface": "127.0.0.1", "port": port});
        if let Some(ca) = ca {
            let (chain, key) = ca.issue(&["127.0.0.1"]);
            std::fs::write(dir.join("chain.pem"), chain).unwrap();
            std::fs::write(dir.join("key.pem"), key).unwrap();
            endpoint["tls"] = serde_json::json!({"certificate": "chain.pem", "key": "key.pem"});
        }
        let config = serde_json::json!({
            "version": 2,
            "workers": [{
                "type": "router",
                "realms": [{
                    "name": "buildbot",
                    "roles": [
                        {
                            "name": "switchyard.worker",
                            "permissions": [{
                                "uri": "switchyard.worker.",
                                "match": "prefix",
                                "allow": {"call": false, "register": true, "publish": false, "subscribe": false},
                                "cache": true
                            }]
                        },
                        {
                            "name": "anonymous",
                            "permissions": [{
                                "uri": "",
                                "match": "prefix",
                                "allow": {"call": true, "register": false, "publish": true, "subscribe": true},
                                "cache": true
                            }]
                        }
                    ]
                }],
                "transports": [{
                    "type": "websocket",
                    "endpoint": endpoint,
                    "serializers": ["json", "msgpack", "cbor"],
                    "auth": {
                        "anonymous": {"type": "static", "role": "anonymous"},
                        "wampcra": {
                            "type": "static",
                            "users": {
                                "w1": {"secret": SECRET, "role": "switchyard.worker"},
                                "w2": {"secret": SECRET, "role": "switchyard.worker"}
                            }
                        }
                    }
                }]
            }]
        });
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        let mut child = Command::new(BIN)
            .args(["start", "--cbdir"])
            .arg(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn switchyard start");
        // The first line names the address; bounded, in case the router hangs.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(DEADLINE) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the router printed nothing within {DEADLINE:?}");
            }
        };
        let addr = line
            .trim()
            .strip_prefix("switchyard listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        Node {
            child,
            addr,
            dir,
            tls: ca.map(TestCa::client_config),
        }
    }

    fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "wss" } else { "ws" };
        format!("{scheme}://{}/ws", self.addr)
    }

    /// SIGKILL: the router vanishes without closing anything.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    async fn caller(&self) -> Client {
        let mut o = ClientOptions::new(self.url(), "buildbot");
        o.timeout = Duration::from_secs(10);
        o.tls = self.tls.clone();
        Client::connect(&o).await.expect("anonymous caller joins")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

type Lines = Arc<Mutex<Vec<String>>>;

fn collect_lines(r: impl std::io::Read + Send + 'static) -> Lines {
    let lines: Lines = Default::default();
    let l = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            match line {
                Ok(line) => l.lock().unwrap().push(line),
                Err(_) => break,
            }
        }
    });
    lines
}

/// A `switchyard worker` process, stopped (SIGTERM, then SIGKILL) on drop.
struct Worker {
    child: Child,
    out: Lines,
    err: Lines,
    /// The worker's current directory (temporary).
    cwd: PathBuf,
    basedir: PathBuf,
}

enum Password<'a> {
    Flag(&'a str),
    Env(&'a str),
    None,
}

impl Worker {
    fn start(name: &str, urls: &[String], password: Password<'_>, extra: &[&str]) -> Worker {
        let cwd = temp_dir("worker-cwd");
        let basedir = cwd.join("basedir");
        let mut cmd = Command::new(BIN);
        cmd.arg("worker").args(["--name", name]);
        for u in urls {
            cmd.args(["--connect", u]);
        }
        cmd.arg("--basedir")
            .arg(&basedir)
            .args(extra)
            .current_dir(&cwd)
            .env_remove("SWITCHYARD_WORKER_PASSWORD")
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match password {
            Password::Flag(p) => {
                cmd.args(["--password", p]);
            }
            Password::Env(p) => {
                cmd.env("SWITCHYARD_WORKER_PASSWORD", p);
            }
            Password::None => {}
        }
        let mut child = cmd.spawn().expect("spawn switchyard worker");
        let out = collect_lines(child.stdout.take().unwrap());
        let err = collect_lines(child.stderr.take().unwrap());
        Worker {
            child,
            out,
            err,
            cwd,
            basedir,
        }
    }

    fn stderr(&self) -> String {
        self.err.lock().unwrap().join("\n")
    }

    fn stdout(&self) -> String {
        self.out.lock().unwrap().join("\n")
    }

    fn count_stderr(&self, needle: &str) -> usize {
        self.err
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    fn connected_lines(&self, url: &str) -> usize {
        let want = format!("connected to {url}");
        self.out
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with("switchyard worker ") && l.ends_with(&want))
            .count()
    }

    /// Waits for the `n`th "switchyard worker NAME connected to URL" line.
    async fn wait_connected_n(&self, url: &str, n: usize) {
        let ok = wait_until_async(DEADLINE, || self.connected_lines(url) >= n).await;
        assert!(
            ok,
            "worker did not join {url} (connection {n})\nstdout:\n{}\nstderr:\n{}",
            self.stdout(),
            self.stderr()
        );
    }

    async fn wait_connected(&self, url: &str) {
        self.wait_connected_n(url, 1).await
    }

    async fn wait_stderr(&self, needle: &str) {
        let ok = wait_until_async(DEADLINE, || self.count_stderr(needle) > 0).await;
        assert!(ok, "stderr never said {needle:?}:\n{}", self.stderr());
    }

    /// SIGTERM and the exit status (bounded).
    fn terminate(&mut self) -> ExitStatus {
        signal(&self.child, libc::SIGTERM);
        wait_exit(&mut self.child, DEADLINE)
            .unwrap_or_else(|| panic!("worker still running after SIGTERM:\n{}", self.stderr()))
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.is_running() {
            // SIGTERM first: the worker kills its commands (SIGKILL would orphan them).
            signal(&self.child, libc::SIGTERM);
            if wait_exit(&mut self.child, Duration::from_secs(8)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.cwd);
    }
}

fn kwargs(pairs: &[(&str, Value)]) -> Dict {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn kw(pairs: &[(&str, Value)]) -> Payload {
    Payload::new(vec![], kwargs(pairs))
}

fn procedure(worker: &str, p: &str) -> String {
    format!("switchyard.worker.{worker}.{p}")
}

/// What a `run` call produced.
#[derive(Debug, Default)]
struct Outcome {
    stdout: String,
    stderr: String,
    chunks: usize,
    /// The final RESULT's kwargs, or the ERROR's URI and args.
    result: Option<Result<Dict, (String, Vec<Value>)>>,
}

impl Outcome {
    fn ok(&self) -> &Dict {
        match &self.result {
            Some(Ok(d)) => d,
            other => panic!("expected a final RESULT, got {other:?}"),
        }
    }

    fn error(&self) -> &str {
        match &self.result {
            Some(Err((uri, _))) => uri,
            other => panic!("expected an ERROR, got {other:?}"),
        }
    }
}

async fn start_run(
    c: &Client,
    worker: &str,
    args: &[(&str, Value)],
) -> (Id, mpsc::Receiver<Message>) {
    c.call_progressive(&procedure(worker, "run"), Dict::new(), kw(args))
        .await
        .unwrap()
}

/// Collects progressive results until the final RESULT or ERROR.
async fn finish(mut rx: mpsc::Receiver<Message>) -> Outcome {
    let mut o = Outcome::default();
    let end = tokio::time::Instant::now() + DEADLINE;
    loop {
        let m = match tokio::time::timeout_at(end, rx.recv()).await {
            Ok(Some(m)) => m,
            Ok(None) => panic!("the call ended without an answer: {o:?}"),
            Err(_) => panic!("no final answer within {DEADLINE:?}: {o:?}"),
        };
        match m {
            Message::Result {
                details, payload, ..
            } if details.get("progress") == Some(&Value::Bool(true)) => {
                let k = payload.kwargs().cloned().unwrap_or_default();
                let data = k["data"].as_str().unwrap().to_owned();
                match k["stream"].as_str().unwrap() {
                    "stdout" => o.stdout.push_str(&data),
                    "stderr" => o.stderr.push_str(&data),
                    s => panic!("unknown stream {s}"),
                }
                o.chunks += 1;
            }
            Message::Result { payload, .. } => {
                o.result = Some(Ok(payload.kwargs().cloned().unwrap_or_default()));
                return o;
            }
            Message::Error { error, payload, .. } => {
                o.result = Some(Err((error, payload.args().to_vec())));
                return o;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

async fn run(c: &Client, worker: &str, args: &[(&str, Value)]) -> Outcome {
    let (_, rx) = start_run(c, worker, args).await;
    finish(rx).await
}

async fn info(c: &Client, worker: &str) -> Result<Dict, ClientError> {
    c.call(&procedure(worker, "info"), Dict::new(), Payload::default())
        .await
        .map(|p| p.kwargs().cloned().unwrap_or_default())
}

/// Polls `info` until `running` is `n` (bounded).
async fn wait_running(c: &Client, worker: &str, n: i64) -> bool {
    let end = Instant::now() + DEADLINE;
    while Instant::now() < end {
        if info(c, worker).await.unwrap()["running"] == Value::Int(n) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

fn list(items: &[&str]) -> Value {
    Value::List(items.iter().map(|s| Value::from(*s)).collect())
}

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
