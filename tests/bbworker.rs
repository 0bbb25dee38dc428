//! Stock `buildbot-worker` 4.3.0 (from PyPI, in the interop venv) as a switchyard worker,
//! with real processes: `buildbot-worker create-worker --protocol msgpack_experimental_v7`
//! then `buildbot-worker start --nodaemon`, connected to a node's buildbot worker port.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::masters::*;
use serde_json::Value;

/// The venv's `buildbot-worker` script.
fn buildbot_worker_bin() -> PathBuf {
    let py = std::env::var("SWITCHYARD_INTEROP_PYTHON").unwrap_or_else(|_| {
        panic!(
            "SWITCHYARD_INTEROP_PYTHON is not set: run tests/interop/setup.sh .venv-interop and \
             set it to .venv-interop/bin/python (scripts/test does both)"
        )
    });
    let bin = Path::new(&py).parent().unwrap().join("buildbot-worker");
    assert!(
        bin.exists(),
        "{} is missing: tests/interop/setup.sh installs buildbot-worker==4.3.0",
        bin.display()
    );
    bin
}

/// A stock buildbot-worker: its directory and, once started, its process group.
struct StockWorker {
    dir: PathBuf,
    child: Option<Child>,
}

impl StockWorker {
    /// `buildbot-worker create-worker --protocol msgpack_experimental_v7 DIR 127.0.0.1:PORT
    /// NAME PASSWORD`.
    fn create(parent: &Path, tag: &str, name: &str, password: &str, port: u16) -> StockWorker {
        Self::create_with(parent, tag, name, password, port, "msgpack_experimental_v7")
    }

    /// A worker with Buildbot's default protocol, Perspective Broker.
    fn create_pb(parent: &Path, tag: &str, name: &str, password: &str, port: u16) -> StockWorker {
        Self::create_with(parent, tag, name, password, port, "pb")
    }

