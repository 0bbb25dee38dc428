//! The build master end to end, with real processes: `switchyard start` nodes (SQLite or a
//! real PostgreSQL shared by several masters), real `switchyard worker` processes running
//! real shell commands, the REST API over HTTP and the bus over WebSocket.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::masters::*;

/// Every topic published on the Buildbot bus of `url`, collected in the background.
fn watch_bus(url: String) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    let topics = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let t = topics.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            use switchyard_router::client::{Client, ClientOptions};
            use switchyard_router::wire::{Dict, Value as W};
            let client = Client::connect(&ClientOptions::new(url, "buildbot"))
                .await
                .unwrap();
            let mut options = Dict::new();
            options.insert("match".into(), W::from("prefix"));
            let (_, mut events) = client.subscribe("org.buildbot.mq.", options).await.unwrap();
            ready_tx.send(()).unwrap();
            while let Some(ev) = events.recv().await {
                if let Some(topic) = ev.details.get("topic").and_then(W::as_str) {
                    t.lock().unwrap().push(topic.to_owned());
                }
            }
        });
    });
    ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    topics
}

#[test]
fn embedded_defaults_run_a_forced_build_on_a_worker_to_success() {
    let dir = TempDir::new("embedded");
    let port = free_port();
    // `switchyard start` with no config at all, as the README says (only the port differs).
    let mut node = Node {
        name: "embedded".into(),
        port,
        child: None,
        stdout: Default::default(),
        log: dir.path().join("embedded.log"),
        config: dir.path().join("unused.toml"),
    };
    let log = std::fs::File::create(&node.log).unwrap();
    let mut child = std::process::Command::new(BIN)
        .args(["start", "--listen", &format!("127.0.0.1:{port}")])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    node.child = Some(child);
    let lines = {
        use std::io::BufRead;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        rx
    };
    let master_line = loop {
        let l = lines
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no master line; log:\n{}", node.log_text()));
        if l.starts_with("switchyard master") {
            break l;
        }
    };
    assert!(
        master_line.contains("SQLite in switchyard-data"),
        "{master_line}"
    );
    let token = std::fs::read_to_string(dir.path().join("switchyard-data/api.token"))
        .unwrap()
        .trim()
        .to_owned();
    let bus = watch_bus(node.ws_url());

    // The worker finds its generated password in ./switchyard-data on its own.
    let wlog = std::fs::File::create(dir.path().join("worker.log")).unwrap();
    let mut worker = std::process::Command::new(BIN)
        .args(["worker", "--connect", &node.ws_url(), "--name", "local"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(wlog)
        .spawn()
        .unwrap();
    let wout = worker.stdout.take().unwrap();
    let worker = common::masters::Worker {
        name: "local".into(),
        child: Some(worker),
        stdout: common::masters::Lines::collect(wout),
        log: dir.path().join("worker.log"),
    };
    worker.wait_connected(1, Duration::from_secs(30));

    // Force the embedded `hello` builder over the REST API, with the generated token.
    let addr = node.addr();
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 7, "method": "force",
        "params": {"builderNames": ["hello"], "reason": "readme"}});
    let (status, v) = http(
        addr,
        "POST",
        "/api/v2/forceschedulers/force",
        Some(&token),
        Some(&body),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["id"], 7);
    let brid = v["result"][1]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .as_i64()
        .unwrap();
    // Without the token: refused.
    let (status, _) = http(
        addr,
        "POST",
        "/api/v2/forceschedulers/force",
        None,
        Some(&body),
    );
    assert_eq!(status, 401);

    let request = wait_until(Duration::from_secs(60), "the request to complete", || {
        let (_, v) = http(
            addr,
            "GET",
            &format!("/api/v2/buildrequests/{brid}"),
            None,
            None,
        );
        let r = v["buildrequests"][0].clone();
        (r["complete"] == true).then_some(r)
    });
    assert_eq!(request["results"], 0, "SUCCESS: {request}");
    let builds = list(addr, "builds", &format!("&buildrequestid={brid}"));
    assert_eq!(builds.len(), 1, "{builds:?}");
    let build = &builds[0];
    assert_eq!(build["results"], 0);
    let bid = build["buildid"].as_i64().unwrap();
    let steps = steps(addr, bid);
    assert_eq!(steps[0]["name"], "hello");
    assert_eq!(steps[0]["results"], 0);
    let text = step_log(addr, bid, "hello");
    assert!(text.contains("hello from switchyard on"), "log: {text}");
    assert!(text.contains("exit code 0"), "log: {text}");
    // And the bus said so, under Buildbot's routing keys.
    let want = format!("org.buildbot.mq.builds.{bid}.finished");
    wait_until(Duration::from_secs(10), &want, || {
        bus.lock().unwrap().contains(&want).then_some(())
    });
    let topics = bus.lock().unwrap().clone();
    assert!(topics.contains(&format!("org.buildbot.mq.buildrequests.{brid}.complete")));
    assert!(topics
        .iter()
        .any(|t| t.starts_with("org.buildbot.mq.logs.") && t.ends_with(".append")));
    // No password anywhere in the API.
    let password =
        std::fs::read_to_string(dir.path().join("switchyard-data/workers/local.password")).unwrap();
    let (_, workers) = http_text(addr, "GET", "/api/v2/workers", None, None);
    assert!(workers.contains("\"local\"") && !workers.contains(password.trim()));
    drop(worker);
    assert!(node
        .terminate(Duration::from_secs(30))
        .is_some_and(|s| s.success()));
}

