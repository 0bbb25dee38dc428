//! The REST API and the change hook over real HTTP: the API is mounted on a real router
//! listener on 127.0.0.1:0, backed by a real store (every scenario runs on a fresh SQLite
//! file and on a fresh PostgreSQL database, which needs SWITCHYARD_TEST_POSTGRES) and a fake
//! `Control` that records what it is asked. Requests are raw HTTP/1.1, so the tests see
//! exactly what a client gets: statuses, headers and JSON bodies.
//!
//! Every response body is checked for the configured worker passwords.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use common::TestDb;
use serde_json::{json, Value};
use switchyard_master::api::{self, ApiState};
use switchyard_master::config::MasterConfig;
use switchyard_master::control::{
    Buildset, ChangeOutcome, Control, ControlError, ForceRequest, MasterAction, NewChange,
    WorkerAction,
};
use switchyard_master::{Results, Store, StoreError};
use switchyard_router::transport::{self, ListenerConfig};
use switchyard_router::{Router, RouterConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Runs an `async fn(&TestDb)` scenario as two tests, one per backend.
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[test]
            fn sqlite() {
                super::run(async {
                    let db = super::TestDb::sqlite().await;
                    super::$scenario(&db).await;
                });
            }

            #[test]
            fn postgres() {
                super::run(async {
                    let db = super::TestDb::postgres().await;
                    super::$scenario(&db).await;
                });
            }
        }
    )*};
}

/// Runs a scenario as a task on worker threads with roomy stacks: unoptimized builds give
/// each `.await` of a long scenario its own stack slot, more than a test thread's 2 MiB.
fn run(scenario: impl std::future::Future<Output = ()> + Send + 'static) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_stack_size(32 << 20)
        .enable_all()
        .build()
        .unwrap();
    if let Err(e) = rt.block_on(rt.spawn(scenario)) {
        match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("scenario did not finish: {e}"),
        }
    }
}

on_both_backends!(
    read_endpoints,
    query_arguments,
    huge_tables_page_in_the_database,
    control_calls_reach_control,
    control_errors,
    authentication,
    change_hook,
);

const NOW: i64 = 1_700_000_000;
const WORKER_PASSWORDS: [&str; 2] = ["W0rker-Pa55word-xyzzy", "An0ther-W0rker-Secret"];
const TOKEN: &str = "tok-0123456789abcdef";

// ---- configuration ----

fn config(api_section: &str) -> Arc<MasterConfig> {
    let text = format!(
        r#"
        {api_section}

        [[workers]]
        name = "local"
        password = "{}"

        [[workers]]
        name = "mac"
        password = "{}"

        [[builders]]
        name = "hello"
        workers = ["local"]
        [[builders.steps]]
        name = "checkout"
        shell = "true"

        [[builders]]
        name = "linux"
        workers = ["local", "mac"]
        [[builders.steps]]
        name = "test"
        shell = "true"

        [[schedulers]]
        name = "force"
        type = "force"
        builders = ["hello", "linux"]
        reason = "forced"

        [[schedulers]]
        name = "nightly"
        type = "periodic"
        interval_s = 86400
        builders = ["linux"]
        "#,
        WORKER_PASSWORDS[0], WORKER_PASSWORDS[1]
    );
    let c: MasterConfig = toml::from_str(&text).unwrap();
    c.validate().unwrap();
    Arc::new(c)
}

fn default_config() -> Arc<MasterConfig> {
    config(&format!(
        r#"
        [api]
        public_read = true
        tokens = ["{TOKEN}"]
        [[api.users]]
        name = "admin"
        password = "secret"
        "#
    ))
}

// ---- seed data ----

/// Ids of the rows every scenario starts with.
#[allow(dead_code)]
struct Seed {
    m1: i64,
    m2: i64,
    hello: i64,
    linux: i64,
    local: i64,
    mac: i64,
    bs1: i64,
    bs2: i64,
    /// bs1's requests (claimed by m1; r_hello completed) and bs2's (unclaimed, priority 5).
    r_hello: i64,
    r_linux: i64,
    r_nightly: i64,
    /// hello #1, finished SUCCESS; linux #1, running.
    b1: i64,
    b2: i64,
    s1: i64,
    s2: i64,
    log: i64,
    c1: i64,
    c2: i64,
}

