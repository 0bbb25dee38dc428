//! `switchyard worker` as a user runs it, for the `worker*.rs` tests: a router process
//! running a Crossbar node directory (WAMP-CRA worker users and anonymous callers), real
//! worker processes, and the calls a master would make to a worker's procedures.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchyard_router::client::{Client, ClientError, ClientOptions};
use switchyard_router::wire::{Dict, Id, Message, Payload, Value};
use tokio::sync::mpsc;

use super::node::temp_dir;
use super::tls::TestCa;

pub const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
pub const SECRET: &str = "w1-Secret-4711";
/// Every wait in these tests ends by this deadline at the latest.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `cond` every 20 ms until it holds or `within` passes; returns whether it held.
pub fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
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

/// [`wait_until`] for async tests: sleeps without blocking the runtime.
pub async fn wait_until_async(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
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
pub fn alive(pid: i32) -> bool {
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
pub async fn read_pid(path: &Path) -> i32 {
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

/// Sends `sig` to `child`.
pub fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

/// Waits (bounded) for a child to exit.
pub fn wait_exit(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let mut status = None;
    wait_until(within, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    status
}

/// A free loopback port (nothing listens on it once this returns).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A router process running a Crossbar node directory: realm `buildbot`, WAMP-CRA users
/// `w1` and `w2` (role `switchyard.worker`, may register `switchyard.worker.*`) and anonymous
/// callers (may call anything, register nothing).
pub struct Node {
    child: Child,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    /// Serving TLS (wss://) with a certificate from this CA.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Node {
    pub fn start(port: u16) -> Node {
        Self::start_with(port, None)
    }

    /// With `ca`: the node serves TLS with a certificate from it for 127.0.0.1.
    pub fn start_with(port: u16, ca: Option<&TestCa>) -> Node {
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

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "wss" } else { "ws" };
        format!("{scheme}://{}/ws", self.addr)
    }

    /// SIGKILL: the router vanishes without closing anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub async fn caller(&self) -> Client {
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

/// The lines a child wrote so far, collected by a thread.
pub type Lines = Arc<Mutex<Vec<String>>>;

/// Collects `r`'s lines into [`Lines`] until it ends.
pub fn collect_lines(r: impl std::io::Read + Send + 'static) -> Lines {
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
pub struct Worker {
    pub child: Child,
    out: Lines,
    err: Lines,
    /// The worker's current directory (temporary).
    pub cwd: PathBuf,
    pub basedir: PathBuf,
}

/// How a worker gets its password: `--password`, `SWITCHYARD_WORKER_PASSWORD`, or neither.
pub enum Password<'a> {
    Flag(&'a str),
    Env(&'a str),
    None,
}

impl Worker {
    pub fn start(name: &str, urls: &[String], password: Password<'_>, extra: &[&str]) -> Worker {
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

    pub fn stderr(&self) -> String {
        self.err.lock().unwrap().join("\n")
    }

    pub fn stdout(&self) -> String {
        self.out.lock().unwrap().join("\n")
    }

    pub fn count_stderr(&self, needle: &str) -> usize {
        self.err
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    pub fn connected_lines(&self, url: &str) -> usize {
        let want = format!("connected to {url}");
        self.out
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with("switchyard worker ") && l.ends_with(&want))
            .count()
    }

    /// Waits for the `n`th "switchyard worker NAME connected to URL" line.
    pub async fn wait_connected_n(&self, url: &str, n: usize) {
        let ok = wait_until_async(DEADLINE, || self.connected_lines(url) >= n).await;
        assert!(
            ok,
            "worker did not join {url} (connection {n})\nstdout:\n{}\nstderr:\n{}",
            self.stdout(),
            self.stderr()
        );
    }

    pub async fn wait_connected(&self, url: &str) {
        self.wait_connected_n(url, 1).await
    }

    pub async fn wait_stderr(&self, needle: &str) {
        let ok = wait_until_async(DEADLINE, || self.count_stderr(needle) > 0).await;
        assert!(ok, "stderr never said {needle:?}:\n{}", self.stderr());
    }

    /// SIGTERM and the exit status (bounded).
    pub fn terminate(&mut self) -> ExitStatus {
        signal(&self.child, libc::SIGTERM);
        wait_exit(&mut self.child, DEADLINE)
            .unwrap_or_else(|| panic!("worker still running after SIGTERM:\n{}", self.stderr()))
    }

    pub fn is_running(&mut self) -> bool {
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

/// A kwargs dict from `pairs`.
pub fn kwargs(pairs: &[(&str, Value)]) -> Dict {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// A payload with only the kwargs `pairs`.
pub fn kw(pairs: &[(&str, Value)]) -> Payload {
    Payload::new(vec![], kwargs(pairs))
}

/// The URI of worker `worker`'s procedure `p`.
pub fn procedure(worker: &str, p: &str) -> String {
    format!("switchyard.worker.{worker}.{p}")
}

/// What a `run` call produced.
#[derive(Debug, Default)]
pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    pub chunks: usize,
    /// The final RESULT's kwargs, or the ERROR's URI and args.
    pub result: Option<Result<Dict, (String, Vec<Value>)>>,
}

impl Outcome {
    pub fn ok(&self) -> &Dict {
        match &self.result {
            Some(Ok(d)) => d,
            other => panic!("expected a final RESULT, got {other:?}"),
        }
    }

    pub fn error(&self) -> &str {
        match &self.result {
            Some(Err((uri, _))) => uri,
            other => panic!("expected an ERROR, got {other:?}"),
        }
    }
}

/// Calls `run` on `worker` progressively; the answers arrive on the receiver.
pub async fn start_run(
    c: &Client,
    worker: &str,
    args: &[(&str, Value)],
) -> (Id, mpsc::Receiver<Message>) {
    c.call_progressive(&procedure(worker, "run"), Dict::new(), kw(args))
        .await
        .unwrap()
}

/// Collects progressive results until the final RESULT or ERROR.
pub async fn finish(mut rx: mpsc::Receiver<Message>) -> Outcome {
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

/// Calls `run` on `worker` and collects everything it answers.
pub async fn run(c: &Client, worker: &str, args: &[(&str, Value)]) -> Outcome {
    let (_, rx) = start_run(c, worker, args).await;
    finish(rx).await
}

/// Calls `info` on `worker`: its kwargs.
pub async fn info(c: &Client, worker: &str) -> Result<Dict, ClientError> {
    c.call(&procedure(worker, "info"), Dict::new(), Payload::default())
        .await
        .map(|p| p.kwargs().cloned().unwrap_or_default())
}

/// Polls `info` until `running` is `n` (bounded).
pub async fn wait_running(c: &Client, worker: &str, n: i64) -> bool {
    let end = Instant::now() + DEADLINE;
    while Instant::now() < end {
        if info(c, worker).await.unwrap()["running"] == Value::Int(n) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// A WAMP list of strings.
pub fn list(items: &[&str]) -> Value {
    Value::List(items.iter().map(|s| Value::from(*s)).collect())
}