/// `n` meshed masters on one PostgreSQL database and four workers spread over them race
/// over 200 queued requests: each runs exactly once, to SUCCESS, and the work is shared.
fn masters_share_200_requests(n: usize) {
    let dir = TempDir::new("race");
    let db = PgDb::create();
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let builders = [(
        "quick",
        "echo build $BUILDBOT_BUILDNUMBER on $BUILDBOT_BUILDERNAME",
    )];
    let nodes: Vec<Node> = (0..n)
        .map(|i| {
            let name = format!("m{i}");
            let peers: Vec<u16> = ports.iter().copied().filter(|p| *p != ports[i]).collect();
            let config = node_head(&name, ports[i], &peers)
                + &master_section(&name, &db.url, 4, 3, &builders, "");
            Node::start(dir.path(), &name, ports[i], &config)
        })
        .collect();
    let workers: Vec<Worker> = (1..=4)
        .map(|i| {
            let name = format!("w{i}");
            let node = &nodes[i % n];
            let w = Worker::start(dir.path(), &name, &format!("pw-{name}"), &[node.ws_url()]);
            w.wait_connected(1, Duration::from_secs(30));
            w
        })
        .collect();
    // Queue 200 requests through the nodes in turn.
    let started = std::time::Instant::now();
    let mut brids = BTreeSet::new();
    for i in 0..200 {
        brids.insert(force(nodes[i % n].addr(), "quick"));
    }
    assert_eq!(brids.len(), 200);
    let addr = nodes[0].addr();
    wait_until(
        Duration::from_secs(240),
        "all 200 requests to complete",
        || {
            let done = list(addr, "buildrequests", "&complete=true").len();
            (done == 200).then_some(())
        },
    );
    let requests = list(addr, "buildrequests", "");
    assert!(requests.iter().all(|r| r["results"] == 0), "all SUCCESS");
    let builds = builds_by_request(addr);
    assert_eq!(builds.len(), 200);
    let mut per_master: BTreeMap<i64, usize> = BTreeMap::new();
    for (brid, runs) in &builds {
        assert!(brids.contains(brid));
        assert_eq!(
            runs.len(),
            1,
            "request {brid} ran {} times: {runs:?}",
            runs.len()
        );
        assert_eq!(runs[0].1, 0);
        *per_master.entry(runs[0].0).or_default() += 1;
    }
    assert!(
        per_master.len() >= 2,
        "the work was shared between masters: {per_master:?}"
    );
    eprintln!(
        "{n} masters ran 200 requests in {:.1?}; builds per master: {per_master:?}",
        started.elapsed()
    );
    drop(workers);
}