    fn create_with(
        parent: &Path,
        tag: &str,
        name: &str,
        password: &str,
        port: u16,
        protocol: &str,
    ) -> StockWorker {
        let dir = parent.join(format!("bbw-{tag}"));
        let out = Command::new(buildbot_worker_bin())
            .args(["create-worker", "--protocol", protocol])
            .arg(&dir)
            .arg(format!("127.0.0.1:{port}"))
            .args([name, password])
            .output()
            .expect("buildbot-worker runs");
        assert!(
            out.status.success(),
            "create-worker: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        StockWorker { dir, child: None }
    }

    /// `buildbot-worker start --nodaemon DIR`, in a process group of its own.
    fn start(&mut self) {
        let log = std::fs::File::create(self.dir.join("stdout.log")).unwrap();
        let child = Command::new(buildbot_worker_bin())
            .args(["start", "--nodaemon"])
            .arg(&self.dir)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// SIGKILL to the whole process group (the worker and the commands it runs).
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", c.id())])
                .status();
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
        let mut s = std::fs::read_to_string(self.dir.join("twistd.log")).unwrap_or_default();
        s.push_str(&std::fs::read_to_string(self.dir.join("stdout.log")).unwrap_or_default());
        s
    }
}

impl Drop for StockWorker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `connected_to` entries of worker `name`, over the API.
fn connections(addr: SocketAddr, name: &str) -> Vec<Value> {
    list(addr, "workers", "")
        .into_iter()
        .find(|w| w["name"] == name)
        .and_then(|w| w["connected_to"].as_array().cloned())
        .unwrap_or_default()
}

fn wait_connected(addr: SocketAddr, w: &StockWorker, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while connections(addr, name).is_empty() {
        assert!(
            Instant::now() < deadline,
            "stock worker {name} did not connect; its log:\n{}",
            w.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits for a build request to complete; returns it.
fn wait_request(addr: SocketAddr, brid: i64, timeout: Duration) -> Value {
    wait_until(timeout, &format!("request {brid} to complete"), || {
        let (_, v) = http(
            addr,
            "GET",
            &format!("/api/v2/buildrequests/{brid}"),
            None,
            None,
        );
        (v["buildrequests"][0]["complete"] == true).then(|| v["buildrequests"][0].clone())
    })
}

fn builds_of(addr: SocketAddr, brid: i64) -> Vec<Value> {
    list(addr, "builds", &format!("&buildrequestid={brid}"))
}

fn head(port: u16, bbport: u16) -> String {
    format!(
        "listen = \"127.0.0.1:{port}\"\n[master]\nname = \"solo\"\ndata_dir = \"data\"\n\
         heartbeat_interval_s = 0.5\nexpiry_timeout_s = 4\npoll_interval_s = 0.5\n\
         [master.api]\ntokens = [\"{TOKEN}\"]\n\
         [master.buildbot_workers]\nlisten = \"127.0.0.1:{bbport}\"\n"
    )
}

fn builder(name: &str, workers: &str, steps: &str) -> String {
    format!("[[master.builders]]\nname = \"{name}\"\nworkers = [{workers}]\n{steps}")
}

fn shell_step(name: &str, cmd: &str, extra: &str) -> String {
    format!("[[master.builders.steps]]\nname = \"{name}\"\nshell = {cmd:?}\n{extra}")
}

fn force_scheduler(builders: &[&str]) -> String {
    let list = builders
        .iter()
        .map(|b| format!("\"{b}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!("[[master.schedulers]]\nname = \"force\"\ntype = \"force\"\nbuilders = [{list}]\n")
}

/// Connects with valid credentials, sends a frame that is not msgpack, and expects the
/// connection closed.
fn garbage_client(bbport: u16, name: &str, password: &str) {
    use base64::Engine as _;
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut req = format!("ws://127.0.0.1:{bbport}/")
            .into_client_request()
            .unwrap();
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{name}:{password}"));
        req.headers_mut()
            .insert("authorization", format!("Basic {auth}").parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        ws.send(Message::Binary(vec![0xc1, 0xff, 0x00].into()))
            .await
            .unwrap();
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(Ok(m)) = ws.next().await {
                if m.is_close() {
                    break;
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the connection was not closed");
    });
}

/// Shell output streamed in order with nothing lost, a failing command, a timeout, a git
/// checkout of a local repository, a cancel that kills the process on the worker; the
/// worker's info in the API; a wrong password refused (and not logged); an anonymous WAMP
/// client refused the stock worker's procedures.
#[test]
fn a_stock_buildbot_worker_runs_shell_git_failing_timed_out_and_cancelled_steps() {
    let dir = TempDir::new("bbworker");
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README"), "checked out by a stock worker\n").unwrap();
    git(&repo, &["add", "README"]);
    git(&repo, &["commit", "-q", "-m", "first"]);
    let pidfile = dir.path().join("hang.pid");

    let (port, bbport) = (free_port(), free_port());
    let bb = "\"bb1\"";
    let mut config = head(port, bbport);
    config.push_str("[[master.workers]]\nname = \"bb1\"\npassword = \"pw-bb1\"\n");
    config.push_str(&builder(
        "out",
        bb,
        &shell_step(
            "print",
            "for i in $(seq 1 3000); do echo \"out $i\"; \
             if [ $((i % 500)) = 0 ]; then echo \"err $i\" >&2; fi; done",
            "",
        ),
    ));
    config.push_str(&builder(
        "fail",
        bb,
        &shell_step("fail", "echo about to fail; exit 3", ""),
    ));
    config.push_str(&builder(
        "slow",
        bb,
        &shell_step("nap", "sleep 30", "timeout_s = 1\n"),
    ));
    config.push_str(&builder(
        "hang",
        bb,
        &shell_step(
            "hang",
            &format!("echo $$ > {}; exec sleep 300", pidfile.display()),
            "",
        ),
    ));
    config.push_str(&builder(
        "app",
        bb,
        &format!(
            "[[master.builders.steps]]\nname = \"checkout\"\ngit = {{ repo = {:?}, branch = \"main\" }}\n{}",
            repo.display().to_string(),
            shell_step("show", "cat README; git log -1 --format=%s", "")
        ),
    ));
    config.push_str(&force_scheduler(&["out", "fail", "slow", "hang", "app"]));
    let node = Node::start(dir.path(), "solo", port, &config);
    let addr = node.addr();
    assert!(node
        .stdout
        .wait_for(
            &format!("buildbot workers listening on 127.0.0.1:{bbport}"),
            0,
            Duration::from_secs(10)
        )
        .is_some());
    let mut w = StockWorker::create(dir.path(), "good", "bb1", "pw-bb1", bbport);
    w.start();
    // A worker left on Buildbot's default protocol (Perspective Broker) is told what to do.
    let mut pb = StockWorker::create_pb(dir.path(), "pb", "bb1", "pw-bb1", bbport);
    pb.start();
    wait_connected(addr, &w, "bb1");

    // Its info, from get_worker_info.
    let info = list(addr, "workers", "")
        .into_iter()
        .find(|w| w["name"] == "bb1")
        .unwrap()["workerinfo"]
        .clone();
    assert_eq!(info["version"], "4.3.0", "{info}");
    assert_eq!(info["kind"], "buildbot-worker", "{info}");
    assert!(info.get("environ").is_none(), "{info}");

    // Garbage from an authenticated client drops that connection only.
    garbage_client(bbport, "bb1", "pw-bb1");
    wait_until(
        Duration::from_secs(10),
        "the malformed frame logged",
        || node.log_text().contains("malformed frame").then_some(()),
    );
    assert_eq!(connections(addr, "bb1").len(), 1, "the real worker stays");

    let out = force(addr, "out");
    let fail = force(addr, "fail");
    let slow = force(addr, "slow");
    let app = force(addr, "app");

    let r = wait_request(addr, out, Duration::from_secs(60));
    assert_eq!(r["results"], 0, "{r}");
    let bid = builds_of(addr, out)[0]["buildid"].as_i64().unwrap();
    let text = step_log(addr, bid, "print");
    let outs: Vec<&str> = text.lines().filter(|l| l.starts_with("out ")).collect();
    let expected: Vec<String> = (1..=3000).map(|i| format!("out {i}")).collect();
    assert_eq!(outs, expected, "every stdout line, in order");
    for i in (500..=3000).step_by(500) {
        assert!(text.contains(&format!("\nerr {i}\n")), "stderr line {i}");
    }

    let r = wait_request(addr, fail, Duration::from_secs(30));
    assert_eq!(r["results"], 2, "FAILURE: {r}");
    let bid = builds_of(addr, fail)[0]["buildid"].as_i64().unwrap();
    let state = steps(addr, bid)[0]["state_string"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(state.contains("exit code 3"), "{state}");
    assert!(step_log(addr, bid, "fail").contains("about to fail"));

    let r = wait_request(addr, slow, Duration::from_secs(30));
    assert_eq!(r["results"], 2, "FAILURE: {r}");
    let bid = builds_of(addr, slow)[0]["buildid"].as_i64().unwrap();
    let state = steps(addr, bid)[0]["state_string"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(state.contains("timed out"), "{state}");

    let r = wait_request(addr, app, Duration::from_secs(30));
    assert_eq!(r["results"], 0, "{r}");
    let bid = builds_of(addr, app)[0]["buildid"].as_i64().unwrap();
    let text = step_log(addr, bid, "show");
    assert!(text.contains("checked out by a stock worker"), "{text}");
    assert!(text.contains("\nfirst\n"), "{text}");

    // Cancel: the process on the worker is gone.
    let hang = force(addr, "hang");
    let pid: i32 = wait_until(Duration::from_secs(30), "the hang step to start", || {
        std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok())
    });
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    let bid = builds_of(addr, hang)[0]["buildid"].as_i64().unwrap();
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "stop",
        "params": {"reason": "test cancel"}});
    let (status, v) = http(
        addr,
        "POST",
        &format!("/api/v2/builds/{bid}"),
        Some(TOKEN),
        Some(&body),
    );
    assert_eq!(status, 200, "{v}");
    let r = wait_request(addr, hang, Duration::from_secs(30));
    assert_eq!(r["results"], 6, "CANCELLED: {r}");
    wait_until(
        Duration::from_secs(10),
        "the cancelled process to be gone",
        || (!Path::new(&format!("/proc/{pid}")).exists()).then_some(()),
    );

    // A wrong password is refused, and not logged.
    let mut bad = StockWorker::create(dir.path(), "bad", "bb1", "wrong-secret-42", bbport);
    bad.start();
    wait_until(Duration::from_secs(30), "the refusal in the log", || {
        node.log_text()
            .contains("buildbot worker refused")
            .then_some(())
    });
    bad.kill();
    assert!(!node.log_text().contains("wrong-secret-42"));
    assert_eq!(connections(addr, "bb1").len(), 1);

    // Only masters may call the stock worker's procedures.
    let url = node.ws_url();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        use switchyard_router::client::{Client, ClientError, ClientOptions};
        use switchyard_router::wire::{Dict, Payload};
        let c = Client::connect(&ClientOptions::new(url, "buildbot"))
            .await
            .unwrap();
        for p in ["run", "info", "shutdown", "reconnect"] {
            let r = c
                .call(&format!("switchyard.worker.bb1.{p}"), Dict::new(), Payload::default())
                .await;
            assert!(
                matches!(&r, Err(ClientError::Wamp { uri, .. }) if uri == "wamp.error.not_authorized"),
                "{p}: {r:?}"
            );
        }
    });
    wait_until(
        Duration::from_secs(20),
        "the hint for the pb worker",
        || {
            node.log_text()
                .contains("--protocol msgpack_experimental_v7")
                .then_some(())
        },
    );
    pb.kill();

    // Pause and unpause, then stop: Buildbot's `shutdown` ends the worker process.
    let wid = list(addr, "workers", "")
        .into_iter()
        .find(|w| w["name"] == "bb1")
        .unwrap()["workerid"]
        .as_i64()
        .unwrap();
    let act = |method: &str| {
        let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method});
        let (status, v) = http(
            addr,
            "POST",
            &format!("/api/v2/workers/{wid}"),
            Some(TOKEN),
            Some(&body),
        );
        assert_eq!(status, 200, "{method}: {v}");
    };
    act("pause");
    let paused = force(addr, "fail");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        builds_of(addr, paused).is_empty(),
        "a paused worker gets no build"
    );
    act("unpause");
    assert_eq!(
        wait_request(addr, paused, Duration::from_secs(30))["results"],
        2
    );
    act("stop");
    let child = w.child.as_mut().unwrap();
    wait_until(Duration::from_secs(20), "the stock worker to exit", || {
        child.try_wait().ok().flatten()
    });
    wait_until(
        Duration::from_secs(10),
        "the worker shown disconnected",
        || connections(addr, "bb1").is_empty().then_some(()),
    );
}

