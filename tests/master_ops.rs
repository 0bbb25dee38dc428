//! Multimaster operations with real processes on one PostgreSQL database: graceful shutdown
//! over the REST API (and its cancellation), workers redirected to a live peer, a rolling
//! upgrade under a steady stream of builds, an asymmetric (UI-only + engines) cluster, and
//! periodic scheduler takeover.

mod common;

use std::time::{Duration, Instant};

use common::masters::*;

/// `switchyard shutdown` against a node; returns (exit code, stdout, stderr).
fn shutdown_cli(node: &Node, extra: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(BIN)
        .args([
            "shutdown",
            "--addr",
            &node.addr().to_string(),
            "--token",
            TOKEN,
        ])
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn master_row(addr: std::net::SocketAddr, name: &str) -> serde_json::Value {
    list(addr, "masters", "")
        .into_iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("no master {name}"))
}

#[test]
fn graceful_shutdown_finishes_builds_moves_the_worker_and_exits() {
    let dir = TempDir::new("graceful");
    let db = PgDb::create();
    let (pa, pb) = (free_port(), free_port());
    let builders = [("slow", "echo start; sleep 2; echo done")];
    let mut a = Node::start(
        dir.path(),
        "a",
        pa,
        &(node_head("a", pa, &[pb]) + &master_section("a", &db.url, 1, 1, &builders, "")),
    );
    let b = Node::start(
        dir.path(),
        "b",
        pb,
        &(node_head("b", pb, &[pa]) + &master_section("b", &db.url, 1, 1, &builders, "")),
    );
    let w = Worker::start(dir.path(), "w1", "pw-w1", &[a.ws_url()]);
    assert_eq!(w.wait_connected(1, Duration::from_secs(30)), a.ws_url());
    // Wait until both nodes see each other, so a's peers are known for the redirect.
    wait_until(Duration::from_secs(30), "the mesh to link", || {
        let (s, v) = http(a.addr(), "GET", "/mesh/status", None, None);
        (s == 200 && v.to_string().contains("\"connected\"")).then_some(())
    });
    let brids: Vec<i64> = (0..3).map(|_| force(a.addr(), "slow")).collect();
    wait_until(Duration::from_secs(30), "a running build", || {
        list(a.addr(), "builds", "&complete=false").first().cloned()
    });

    // A pending graceful stop can be cancelled.
    let (code, out, err) = shutdown_cli(&a, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("draining"), "{out}");
    wait_until(Duration::from_secs(10), "a to show draining", || {
        (master_row(b.addr(), "a")["state"] == "draining").then_some(())
    });
    let (code, out, err) = shutdown_cli(&a, &["--cancel"]);
    assert_eq!(code, 0, "{out}{err}");
    wait_until(Duration::from_secs(10), "a to run again", || {
        (master_row(b.addr(), "a")["state"] == "running").then_some(())
    });
    // Nothing to cancel now: a clear refusal.
    let (code, _, err) = shutdown_cli(&a, &["--cancel"]);
    assert_eq!(code, 1);
    assert!(err.contains("no graceful stop is pending"), "{err}");

    // Now for real: running builds finish, the worker moves to b, a exits 0.
    let (code, out, err) = shutdown_cli(&a, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        w.wait_connected(2, Duration::from_secs(60)),
        b.ws_url(),
        "the worker was redirected to the live peer"
    );
    let status = a.wait_exit(Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| s.success()),
        "a exits 0 after a graceful stop: {status:?}\n{}",
        a.log_text()
    );
    wait_until(Duration::from_secs(90), "every request to complete", || {
        brids
            .iter()
            .all(|id| request_complete(b.addr(), *id))
            .then_some(())
    });
    let builds = builds_by_request(b.addr());
    for id in &brids {
        assert_eq!(
            builds[id].iter().map(|r| r.1).collect::<Vec<_>>(),
            [0],
            "request {id}: exactly one build, SUCCESS, no RETRY: {builds:?}"
        );
    }
    let row = master_row(b.addr(), "a");
    assert_eq!(row["active"], false);
    assert_eq!(row["state"], "stopped");
    assert!(
        a.log_text().contains("worker redirected"),
        "{}",
        a.log_text()
    );
}

