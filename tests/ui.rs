//! The web UI and its event stream, end to end with real processes: `switchyard start`
//! nodes with a `[master]` section (SQLite), a real `switchyard worker` running real shell
//! steps, a real browser (Debian's Chromium, driven by `tests/js/ui.mjs` through
//! playwright-core) and raw HTTP clients reading `/api/v2/events`.
//!
//! The browser test needs what `./scripts/test` installs: Node.js (`SWITCHYARD_NODE`),
//! `tests/js/node_modules` and `/usr/bin/chromium`. Without them it fails, saying what is
//! missing; it never skips.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::browser::{png_size, run_bounded};
use common::masters::*;
use serde_json::Value;

const CHROMIUM: &str = "/usr/bin/chromium";
/// The viewport the browser script uses; its screenshots must have this size.
const VIEWPORT: (u32, u32) = (1280, 900);
/// The screenshots the browser script takes.
const SHOTS: [&str; 9] = [
    "overview",
    "unauthorized",
    "running",
    "build-log",
    "success",
    "worker-paused",
    "queue",
    "draining",
    "final",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A node with the master, the REST API and the UI (unless `extra` sets other roles), on
/// SQLite, with worker `w1` (one build at a time) and the builders the browser script uses.
fn ui_node(dir: &Path, name: &str, extra: &str) -> Node {
    ui_node_with_api(dir, name, extra, "")
}

/// [`ui_node`] with more `[master.api]` settings.
fn ui_node_with_api(dir: &Path, name: &str, extra: &str, api: &str) -> Node {
    let port = free_port();
    let builders = [
        // The marker first, `done` seconds later: the log must grow live in the page.
        ("ui-demo", "echo ui-build-marker; sleep 5; echo done"),
        ("long", "echo long; sleep 60"),
        // Configured, but run by no master here (run_builders below): its requests wait.
        ("orphan", "echo never"),
    ];
    let sets_roles = extra
        .lines()
        .any(|l| l.starts_with("roles") || l.starts_with("run_builders"));
    let extra = if sets_roles {
        extra.to_owned()
    } else {
        format!("{extra}\nrun_builders = [\"ui-demo\", \"long\"]")
    };
    let config = node_head(name, port, &[]) + &master_section(name, "", 1, 1, &builders, &extra);
    let config = config.replace("[master.api]\n", &format!("[master.api]\n{api}"));
    Node::start(dir, name, port, &config)
}

#[test]
fn a_browser_drives_the_ui_live() {
    let node_bin = match std::env::var("SWITCHYARD_NODE") {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "SWITCHYARD_NODE is not set: this test runs tests/js/ui.mjs with Node.js. Run \
             ./scripts/test (the README's test command), which sets it and installs the npm \
             packages and Chromium."
        ),
    };
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium); \
         ./scripts/test installs it when it is missing"
    );
    let playwright = repo().join("tests/js/node_modules/playwright-core");
    assert!(
        playwright.is_dir(),
        "{} is missing: run ./scripts/test (it runs npm install in tests/js)",
        playwright.display()
    );
    let dir = TempDir::new("ui-browser");
    let node = ui_node(dir.path(), "ui-1", "");
    let worker = Worker::start(dir.path(), "w1", "pw-w1", &[node.ws_url()]);
    worker.wait_connected(1, Duration::from_secs(30));
    let shots = dir.path().join("shots");
    std::fs::create_dir_all(&shots).unwrap();

    let (ok, output) = run_bounded(
        Command::new(&node_bin)
            .arg(repo().join("tests/js/ui.mjs"))
            .args(["--url", &format!("http://{}", node.addr())])
            .args(["--token", TOKEN, "--master", "ui-1", "--worker", "w1"])
            .arg("--shots")
            .arg(&shots)
            .args(["--chromium", CHROMIUM])
            .current_dir(repo().join("tests/js")),
        Duration::from_secs(300),
    );
    println!("--- ui.mjs\n{output}");
    assert!(
        ok,
        "the browser test failed (screenshots in {}):\n{output}\nnode log:\n{}",
        shots.display(),
        node.log_text()
    );
    assert!(output.contains("0 failed"), "{output}");

    // Each screenshot: a real PNG of the viewport, with something drawn on it (a blank
    // 1280x900 page compresses to a few KB).
    for name in SHOTS {
        let path = shots.join(format!("{name}.png"));
        let data = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("screenshot {} missing: {e}", path.display()));
        assert_eq!(
            png_size(&data),
            Some(VIEWPORT),
            "{} is not a {}x{} PNG",
            path.display(),
            VIEWPORT.0,
            VIEWPORT.1
        );
        assert!(
            data.len() > 20_000,
            "{} is {} bytes: a blank page?",
            path.display(),
            data.len()
        );
    }

    // What the page did, the API confirms: a SUCCESS ui-demo build, a CANCELLED long one.
    let builds = list(node.addr(), "builds", "");
    let builders = list(node.addr(), "builders", "");
    let builder_id = |name: &str| {
        builders
            .iter()
            .find(|b| b["name"] == name)
            .map(|b| b["builderid"].clone())
            .unwrap()
    };
    assert!(
        builds
            .iter()
            .any(|b| b["builderid"] == builder_id("ui-demo") && b["results"] == 0),
        "{builds:?}"
    );
    assert!(
        builds
            .iter()
            .any(|b| b["builderid"] == builder_id("long") && b["results"] == 6),
        "{builds:?}"
    );
    let masters = list(node.addr(), "masters", "");
    assert_eq!(masters[0]["state"], "running", "{masters:?}");
    drop(worker);
}