/// The stock worker SIGKILLed mid-build: the build ends RETRY, and the request runs again,
/// once, on a switchyard worker of the same builder.
#[test]
fn a_stock_worker_killed_mid_build_retries_on_a_switchyard_worker() {
    let dir = TempDir::new("bbworker-kill");
    let (port, bbport) = (free_port(), free_port());
    let mut config = head(port, bbport);
    config.push_str("[[master.workers]]\nname = \"bb1\"\npassword = \"pw-bb1\"\n");
    config.push_str("[[master.workers]]\nname = \"w1\"\npassword = \"pw-w1\"\n");
    config.push_str(&builder(
        "long",
        "\"bb1\", \"w1\"",
        &shell_step("nap", "echo begin; sleep 4; echo end", ""),
    ));
    config.push_str(&force_scheduler(&["long"]));
    let node = Node::start(dir.path(), "solo", port, &config);
    let addr = node.addr();
    let mut bb = StockWorker::create(dir.path(), "bb1", "bb1", "pw-bb1", bbport);
    bb.start();
    wait_connected(addr, &bb, "bb1");
    let brid = force(addr, "long");
    let first = wait_until(Duration::from_secs(30), "the build to start", || {
        builds_of(addr, brid).first().cloned()
    });
    let bid = first["buildid"].as_i64().unwrap();
    wait_until(Duration::from_secs(30), "the step's first output", || {
        steps(addr, bid)
            .first()
            .is_some_and(|_| step_log(addr, bid, "nap").contains("begin"))
            .then_some(())
    });
    bb.kill();
    let first = wait_until(Duration::from_secs(30), "the build to end", || {
        builds_of(addr, brid)
            .first()
            .filter(|b| b["complete"] == true)
            .cloned()
    });
    assert_eq!(first["results"], 5, "RETRY: {first}");
    let w = Worker::start(dir.path(), "w1", "pw-w1", &[node.ws_url()]);
    w.wait_connected(1, Duration::from_secs(30));
    let r = wait_request(addr, brid, Duration::from_secs(60));
    assert_eq!(r["results"], 0, "{r}");
    let builds = builds_of(addr, brid);
    let runs: Vec<i64> = builds
        .iter()
        .map(|b| b["results"].as_i64().unwrap())
        .collect();
    assert_eq!(runs, [5, 0], "one RETRY, then one SUCCESS");
    let w1 = list(addr, "workers", "")
        .into_iter()
        .find(|w| w["name"] == "w1")
        .unwrap()["workerid"]
        .clone();
    assert_eq!(
        builds[1]["workerid"], w1,
        "the retry ran on the switchyard worker"
    );
}