async fn seed(db: &TestDb) -> (Store, Seed) {
    let store = db.store().await.with_clock(Arc::new(|| NOW));
    let m1 = store.register_master("host-a:/srv/a").await.unwrap();
    let m2 = store.register_master("host-b:/srv/b").await.unwrap();
    let hello = store.ensure_builder("hello").await.unwrap();
    let linux = store.ensure_builder("linux").await.unwrap();
    let local = store.ensure_worker("local").await.unwrap();
    let mac = store.ensure_worker("mac").await.unwrap();
    store.worker_connected(m1, local).await.unwrap();
    let (bs1, reqs) = store
        .add_buildset("force build", &[hello, linux], 0)
        .await
        .unwrap();
    let (r_hello, r_linux) = (reqs[0].1, reqs[1].1);
    let (bs2, reqs) = store.add_buildset("nightly", &[linux], 5).await.unwrap();
    let r_nightly = reqs[0].1;
    store
        .claim_buildrequests(m1, &[r_hello, r_linux])
        .await
        .unwrap();
    let (b1, _) = store
        .add_build(m1, r_hello, Some(local), "building")
        .await
        .unwrap();
    store.finish_build(m1, b1, Results::Success).await.unwrap();
    store
        .complete_buildrequests(m1, &[r_hello], Results::Success)
        .await
        .unwrap();
    let (b2, _) = store
        .add_build(m1, r_linux, Some(local), "building")
        .await
        .unwrap();

    // What has no store operation yet goes in with SQL.
    let sql = pool(db).await;
    for (b, m) in [(hello, m1), (linux, m1), (linux, m2)] {
        exec(
            &sql,
            "INSERT INTO builder_masters (builderid, masterid) VALUES ($1, $2)",
            &[b, m],
        )
        .await;
    }
    sqlx::query("UPDATE workers SET info = $1 WHERE id = $2")
        .bind(r#"{"host": "mac.local"}"#)
        .bind(mac)
        .execute(&sql)
        .await
        .unwrap();
    let s1 = insert_id(
        sqlx::query(
            "INSERT INTO steps (number, name, buildid, started_at, complete_at, state_string, \
             results, urls_json) VALUES (0, 'checkout', $1, $2, $3, 'updated', 0, $4) RETURNING id",
        )
        .bind(b1)
        .bind(NOW)
        .bind(NOW + 1)
        .bind(r#"[{"name": "commit", "url": "https://example.org/c/1"}]"#),
        &sql,
    )
    .await;
    let s2 = insert_id(
        sqlx::query(
            "INSERT INTO steps (number, name, buildid, started_at, state_string, hidden) \
             VALUES (1, 'test', $1, $2, 'running', 1) RETURNING id",
        )
        .bind(b1)
        .bind(NOW + 1),
        &sql,
    )
    .await;
    let log = insert_id(
        sqlx::query(
            "INSERT INTO logs (name, slug, stepid, complete, num_lines, type) \
             VALUES ('stdio', 'stdio', $1, 1, 3, 's') RETURNING id",
        )
        .bind(s1),
        &sql,
    )
    .await;
    for (first, last, content) in [(0i64, 1i64, "ohello\neworld\n"), (2, 2, "hexit 0\n")] {
        sqlx::query(
            "INSERT INTO logchunks (logid, first_line, last_line, content) VALUES ($1, $2, $3, $4)",
        )
        .bind(log)
        .bind(first)
        .bind(last)
        .bind(content.as_bytes().to_vec())
        .execute(&sql)
        .await
        .unwrap();
    }
    let mut changes = Vec::new();
    for (author, branch, when) in [("alice", "main", NOW - 100), ("bob", "dev", NOW - 50)] {
        changes.push(
            insert_id(
                sqlx::query(
                    "INSERT INTO changes (author, comments, branch, revision, when_timestamp, \
                     repository, project, properties, files) \
                     VALUES ($1, 'a change', $2, 'abc123', $3, 'https://example.org/r.git', \
                     'proj', '{\"ci\": [true, \"Change\"]}', '[\"src/main.rs\"]') \
                     RETURNING changeid AS id",
                )
                .bind(author)
                .bind(branch)
                .bind(when),
                &sql,
            )
            .await,
        );
    }
    for (name, value, source) in [
        ("owner", r#""alice""#, "Force Build Form"),
        ("branch", r#""main""#, "Change"),
    ] {
        sqlx::query(
            "INSERT INTO build_properties (buildid, name, value, source) VALUES ($1, $2, $3, $4)",
        )
        .bind(b1)
        .bind(name)
        .bind(value)
        .bind(source)
        .execute(&sql)
        .await
        .unwrap();
    }
    let force = insert_id(
        sqlx::query("INSERT INTO schedulers (name) VALUES ('force') RETURNING id"),
        &sql,
    )
    .await;
    sqlx::query("INSERT INTO schedulers (name, enabled) VALUES ('nightly', 0)")
        .execute(&sql)
        .await
        .unwrap();
    exec(
        &sql,
        "INSERT INTO scheduler_masters (schedulerid, masterid, claimed_at) VALUES ($1, $2, $3)",
        &[force, m1, NOW],
    )
    .await;
    sql.close().await;
    let seed = Seed {
        m1,
        m2,
        hello,
        linux,
        local,
        mac,
        bs1,
        bs2,
        r_hello,
        r_linux,
        r_nightly,
        b1,
        b2,
        s1,
        s2,
        log,
        c1: changes[0],
        c2: changes[1],
    };
    (store, seed)
}

async fn pool(db: &TestDb) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::any::AnyPoolOptions::new()
        .max_connections(2)
        .connect(db.url())
        .await
        .unwrap()
}

async fn exec(pool: &sqlx::AnyPool, sql: &str, binds: &[i64]) {
    let mut q = sqlx::query(sql);
    for b in binds {
        q = q.bind(*b);
    }
    q.execute(pool).await.unwrap();
}

async fn insert_id<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    pool: &sqlx::AnyPool,
) -> i64 {
    use sqlx::Row;
    q.fetch_one(pool).await.unwrap().try_get("id").unwrap()
}

// ---- the fake engine ----

#[derive(Debug, Clone, PartialEq)]
enum Call {
    Force {
        scheduler: String,
        builder_names: Option<Vec<String>>,
        reason: Option<String>,
        owner: Option<String>,
        properties: BTreeMap<String, Value>,
    },
    StopBuild(i64, String),
    Rebuild(i64, String),
    Cancel(i64, String),
    Worker(i64, WorkerAction, String),
    Change(String),
    Master(i64, MasterAction),
    SchedulerEnabled(i64, bool),
}

type Failure = Box<dyn FnOnce() -> ControlError + Send>;

/// Records every call; answers with fixed ids, or with the failure set for the next call.
struct FakeControl {
    calls: Mutex<Vec<Call>>,
    changes: Mutex<Vec<NewChange>>,
    fail_next: Mutex<Option<Failure>>,
    /// Builder ids by name, for the buildsets it pretends to make.
    builders: BTreeMap<String, i64>,
}

impl FakeControl {
    fn new(seed: &Seed) -> Arc<FakeControl> {
        Arc::new(FakeControl {
            calls: Mutex::new(Vec::new()),
            changes: Mutex::new(Vec::new()),
            fail_next: Mutex::new(None),
            builders: [
                ("hello".to_owned(), seed.hello),
                ("linux".to_owned(), seed.linux),
            ]
            .into_iter()
            .collect(),
        })
    }

    fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }

    fn fail_next(&self, f: impl FnOnce() -> ControlError + Send + 'static) {
        *self.fail_next.lock().unwrap() = Some(Box::new(f));
    }

    fn record(&self, call: Call) -> Result<(), ControlError> {
        self.calls.lock().unwrap().push(call);
        match self.fail_next.lock().unwrap().take() {
            Some(f) => Err(f()),
            None => Ok(()),
        }
    }

    fn buildset(&self, names: &[String]) -> Buildset {
        Buildset {
            buildset: 900,
            requests: names
                .iter()
                .enumerate()
                .map(|(i, n)| (self.builders[n], 901 + i as i64))
                .collect(),
        }
    }
}

#[async_trait::async_trait]
impl Control for FakeControl {
    async fn force(&self, r: ForceRequest) -> Result<Buildset, ControlError> {
        let names = r
            .builder_names
            .clone()
            .unwrap_or_else(|| vec!["hello".into(), "linux".into()]);
        self.record(Call::Force {
            scheduler: r.scheduler,
            builder_names: r.builder_names,
            reason: r.reason,
            owner: r.owner,
            properties: r.properties,
        })?;
        Ok(self.buildset(&names))
    }

    async fn stop_build(&self, build: i64, reason: String) -> Result<(), ControlError> {
        self.record(Call::StopBuild(build, reason))
    }

    async fn rebuild(&self, build: i64, reason: String) -> Result<Buildset, ControlError> {
        self.record(Call::Rebuild(build, reason))?;
        Ok(self.buildset(&["hello".to_owned()]))
    }

    async fn cancel_buildrequest(&self, brid: i64, reason: String) -> Result<(), ControlError> {
        self.record(Call::Cancel(brid, reason))
    }

    async fn worker_action(
        &self,
        worker: i64,
        action: WorkerAction,
        reason: String,
    ) -> Result<(), ControlError> {
        self.record(Call::Worker(worker, action, reason))
    }

    async fn add_change(&self, change: NewChange) -> Result<ChangeOutcome, ControlError> {
        self.record(Call::Change(change.author.clone()))?;
        self.changes.lock().unwrap().push(change);
        Ok(ChangeOutcome {
            changeid: 77,
            buildsets: vec![Buildset {
                buildset: 78,
                requests: vec![(self.builders["linux"], 79)],
            }],
        })
    }

    async fn master_action(
        &self,
        master: i64,
        action: MasterAction,
    ) -> Result<Value, ControlError> {
        self.record(Call::Master(master, action))?;
        Ok(json!({ "masterid": master, "state": "draining" }))
    }

    async fn set_scheduler_enabled(
        &self,
        scheduler: i64,
        enabled: bool,
    ) -> Result<(), ControlError> {
        self.record(Call::SchedulerEnabled(scheduler, enabled))
    }
}

// ---- the server and a raw HTTP client ----

struct Server {
    addr: SocketAddr,
    router: Router,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.router.shutdown().trigger();
    }
}

async fn serve(store: &Store, config: Arc<MasterConfig>, control: Arc<FakeControl>) -> Server {
    let router = Router::new(RouterConfig::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = ApiState {
        store: store.clone(),
        config,
        control,
    };
    let lc = ListenerConfig {
        http_mounts: api::mounts(state),
        ..Default::default()
    };
    tokio::spawn(transport::serve(listener, router.clone(), lc));
    Server { addr, router }
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The JSON body; fails the test if the answer is not JSON.
    fn json(&self) -> Value {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "not a JSON answer: {self:?}"
        );
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", self.text()))
    }

    /// The JSON body of an error answer with this status; returns its message.
    fn error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{}", self.text());
        let v = self.json();
        v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message in {v}"))
            .to_owned()
    }

    /// A JSON-RPC error answer with this status and code; returns its message.
    fn rpc_error(&self, status: u16, code: i64) -> String {
        assert_eq!(self.status, status, "{}", self.text());
        let v = self.json();
        assert_eq!(v["jsonrpc"], "2.0", "{v}");
        assert_eq!(v["error"]["code"], code, "{v}");
        assert!(v.get("result").is_none(), "{v}");
        v["error"]["message"].as_str().unwrap().to_owned()
    }
}

/// Sends raw bytes, reads the answer until the server closes.
async fn exchange(addr: SocketAddr, request: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).await.unwrap();
    if let Err(e) = s.write_all(request).await {
        // The server may answer (413) and close before reading everything sent.
        eprintln!("write ended with {e}");
    }
    let mut raw = Vec::new();
    // A server refusing a body it did not read may reset the connection after answering:
    // keep what arrived.
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if !raw.is_empty() => {
                eprintln!("read ended with {e} after {} bytes", raw.len());
                break;
            }
            Err(e) => panic!("no answer: {e}"),
        }
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    let resp = Resp {
        status,
        headers,
        body,
    };
    // No answer may ever carry a worker's password.
    let text = resp.text();
    for pw in WORKER_PASSWORDS {
        assert!(!text.contains(pw), "worker password in an answer: {text}");
    }
    resp
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..line_end]).unwrap().trim(), 16)
                .unwrap();
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