#[test]
fn the_ui_is_served_only_on_ui_nodes() {
    let dir = TempDir::new("ui-roles");
    let ui = ui_node(dir.path(), "ui-node", "");
    let builders_only = ui_node(dir.path(), "builders-node", "roles = [\"builders\"]");

    let (status, head, body) = raw_get(ui.addr(), "/");
    assert_eq!(status, 302, "{head}");
    assert!(
        head.to_ascii_lowercase().contains("location: /ui/"),
        "{head}"
    );
    let (status, head, body_ui) = raw_get(ui.addr(), "/ui/");
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("text/html"), "{head}");
    assert!(head
        .to_ascii_lowercase()
        .contains("content-security-policy"));
    assert!(body_ui.contains("<script src=\"app.js\""), "{body_ui}");
    for (path, kind) in [
        ("/ui/app.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
    ] {
        let (status, head, _) = raw_get(ui.addr(), path);
        assert_eq!(status, 200, "{path}: {head}");
        assert!(head.contains(kind), "{path}: {head}");
    }
    assert_eq!(raw_get(ui.addr(), "/ui/nope.js").0, 404);
    drop(body);
    // WebSocket upgrades on `/` still reach the router: a WAMP session joins there.
    for path in ["/", "/ws"] {
        let url = format!("ws://{}{path}", ui.addr());
        assert!(wamp_joins(&url), "no WAMP session on {url}");
    }

    // A builders-only node serves neither the page nor the stream nor the API; `/` is the
    // router's own answer.
    for path in ["/ui/", "/ui/app.js", "/api/v2/events", "/api/v2/builds"] {
        let (status, head, _) = raw_get(builders_only.addr(), path);
        assert_eq!(status, 404, "{path} on a builders node: {head}");
    }
    let (status, _, body) = raw_get(builders_only.addr(), "/");
    assert_eq!(status, 200);
    assert!(body.contains("WAMP v2 router"), "{body}");
    let url = format!("ws://{}/", builders_only.addr());
    assert!(wamp_joins(&url), "no WAMP session on {url}");
}