#[test]
fn two_masters_on_postgres_run_200_requests_exactly_once() {
    masters_share_200_requests(2);
}

#[test]
fn three_masters_on_postgres_run_200_requests_exactly_once() {
    masters_share_200_requests(3);
}

/// A master killed with SIGKILL in the middle of a build: the surviving master expires it,
/// its request runs again and completes, once; the worker, whose router died with it,
/// reconnects to the other router and the queue drains.
#[test]
fn sigkill_of_a_master_mid_build_the_request_completes_on_another() {
    let dir = TempDir::new("sigkill");
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
    // The worker lives on a's router and falls back to b's.
    let w = Worker::start(dir.path(), "w1", "pw-w1", &[a.ws_url(), b.ws_url()]);
    assert_eq!(w.wait_connected(1, Duration::from_secs(30)), a.ws_url());
    let brids: Vec<i64> = (0..4).map(|_| force(b.addr(), "slow")).collect();
    // Wait until a build is running, then kill a (master and router) mid-build.
    wait_until(Duration::from_secs(30), "a running build", || {
        list(b.addr(), "builds", "&complete=false").first().cloned()
    });
    std::thread::sleep(Duration::from_millis(500));
    a.kill();
    assert_eq!(w.wait_connected(2, Duration::from_secs(30)), b.ws_url());
    wait_until(
        Duration::from_secs(120),
        "every request to complete",
        || {
            let done = brids
                .iter()
                .filter(|id| {
                    let (_, v) = http(
                        b.addr(),
                        "GET",
                        &format!("/api/v2/buildrequests/{id}"),
                        None,
                        None,
                    );
                    v["buildrequests"][0]["complete"] == true
                })
                .count();
            (done == brids.len()).then_some(())
        },
    );
    let builds = builds_by_request(b.addr());
    let mut retried = 0;
    for id in &brids {
        let runs = &builds[id];
        let successes = runs.iter().filter(|(_, r)| *r == 0).count();
        assert_eq!(successes, 1, "request {id} succeeded once: {runs:?}");
        // Anything else is the build that was cut off: RETRY (5), never a failure.
        assert!(runs.iter().all(|(_, r)| *r == 0 || *r == 5), "{runs:?}");
        retried += runs.len() - 1;
    }
    assert!(retried >= 1, "the killed build was retried: {builds:?}");
    // b saw a expire.
    let masters = list(b.addr(), "masters", "");
    let dead = masters.iter().find(|m| m["name"] == "a").unwrap();
    assert_eq!(dead["active"], false, "{dead}");
    drop(w);
    drop(b);
}

/// A bad `[master]` section stops start-up with a message naming the problem.
#[test]
fn bad_master_config_is_refused_with_a_clear_message() {
    let dir = TempDir::new("badcfg");
    let cases = [
        (
            "[master]\n[[master.workers]]\nname = \"w1\"\n",
            "worker \"w1\" has no password",
        ),
        (
            "[master]\n[[master.workers]]\nname = \"w1\"\npassword = \"x\"\n\
             [[master.schedulers]]\nname = \"f\"\ntype = \"force\"\nbuilders = [\"ghost\"]\n",
            "scheduler \"f\" names unknown builder \"ghost\"",
        ),
        (
            "[master]\n[[master.workers]]\nname = \"w1\"\npassword = \"x\"\n\
             [[master.workers]]\nname = \"w1\"\npassword = \"y\"\n",
            "duplicate worker name \"w1\"",
        ),
        (
            "[master]\nfrobnicate = true\n",
            "unknown field `frobnicate`",
        ),
        (
            "[master]\nrealm = \"nowhere\"\n",
            "realm \"nowhere\" is not one of",
        ),
    ];
    for (text, want) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, format!("listen = \"127.0.0.1:0\"\n{text}")).unwrap();
        let out = std::process::Command::new(BIN)
            .args(["start", "--config"])
            .arg(&path)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {err}");
        assert!(err.contains(want), "{want:?} not in {err}");
    }
}