/// What a bus client that follows the cluster saw: `(node index, close reason)` per session
/// end, and the number of `builds.*.finished` events per session.
#[derive(Default, Debug)]
struct Follower {
    sessions: Vec<(usize, Option<String>, usize)>,
}

/// A bus client on the nodes `urls`: subscribed to `builds..finished`; when a node closes its
/// session it reconnects to the next node in the list.
fn follow_bus(
    urls: Vec<String>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Follower> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            use switchyard_router::client::{Client, ClientOptions};
            use switchyard_router::wire::{Dict, Value as W};
            let mut f = Follower::default();
            let mut k = 0;
            let deadline = Instant::now() + Duration::from_secs(300);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < deadline {
                let opts = ClientOptions::new(urls[k % urls.len()].clone(), "buildbot");
                let Ok(client) = Client::connect(&opts).await else {
                    k += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let mut options = Dict::new();
                options.insert("match".into(), W::from("wildcard"));
                let Ok((_, mut events)) = client
                    .subscribe("org.buildbot.mq.builds..finished", options)
                    .await
                else {
                    k += 1;
                    continue;
                };
                let mut seen = 0;
                loop {
                    tokio::select! {
                        e = events.recv() => match e {
                            Some(_) => seen += 1,
                            None => break,
                        },
                        _ = client.closed() => break,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {
                            if stop.load(std::sync::atomic::Ordering::SeqCst) {
                                break;
                            }
                        }
                    }
                }
                f.sessions
                    .push((k % urls.len(), client.close_reason(), seen));
                k += 1;
            }
            f
        })
    })
}