/// Whether an anonymous WAMP client joins realm `buildbot` at `url`.
fn wamp_joins(url: &str) -> bool {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            use switchyard_router::client::{Client, ClientOptions};
            let options = ClientOptions::new(url, "buildbot");
            let connect = Client::connect(&options);
            match tokio::time::timeout(Duration::from_secs(10), connect).await {
                Ok(Ok(c)) => {
                    let _ = c.leave().await;
                    true
                }
                _ => false,
            }
        })
    })
    .join()
    .unwrap()
}

/// A plain GET: status, head and (de-chunked) body.
fn raw_get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut r = ChunkedReader::new(body.as_bytes());
        let mut decoded = Vec::new();
        while let Ok(true) = r.read_chunk(&mut decoded) {}
        String::from_utf8_lossy(&decoded).into_owned()
    } else {
        body.to_owned()
    };
    (status, head.to_owned(), body)
}

/// Reads an HTTP/1.1 chunked body, chunk by chunk.
struct ChunkedReader<R: Read> {
    r: BufReader<R>,
}

impl<R: Read> ChunkedReader<R> {
    fn new(r: R) -> Self {
        ChunkedReader {
            r: BufReader::new(r),
        }
    }

    /// Appends the next chunk's data to `out`; Ok(false) at the end of the body.
    fn read_chunk(&mut self, out: &mut Vec<u8>) -> std::io::Result<bool> {
        let mut size = String::new();
        if self.r.read_line(&mut size)? == 0 {
            return Ok(false);
        }
        let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
            .map_err(|_| std::io::Error::other(format!("bad chunk size {size:?}")))?;
        if n == 0 {
            return Ok(false);
        }
        let mut data = vec![0; n + 2];
        self.r.read_exact(&mut data)?;
        out.extend_from_slice(&data[..n]);
        Ok(true)
    }
}

/// One thing read from an event stream.
#[derive(Debug, Clone, PartialEq)]
enum Sse {
    Event { name: String, data: String },
    Comment(String),
}

/// A raw client of `/api/v2/events`.
struct SseClient {
    status: u16,
    head: String,
    body: Option<ChunkedReader<TcpStream>>,
    decoded: Vec<u8>,
    socket: TcpStream,
}

impl SseClient {
    fn open(addr: SocketAddr, target: &str, bearer: Option<&str>) -> SseClient {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        Self::open_on(s, addr, target, bearer)
    }

    /// Sends the request on `s` and reads the response head.
    fn open_on(mut s: TcpStream, addr: SocketAddr, target: &str, bearer: Option<&str>) -> Self {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let auth = bearer
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(
            s,
            "GET {target} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n{auth}\r\n"
        )
        .unwrap();
        let socket = s.try_clone().unwrap();
        let mut r = BufReader::new(s);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let chunked = head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        SseClient {
            status,
            head,
            // The BufReader may hold bytes past the head: keep reading through it.
            body: chunked.then(|| ChunkedReader { r }),
            decoded: Vec::new(),
            socket,
        }
    }

    /// The next event or comment, waiting until `deadline`; None at the deadline or the end
    /// of the stream.
    fn next(&mut self, deadline: Instant) -> Option<Sse> {
        loop {
            if let Some(end) = find(&self.decoded, b"\n\n") {
                let block: Vec<u8> = self.decoded.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&block).into_owned();
                let (mut name, mut data, mut comment) = (None, Vec::new(), None);
                for line in text.lines() {
                    if let Some(c) = line.strip_prefix(':') {
                        comment = Some(c.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        name = Some(v.trim_start().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v).to_owned());
                    }
                }
                if !data.is_empty() {
                    return Some(Sse::Event {
                        name: name.unwrap_or_else(|| "message".into()),
                        data: data.join("\n"),
                    });
                }
                if let Some(c) = comment {
                    return Some(Sse::Comment(c));
                }
                continue; // a `retry:` block
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.socket
                .set_read_timeout(Some(left.max(Duration::from_millis(10))))
                .unwrap();
            match self.body.as_mut()?.read_chunk(&mut self.decoded) {
                Ok(true) => {}
                Ok(false) | Err(_) => return None,
            }
        }
    }