/// A TCP forwarder in front of `backends`: each connection goes to the first that accepts.
fn forwarder(backends: Vec<SocketAddr>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let Some(server) = backends
                .iter()
                .find_map(|b| TcpStream::connect_timeout(b, Duration::from_secs(1)).ok())
            else {
                continue; // dropped: the client retries
            };
            for (mut from, mut to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    loop {
                        match from.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if to.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Both);
                    let _ = from.shutdown(std::net::Shutdown::Both);
                });
            }
        }
    });
    addr
}

/// Two meshed nodes behind a TCP forwarder; the one the stock worker is connected to (whose
/// build the other node's master runs through the mesh) is stopped gracefully mid-build: the
/// build finishes, the worker reconnects through the forwarder to the other node and builds
/// again.
#[test]
fn a_graceful_stop_finishes_the_build_and_the_stock_worker_moves_to_the_other_node() {
    let dir = TempDir::new("bbworker-move");
    let db = PgDb::create();
    let (pa, pb, bba, bbb) = (free_port(), free_port(), free_port(), free_port());
    let builders = [("slow", "echo start; sleep 3; echo done")];
    // a runs no builder itself: b's master drives the stock worker through a's node.
    let section = |name: &str, bbport: u16, run: &str| {
        master_section(
            name,
            &db.url,
            1,
            1,
            &builders,
            &format!("{run}[master.buildbot_workers]\nlisten = \"127.0.0.1:{bbport}\"\n"),
        )
    };
    let config_a = node_head("a", pa, &[pb]) + &section("a", bba, "run_builders = []\n");
    let config_b = node_head("b", pb, &[pa]) + &section("b", bbb, "");
    let mut a = Node::start(dir.path(), "a", pa, &config_a);
    let b = Node::start(dir.path(), "b", pb, &config_b);
    let front = forwarder(vec![
        format!("127.0.0.1:{bba}").parse().unwrap(),
        format!("127.0.0.1:{bbb}").parse().unwrap(),
    ]);
    let mut w = StockWorker::create(dir.path(), "w1", "w1", "pw-w1", front.port());
    w.start();
    wait_connected(a.addr(), &w, "w1");
    let master_id = |addr: SocketAddr, name: &str| {
        list(addr, "masters", "")
            .into_iter()
            .find(|m| m["name"] == name)
            .unwrap()["masterid"]
            .clone()
    };
    let (ida, idb) = (master_id(b.addr(), "a"), master_id(b.addr(), "b"));
    assert_eq!(
        connections(b.addr(), "w1")[0]["masterid"],
        ida,
        "behind the forwarder, on a"
    );

    let first = force(b.addr(), "slow");
    let build = wait_until(Duration::from_secs(30), "the build to start", || {
        builds_of(b.addr(), first).first().cloned()
    });
    assert_eq!(
        build["masterid"], idb,
        "b runs it, on the worker connected to a"
    );
    std::thread::sleep(Duration::from_millis(500));
    let exit = a.terminate(Duration::from_secs(60));
    assert!(
        exit.is_some_and(|s| s.success()),
        "{exit:?}\n{}",
        a.log_text()
    );
    // a's bridge closed the connection once the build was done (the master's redirect).
    assert!(
        a.log_text().contains("drained for a reconnect"),
        "{}",
        a.log_text()
    );
    let r = wait_request(b.addr(), first, Duration::from_secs(30));
    assert_eq!(r["results"], 0, "the build finished: {r}");
    assert_eq!(builds_of(b.addr(), first).len(), 1, "no retry");
    assert_eq!(build["workerid"], builds_of(b.addr(), first)[0]["workerid"]);

    wait_until(Duration::from_secs(60), "the worker on b", || {
        connections(b.addr(), "w1")
            .iter()
            .any(|c| c["masterid"] == idb)
            .then_some(())
    });
    let second = force(b.addr(), "slow");
    let r = wait_request(b.addr(), second, Duration::from_secs(60));
    assert_eq!(r["results"], 0, "{r}");
    assert_eq!(builds_of(b.addr(), second)[0]["masterid"], idb);
}

