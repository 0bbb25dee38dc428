//! The peer mesh with real clients nobody here wrote: three real `switchyard` processes on
//! loopback form a mesh, then
//! - autobahn-python sessions spread over the three nodes run pub/sub (every match policy,
//!   `exclude_me: false`, acknowledge, eligible/exclude, disclose_me, order) and RPC (shared
//!   registrations, progressive results, cancel, timeout, callee loss)
//!   (`tests/interop/autobahn_mesh.py`);
//! - two real Buildbot 4.3 masters with `mq: wamp` on different nodes exchange their MQ
//!   messages through the mesh, observed from the third node
//!   (`tests/interop/buildbot_mesh.py`);
//! - an autobahn-python session on one node sees the meta API answer for the whole mesh,
//!   including while a node is SIGKILLed and restarted (`tests/interop/autobahn_mesh_meta.py`);
//! - nodes given each other's WAMP URLs (`--peer ws://HOST:PORT/ws`) form the mesh, and
//!   autobahn-python sessions, every new one on the next node and with no settle delay, see one
//!   router: shared subscription and registration IDs, calls and publications right after
//!   REGISTERED / SUBSCRIBED on another node, kills across nodes, meta events once each
//!   (`tests/interop/autobahn_mesh_one_router.py`).
//!
//! The clients are installed by `scripts/test` (the README's test command); run alone, these
//! tests fail with a message saying what is missing rather than skipping.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
const SECRET: &str = "interop mesh secret, long enough";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn required_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: the interop clients are missing. Run ./scripts/test (the README's \
             test command), which installs autobahn-python, Buildbot 4.3 and the npm clients."
        ),
    }
}

/// A running node, SIGKILLed on drop.
struct Node {
    name: &'static str,
    child: Child,
    port: u16,
    /// The process's stderr (log), collected by a thread.
    log: Arc<Mutex<String>>,
}

impl Node {
    /// `switchyard start --listen 127.0.0.1:0` as a mesh node dialing `peers`.
    fn start(name: &'static str, peers: &[u16]) -> Node {
        Node::start_with_path(name, peers, "")
    }

    /// [`Node::start`] with the peers' URLs ending in `path` (`/ws`: their WAMP URL).
    fn start_with_path(name: &'static str, peers: &[u16], path: &str) -> Node {
        let mut cmd = Command::new(BIN);
        cmd.args(["start", "--no-master", "--listen", "127.0.0.1:0"])
            .args(["--node-name", name, "--mesh-secret", SECRET]);
        for p in peers {
            cmd.args(["--peer", &format!("ws://127.0.0.1:{p}{path}")]);
        }
        let mut child = cmd
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn switchyard");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("switchyard listening on ")
            .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!("{name}: unexpected first line {line:?}")
            })
            .port();
        let log = Arc::new(Mutex::new(String::new()));
        let (mut err, sink) = (child.stderr.take().unwrap(), log.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Node {
            name,
            child,
            port,
            log,
        }
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log.lock().unwrap();
            let tail: String = {
                let lines: Vec<&str> = log.lines().collect();
                lines[lines.len().saturating_sub(60)..].join("\n")
            };
            eprintln!(
                "--- node {} (port {}) log tail:\n{tail}",
                self.name, self.port
            );
        }
    }
}

/// Peers a node reports as connected and synced (`switchyard mesh status`).
fn connected_peers(port: u16) -> Vec<String> {
    let Ok(out) = Command::new(BIN)
        .args(["mesh", "status", "--addr", &format!("127.0.0.1:{port}")])
        .output()
    else {
        return Vec::new();
    };
    if !out.status.success() {
        return Vec::new();
    }
    let Ok(st) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
        return Vec::new();
    };
    let mut v: Vec<String> = st["peers"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(|p| p["state"] == "connected" && p["synced"] == true)
        .filter_map(|p| p["node"].as_str().map(str::to_owned))
        .collect();
    v.sort();
    v
}

/// Three nodes: `a` alone, `b` and `c` given only `a` as peer; they must learn each other by
/// gossip. Returns once every node reports the two others connected and synced (bounded).
fn three_node_mesh() -> [Node; 3] {
    three_node_mesh_via("")
}