    /// The next event (comments skipped) until `deadline`.
    fn next_event(&mut self, deadline: Instant) -> Option<(String, String)> {
        loop {
            match self.next(deadline)? {
                Sse::Event { name, data } => return Some((name, data)),
                Sse::Comment(_) => continue,
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn secs(n: u64) -> Instant {
    Instant::now() + Duration::from_secs(n)
}

#[test]
fn the_event_stream_follows_a_forced_build_to_its_finish() {
    let dir = TempDir::new("ui-events");
    let node = ui_node(dir.path(), "ev-1", "");
    let worker = Worker::start(dir.path(), "w1", "pw-w1", &[node.ws_url()]);
    worker.wait_connected(1, Duration::from_secs(30));

    let mut all = SseClient::open(node.addr(), "/api/v2/events", None);
    assert_eq!(all.status, 200, "{}", all.head);
    let head = all.head.to_ascii_lowercase();
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    assert!(head.contains("cache-control: no-store"), "{head}");
    // The stream starts with its greeting comment (and a retry delay for EventSource).
    assert_eq!(
        all.next(secs(10)),
        Some(Sse::Comment("switchyard events".into()))
    );
    let mut builds_only = SseClient::open(node.addr(), "/api/v2/events?prefix=builds.", None);
    assert_eq!(builds_only.status, 200);
    assert!(builds_only.next(secs(10)).is_some());

    let brid = force(node.addr(), "ui-demo");
    // Everything under its routing key, data as the data API's dicts, until the build's
    // `finished`.
    let mut names = Vec::new();
    let mut log_text = String::new();
    let mut build_id = None;
    let finished = loop {
        let (name, data) = all
            .next_event(secs(60))
            .unwrap_or_else(|| panic!("the stream ended or stalled; got {names:?}"));
        let v: Value = serde_json::from_str(&data)
            .unwrap_or_else(|e| panic!("{name}: data is not JSON ({e}): {data}"));
        if name == format!("buildrequests.{brid}.claimed") {
            assert_eq!(v["buildrequestid"], brid);
            assert_eq!(v["claimed"], true);
        }
        if name.starts_with("builds.") && name.ends_with(".new") && name.split('.').count() == 3 {
            build_id = v["buildid"].as_i64();
            assert_eq!(v["buildrequestid"], brid, "{v}");
        }
        if name.starts_with("logs.") && name.ends_with(".append") {
            log_text.push_str(v["content"].as_str().unwrap_or(""));
        }
        let done = build_id.is_some_and(|id| name == format!("builds.{id}.finished"));
        names.push(name);
        if done {
            break v;
        }
    };
    assert_eq!(finished["results"], 0, "SUCCESS: {finished}");
    assert_eq!(finished["complete"], true);
    assert!(log_text.contains("ui-build-marker\n"), "{log_text}");
    assert!(log_text.contains("done\n"), "{log_text}");
    let id = build_id.unwrap();
    for want in [
        format!("buildrequests.{brid}.new"),
        format!("builds.{id}.new"),
        format!("workers.1.builds.{id}.new"),
    ] {
        assert!(names.contains(&want), "{want} not in {names:?}");
    }

    // The filtered stream saw the build's keys and nothing else.
    let mut filtered = Vec::new();
    while let Some((name, _)) = builds_only.next_event(secs(10)) {
        let end = name == format!("builds.{id}.finished");
        filtered.push(name);
        if end {
            break;
        }
    }
    assert!(
        filtered.contains(&format!("builds.{id}.new")),
        "{filtered:?}"
    );
    assert!(
        filtered.contains(&format!("builds.{id}.finished")),
        "{filtered:?}"
    );
    assert!(
        filtered.iter().all(|n| n.starts_with("builds.")),
        "{filtered:?}"
    );
    drop(worker);
}

#[test]
fn the_event_stream_needs_credentials_without_public_read() {
    let dir = TempDir::new("ui-events-auth");
    // Reads closed: the stream asks what the REST API's GETs ask.
    let node = ui_node_with_api(dir.path(), "closed", "", "public_read = false\n");

    let anon = SseClient::open(node.addr(), "/api/v2/events", None);
    assert_eq!(anon.status, 401, "{}", anon.head);
    assert!(anon
        .head
        .to_ascii_lowercase()
        .contains("www-authenticate: basic"));
    let wrong = SseClient::open(node.addr(), "/api/v2/events", Some("nope"));
    assert_eq!(wrong.status, 401);
    let wrong = SseClient::open(node.addr(), "/api/v2/events?access_token=nope", None);
    assert_eq!(wrong.status, 401);
    let mut header = SseClient::open(node.addr(), "/api/v2/events", Some(TOKEN));
    assert_eq!(header.status, 200, "{}", header.head);
    assert!(header.next(secs(10)).is_some());
    // An EventSource cannot send headers: the token may come in the query.
    let target = format!("/api/v2/events?prefix=masters.&access_token={TOKEN}");
    let mut query = SseClient::open(node.addr(), &target, None);
    assert_eq!(query.status, 200, "{}", query.head);
    assert!(query.next(secs(10)).is_some());
    // Only GET.
    let (status, v) = http(node.addr(), "POST", "/api/v2/events", Some(TOKEN), None);
    assert_eq!(status, 405, "{v}");
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Publishes `n` events of about `size` bytes each on `org.buildbot.mq.flood.<i>`, each
/// acknowledged by the router, then one on `org.buildbot.mq.flood.<last>`.
fn flood(url: &str, n: usize, size: usize, last: &str) {
    let (url, last) = (url.to_owned(), last.to_owned());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            use switchyard_router::client::{Client, ClientOptions};
            use switchyard_router::wire::{Dict, Payload, Value as W};
            let client = Client::connect(&ClientOptions::new(url, "buildbot"))
                .await
                .unwrap();
            let pad = "x".repeat(size);
            for i in 0..=n {
                let mut d = Dict::new();
                d.insert("i".into(), W::Int(i as i64));
                d.insert("pad".into(), W::from(pad.as_str()));
                let topic = if i == n {
                    format!("org.buildbot.mq.flood.{last}")
                } else {
                    format!("org.buildbot.mq.flood.{i}")
                };
                let mut options = Dict::new();
                options.insert("exclude_me".into(), W::Bool(false));
                // The stream shows what trusted publishers published: say who publishes.
                options.insert("disclose_me".into(), W::Bool(true));
                tokio::time::timeout(
                    Duration::from_secs(10),
                    client.publish_acknowledged(
                        &topic,
                        options,
                        Payload::new(vec![W::Dict(d)], Dict::new()),
                    ),
                )
                .await
                .expect("publish acknowledged in time")
                .unwrap();
            }
            let _ = client.leave().await;
        });
    })
    .join()
    .unwrap();
}

/// A client with a tiny receive buffer (4 KiB) that reads the head and then nothing.
fn stalled_client(addr: SocketAddr) -> SseClient {
    let s = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.set_recv_buffer_size(4096).unwrap();
            let s = socket.connect(addr).await.unwrap();
            let s = s.into_std().unwrap();
            s.set_nonblocking(false).unwrap();
            s
        })
    })
    .join()
    .unwrap();
    SseClient::open_on(s, addr, "/api/v2/events", None)
}