fn base64(input: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// How a client authenticates.
#[derive(Clone, Copy)]
enum Auth<'a> {
    None,
    Basic(&'a str, &'a str),
    Bearer(&'a str),
}

#[derive(Clone, Copy)]
struct Client<'a> {
    addr: SocketAddr,
    auth: Auth<'a>,
}

impl<'a> Client<'a> {
    fn new(server: &Server, auth: Auth<'a>) -> Client<'a> {
        Client {
            addr: server.addr,
            auth,
        }
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Resp {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        match self.auth {
            Auth::None => {}
            Auth::Basic(u, p) => req.push_str(&format!(
                "Authorization: Basic {}\r\n",
                base64(format!("{u}:{p}").as_bytes())
            )),
            Auth::Bearer(t) => req.push_str(&format!("Authorization: Bearer {t}\r\n")),
        }
        if let Some(ct) = content_type {
            req.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        exchange(self.addr, &bytes).await
    }

    async fn get(&self, path: &str) -> Resp {
        self.send("GET", path, None, b"").await
    }

    /// GET of a JSON answer that must be 200.
    async fn ok(&self, path: &str) -> Value {
        let r = self.get(path).await;
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        r.json()
    }

    /// The rows of a 200 collection answer under `plural`, checking `meta.total`.
    async fn rows(&self, path: &str, plural: &str, total: usize) -> Vec<Value> {
        let v = self.ok(path).await;
        assert_eq!(v["meta"]["total"], total, "GET {path}: {v}");
        v[plural]
            .as_array()
            .unwrap_or_else(|| panic!("GET {path}: no {plural} in {v}"))
            .clone()
    }

    /// The one row of a single-item answer.
    async fn item(&self, path: &str, plural: &str) -> Value {
        let rows = self.rows(path, plural, 1).await;
        assert_eq!(rows.len(), 1, "GET {path}");
        rows[0].clone()
    }

    async fn rpc(&self, path: &str, method: &str, params: Value) -> Resp {
        let body = json!({ "jsonrpc": "2.0", "method": method, "params": params, "id": 7 });
        self.send(
            "POST",
            path,
            Some("application/json"),
            body.to_string().as_bytes(),
        )
        .await
    }

    /// A JSON-RPC call that must succeed; returns its result.
    async fn rpc_ok(&self, path: &str, method: &str, params: Value) -> Value {
        let r = self.rpc(path, method, params).await;
        assert_eq!(r.status, 200, "POST {path} {method}: {}", r.text());
        let v = r.json();
        assert_eq!(v["jsonrpc"], "2.0");
        assert_eq!(v["id"], 7);
        assert!(v.get("error").is_none(), "{v}");
        v["result"].clone()
    }
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

fn key_set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn ids(rows: &[Value], field: &str) -> Vec<i64> {
    rows.iter().map(|r| r[field].as_i64().unwrap()).collect()
}

// ---- scenarios ----

async fn read_endpoints(db: &TestDb) {
    let (store, s) = seed(db).await;
    let control = FakeControl::new(&s);
    let server = serve(&store, default_config(), control.clone()).await;
    let c = Client::new(&server, Auth::None);

    // Masters.
    let masters = c.rows("/api/v2/masters", "masters", 2).await;
    assert_eq!(
        masters[0],
        json!({"masterid": s.m1, "name": "host-a:/srv/a", "active": true,
               "last_active": NOW, "state": "running"})
    );
    let whole = c.ok(&format!("/api/v2/masters/{}", s.m2)).await;
    assert_eq!(keys(&whole), key_set(&["masters", "meta"]));
    assert_eq!(whole["meta"], json!({"total": 1}));
    assert_eq!(whole["masters"][0]["name"], "host-b:/srv/b");
    let msg = c.get("/api/v2/masters/999").await.error(404);
    assert!(msg.contains("no master 999"), "{msg}");

    // Builders, by id and by name.
    let builders = c.rows("/api/v2/builders", "builders", 2).await;
    assert_eq!(
        builders[1],
        json!({"builderid": s.linux, "name": "linux", "description": null,
               "description_format": null, "description_html": null, "projectid": null,
               "masterids": [s.m1, s.m2], "tags": []})
    );
    let by_name = c.item("/api/v2/builders/hello", "builders").await;
    let by_id = c
        .item(&format!("/api/v2/builders/{}", s.hello), "builders")
        .await;
    assert_eq!(by_name, by_id);
    assert_eq!(by_name["masterids"], json!([s.m1]));
    c.get("/api/v2/builders/nope").await.error(404);

    // Builds: a finished one and a running one.
    let builds = c.rows("/api/v2/builds", "builds", 2).await;
    assert_eq!(
        builds[0],
        json!({"buildid": s.b1, "number": 1, "builderid": s.hello,
               "buildrequestid": s.r_hello, "workerid": s.local, "masterid": s.m1,
               "started_at": NOW, "complete": true, "complete_at": NOW,
               "locks_duration_s": 0, "state_string": "building", "results": 0})
    );
    assert_eq!(builds[1]["complete"], false);
    assert_eq!(builds[1]["results"], Value::Null);
    assert_eq!(builds[1]["complete_at"], Value::Null);
    assert_eq!(
        c.item(&format!("/api/v2/builds/{}", s.b1), "builds").await,
        builds[0]
    );
    assert_eq!(
        c.item("/api/v2/builders/hello/builds/1", "builds").await,
        builds[0]
    );
    let linux_builds = c
        .rows(&format!("/api/v2/builders/{}/builds", s.linux), "builds", 1)
        .await;
    assert_eq!(ids(&linux_builds, "buildid"), [s.b2]);
    c.get("/api/v2/builders/hello/builds/9").await.error(404);
    c.get("/api/v2/builds/12345").await.error(404);
    let msg = c.get("/api/v2/builds/abc").await.error(404);
    assert!(msg.contains("no build \"abc\""), "{msg}");

    // Steps, by build id and by builder/number.
    let steps = c
        .rows(&format!("/api/v2/builds/{}/steps", s.b1), "steps", 2)
        .await;
    assert_eq!(
        steps[0],
        json!({"stepid": s.s1, "number": 0, "name": "checkout", "buildid": s.b1,
               "started_at": NOW, "complete": true, "complete_at": NOW + 1,
               "state_string": "updated", "results": 0,
               "urls": [{"name": "commit", "url": "https://example.org/c/1"}],
               "hidden": false, "locks_acquired_at": NOW})
    );
    assert_eq!(steps[1]["complete"], false);
    assert_eq!(steps[1]["hidden"], true);
    assert_eq!(
        c.rows("/api/v2/builders/hello/builds/1/steps", "steps", 2)
            .await,
        steps
    );
    assert_eq!(
        c.item(&format!("/api/v2/steps/{}", s.s2), "steps").await,
        steps[1]
    );
    c.rows(&format!("/api/v2/builds/{}/steps", s.b2), "steps", 0)
        .await;

    // Properties, as Buildbot: one object of name: [value, source].
    let props = c
        .item(&format!("/api/v2/builds/{}/properties", s.b1), "properties")
        .await;
    assert_eq!(
        props,
        json!({"owner": ["alice", "Force Build Form"], "branch": ["main", "Change"]})
    );
    c.get("/api/v2/builds/999/properties").await.error(404);

    // Logs and their contents.
    let logs = c
        .rows(&format!("/api/v2/steps/{}/logs", s.s1), "logs", 1)
        .await;
    assert_eq!(
        logs[0],
        json!({"logid": s.log, "name": "stdio", "slug": "stdio", "stepid": s.s1,
               "complete": true, "num_lines": 3, "type": "s"})
    );
    assert_eq!(
        c.item(&format!("/api/v2/logs/{}", s.log), "logs").await,
        logs[0]
    );
    c.get("/api/v2/steps/999/logs").await.error(404);
    let contents = c.ok(&format!("/api/v2/logs/{}/contents", s.log)).await;
    assert_eq!(
        contents,
        json!({"logchunks": [{"logid": s.log, "firstline": 0,
                              "content": "ohello\neworld\nhexit 0\n"}],
               "meta": {}})
    );
    let part = c
        .ok(&format!("/api/v2/logs/{}/contents?offset=1&limit=1", s.log))
        .await;
    assert_eq!(part["logchunks"][0]["firstline"], 1);
    assert_eq!(part["logchunks"][0]["content"], "eworld\n");
    let tail = c
        .ok(&format!("/api/v2/logs/{}/contents?offset=1", s.log))
        .await;
    assert_eq!(tail["logchunks"][0]["content"], "eworld\nhexit 0\n");
    let past = c
        .ok(&format!(
            "/api/v2/logs/{}/contents?offset=10&limit=5",
            s.log
        ))
        .await;
    assert_eq!(past["logchunks"][0]["content"], "");
    let raw = c.get(&format!("/api/v2/logs/{}/raw", s.log)).await;
    assert_eq!(raw.status, 200);
    assert_eq!(
        raw.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(raw.text(), "hello\nworld\nexit 0\n", "stream tags stripped");
    assert_eq!(
        raw.header("content-disposition"),
        Some("attachment; filename=\"hello_build_1_step_checkout_log_stdio\"")
    );
    c.get("/api/v2/logs/999/raw").await.error(404);
    c.get("/api/v2/logs/999/contents").await.error(404);

    // Workers: connections, builders they serve, what they reported; never a password.
    let workers = c.rows("/api/v2/workers", "workers", 2).await;
    assert_eq!(
        workers[0],
        json!({"workerid": s.local, "name": "local", "paused": false, "graceful": false,
               "pause_reason": null,
               "connected_to": [{"masterid": s.m1}],
               "configured_on": [
                   {"builderid": s.hello, "masterid": s.m1},
                   {"builderid": s.linux, "masterid": s.m1},
                   {"builderid": s.linux, "masterid": s.m2}],
               "workerinfo": {}})
    );
    assert_eq!(workers[1]["workerinfo"], json!({"host": "mac.local"}));
    assert_eq!(workers[1]["connected_to"], json!([]));
    assert_eq!(c.item("/api/v2/workers/mac", "workers").await, workers[1]);
    assert_eq!(
        c.item(&format!("/api/v2/workers/{}", s.mac), "workers")
            .await,
        workers[1]
    );
    c.get("/api/v2/workers/ghost").await.error(404);

    // Buildsets and build requests.
    let buildsets = c.rows("/api/v2/buildsets", "buildsets", 2).await;
    assert_eq!(
        buildsets[0],
        json!({"bsid": s.bs1, "external_idstring": null, "reason": "force build",
               "submitted_at": NOW, "complete": false, "complete_at": null,
               "results": null, "parent_buildid": null, "parent_relationship": null,
               "rebuilt_buildid": null, "sourcestamps": []})
    );
    assert_eq!(
        c.item(&format!("/api/v2/buildsets/{}", s.bs2), "buildsets")
            .await["reason"],
        "nightly"
    );
    let requests = c.rows("/api/v2/buildrequests", "buildrequests", 3).await;
    assert_eq!(
        requests[0],
        json!({"buildrequestid": s.r_hello, "buildsetid": s.bs1, "builderid": s.hello,
               "priority": 0, "claimed": true, "claimed_at": NOW,
               "claimed_by_masterid": s.m1, "complete": true, "results": 0,
               "submitted_at": NOW, "complete_at": NOW, "waited_for": false,
               "properties": null})
    );
    assert_eq!(requests[2]["claimed"], false);
    assert_eq!(requests[2]["claimed_by_masterid"], Value::Null);
    assert_eq!(requests[2]["priority"], 5);
    assert_eq!(
        c.item(
            &format!("/api/v2/buildrequests/{}", s.r_linux),
            "buildrequests"
        )
        .await["claimed"],
        true
    );
    let linux_requests = c
        .rows("/api/v2/builders/linux/buildrequests", "buildrequests", 2)
        .await;
    assert_eq!(
        ids(&linux_requests, "buildrequestid"),
        [s.r_linux, s.r_nightly]
    );

    // Changes.
    let changes = c.rows("/api/v2/changes", "changes", 2).await;
    assert_eq!(
        changes[0],
        json!({"changeid": s.c1, "author": "alice", "committer": "alice",
               "comments": "a change", "branch": "main", "revision": "abc123",
               "revlink": null, "when_timestamp": NOW - 100, "category": null,
               "repository": "https://example.org/r.git", "codebase": "",
               "project": "proj", "properties": {"ci": [true, "Change"]},
               "files": ["src/main.rs"], "parent_changeids": [],
               "sourcestamp": {"ssid": s.c1, "branch": "main", "codebase": "",
                   "created_at": NOW - 100, "patch": null, "project": "proj",
                   "repository": "https://example.org/r.git", "revision": "abc123"}})
    );
    assert_eq!(
        c.item(&format!("/api/v2/changes/{}", s.c2), "changes")
            .await["author"],
        "bob"
    );
    c.get("/api/v2/changes/999").await.error(404);

    // Schedulers (from the database) and force schedulers (from the config).
    let schedulers = c.rows("/api/v2/schedulers", "schedulers", 2).await;
    assert_eq!(schedulers[0]["name"], "force");
    assert_eq!(schedulers[0]["enabled"], true);
    assert_eq!(schedulers[0]["master"]["masterid"], s.m1);
    assert_eq!(schedulers[1]["master"], Value::Null);
    assert_eq!(schedulers[1]["enabled"], false);
    let one = c
        .item(
            &format!("/api/v2/schedulers/{}", schedulers[1]["schedulerid"]),
            "schedulers",
        )
        .await;
    assert_eq!(one, schedulers[1]);
    c.get("/api/v2/schedulers/999").await.error(404);
    let force = c
        .rows("/api/v2/forceschedulers", "forceschedulers", 1)
        .await;
    assert_eq!(force[0]["name"], "force");
    assert_eq!(force[0]["builder_names"], json!(["hello", "linux"]));
    assert_eq!(force[0]["label"], "force");
    // Buildbot's nested schema: layouts (unnamed) hold the named fields.
    fn named(fields: &Value, out: &mut Vec<String>) {
        for f in fields.as_array().into_iter().flatten() {
            match f["name"].as_str() {
                Some(n) if !n.is_empty() => out.push(n.to_owned()),
                _ => named(&f["fields"], out),
            }
        }
    }
    let mut fields = Vec::new();
    named(&force[0]["all_fields"], &mut fields);
    assert_eq!(fields, ["username", "reason", "priority"]);
    assert_eq!(
        c.item("/api/v2/forceschedulers/force", "forceschedulers")
            .await,
        force[0]
    );
    let msg = c.get("/api/v2/forceschedulers/nightly").await.error(404);
    assert!(msg.contains("no force scheduler"), "{msg}");

    // Paths that name nothing, and the wrong method.
    for path in [
        "/api/v2/nope",
        "/api/v1/builds",
        "/api/v2/builds/1/nope",
        "/api",
    ] {
        let msg = c.get(path).await.error(404);
        assert!(msg.contains("no such path"), "{path}: {msg}");
    }
    let r = c.send("DELETE", "/api/v2/builds", None, b"").await;
    let msg = r.error(405);
    assert!(msg.contains("not allowed"), "{msg}");
    assert!(
        r.header("allow").is_some_and(|a| a.contains("GET")),
        "{r:?}"
    );
    c.get("/change_hook/base").await.error(405);
    // HEAD works where GET does, without a body.
    let r = c.send("HEAD", "/api/v2/builds", None, b"").await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());

    assert!(control.take_calls().is_empty(), "reads never reach Control");
}

async fn query_arguments(db: &TestDb) {
    let (store, s) = seed(db).await;
    let server = serve(&store, default_config(), FakeControl::new(&s)).await;
    let c = Client::new(&server, Auth::None);

    // field projects, repeated or comma-separated.
    for q in ["field=buildid&field=number", "field=buildid,number"] {
        let rows = c.rows(&format!("/api/v2/builds?{q}"), "builds", 2).await;
        assert_eq!(rows[0], json!({"buildid": s.b1, "number": 1}), "{q}");
    }
    let one = c
        .item(&format!("/api/v2/builds/{}?field=results", s.b1), "builds")
        .await;
    assert_eq!(one, json!({"results": 0}));

    // order, limit, offset; meta.total counts before paging.
    let rows = c.rows("/api/v2/builds?order=-buildid", "builds", 2).await;
    assert_eq!(ids(&rows, "buildid"), [s.b2, s.b1]);
    let rows = c.rows("/api/v2/builds?limit=1", "builds", 2).await;
    assert_eq!(ids(&rows, "buildid"), [s.b1]);
    let rows = c
        .rows(
            "/api/v2/builds?order=-buildid&limit=1&offset=1",
            "builds",
            2,
        )
        .await;
    assert_eq!(ids(&rows, "buildid"), [s.b1]);
    c.rows("/api/v2/builds?offset=5", "builds", 2).await;
    c.rows("/api/v2/builds?limit=0", "builds", 2).await;
    // Nulls sort first, last when descending (the running build has no results).
    let rows = c.rows("/api/v2/builds?order=results", "builds", 2).await;
    assert_eq!(ids(&rows, "buildid"), [s.b2, s.b1]);
    let rows = c.rows("/api/v2/builds?order=-results", "builds", 2).await;
    assert_eq!(ids(&rows, "buildid"), [s.b1, s.b2]);

    // Filters in SQL (ids, flags, text equality) and in Rust (contains, text order).
    let cases: Vec<(String, Vec<i64>)> = vec![
        ("complete=true".into(), vec![s.b1]),
        ("complete=false".into(), vec![s.b2]),
        ("results=0".into(), vec![s.b1]),
        ("results__ne=null".into(), vec![s.b1]),
        ("results=null".into(), vec![s.b2]),
        ("results__ne=0".into(), vec![s.b2]),
        (format!("builderid={}", s.hello), vec![s.b1]),
        (
            format!("builderid={}&builderid={}", s.hello, s.linux),
            vec![s.b1, s.b2],
        ),
        (format!("buildid__gt={}", s.b1), vec![s.b2]),
        (format!("buildid__le={}", s.b1), vec![s.b1]),
        ("results__lt=1".into(), vec![s.b1]),
        ("state_string=building".into(), vec![s.b1, s.b2]),
        ("state_string__ne=building".into(), vec![]),
        (
            "state_string__contains=uild&order=-buildid".into(),
            vec![s.b2, s.b1],
        ),
        ("state_string__contains=nope".into(), vec![]),
        (
            format!(
                "order=state_string&order=-buildid&buildrequestid={}",
                s.r_linux
            ),
            vec![s.b2],
        ),
    ];
    for (q, want) in cases {
        let v = c.ok(&format!("/api/v2/builds?{q}")).await;
        let rows = v["builds"].as_array().unwrap();
        assert_eq!(ids(rows, "buildid"), want, "?{q}");
        assert_eq!(v["meta"]["total"], want.len(), "?{q}");
    }
    let rows = c
        .rows("/api/v2/buildrequests?claimed=false", "buildrequests", 1)
        .await;
    assert_eq!(ids(&rows, "buildrequestid"), [s.r_nightly]);
    let rows = c
        .rows(
            "/api/v2/buildrequests?order=-priority&limit=1",
            "buildrequests",
            3,
        )
        .await;
    assert_eq!(ids(&rows, "buildrequestid"), [s.r_nightly]);
    let rows = c
        .rows(
            &format!(
                "/api/v2/buildrequests?claimed_by_masterid={}&complete=0",
                s.m1
            ),
            "buildrequests",
            1,
        )
        .await;
    assert_eq!(ids(&rows, "buildrequestid"), [s.r_linux]);
    let rows = c.rows("/api/v2/changes?branch=main", "changes", 1).await;
    assert_eq!(ids(&rows, "changeid"), [s.c1]);
    let rows = c
        .rows("/api/v2/changes?author__contains=bo", "changes", 1)
        .await;
    assert_eq!(ids(&rows, "changeid"), [s.c2]);
    let rows = c
        .rows(
            &format!(
                "/api/v2/changes?when_timestamp__ge={}&order=-changeid",
                NOW - 100
            ),
            "changes",
            2,
        )
        .await;
    assert_eq!(ids(&rows, "changeid"), [s.c2, s.c1]);
    let rows = c
        .rows(
            "/api/v2/buildsets?complete=false&reason=nightly",
            "buildsets",
            1,
        )
        .await;
    assert_eq!(ids(&rows, "bsid"), [s.bs2]);

    // Small collections filter in Rust with the same rules.
    let rows = c.rows("/api/v2/masters?order=-name", "masters", 2).await;
    assert_eq!(ids(&rows, "masterid"), [s.m2, s.m1]);
    let rows = c
        .rows("/api/v2/builders?name__contains=lin", "builders", 1)
        .await;
    assert_eq!(ids(&rows, "builderid"), [s.linux]);
    let rows = c
        .rows(
            &format!("/api/v2/builders?masterids__contains={}", s.m2),
            "builders",
            1,
        )
        .await;
    assert_eq!(ids(&rows, "builderid"), [s.linux]);
    let rows = c
        .rows(
            &format!("/api/v2/workers?connected_to__contains={}&field=name", s.m1),
            "workers",
            1,
        )
        .await;
    assert_eq!(rows, [json!({"name": "local"})]);
    c.rows("/api/v2/workers?paused=false&name__ne=local", "workers", 1)
        .await;
    let rows = c
        .rows(
            &format!("/api/v2/steps/{}/logs?type=s&field=slug", s.s1),
            "logs",
            1,
        )
        .await;
    assert_eq!(rows, [json!({"slug": "stdio"})]);

    // Bad arguments: 400 with a message naming the problem.
    for (path, want) in [
        ("/api/v2/builds?field=nope", "no such field 'nope'"),
        ("/api/v2/builds?order=-nope", "no such field 'nope'"),
        ("/api/v2/builds?limit=ten", "invalid limit"),
        ("/api/v2/builds?limit=-1", "invalid limit"),
        ("/api/v2/builds?offset=1.5", "invalid offset"),
        (
            "/api/v2/builds?buildid__like=1",
            "unknown filter operator 'like'",
        ),
        (
            "/api/v2/builds?frobnicate=1",
            "unrecognized query parameter 'frobnicate'",
        ),
        (
            "/api/v2/builds?buildid=abc",
            "invalid filter value for buildid",
        ),
        (
            "/api/v2/builds?complete=perhaps",
            "invalid filter value for complete",
        ),
        ("/api/v2/builds?results__gt=null", "exactly one value"),
        ("/api/v2/builders?masterids=1", "masterids__contains"),
        ("/api/v2/workers?workerinfo=1", "cannot be filtered"),
        ("/api/v2/masters?name=%ZZ", "malformed query string"),
        ("/api/v2/builds/1?buildid=1", "not a collection"),
        ("/api/v2/masters?field=password", "no such field 'password'"),
    ] {
        let msg = c.get(path).await.error(400);
        assert!(msg.contains(want), "{path}: {msg:?} lacks {want:?}");
    }
}

async fn huge_tables_page_in_the_database(db: &TestDb) {
    let (store, s) = seed(db).await;
    const EXTRA: i64 = 12_000;
    let sql = pool(db).await;
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1) \
         INSERT INTO builds (number, builderid, buildrequestid, masterid, started_at, \
         complete_at, state_string, results) \
         SELECT i + 100, $2, $3, $4, $5, $5, 'done', 0 FROM n",
    )
    .bind(EXTRA)
    .bind(s.linux)
    .bind(s.r_linux)
    .bind(s.m1)
    .bind(NOW)
    .execute(&sql)
    .await
    .unwrap();
    let max_id: i64 = {
        use sqlx::Row;
        sqlx::query("SELECT MAX(id) AS m FROM builds")
            .fetch_one(&sql)
            .await
            .unwrap()
            .try_get("m")
            .unwrap()
    };
    sql.close().await;
    let total = EXTRA as usize + 2;
    let server = serve(&store, default_config(), FakeControl::new(&s)).await;
    let c = Client::new(&server, Auth::None);

    let rows = c
        .rows("/api/v2/builds?order=-buildid&limit=3", "builds", total)
        .await;
    assert_eq!(ids(&rows, "buildid"), [max_id, max_id - 1, max_id - 2]);
    let rows = c
        .rows(
            "/api/v2/builders/linux/builds?order=-number&limit=2&offset=1&complete=true",
            "builds",
            EXTRA as usize,
        )
        .await;
    assert_eq!(ids(&rows, "number"), [EXTRA + 99, EXTRA + 98]);
    let rows = c
        .rows(
            &format!("/api/v2/builds?number__gt={}&field=number", EXTRA + 97),
            "builds",
            3,
        )
        .await;
    assert_eq!(ids(&rows, "number"), [EXTRA + 98, EXTRA + 99, EXTRA + 100]);
    c.rows(
        "/api/v2/builds?state_string=done&limit=1",
        "builds",
        EXTRA as usize,
    )
    .await;

    // What the database cannot evaluate reads at most 10000 rows: refused over that...
    let msg = c
        .get("/api/v2/builds?state_string__contains=don&limit=5")
        .await
        .error(400);
    assert!(msg.contains("more than 10000 builds"), "{msg}");
    let msg = c.get("/api/v2/builds?order=state_string").await.error(400);
    assert!(msg.contains("narrow it"), "{msg}");
    // ...and fine once a database filter narrows it.
    let rows = c
        .rows(
            &format!(
                "/api/v2/builds?builderid={}&state_string__contains=build",
                s.hello
            ),
            "builds",
            1,
        )
        .await;
    assert_eq!(ids(&rows, "buildid"), [s.b1]);
    let rows = c
        .rows(
            &format!(
                "/api/v2/builds?number__gt={}&state_string__contains=on&order=-number&limit=1",
                EXTRA + 50
            ),
            "builds",
            50,
        )
        .await;
    assert_eq!(ids(&rows, "number"), [EXTRA + 100]);
}

fn rpc_path(kind: &str, id: impl std::fmt::Display) -> String {
    format!("/api/v2/{kind}/{id}")
}

async fn control_calls_reach_control(db: &TestDb) {
    let (store, s) = seed(db).await;
    let control = FakeControl::new(&s);
    let server = serve(&store, default_config(), control.clone()).await;
    let admin = Client::new(&server, Auth::Basic("admin", "secret"));
    let token = Client::new(&server, Auth::Bearer(TOKEN));
    let force = "/api/v2/forceschedulers/force";

    // force: builder names, reason, owner from the user, extra params and `properties` as
    // properties; Buildbot's result shape.
    let result = admin
        .rpc_ok(
            force,
            "force",
            json!({"builderNames": ["hello"], "reason": "because", "branch": "main",
                   "properties": {"x": 1, "branch": "dev"}}),
        )
        .await;
    assert_eq!(result, json!([900, {s.hello.to_string(): 901}]));
    assert_eq!(
        control.take_calls(),
        [Call::Force {
            scheduler: "force".into(),
            builder_names: Some(vec!["hello".into()]),
            reason: Some("because".into()),
            owner: Some("admin".into()),
            properties: [
                ("branch".to_owned(), json!("dev")),
                ("x".to_owned(), json!(1))
            ]
            .into_iter()
            .collect(),
        }]
    );
    // No builder names: all of the scheduler's; an owner given is kept; a token is "token".
    let result = token
        .rpc_ok(force, "force", json!({"owner": "carol"}))
        .await;
    assert_eq!(
        result,
        json!([900, {s.hello.to_string(): 901, s.linux.to_string(): 902}])
    );
    token.rpc_ok(force, "force", json!({})).await;
    let owners: Vec<_> = control
        .take_calls()
        .into_iter()
        .map(|c| match c {
            Call::Force {
                owner,
                builder_names,
                reason,
                ..
            } => (owner, builder_names, reason),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        owners,
        [
            (Some("carol".into()), None, None),
            (Some("token".into()), None, None)
        ]
    );
    // Buildbot's UI sends builderid and username.
    admin
        .rpc_ok(
            force,
            "force",
            json!({"builderid": s.linux, "username": "dave"}),
        )
        .await;
    match &control.take_calls()[..] {
        [Call::Force {
            builder_names,
            owner,
            properties,
            ..
        }] => {
            assert_eq!(builder_names.as_deref(), Some(&["linux".to_owned()][..]));
            assert_eq!(owner.as_deref(), Some("dave"));
            assert!(properties.is_empty(), "{properties:?}");
        }
        other => panic!("{other:?}"),
    }
    let msg = admin
        .rpc("/api/v2/forceschedulers/nightly", "force", json!({}))
        .await
        .rpc_error(404, -32600);
    assert!(msg.contains("no force scheduler"), "{msg}");
    let msg = admin
        .rpc(force, "force", json!({"builderNames": "hello"}))
        .await
        .rpc_error(400, -32602);
    assert!(msg.contains("builderNames"), "{msg}");
    admin
        .rpc(force, "force", json!({"builderid": 999}))
        .await
        .rpc_error(404, -32600);
    assert!(control.take_calls().is_empty());

    // Builds: stop and rebuild.
    let b2 = rpc_path("builds", s.b2);
    assert_eq!(
        admin.rpc_ok(&b2, "stop", json!({"reason": "enough"})).await,
        Value::Null
    );
    admin.rpc_ok(&b2, "stop", json!({})).await;
    let result = admin
        .rpc_ok(&rpc_path("builds", s.b1), "rebuild", json!({}))
        .await;
    assert_eq!(result, json!([900, {s.hello.to_string(): 901}]));
    assert_eq!(
        control.take_calls(),
        [
            Call::StopBuild(s.b2, "enough".into()),
            Call::StopBuild(s.b2, "no reason".into()),
            Call::Rebuild(s.b1, "rebuild".into()),
        ]
    );

    // Build requests: cancel.
    admin
        .rpc_ok(
            &rpc_path("buildrequests", s.r_nightly),
            "cancel",
            json!({"reason": "not today"}),
        )
        .await;
    assert_eq!(
        control.take_calls(),
        [Call::Cancel(s.r_nightly, "not today".into())]
    );

    // Workers, by id or name.
    for (key, method, action) in [
        (s.mac.to_string(), "pause", WorkerAction::Pause),
        ("mac".to_owned(), "unpause", WorkerAction::Unpause),
        ("local".to_owned(), "stop", WorkerAction::Stop),
        (s.local.to_string(), "kill", WorkerAction::Kill),
    ] {
        admin
            .rpc_ok(
                &rpc_path("workers", &key),
                method,
                json!({"reason": "maintenance"}),
            )
            .await;
        let worker = if key == "mac" || key == s.mac.to_string() {
            s.mac
        } else {
            s.local
        };
        assert_eq!(
            control.take_calls(),
            [Call::Worker(worker, action, "maintenance".into())]
        );
    }
    admin
        .rpc(&rpc_path("workers", "ghost"), "pause", json!({}))
        .await
        .rpc_error(404, -32600);

    // Masters: graceful stop by default, immediate stop, cancel; the result is the state.
    let m1 = rpc_path("masters", s.m1);
    let result = admin.rpc_ok(&m1, "stop", json!({})).await;
    assert_eq!(result, json!({"masterid": s.m1, "state": "draining"}));
    admin.rpc_ok(&m1, "stop", json!({"graceful": false})).await;
    admin.rpc_ok(&m1, "cancel_stop", json!({})).await;
    assert_eq!(
        control.take_calls(),
        [
            Call::Master(s.m1, MasterAction::Stop { graceful: true }),
            Call::Master(s.m1, MasterAction::Stop { graceful: false }),
            Call::Master(s.m1, MasterAction::CancelStop),
        ]
    );
    admin
        .rpc(&m1, "stop", json!({"graceful": "yes"}))
        .await
        .rpc_error(400, -32602);

    // Schedulers: Buildbot's `enable`, with a boolean.
    let sched = rpc_path("schedulers", 2);
    admin
        .rpc_ok(&sched, "enable", json!({"enabled": false}))
        .await;
    admin
        .rpc_ok(&sched, "enable", json!({"enabled": true}))
        .await;
    assert_eq!(
        control.take_calls(),
        [
            Call::SchedulerEnabled(2, false),
            Call::SchedulerEnabled(2, true)
        ]
    );
    admin
        .rpc(&sched, "enable", json!({"enabled": "no"}))
        .await
        .rpc_error(400, -32602);
    assert!(control.take_calls().is_empty());

    // A call with no params at all is fine.
    let r = admin
        .send(
            "POST",
            &m1,
            Some("application/json"),
            br#"{"jsonrpc": "2.0", "method": "cancel_stop", "id": "abc"}"#,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["id"], "abc");
    assert_eq!(
        control.take_calls(),
        [Call::Master(s.m1, MasterAction::CancelStop)]
    );

    // Unknown methods: -32601, with the id echoed; nothing reaches Control.
    let r = admin
        .rpc(&rpc_path("builds", s.b1), "frobnicate", json!({}))
        .await;
    let msg = r.rpc_error(200, -32601);
    assert!(msg.contains("stop, rebuild"), "{msg}");
    assert_eq!(r.json()["id"], 7);
    admin
        .rpc(force, "stop", json!({}))
        .await
        .rpc_error(200, -32601);
    assert!(control.take_calls().is_empty());
}

async fn control_errors(db: &TestDb) {
    let (store, s) = seed(db).await;
    let control = FakeControl::new(&s);
    let server = serve(&store, default_config(), control.clone()).await;
    let admin = Client::new(&server, Auth::Basic("admin", "secret"));
    let b1 = rpc_path("builds", s.b1);

    // ControlError -> HTTP status and JSON-RPC code.
    let cases: Vec<(Failure, u16, i64, &str)> = vec![
        (
            Box::new(|| ControlError::NotFound("no such build".into())),
            404,
            -32600,
            "no such build",
        ),
        (
            Box::new(|| ControlError::Invalid("bad reason".into())),
            400,
            -32602,
            "bad reason",
        ),
        (
            Box::new(|| ControlError::Conflict("build already finished".into())),
            409,
            -32000,
            "build already finished",
        ),
        (
            Box::new(|| ControlError::NotImplemented("not yet".into())),
            200,
            -32601,
            "not yet",
        ),
        (
            Box::new(|| {
                ControlError::Store(StoreError::Unavailable {
                    op: "stop_build",
                    attempts: 4,
                    source: sqlx::Error::PoolTimedOut,
                })
            }),
            503,
            -32603,
            "database unavailable",
        ),
        (
            Box::new(|| ControlError::Store(StoreError::Db(sqlx::Error::RowNotFound))),
            500,
            -32603,
            "internal error",
        ),
    ];
    for (failure, status, code, want) in cases {
        control.calls.lock().unwrap().clear();
        *control.fail_next.lock().unwrap() = Some(failure);
        let r = admin.rpc(&b1, "stop", json!({})).await;
        let msg = r.rpc_error(status, code);
        assert!(msg.contains(want), "{status}: {msg}");
        assert!(!msg.contains("no rows"), "no database details leak: {msg}");
        assert_eq!(r.json()["id"], 7);
        assert_eq!(control.take_calls().len(), 1);
    }
    control.fail_next(|| ControlError::Conflict("finished".into()));
    admin
        .rpc("/api/v2/forceschedulers/force", "force", json!({}))
        .await
        .rpc_error(409, -32000);
    assert_eq!(control.take_calls().len(), 1);

    // Malformed calls never reach Control.
    let send = |ct: Option<&'static str>, body: &'static [u8]| {
        let b1 = b1.clone();
        async move { admin.send("POST", &b1, ct, body).await }
    };
    let msg = send(Some("application/json"), b"{\"jsonrpc\": \"2.0\", \"meth")
        .await
        .rpc_error(400, -32700);
    assert!(msg.contains("JSON parse error"), "{msg}");
    let msg = send(
        Some("text/plain"),
        br#"{"jsonrpc":"2.0","method":"stop","id":1}"#,
    )
    .await
    .rpc_error(400, -32600);
    assert!(msg.contains("application/json"), "{msg}");
    send(None, br#"{"jsonrpc":"2.0","method":"stop","id":1}"#)
        .await
        .rpc_error(400, -32600);
    send(
        Some("application/json"),
        br#"[{"jsonrpc":"2.0","method":"stop","id":1}]"#,
    )
    .await
    .rpc_error(400, -32600);
    let r = send(
        Some("application/json"),
        br#"{"jsonrpc":"1.0","method":"stop","id":5}"#,
    )
    .await;
    r.rpc_error(400, -32600);
    assert_eq!(r.json()["id"], 5);
    send(
        Some("application/json"),
        br#"{"jsonrpc":"2.0","method":"stop","params":[1],"id":5}"#,
    )
    .await
    .rpc_error(400, -32600);
    admin
        .rpc(&rpc_path("builds", "abc"), "stop", json!({}))
        .await
        .rpc_error(404, -32600);
    assert!(control.take_calls().is_empty());

    // A body over 1 MiB: 413, whether announced or not, before anything else.
    let big = vec![b' '; api::MAX_BODY + 1];
    let r = admin
        .send("POST", &b1, Some("application/json"), &big)
        .await;
    let msg = r.rpc_error(413, -32600);
    assert!(msg.contains("larger than 1048576 bytes"), "{msg}");
    let head = format!(
        "POST {b1} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nAuthorization: Basic {}\r\n\r\n",
        base64(b"admin:secret")
    );
    let mut chunked = head.into_bytes();
    for _ in 0..2 {
        chunked.extend_from_slice(format!("{:x}\r\n", api::MAX_BODY / 2 + 1).as_bytes());
        chunked.extend(std::iter::repeat_n(b' ', api::MAX_BODY / 2 + 1));
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    exchange(server.addr, &chunked).await.rpc_error(413, -32600);
    let r = Client::new(&server, Auth::Basic("admin", "secret"))
        .send(
            "POST",
            "/change_hook/base",
            Some("application/x-www-form-urlencoded"),
            &big,
        )
        .await;
    r.error(413);
    // A body just under the limit is read (and here refused as JSON, not for its size).
    let mut padded = br#"{"jsonrpc":"2.0","method":"stop","id":1}"#.to_vec();
    padded.resize(api::MAX_BODY, b' ');
    let r = admin
        .send("POST", &b1, Some("application/json"), &padded)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(control.take_calls().len(), 1);

    // Wrong method or path: JSON-RPC-shaped errors for POSTs under /api.
    admin
        .rpc("/api/v2/builders", "force", json!({}))
        .await
        .rpc_error(405, -32600);
    admin
        .rpc("/api/v2/changes/1", "stop", json!({}))
        .await
        .rpc_error(405, -32600);
    admin
        .rpc("/api/v2/nope", "stop", json!({}))
        .await
        .rpc_error(404, -32600);
    let r = admin
        .send("PUT", &b1, Some("application/json"), b"{}")
        .await;
    r.error(405);
    assert!(control.take_calls().is_empty());
}

async fn authentication(db: &TestDb) {
    let (store, s) = seed(db).await;
    let builds = "/api/v2/builds";
    let force = "/api/v2/forceschedulers/force";
    let hook = "/change_hook/base";
    let form = Some("application/x-www-form-urlencoded");
    let unauthorized = |r: &Resp| {
        assert_eq!(r.status, 401, "{}", r.text());
        assert_eq!(
            r.header("www-authenticate"),
            Some("Basic realm=\"switchyard\""),
            "{r:?}"
        );
    };

    // public_read (the default): reads are open, control needs valid credentials.
    let control = FakeControl::new(&s);
    let server = serve(&store, default_config(), control.clone()).await;
    let anon = Client::new(&server, Auth::None);
    anon.rows(builds, "builds", 2).await;
    // With public_read the header is not even looked at.
    Client::new(&server, Auth::Basic("admin", "wrong"))
        .rows(builds, "builds", 2)
        .await;
    for client in [
        anon,
        Client::new(&server, Auth::Basic("admin", "wrong")),
        Client::new(&server, Auth::Basic("nobody", "secret")),
        Client::new(&server, Auth::Basic("admin", "")),
        Client::new(&server, Auth::Bearer("tok-0123456789abcdeX")),
        Client::new(&server, Auth::Bearer("")),
    ] {
        let r = client.rpc(force, "force", json!({})).await;
        unauthorized(&r);
        r.rpc_error(401, -32600);
        let r = client
            .rpc("/api/v2/schedulers/1", "enable", json!({"enabled": false}))
            .await;
        unauthorized(&r);
        r.rpc_error(401, -32600);
        let r = client.send("POST", hook, form, b"author=x").await;
        unauthorized(&r);
        r.error(401);
    }
    let msg = anon
        .rpc(force, "force", json!({}))
        .await
        .rpc_error(401, -32600);
    assert!(msg.contains("authentication required"), "{msg}");
    let msg = Client::new(&server, Auth::Basic("admin", "wrong"))
        .rpc(force, "force", json!({}))
        .await
        .rpc_error(401, -32600);
    assert_eq!(msg, "invalid credentials");
    assert!(
        control.take_calls().is_empty(),
        "refused calls never reach Control"
    );
    for client in [
        Client::new(&server, Auth::Basic("admin", "secret")),
        Client::new(&server, Auth::Bearer(TOKEN)),
    ] {
        client.rpc_ok(force, "force", json!({})).await;
        let r = client.send("POST", hook, form, b"author=x").await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(control.take_calls().len(), 4);
    // A malformed Authorization header is refused, not ignored.
    let r = exchange(
        server.addr,
        format!(
            "POST {force} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 2\r\n\
             Content-Type: application/json\r\nAuthorization: Basic %%%\r\n\r\n{{}}"
        )
        .as_bytes(),
    )
    .await;
    unauthorized(&r);
    drop(server);

    // Private reads: every GET needs credentials too.
    let private = config(&format!(
        r#"
        [api]
        public_read = false
        tokens = ["{TOKEN}"]
        [[api.users]]
        name = "admin"
        password = "secret"
        "#
    ));
    let server = serve(&store, private, FakeControl::new(&s)).await;
    let raw = format!("/api/v2/logs/{}/raw", s.log);
    for path in [
        builds,
        "/api/v2/workers",
        "/api/v2/masters/1",
        "/api/v2/forceschedulers",
        raw.as_str(),
    ] {
        let r = Client::new(&server, Auth::None).get(path).await;
        unauthorized(&r);
        r.error(401);
        let r = Client::new(&server, Auth::Basic("admin", "nope"))
            .get(path)
            .await;
        unauthorized(&r);
    }
    Client::new(&server, Auth::Basic("admin", "secret"))
        .rows(builds, "builds", 2)
        .await;
    Client::new(&server, Auth::Bearer(TOKEN))
        .rows(builds, "builds", 2)
        .await;
    drop(server);

    // No credentials configured: control and the hook are closed and say how to open them;
    // reads follow public_read.
    let control = FakeControl::new(&s);
    let server = serve(&store, config(""), control.clone()).await;
    let anon = Client::new(&server, Auth::None);
    anon.rows(builds, "builds", 2).await;
    for client in [anon, Client::new(&server, Auth::Basic("admin", "secret"))] {
        let r = client.rpc(force, "force", json!({})).await;
        unauthorized(&r);
        let msg = r.rpc_error(401, -32600);
        assert!(
            msg.contains("configure [master.api] tokens or users"),
            "{msg}"
        );
        let msg = client
            .send("POST", hook, form, b"author=x")
            .await
            .error(401);
        assert!(
            msg.contains("configure [master.api] tokens or users"),
            "{msg}"
        );
    }
    assert!(control.take_calls().is_empty());
    drop(server);
    let server = serve(
        &store,
        config("[api]\npublic_read = false"),
        FakeControl::new(&s),
    )
    .await;
    let msg = Client::new(&server, Auth::None)
        .get(builds)
        .await
        .error(401);
    assert!(
        msg.contains("configure [master.api] tokens or users"),
        "{msg}"
    );
}

async fn change_hook(db: &TestDb) {
    let (store, s) = seed(db).await;
    let control = FakeControl::new(&s);
    let server = serve(&store, default_config(), control.clone()).await;
    let c = Client::new(&server, Auth::Bearer(TOKEN));
    let hook = "/change_hook/base";
    let form = Some("application/x-www-form-urlencoded");

    // A form, as curl -d posts it.
    let r = c
        .send(
            "POST",
            hook,
            form,
            b"author=alice+%3Calice%40example.org%3E&comments=Fix+the+build&branch=main\
              &revision=0badc0de&revlink=https%3A%2F%2Fexample.org%2Fc%2F0badc0de\
              &when_timestamp=1700000123&category=fix&repository=https%3A%2F%2Fexample.org%2Fr.git\
              &codebase=core&project=proj&committer=bob\
              &properties=%7B%22ticket%22%3A+42%7D&files=%5B%22a.c%22%2C+%22b%2Fc.h%22%5D",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"changeids": [77], "buildsets": [78]}));
    let change = control.changes.lock().unwrap().remove(0);
    assert_eq!(change.author, "alice <alice@example.org>");
    assert_eq!(change.comments, "Fix the build");
    assert_eq!(change.branch.as_deref(), Some("main"));
    assert_eq!(change.revision.as_deref(), Some("0badc0de"));
    assert_eq!(
        change.revlink.as_deref(),
        Some("https://example.org/c/0badc0de")
    );
    assert_eq!(change.when_timestamp, Some(1_700_000_123));
    assert_eq!(change.category.as_deref(), Some("fix"));
    assert_eq!(change.repository, "https://example.org/r.git");
    assert_eq!(change.codebase, "core");
    assert_eq!(change.project, "proj");
    assert_eq!(change.committer.as_deref(), Some("bob"));
    assert_eq!(
        change.properties,
        [("ticket".to_owned(), json!(42))].into_iter().collect()
    );
    assert_eq!(change.files, ["a.c", "b/c.h"]);

    // JSON, with typed properties and files; what is left out is empty or unset.
    let body = json!({"author": "carol", "comments": "json", "branch": "dev",
                      "properties": {"deploy": true}, "files": ["x"], "revision": 17});
    let r = c
        .send(
            "POST",
            hook,
            Some("application/json"),
            body.to_string().as_bytes(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let change = control.changes.lock().unwrap().remove(0);
    assert_eq!(change.author, "carol");
    assert_eq!(change.revision.as_deref(), Some("17"));
    assert_eq!(change.properties["deploy"], json!(true));
    assert_eq!(change.files, ["x"]);
    assert_eq!(change.when_timestamp, None);
    assert_eq!(change.repository, "");
    assert_eq!(change.committer, None);
    // A form without a content type is a form (curl -d sets one; scripts may not).
    let r = c.send("POST", hook, None, b"author=dave").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        control.take_calls(),
        [
            Call::Change("alice <alice@example.org>".into()),
            Call::Change("carol".into()),
            Call::Change("dave".into())
        ]
    );

    // Bad changes: 400 naming the field; nothing reaches Control.
    for (ct, body, want) in [
        (form, &b"comments=no+author"[..], "'author' is required"),
        (
            form,
            b"author=a&properties=%5B1%5D",
            "'properties' must be a JSON object",
        ),
        (
            form,
            b"author=a&properties=nope",
            "'properties' is not valid JSON",
        ),
        (
            form,
            b"author=a&files=%7B%7D",
            "'files' must be a JSON list",
        ),
        (form, b"author=a&when_timestamp=soon", "not Unix seconds"),
        (
            Some("application/json"),
            b"{\"author\": ",
            "JSON parse error",
        ),
        (Some("application/json"), b"[1]", "must be an object"),
        (
            Some("application/json"),
            br#"{"author": ["x"]}"#,
            "'author' must be text",
        ),
    ] {
        let msg = c.send("POST", hook, ct, body).await.error(400);
        assert!(
            msg.contains(want),
            "{}: {msg}",
            String::from_utf8_lossy(body)
        );
    }
    let msg = c
        .send("POST", hook, Some("text/xml"), b"<change/>")
        .await
        .error(415);
    assert!(msg.contains("application/json"), "{msg}");
    let msg = c
        .send("POST", "/change_hook/github", form, b"author=a")
        .await
        .error(404);
    assert!(msg.contains("base"), "{msg}");
    assert!(control.take_calls().is_empty());

    // Control's refusals come back with their status.
    control.fail_next(|| ControlError::Invalid("no scheduler wants this change".into()));
    let msg = c.send("POST", hook, form, b"author=a").await.error(400);
    assert_eq!(msg, "no scheduler wants this change");
    control.fail_next(|| {
        ControlError::Store(StoreError::Unavailable {
            op: "add_change",
            attempts: 4,
            source: sqlx::Error::PoolTimedOut,
        })
    });
    c.send("POST", hook, form, b"author=a").await.error(503);
}