/// With `[transport.tls]` the port serves TLS: a stock worker with a Twisted `tls:`
/// connection string (trusting the node's certificate) connects and is seen by the master.
#[test]
fn a_stock_worker_connects_over_tls() {
    let dir = TempDir::new("bbworker-tls");
    let cert = common::tls::TestCert::generate();
    let ca = dir.path().join("ca");
    std::fs::create_dir_all(&ca).unwrap();
    std::fs::write(ca.join("node.pem"), &cert.cert_pem).unwrap();
    std::fs::write(dir.path().join("node.pem"), &cert.cert_pem).unwrap();
    std::fs::write(dir.path().join("node.key"), &cert.key_pem).unwrap();
    let (port, bbport) = (free_port(), free_port());
    // The listen line, the node's TLS, then the master (whose head starts with `listen`).
    let master = head(port, bbport);
    let (listen, rest) = master.split_once('\n').unwrap();
    let mut config =
        format!("{listen}\n[transport.tls]\ncert = \"node.pem\"\nkey = \"node.key\"\n{rest}");
    config.push_str("[[master.workers]]\nname = \"bb1\"\npassword = \"pw-bb1\"\n");
    let node = Node::start(dir.path(), "solo", port, &config);
    let dirw = dir.path().join("bbw-tls");
    let out = Command::new(buildbot_worker_bin())
        .args(["create-worker", "--protocol", "msgpack_experimental_v7"])
        .arg(format!(
            "--connection-string=tls:host=127.0.0.1:port={bbport}:trustRoots={}",
            ca.display()
        ))
        .arg(&dirw)
        .arg(format!("127.0.0.1:{bbport}"))
        .args(["bb1", "pw-bb1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut w = StockWorker {
        dir: dirw,
        child: None,
    };
    w.start();
    let deadline = Instant::now() + Duration::from_secs(30);
    // The engine's presence: the bridged session registered and answered `info`.
    while !node.log_text().contains("worker connected worker=\"bb1\"") {
        assert!(
            Instant::now() < deadline,
            "the worker did not connect over TLS; node log:\n{}\nworker log:\n{}",
            node.log_text(),
            w.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(node.log_text().contains("buildbot worker connected"));
}