#[test]
fn a_stalled_event_client_costs_bounded_memory_and_gets_resync() {
    let dir = TempDir::new("ui-events-slow");
    // The flood comes from an anonymous client: this node trusts anonymous publishers like
    // masters (docs/security.md), as a Buildbot bus would, so that the flood reaches the
    // event stream whose memory is measured.
    let node = ui_node(dir.path(), "slow-1", "trusted_roles = [\"anonymous\"]");
    let pid = node.child.as_ref().unwrap().id();
    let url = format!("ws://{}/ws", node.addr());
    let (n, size) = (6000, 16 << 10);
    // The same flood without a client first: what the router and the allocator keep from a
    // flood is then in the baseline, and what is measured is what the stalled client costs.
    flood(&url, n, size, "warm");
    std::thread::sleep(Duration::from_millis(500));
    let before = rss_kib(pid);

    let mut stalled = stalled_client(node.addr());
    assert_eq!(stalled.status, 200, "{}", stalled.head);
    let started = Instant::now();
    flood(&url, n, size, "last");
    let published = started.elapsed();
    let after = rss_kib(pid);
    let grown_mib = after.saturating_sub(before) / 1024;
    println!(
        "published {n} events of {size} bytes ({} MiB) in {published:?}; node RSS {} → {} MiB",
        (n * size) >> 20,
        before / 1024,
        after / 1024
    );
    // Kept for the stalled client, that would be about 94 MiB more.
    assert!(
        grown_mib < 48,
        "the node grew by {grown_mib} MiB while a client was stalled"
    );

    // The node still answers, and a new client gets new events (once the renderer has
    // caught up with the flood, which an unoptimized build takes seconds to do).
    let (status, _) = http(node.addr(), "GET", "/api/v2/masters", None, None);
    assert_eq!(status, 200);
    let mut fresh = SseClient::open(node.addr(), "/api/v2/events?prefix=flood.", None);
    assert_eq!(fresh.status, 200);
    assert!(fresh.next(secs(10)).is_some());
    flood(&url, 0, 10, "marker");
    let deadline = secs(60);
    loop {
        let (name, _) = fresh
            .next_event(deadline)
            .expect("the marker event on the new stream");
        if name == "flood.marker" {
            break;
        }
    }

    // The stalled client, read at last: what was in flight, then `resync` for what it
    // missed (or, had it stalled past the timeout, the end of its stream).
    let deadline = secs(60);
    let mut seen = 0;
    let outcome = loop {
        match stalled.next(deadline) {
            Some(Sse::Event { name, data }) if name == "resync" => {
                let v: Value = serde_json::from_str(&data).unwrap();
                assert!(v["missed"].as_u64().unwrap() > 0, "{data}");
                break "resync";
            }
            Some(_) => seen += 1,
            None => break "closed",
        }
    };
    println!("the stalled client read {seen} events, then: {outcome}");
    assert!(
        seen < n,
        "the stalled client got {seen} of {n} events: nothing was skipped"
    );
}

#[test]
fn event_streams_are_limited_per_node() {
    let dir = TempDir::new("ui-events-limit");
    let node = ui_node(dir.path(), "limit-1", "");
    let mut open: Vec<SseClient> = (0..256)
        .map(|i| {
            let c = SseClient::open(node.addr(), "/api/v2/events", None);
            assert_eq!(c.status, 200, "stream {i}: {}", c.head);
            c
        })
        .collect();
    let refused = SseClient::open(node.addr(), "/api/v2/events", None);
    assert_eq!(refused.status, 503, "{}", refused.head);
    // Another kind of request still works.
    assert_eq!(raw_get(node.addr(), "/ui/").0, 200);
    // A client that leaves frees its place.
    drop(open.pop());
    let freed = Instant::now();
    // (The node notices at once, or at the next keep-alive it cannot send.)
    let again = wait_until(Duration::from_secs(30), "a free stream", || {
        let c = SseClient::open(node.addr(), "/api/v2/events", None);
        (c.status == 200).then_some(c)
    });
    println!("a stream was free again after {:?}", freed.elapsed());
    drop(again);
    drop(open);
}
