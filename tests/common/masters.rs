//! Multi-process master tests: `switchyard start` nodes with a `[master]` section, real
//! `switchyard worker` processes running real shell commands, a PostgreSQL database created
//! (and dropped) per test, and a small HTTP/1.1 client for the REST API.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
/// The API token every test node accepts.
pub const TOKEN: &str = "test-token-0123456789abcdef";
pub const MESH_SECRET: &str = "mesh-secret-for-tests";
pub const PG_ENV: &str = "SWITCHYARD_TEST_POSTGRES";

/// A scratch folder removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "switchyard-{tag}-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("keeping {} for inspection", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish() % 1_000_000_000
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh PostgreSQL database on the server `SWITCHYARD_TEST_POSTGRES` names, dropped
/// (forcibly) on drop. Fails, never skips, when the variable is unset.
pub struct PgDb {
    admin: String,
    name: String,
    pub url: String,
}

impl PgDb {
    pub fn create() -> PgDb {
        let admin = std::env::var(PG_ENV).unwrap_or_else(|_| {
            panic!(
                "{PG_ENV} is not set: these tests need PostgreSQL, e.g. \
                 {PG_ENV}=postgres://postgres@127.0.0.1:5432/test (./scripts/test sets it)"
            )
        });
        let name = format!("switchyard_mp_{}_{}", std::process::id(), rand_suffix());
        run_admin(&admin, &format!("CREATE DATABASE {name}"));
        let (base, _) = admin.split_once('?').unwrap_or((&admin, ""));
        let (scheme, rest) = base.split_once("://").unwrap();
        let host = rest.split('/').next().unwrap();
        let url = format!("{scheme}://{host}/{name}");
        PgDb { admin, name, url }
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        run_admin(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

fn run_admin(admin: &str, sql: &str) {
    let (admin, sql) = (admin.to_owned(), sql.to_owned());
    // A thread of its own, so this works inside and outside a runtime (and in Drop).
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            use sqlx::{Connection, Executor};
            sqlx::any::install_default_drivers();
            let mut c = sqlx::AnyConnection::connect(&admin)
                .await
                .unwrap_or_else(|e| panic!("cannot connect to PostgreSQL at {admin}: {e}"));
            c.execute(sql.as_str()).await.unwrap();
        })
    })
    .join()
    .unwrap();
}