/// A worker killed mid-step: the build ends RETRY, the request waits, and runs to SUCCESS
/// once the worker is back. A step over its timeout fails the build (it is not retried).
#[test]
fn a_worker_killed_mid_step_retries_and_a_timeout_fails() {
    let dir = TempDir::new("workerkill");
    let port = free_port();
    let config = format!(
        "listen = \"127.0.0.1:{port}\"\n[master]\nname = \"solo\"\ndata_dir = \"data\"\n\
         heartbeat_interval_s = 0.5\nexpiry_timeout_s = 4\npoll_interval_s = 0.5\n\
         [master.api]\ntokens = [\"{TOKEN}\"]\n\
         [[master.workers]]\nname = \"w1\"\npassword = \"pw-w1\"\n\
         [[master.builders]]\nname = \"slow\"\nworkers = [\"w1\"]\n\
         [[master.builders.steps]]\nname = \"nap\"\nshell = \"echo begin; sleep 3; echo end\"\n\
         [[master.builders]]\nname = \"stuck\"\nworkers = [\"w1\"]\n\
         [[master.builders.steps]]\nname = \"hang\"\nshell = \"sleep 30\"\ntimeout_s = 1\n\
         [[master.schedulers]]\nname = \"force\"\ntype = \"force\"\nbuilders = [\"slow\", \"stuck\"]\n"
    );
    let node = Node::start(dir.path(), "solo", port, &config);
    let addr = node.addr();
    let mut w = Worker::start(dir.path(), "w1", "pw-w1", &[node.ws_url()]);
    w.wait_connected(1, Duration::from_secs(30));
    let brid = force(addr, "slow");
    wait_until(Duration::from_secs(30), "the build to start", || {
        list(addr, "builds", &format!("&buildrequestid={brid}"))
            .first()
            .cloned()
    });
    std::thread::sleep(Duration::from_millis(500));
    if let Some(mut c) = w.child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
    let first = wait_until(Duration::from_secs(30), "the build to end", || {
        list(addr, "builds", &format!("&buildrequestid={brid}"))
            .first()
            .filter(|b| b["complete"] == true)
            .cloned()
    });
    assert_eq!(first["results"], 5, "RETRY: {first}");
    let (_, v) = http(
        addr,
        "GET",
        &format!("/api/v2/buildrequests/{brid}"),
        None,
        None,
    );
    assert_eq!(
        v["buildrequests"][0]["complete"], false,
        "waits for a worker"
    );
    let w = Worker::start(dir.path(), "w1", "pw-w1", &[node.ws_url()]);
    w.wait_connected(1, Duration::from_secs(30));
    wait_until(Duration::from_secs(60), "the request to complete", || {
        let (_, v) = http(
            addr,
            "GET",
            &format!("/api/v2/buildrequests/{brid}"),
            None,
            None,
        );
        (v["buildrequests"][0]["complete"] == true).then(|| v["buildrequests"][0].clone())
    });
    let runs: Vec<i64> = list(addr, "builds", &format!("&buildrequestid={brid}"))
        .iter()
        .map(|b| b["results"].as_i64().unwrap())
        .collect();
    assert_eq!(runs, [5, 0], "one RETRY, then one SUCCESS");

    let stuck = force(addr, "stuck");
    let r = wait_until(
        Duration::from_secs(60),
        "the stuck request to complete",
        || {
            let (_, v) = http(
                addr,
                "GET",
                &format!("/api/v2/buildrequests/{stuck}"),
                None,
                None,
            );
            (v["buildrequests"][0]["complete"] == true).then(|| v["buildrequests"][0].clone())
        },
    );
    assert_eq!(r["results"], 2, "FAILURE: {r}");
    let builds = list(addr, "builds", &format!("&buildrequestid={stuck}"));
    assert_eq!(builds.len(), 1);
    let bid = builds[0]["buildid"].as_i64().unwrap();
    let (_, steps) = http(
        addr,
        "GET",
        &format!("/api/v2/builds/{bid}/steps"),
        None,
        None,
    );
    let state = steps["steps"][0]["state_string"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(state.contains("timed out"), "{state}");
}

/// A change posted to the base change hook builds the branch it names: the change scheduler
/// queues a build whose git step checks that branch out with the worker's system git.
#[test]
fn change_hook_builds_the_named_branch_with_a_git_checkout() {
    let dir = TempDir::new("githook");
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README"), "main branch\n").unwrap();
    git(&repo, &["add", "README"]);
    git(&repo, &["commit", "-q", "-m", "main"]);
    git(&repo, &["checkout", "-q", "-b", "feature"]);
    std::fs::write(repo.join("feature.txt"), "made on the feature branch\n").unwrap();
    git(&repo, &["add", "feature.txt"]);
    git(&repo, &["commit", "-q", "-m", "feature"]);
    git(&repo, &["checkout", "-q", "main"]);

    let port = free_port();
    let config = format!(
        "listen = \"127.0.0.1:{port}\"\n[master]\nname = \"solo\"\ndata_dir = \"data\"\n\
         poll_interval_s = 0.5\n[master.api]\ntokens = [\"{TOKEN}\"]\n\
         [[master.workers]]\nname = \"w1\"\npassword = \"pw-w1\"\n\
         [[master.builders]]\nname = \"app\"\nworkers = [\"w1\"]\n\
         [[master.builders.steps]]\nname = \"checkout\"\ngit = {{ repo = {repo:?}, branch = \"main\" }}\n\
         [[master.builders.steps]]\nname = \"show\"\nshell = \"git rev-parse --abbrev-ref HEAD; cat feature.txt\"\n\
         [[master.schedulers]]\nname = \"on-change\"\ntype = \"change\"\nbuilders = [\"app\"]\n",
        repo = repo.display().to_string()
    );
    let node = Node::start(dir.path(), "solo", port, &config);
    let addr = node.addr();
    let w = Worker::start(dir.path(), "w1", "pw-w1", &[node.ws_url()]);
    w.wait_connected(1, Duration::from_secs(30));

    // Without credentials the hook refuses.
    let change = serde_json::json!({"author": "dev <dev@example.com>", "branch": "feature",
        "revision": null, "repository": repo.display().to_string(), "comments": "add feature.txt"});
    let (status, _) = http(addr, "POST", "/change_hook/base", None, Some(&change));
    assert_eq!(status, 401);
    let (status, v) = http(
        addr,
        "POST",
        "/change_hook/base",
        Some(TOKEN),
        Some(&change),
    );
    assert_eq!(status, 200, "{v}");
    let bsid = v["buildsets"][0]
        .as_i64()
        .expect("one buildset for the change");
    let buildset = wait_until(Duration::from_secs(60), "the buildset to complete", || {
        let (_, v) = http(
            addr,
            "GET",
            &format!("/api/v2/buildsets/{bsid}"),
            None,
            None,
        );
        (v["buildsets"][0]["complete"] == true).then(|| v["buildsets"][0].clone())
    });
    assert_eq!(buildset["results"], 0, "{buildset}");
    let builds = list(addr, "builds", "");
    let bid = builds[0]["buildid"].as_i64().unwrap();
    let text = step_log(addr, bid, "show");
    assert!(
        text.contains("\nfeature\n"),
        "the feature branch is checked out: {text}"
    );
    assert!(text.contains("made on the feature branch"), "{text}");
    // The change is recorded as Buildbot shows changes.
    let changes = list(addr, "changes", "");
    assert_eq!(changes[0]["branch"], "feature");
}

/// Any session other than a master — here an anonymous WebSocket client on the buildbot
/// realm — is refused a worker's procedures.
#[test]
fn anonymous_clients_cannot_call_or_impersonate_a_worker() {
    let dir = TempDir::new("guard");
    let port = free_port();
    let config = format!(
        "listen = \"127.0.0.1:{port}\"\n[master]\nname = \"solo\"\ndata_dir = \"data\"\n\
         [[master.workers]]\nname = \"w1\"\npassword = \"pw-w1\"\n"
    );
    let node = Node::start(dir.path(), "solo", port, &config);
    let w = Worker::start(dir.path(), "w1", "pw-w1", &[node.ws_url()]);
    w.wait_connected(1, Duration::from_secs(30));
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
        let denied = |r: Result<_, ClientError>| match r {
            Err(ClientError::Wamp { uri, .. }) => uri == "wamp.error.not_authorized",
            _ => false,
        };
        let call = c
            .call("switchyard.worker.w1.run", Dict::new(), Payload::default())
            .await;
        assert!(denied(call.map(|_| ())), "calling a worker");
        let reg = c.register("switchyard.worker.w1.info", Dict::new()).await;
        assert!(denied(reg.map(|_| ())), "registering under a worker's name");
        let reg = c.register("switchyard.worker.w2.run", Dict::new()).await;
        assert!(
            denied(reg.map(|_| ())),
            "registering as an unconnected worker"
        );
        // The rest of the realm is open as before.
        assert!(c.register("com.example.hello", Dict::new()).await.is_ok());
    });
}