/// Three nodes, a build every 200 ms, every node replaced in turn by a new process (graceful
/// stop, then start again with the same config): no build fails, none is lost, none runs
/// twice; the workers move between nodes; a bus client follows to a live node.
#[test]
fn rolling_upgrade_loses_and_duplicates_nothing() {
    let dir = TempDir::new("rolling");
    let db = PgDb::create();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let builders = [("quick", "echo build $BUILDBOT_BUILDNUMBER; sleep 0.3")];
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| {
            let name = format!("n{i}");
            let peers: Vec<u16> = ports.iter().copied().filter(|p| *p != ports[i]).collect();
            let config = node_head(&name, ports[i], &peers)
                + &master_section(&name, &db.url, 2, 2, &builders, "");
            Node::start(dir.path(), &name, ports[i], &config)
        })
        .collect();
    let urls: Vec<String> = nodes.iter().map(Node::ws_url).collect();
    let workers: Vec<Worker> = (1..=2)
        .map(|i| {
            let name = format!("w{i}");
            // Each worker starts on a different node, with every node as a fallback.
            let mut order = urls.clone();
            order.rotate_left(i);
            let w = Worker::start(dir.path(), &name, &format!("pw-{name}"), &order);
            w.wait_connected(1, Duration::from_secs(30));
            w
        })
        .collect();
    for n in &nodes {
        wait_until(Duration::from_secs(30), "a full mesh", || {
            let (_, v) = http(n.addr(), "GET", "/mesh/status", None, None);
            (v.to_string().matches("\"connected\"").count() >= 2).then_some(())
        });
    }

    // The build stream: one force every 200 ms, to any live node, from a thread.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let follower = follow_bus(urls.clone(), stop.clone());
    let live: std::sync::Arc<std::sync::Mutex<Vec<bool>>> =
        std::sync::Arc::new(std::sync::Mutex::new(vec![true; 3]));
    let forced = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let feeder = {
        let (stop, live, forced, ports) =
            (stop.clone(), live.clone(), forced.clone(), ports.clone());
        std::thread::spawn(move || {
            let mut i = 0usize;
            let deadline = Instant::now() + Duration::from_secs(300);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < deadline {
                let target = (0..3)
                    .map(|k| (i + k) % 3)
                    .find(|k| live.lock().unwrap()[*k]);
                if let Some(k) = target {
                    let addr: std::net::SocketAddr =
                        format!("127.0.0.1:{}", ports[k]).parse().unwrap();
                    let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "force",
                        "params": {"builderNames": ["quick"]}});
                    let (s, v) = http(
                        addr,
                        "POST",
                        "/api/v2/forceschedulers/force",
                        Some(TOKEN),
                        Some(&body),
                    );
                    if s == 200 {
                        let brid = v["result"][1]
                            .as_object()
                            .and_then(|m| m.values().next())
                            .and_then(|v| v.as_i64())
                            .unwrap();
                        forced.lock().unwrap().push(brid);
                    }
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };

    // Replace every node in turn.
    for k in 0..3 {
        std::thread::sleep(Duration::from_secs(2));
        live.lock().unwrap()[k] = false;
        let (code, out, err) = shutdown_cli(&nodes[k], &[]);
        assert_eq!(code, 0, "{out}{err}");
        let status = nodes[k].wait_exit(Duration::from_secs(90));
        assert!(
            status.is_some_and(|s| s.success()),
            "node {k} exits 0: {status:?}\n{}",
            nodes[k].log_text()
        );
        nodes[k].restart();
        live.lock().unwrap()[k] = true;
        let other = nodes[(k + 1) % 3].addr();
        wait_until(Duration::from_secs(30), "the new node to link", || {
            let (_, v) = http(other, "GET", "/mesh/status", None, None);
            (v.to_string().matches("\"connected\"").count() >= 2).then_some(())
        });
    }
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    feeder.join().unwrap();
    let follower = follower.join().unwrap();
    // The bus client was on a node being replaced, was told so (system_shutdown), moved to
    // another node and kept receiving there.
    assert!(
        follower.sessions.len() >= 2,
        "the client moved between nodes: {follower:?}"
    );
    assert!(
        follower.sessions[..follower.sessions.len() - 1]
            .iter()
            .all(|(_, reason, _)| reason
                .as_deref()
                .is_some_and(|r| r.contains("wamp.close.system_shutdown"))),
        "each node going away said so: {follower:?}"
    );
    assert!(
        follower
            .sessions
            .iter()
            .skip(1)
            .any(|(_, _, seen)| *seen > 0),
        "events kept coming after a move: {follower:?}"
    );

    let forced = forced.lock().unwrap().clone();
    assert!(
        forced.len() >= 20,
        "a steady stream: {} builds",
        forced.len()
    );
    let addr = nodes[0].addr();
    wait_until(
        Duration::from_secs(120),
        "every forced request to complete",
        || {
            let done = list(addr, "buildrequests", "&complete=true").len();
            (done == forced.len()).then_some(())
        },
    );
    let builds = builds_by_request(addr);
    let mut retried = 0;
    for id in &forced {
        let runs = builds.get(id).cloned().unwrap_or_default();
        let ok = runs.iter().filter(|r| r.1 == 0).count();
        assert_eq!(ok, 1, "request {id} ran to SUCCESS exactly once: {runs:?}");
        assert!(
            runs.iter().all(|r| r.1 == 0),
            "no failed or retried build: {runs:?}"
        );
        retried += runs.len() - 1;
    }
    assert_eq!(retried, 0);
    let requests = list(addr, "buildrequests", "");
    assert!(requests.iter().all(|r| r["results"] == 0));
    // Every node ran builds at some point, so the work really moved around.
    let masters: std::collections::BTreeSet<i64> = builds.values().flatten().map(|r| r.0).collect();
    assert!(masters.len() >= 2, "{masters:?}");
    drop(workers);
}

/// A UI-only node next to two engine nodes: it stays up and serves the API while every
/// engine restarts; a request for a builder no live master runs stays queued, visibly.
#[test]
fn asymmetric_ui_node_outlives_engine_restarts() {
    let dir = TempDir::new("asym");
    let db = PgDb::create();
    let (pu, p1, p2) = (free_port(), free_port(), free_port());
    let builders = [("app", "echo app"), ("orphan", "echo never")];
    let ui = Node::start(
        dir.path(),
        "ui",
        pu,
        &(node_head("ui", pu, &[p1, p2])
            + &master_section("ui", &db.url, 1, 2, &builders, "roles = [\"ui\"]")),
    );
    let engine = |name: &str, port: u16, peers: &[u16]| {
        node_head(name, port, peers)
            + &master_section(
                name,
                &db.url,
                1,
                2,
                &builders,
                "roles = [\"builders\", \"scheduler\"]\nrun_builders = [\"app\"]",
            )
    };
    let mut e1 = Node::start(dir.path(), "e1", p1, &engine("e1", p1, &[pu, p2]));
    let mut e2 = Node::start(dir.path(), "e2", p2, &engine("e2", p2, &[pu, p1]));
    // Engines serve no API: they are not `ui` nodes.
    assert_eq!(http(e1.addr(), "GET", "/api/v2/masters", None, None).0, 404);
    let w = Worker::start(dir.path(), "w1", "pw-w1", &[e1.ws_url(), e2.ws_url()]);
    w.wait_connected(1, Duration::from_secs(30));

    let orphan = force(ui.addr(), "orphan");
    let first = force(ui.addr(), "app");
    wait_until(Duration::from_secs(30), "app to complete", || {
        request_complete(ui.addr(), first).then_some(())
    });
    for engine in [&mut e1, &mut e2] {
        // The UI node stops an engine gracefully: the request travels on the bus.
        let id = master_row(ui.addr(), &engine.name)["masterid"]
            .as_i64()
            .unwrap();
        let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "stop",
            "params": {"graceful": true}});
        let (status, v) = http(
            ui.addr(),
            "POST",
            &format!("/api/v2/masters/{id}"),
            Some(TOKEN),
            Some(&body),
        );
        assert_eq!(status, 200, "{v}");
        let exit = engine.wait_exit(Duration::from_secs(60));
        assert!(
            exit.is_some_and(|s| s.success()),
            "{exit:?}\n{}",
            engine.log_text()
        );
        // The UI node answers throughout, and takes builds while the engine is away.
        assert_eq!(http(ui.addr(), "GET", "/api/v2/masters", None, None).0, 200);
        let during = force(ui.addr(), "app");
        engine.restart();
        wait_until(
            Duration::from_secs(60),
            "a build forced during the restart",
            || request_complete(ui.addr(), during).then_some(()),
        );
    }
    let (_, v) = http(
        ui.addr(),
        "GET",
        &format!("/api/v2/buildrequests/{orphan}"),
        None,
        None,
    );
    let r = &v["buildrequests"][0];
    assert_eq!(r["complete"], false, "nobody runs `orphan`: {r}");
    assert_eq!(r["claimed"], false, "{r}");
    drop(w);
}