/// [`three_node_mesh`] with `a`'s URL given as `ws://127.0.0.1:PORT<path>`.
fn three_node_mesh_via(path: &str) -> [Node; 3] {
    let a = Node::start("a", &[]);
    let b = Node::start_with_path("b", &[a.port], path);
    let c = Node::start_with_path("c", &[a.port], path);
    let nodes = [a, b, c];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let views: Vec<Vec<String>> = nodes.iter().map(|n| connected_peers(n.port)).collect();
        let full = nodes.iter().zip(&views).all(|(n, v)| {
            let want: Vec<String> = ["a", "b", "c"]
                .iter()
                .filter(|x| **x != n.name)
                .map(|x| x.to_string())
                .collect();
            *v == want
        });
        if full {
            return nodes;
        }
        assert!(
            Instant::now() < deadline,
            "no full mesh of three within 20 s; connected peers: a {:?}, b {:?}, c {:?}",
            views[0],
            views[1],
            views[2]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs a client program to completion (bounded by `limit`), printing its output, and
/// asserts it exited 0.
fn run_client(what: &str, mut cmd: Command, limit: Duration) {
    let mut child = cmd
        .current_dir(repo())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    // Drain both pipes while the client runs, so a chatty client never blocks on a full pipe.
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = r.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out_t = drain(Box::new(child.stdout.take().unwrap()));
    let err_t = drain(Box::new(child.stderr.take().unwrap()));
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if started.elapsed() > limit {
            // SIGTERM first: buildbot_mesh.py then kills the masters it started.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let grace = Instant::now();
            while grace.elapsed() < Duration::from_secs(15) {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = out_t.join().unwrap();
    let stderr = err_t.join().unwrap();
    println!("--- {what} stdout\n{stdout}\n--- {what} stderr\n{stderr}");
    match status {
        None => {
            panic!("{what}: still running after {limit:?}\nstdout:\n{stdout}\nstderr:\n{stderr}")
        }
        Some(s) => assert!(
            s.success(),
            "{what} failed with {s}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        ),
    }
}

/// Runs a client program that asks the harness for actions: each stdout line `@@ REQUEST`
/// is answered on its stdin with `on_request(REQUEST)`. Bounded by `limit`; asserts exit 0.
fn run_interactive(
    what: &str,
    mut cmd: Command,
    limit: Duration,
    mut on_request: impl FnMut(&str) -> String,
) {
    use std::io::Write;
    use std::sync::mpsc;
    let mut child = cmd
        .current_dir(repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let out = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut err = child.stderr.take().unwrap();
    let err_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let deadline = Instant::now() + limit;
    let mut stdout = String::new();
    let mut timed_out = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                println!("{what}: {line}");
                stdout.push_str(&line);
                stdout.push('\n');
                if let Some(request) = line.strip_prefix("@@ ") {
                    let reply = on_request(request);
                    println!("{what}: harness -> {reply}");
                    let _ = writeln!(stdin, "{reply}").and_then(|_| stdin.flush());
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                let _ = child.kill();
                break;
            }
        }
    }
    let status = child.wait().unwrap();
    let stderr = err_t.join().unwrap();
    assert!(
        !timed_out,
        "{what}: still running after {limit:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        status.success(),
        "{what} failed with {status}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
}

fn python(script: &str, args: &[String]) -> Command {
    let mut cmd = Command::new(required_env("SWITCHYARD_INTEROP_PYTHON"));
    cmd.arg(repo().join("tests/interop").join(script))
        .args(args);
    cmd
}

fn url_args(nodes: &[Node]) -> Vec<String> {
    nodes
        .iter()
        .flat_map(|n| ["--url".to_owned(), n.url()])
        .collect()
}

#[test]
fn autobahn_python_sessions_on_different_nodes() {
    let py = required_env("SWITCHYARD_INTEROP_PYTHON");
    assert!(!py.is_empty());
    let nodes = three_node_mesh();
    let mut args = url_args(&nodes);
    args.extend(["--realm".into(), "realm1".into()]);
    run_client(
        "autobahn_mesh.py",
        python("autobahn_mesh.py", &args),
        Duration::from_secs(300),
    );
    // The mesh is still whole after all that traffic.
    for n in &nodes {
        assert_eq!(
            connected_peers(n.port).len(),
            2,
            "node {} lost a peer",
            n.name
        );
    }
}

#[test]
fn buildbot_masters_on_different_nodes_exchange_mq_messages() {
    let py = required_env("SWITCHYARD_INTEROP_PYTHON");
    assert!(!py.is_empty());
    let nodes = three_node_mesh();
    let mut args = url_args(&nodes);
    args.extend(["--realm".into(), "buildbot".into()]);
    run_client(
        "buildbot_mesh.py",
        python("buildbot_mesh.py", &args),
        Duration::from_secs(400),
    );
}

#[test]
fn autobahn_python_sees_the_meta_api_answer_for_the_mesh() {
    let py = required_env("SWITCHYARD_INTEROP_PYTHON");
    assert!(!py.is_empty());
    let mut nodes = three_node_mesh();
    let mut args = url_args(&nodes);
    args.extend(["--realm".into(), "realm1".into()]);
    let a_port = nodes[0].port;
    run_interactive(
        "autobahn_mesh_meta.py",
        python("autobahn_mesh_meta.py", &args),
        Duration::from_secs(180),
        |request| match request {
            "kill C" => {
                // Child::kill is SIGKILL: no goodbye, the kernel closes the sockets.
                nodes[2].child.kill().unwrap();
                nodes[2].child.wait().unwrap();
                "killed".into()
            }
            "restart C" => {
                nodes[2] = Node::start("c", &[a_port]);
                format!("restarted {}", nodes[2].url())
            }
            other => format!("unknown request {other:?}"),
        },
    );
    // The restarted node is part of the full mesh again.
    let deadline = Instant::now() + Duration::from_secs(20);
    while connected_peers(nodes[2].port) != ["a", "b"] {
        assert!(
            Instant::now() < deadline,
            "restarted c not in the mesh: {:?}",
            connected_peers(nodes[2].port)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Nodes given `a`'s WAMP URL (`ws://127.0.0.1:PORT/ws`) as peer form the full mesh; then
/// autobahn-python sessions spread over it see one router (tests/interop/
/// autobahn_mesh_one_router.py: shared IDs, read-your-writes 100 times in a row, kills and
/// meta events across nodes, an anonymous kill refused on the master's realm).
#[test]
fn autobahn_python_sees_one_router_across_three_nodes() {
    let py = required_env("SWITCHYARD_INTEROP_PYTHON");
    assert!(!py.is_empty());
    let nodes = three_node_mesh_via("/ws");
    let mut args = url_args(&nodes);
    args.extend(["--realm".into(), "realm1".into()]);
    args.extend(["--guarded-realm".into(), "buildbot".into()]);
    run_client(
        "autobahn_mesh_one_router.py",
        python("autobahn_mesh_one_router.py", &args),
        Duration::from_secs(180),
    );
    for n in &nodes {
        assert_eq!(
            connected_peers(n.port).len(),
            2,
            "node {} lost a peer",
            n.name
        );
    }
}