/// Issue 11: two builds of one builder never share its workdir on a worker at the same time
/// (Buildbot's rule), while `max_builds = 2` still runs two different builders at once. Each
/// build takes a lock directory in its workdir (`mkdir` is atomic: it fails if another build
/// holds it) and records its start and end in a trace outside the workdir.
#[test]
fn builds_of_one_builder_never_share_a_workdir() {
    let dir = TempDir::new("collide");
    let trace = dir.path().join("trace");
    let port = free_port();
    let step = format!(
        "mkdir busy || {{ echo another build is running in this workdir; exit 1; }}; \
         echo \"start $BUILDBOT_BUILDERNAME\" >> {t}; sleep 0.4; \
         echo \"end $BUILDBOT_BUILDERNAME\" >> {t}; rmdir busy",
        t = trace.display()
    );
    let builder = |name: &str| {
        format!(
            "[[master.builders]]\nname = \"{name}\"\nworkers = [\"w1\"]\n\
             [[master.builders.steps]]\nname = \"guarded\"\nshell = {step:?}\n"
        )
    };
    let config = format!(
        "listen = \"127.0.0.1:{port}\"\n[master]\nname = \"solo\"\ndata_dir = \"data\"\n\
         poll_interval_s = 0.2\n[master.api]\ntokens = [\"{TOKEN}\"]\n\
         [[master.workers]]\nname = \"w1\"\npassword = \"pw-w1\"\nmax_builds = 2\n\
         {}{}[[master.schedulers]]\nname = \"force\"\ntype = \"force\"\n\
         builders = [\"app\", \"docs\"]\n",
        builder("app"),
        builder("docs")
    );
    let node = Node::start(dir.path(), "solo", port, &config);
    let addr = node.addr();
    let w = Worker::start(dir.path(), "w1", "pw-w1", &[node.ws_url()]);
    w.wait_connected(1, Duration::from_secs(30));

    let mut brids = Vec::new();
    for _ in 0..4 {
        brids.push(force(addr, "app"));
    }
    for _ in 0..2 {
        brids.push(force(addr, "docs"));
    }
    for brid in &brids {
        let r = wait_until(Duration::from_secs(60), "every request to complete", || {
            let (_, v) = http(
                addr,
                "GET",
                &format!("/api/v2/buildrequests/{brid}"),
                None,
                None,
            );
            (v["buildrequests"][0]["complete"] == true).then(|| v["buildrequests"][0].clone())
        });
        assert_eq!(r["results"], 0, "request {brid} did not succeed: {r}");
    }
    // Replay the trace: never two builds of a builder at once; two builders at once, yes.
    let text = std::fs::read_to_string(&trace).unwrap();
    let mut active: BTreeMap<String, i32> = BTreeMap::new();
    let mut most_at_once = 0;
    for line in text.lines() {
        let (event, name) = line.split_once(' ').unwrap();
        let n = active.entry(name.to_owned()).or_default();
        *n += if event == "start" { 1 } else { -1 };
        assert!(*n <= 1, "two builds of {name} at once:\n{text}");
        most_at_once = most_at_once.max(active.values().sum::<i32>());
    }
    assert_eq!(text.lines().count(), 12, "{text}");
    assert_eq!(
        most_at_once, 2,
        "max_builds = 2 ran app and docs at once:\n{text}"
    );
}