/// A periodic scheduler runs on one master at a time and is taken over when its owner dies,
/// without firing a period twice.
#[test]
fn periodic_scheduler_is_taken_over_when_its_master_dies() {
    let dir = TempDir::new("takeover");
    let db = PgDb::create();
    let (pa, pb) = (free_port(), free_port());
    let builders = [("tick", "echo tick")];
    let extra_sched = "[[master.schedulers]]\nname = \"every2s\"\ntype = \"periodic\"\n\
                       interval_s = 2\nbuilders = [\"tick\"]\n";
    let mut a = Node::start(
        dir.path(),
        "a",
        pa,
        &(node_head("a", pa, &[pb])
            + &master_section("a", &db.url, 1, 2, &builders, "")
            + extra_sched),
    );
    // a starts first and takes the scheduler.
    wait_until(Duration::from_secs(20), "a first periodic buildset", || {
        (!list(a.addr(), "buildsets", "").is_empty()).then_some(())
    });
    let b = Node::start(
        dir.path(),
        "b",
        pb,
        &(node_head("b", pb, &[pa])
            + &master_section("b", &db.url, 1, 2, &builders, "")
            + extra_sched),
    );
    let owner = |addr| {
        list(addr, "schedulers", "")
            .into_iter()
            .find(|s| s["name"] == "every2s")
            .map(|s| s["master"].clone())
    };
    std::thread::sleep(Duration::from_secs(3));
    let before = owner(b.addr()).unwrap();
    assert_eq!(before["name"], "a", "a owns it: {before}");
    a.kill();
    wait_until(
        Duration::from_secs(30),
        "b to take the scheduler over",
        || owner(b.addr()).filter(|o| o["name"] == "b").map(|_| ()),
    );
    let n = list(b.addr(), "buildsets", "").len();
    wait_until(Duration::from_secs(20), "b's periodic buildsets", || {
        (list(b.addr(), "buildsets", "").len() >= n + 2).then_some(())
    });
    // Never two buildsets of one period: consecutive ones at least ~2 s apart.
    let mut times: Vec<i64> = list(b.addr(), "buildsets", "")
        .iter()
        .map(|s| s["submitted_at"].as_i64().unwrap())
        .collect();
    times.sort_unstable();
    for pair in times.windows(2) {
        assert!(
            pair[1] - pair[0] >= 1,
            "two buildsets in one period: {times:?}"
        );
    }
}