/// Lines a child process printed on stdout, collected by a thread.
#[derive(Clone, Default)]
pub struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    pub fn collect(stream: impl Read + Send + 'static) -> Lines {
        let lines = Lines::default();
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                match line {
                    Ok(line) => l.0.lock().unwrap().push(line),
                    Err(_) => break,
                }
            }
        });
        lines
    }

    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// Waits for a line containing `needle` after the first `skip` lines; returns it.
    pub fn wait_for(&self, needle: &str, skip: usize, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self
                .all()
                .into_iter()
                .skip(skip)
                .find(|l| l.contains(needle))
            {
                return Some(l);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn count(&self, needle: &str) -> usize {
        self.all().iter().filter(|l| l.contains(needle)).count()
    }
}

/// A `switchyard start --config FILE` process.
pub struct Node {
    pub name: String,
    pub port: u16,
    pub child: Option<Child>,
    pub stdout: Lines,
    pub log: PathBuf,
    pub config: PathBuf,
}

impl Node {
    /// Writes `config` to `<dir>/<name>.toml`, starts the node with `dir` as its working
    /// folder and waits for its listening and master lines.
    pub fn start(dir: &Path, name: &str, port: u16, config: &str) -> Node {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config).unwrap();
        let mut n = Node {
            name: name.into(),
            port,
            child: None,
            stdout: Lines::default(),
            log: dir.join(format!("{name}.log")),
            config: path,
        };
        n.restart();
        n
    }

    /// Starts (again) with the same config.
    pub fn restart(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut child = Command::new(BIN)
            .args(["start", "--config"])
            .arg(&self.config)
            .current_dir(self.config.parent().unwrap())
            .env("RUST_LOG", "info,switchyard_router=warn")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        self.stdout = Lines::collect(child.stdout.take().unwrap());
        self.child = Some(child);
        let wanted = if std::fs::read_to_string(&self.config)
            .unwrap()
            .contains("[master]")
        {
            "switchyard master"
        } else {
            "switchyard listening on"
        };
        if self
            .stdout
            .wait_for(wanted, 0, Duration::from_secs(60))
            .is_none()
        {
            panic!(
                "node {} did not start; its log:\n{}",
                self.name,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }

    pub fn addr(&self) -> SocketAddr {
        format!("127.0.0.1:{}", self.port).parse().unwrap()
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        signal(c.id(), "TERM");
        wait_exit(&mut c, timeout)
    }

    /// Waits (bounded) for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let r = wait_exit(&mut c, timeout);
        if r.is_none() {
            self.child = Some(c);
        }
        r
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
}

fn wait_exit(c: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(s)) = c.try_wait() {
            return Some(s);
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            let _ = c.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `switchyard worker` process.
pub struct Worker {
    pub name: String,
    pub child: Option<Child>,
    pub stdout: Lines,
    pub log: PathBuf,
}

impl Worker {
    pub fn start(dir: &Path, name: &str, password: &str, urls: &[String]) -> Worker {
        let log = dir.join(format!("worker-{name}.log"));
        let logf = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["worker", "--name", name, "--password", password])
            .arg("--basedir")
            .arg(dir.join(format!("worker-{name}")));
        for u in urls {
            cmd.args(["--connect", u]);
        }
        let mut child = cmd
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(logf)
            .spawn()
            .unwrap();
        let stdout = Lines::collect(child.stdout.take().unwrap());
        Worker {
            name: name.into(),
            child: Some(child),
            stdout,
            log,
        }
    }

    /// Waits for the `connected to <url>` line number `n` (1-based) and returns its URL.
    pub fn wait_connected(&self, n: usize, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let lines: Vec<String> = self
                .stdout
                .all()
                .into_iter()
                .filter(|l| l.contains("connected to"))
                .collect();
            if lines.len() >= n {
                return lines[n - 1].rsplit(' ').next().unwrap().to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "worker {} did not connect ({n}); its log:\n{}",
                self.name,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One HTTP/1.1 request; returns the status and the body parsed as JSON (Null if empty or
/// not JSON).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let (status, text) = http_text(addr, method, path, token, body);
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

pub fn http_text(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out).into_owned();
    let (head, rest) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    // Bodies may be chunked.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A build's steps.
pub fn steps(addr: SocketAddr, bid: i64) -> Vec<Value> {
    let (_, v) = http(
        addr,
        "GET",
        &format!("/api/v2/builds/{bid}/steps"),
        None,
        None,
    );
    v["steps"].as_array().cloned().unwrap_or_default()
}

/// The stdio log of a build's step.
pub fn step_log(addr: SocketAddr, bid: i64, step: &str) -> String {
    let s = steps(addr, bid)
        .into_iter()
        .find(|s| s["name"] == step)
        .unwrap_or_else(|| panic!("build {bid} has no step {step}"));
    let sid = s["stepid"].as_i64().unwrap();
    let (_, logs) = http(
        addr,
        "GET",
        &format!("/api/v2/steps/{sid}/logs"),
        None,
        None,
    );
    let logid = logs["logs"][0]["logid"].as_i64().unwrap();
    http_text(
        addr,
        "GET",
        &format!("/api/v2/logs/{logid}/raw"),
        None,
        None,
    )
    .1
}

/// Runs `git` in `dir` as a fixed author; panics with git's stderr on failure.
pub fn git(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .expect("git is installed");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Forces `builder` through the force scheduler `force`; returns the build request id.
pub fn force(addr: SocketAddr, builder: &str) -> i64 {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "force",
        "params": {"builderNames": [builder], "reason": "test"}});
    let (status, v) = http(
        addr,
        "POST",
        "/api/v2/forceschedulers/force",
        Some(TOKEN),
        Some(&body),
    );
    assert_eq!(status, 200, "force answered {status}: {v}");
    let map = v["result"][1]
        .as_object()
        .expect("[bsid, {builderid: brid}]");
    map.values().next().unwrap().as_i64().unwrap()
}

/// Every row of a collection (`/api/v2/<plural>`).
pub fn list(addr: SocketAddr, plural: &str, query: &str) -> Vec<Value> {
    let path = format!("/api/v2/{plural}?limit=100000{query}");
    let (status, v) = http(addr, "GET", &path, Some(TOKEN), None);
    assert_eq!(status, 200, "GET {path} answered {status}: {v}");
    v[plural].as_array().cloned().unwrap_or_default()
}

/// Polls `f` until it returns Some, or fails naming `what`.
pub fn wait_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `[master]` config for a test node: PostgreSQL at `db` (SQLite in the node's data
/// folder when `db` is empty), fast heartbeats, the test
/// token, workers `w1..wN` (password `pw-<name>`, `max_builds` each) and the builders given
/// as `(name, shell command)`, all runnable on every worker, with one force scheduler.
pub fn master_section(
    name: &str,
    db: &str,
    workers: usize,
    max_builds: u32,
    builders: &[(&str, &str)],
    extra: &str,
) -> String {
    let db = if db.is_empty() {
        String::new()
    } else {
        format!("db = \"{db}\"\n")
    };
    let mut s = format!(
        "[master]\nname = \"{name}\"\n{db}data_dir = \"{name}-data\"\n\
         heartbeat_interval_s = 0.5\nexpiry_timeout_s = 4\npoll_interval_s = 0.5\n{extra}\n\
         [master.api]\ntokens = [\"{TOKEN}\"]\n"
    );
    let names: Vec<String> = (1..=workers).map(|i| format!("w{i}")).collect();
    for w in &names {
        s.push_str(&format!(
            "[[master.workers]]\nname = \"{w}\"\npassword = \"pw-{w}\"\nmax_builds = {max_builds}\n"
        ));
    }
    let list = names
        .iter()
        .map(|w| format!("\"{w}\""))
        .collect::<Vec<_>>()
        .join(", ");
    for (b, cmd) in builders {
        s.push_str(&format!(
            "[[master.builders]]\nname = \"{b}\"\nworkers = [{list}]\n\
             [[master.builders.steps]]\nname = \"run\"\nshell = {cmd:?}\ntimeout_s = 60\n"
        ));
    }
    let bl = builders
        .iter()
        .map(|(b, _)| format!("\"{b}\""))
        .collect::<Vec<_>>()
        .join(", ");
    s.push_str(&format!(
        "[[master.schedulers]]\nname = \"force\"\ntype = \"force\"\nbuilders = [{bl}]\n"
    ));
    s
}

/// The head of a node's config: listen address and, with `peers`, the mesh.
pub fn node_head(name: &str, port: u16, peers: &[u16]) -> String {
    let mut s = format!("listen = \"127.0.0.1:{port}\"\n");
    if !peers.is_empty() {
        let list = peers
            .iter()
            .map(|p| format!("\"ws://127.0.0.1:{p}\""))
            .collect::<Vec<_>>()
            .join(", ");
        s.push_str(&format!(
            "[mesh]\nnode_name = \"{name}\"\npeers = [{list}]\nsecret = \"{MESH_SECRET}\"\n\
             heartbeat_interval_ms = 300\nheartbeat_timeout_ms = 2000\n"
        ));
    }
    s
}

/// Every build, by request, read over the API: `brid → [(masterid, results)]`.
pub fn builds_by_request(addr: SocketAddr) -> std::collections::BTreeMap<i64, Vec<(i64, i64)>> {
    let mut m: std::collections::BTreeMap<i64, Vec<(i64, i64)>> = Default::default();
    for b in list(addr, "builds", "") {
        m.entry(b["buildrequestid"].as_i64().unwrap())
            .or_default()
            .push((
                b["masterid"].as_i64().unwrap(),
                b["results"].as_i64().unwrap_or(-1),
            ));
    }
    m
}

/// Whether a build request is complete, read over the API.
pub fn request_complete(addr: SocketAddr, brid: i64) -> bool {
    let (_, v) = http(
        addr,
        "GET",
        &format!("/api/v2/buildrequests/{brid}"),
        None,
        None,
    );
    v["buildrequests"][0]["complete"] == true
}