/// Issue 11: a value from properties never becomes an option of a command. A forced build
/// whose `revision` is `--orphan=x` ends FAILURE with the reason in its log, and git never
/// runs with it (the step refuses before calling the worker).
#[test]
fn a_revision_that_looks_like_an_option_is_refused() {
    let dir = TempDir::new("gitopt");
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README"), "main\n").unwrap();
    git(&repo, &["add", "README"]);
    git(&repo, &["commit", "-q", "-m", "main"]);
    let port = free_port();
    let config = format!(
        "listen = \"127.0.0.1:{port}\"\n[master]\nname = \"solo\"\ndata_dir = \"data\"\n\
         poll_interval_s = 0.5\n[master.api]\ntokens = [\"{TOKEN}\"]\n\
         [[master.workers]]\nname = \"w1\"\npassword = \"pw-w1\"\n\
         [[master.builders]]\nname = \"app\"\nworkers = [\"w1\"]\n\
         [[master.builders.steps]]\nname = \"checkout\"\ngit = {{ repo = {repo:?}, branch = \"main\" }}\n\
         [[master.schedulers]]\nname = \"force\"\ntype = \"force\"\nbuilders = [\"app\"]\n",
        repo = repo.display().to_string()
    );
    let node = Node::start(dir.path(), "solo", port, &config);
    let addr = node.addr();
    let w = Worker::start(dir.path(), "w1", "pw-w1", &[node.ws_url()]);
    w.wait_connected(1, Duration::from_secs(30));
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "force",
        "params": {"builderNames": ["app"], "reason": "attack",
                   "properties": {"revision": "--orphan=x"}}});
    let (status, v) = http(
        addr,
        "POST",
        "/api/v2/forceschedulers/force",
        Some(TOKEN),
        Some(&body),
    );
    assert_eq!(status, 200, "{v}");
    let build = wait_until(Duration::from_secs(60), "the build to finish", || {
        let builds = list(addr, "builds", "");
        builds.first().filter(|b| b["complete"] == true).cloned()
    });
    assert_eq!(build["results"], 2, "FAILURE: {build}");
    let bid = build["buildid"].as_i64().unwrap();
    let text = step_log(addr, bid, "checkout");
    assert!(
        text.contains("refusing the revision \"--orphan=x\"")
            && text.contains("git would read it as an option"),
        "{text}"
    );
    // git never ran: no checkout exists on the worker...
    let basedir = dir.path().join("worker-w1");
    assert!(
        !walk_has_git(&basedir),
        "the worker ran git for the refused build"
    );
    // ...while a valid revision checks out there.
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 2, "method": "force",
        "params": {"builderNames": ["app"], "properties": {"revision": "main"}}});
    let (status, v) = http(
        addr,
        "POST",
        "/api/v2/forceschedulers/force",
        Some(TOKEN),
        Some(&body),
    );
    assert_eq!(status, 200, "{v}");
    let build = wait_until(
        Duration::from_secs(60),
        "the second build to finish",
        || {
            list(addr, "builds", "")
                .into_iter()
                .find(|b| b["buildid"] != bid && b["complete"] == true)
        },
    );
    assert_eq!(build["results"], 0, "{build}");
    assert!(walk_has_git(&basedir), "the valid revision was checked out");
}

fn walk_has_git(dir: &std::path::Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let p = e.path();
        p.file_name().is_some_and(|n| n == ".git") || (p.is_dir() && walk_has_git(&p))
    })
}