/// SIGTERM stops a master gracefully: a running build finishes before the process exits 0.
/// With a short `shutdown_deadline_s`, a build still running at the deadline ends as RETRY
/// and its request runs again after the restart.
#[test]
fn sigterm_is_a_graceful_stop_with_a_deadline() {
    let dir = TempDir::new("sigterm");
    let port = free_port();
    let config = |deadline: f64| {
        format!(
            "listen = \"127.0.0.1:{port}\"\n[master]\nname = \"solo\"\ndata_dir = \"data\"\n\
             heartbeat_interval_s = 0.5\nexpiry_timeout_s = 4\npoll_interval_s = 0.5\n\
             shutdown_deadline_s = {deadline}\n[master.api]\ntokens = [\"{TOKEN}\"]\n\
             [[master.workers]]\nname = \"w1\"\npassword = \"pw-w1\"\n\
             [[master.builders]]\nname = \"nap\"\nworkers = [\"w1\"]\n\
             [[master.builders.steps]]\nname = \"nap\"\nshell = \"sleep 2; echo rested\"\n\
             [[master.builders]]\nname = \"long\"\nworkers = [\"w1\"]\n\
             [[master.builders.steps]]\nname = \"long\"\nshell = \"sleep 8; echo done\"\n\
             [[master.schedulers]]\nname = \"force\"\ntype = \"force\"\nbuilders = [\"nap\", \"long\"]\n"
        )
    };
    let mut node = Node::start(dir.path(), "solo", port, &config(60.0));
    let w = Worker::start(dir.path(), "w1", "pw-w1", &[node.ws_url()]);
    w.wait_connected(1, Duration::from_secs(30));
    let nap = force(node.addr(), "nap");
    wait_until(Duration::from_secs(30), "the nap build to run", || {
        list(node.addr(), "builds", "&complete=false")
            .first()
            .cloned()
    });
    let status = node.terminate(Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        node.log_text()
    );

    // Restart with a 1 s deadline: the finished build is there, SUCCESS.
    std::fs::write(&node.config, config(1.0)).unwrap();
    node.restart();
    let runs: Vec<i64> = list(node.addr(), "builds", &format!("&buildrequestid={nap}"))
        .iter()
        .map(|b| b["results"].as_i64().unwrap_or(-1))
        .collect();
    assert_eq!(runs, [0], "the build finished before the exit");
    w.wait_connected(2, Duration::from_secs(60));
    let long = force(node.addr(), "long");
    wait_until(Duration::from_secs(30), "the long build to run", || {
        list(
            node.addr(),
            "builds",
            &format!("&buildrequestid={long}&complete=false"),
        )
        .first()
        .cloned()
    });
    let t = Instant::now();
    let status = node.terminate(Duration::from_secs(60));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert!(
        t.elapsed() < Duration::from_secs(7),
        "the deadline cut the wait: {:?}",
        t.elapsed()
    );
    node.restart();
    w.wait_connected(3, Duration::from_secs(60));
    wait_until(
        Duration::from_secs(60),
        "the long request to run again",
        || request_complete(node.addr(), long).then_some(()),
    );
    let runs: Vec<i64> = list(node.addr(), "builds", &format!("&buildrequestid={long}"))
        .iter()
        .map(|b| b["results"].as_i64().unwrap_or(-1))
        .collect();
    assert_eq!(runs, [5, 0], "RETRY at the deadline, then SUCCESS");
}
