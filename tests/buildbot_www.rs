//! Buildbot's own web UI (buildbot-www 4.3.0 from PyPI, in the interop venv) served by a
//! `switchyard start` node at `/buildbot/`, end to end with real processes: a real
//! `switchyard worker`, a real browser (Debian's Chromium, driven by
//! `tests/js/buildbot_www.mjs` through playwright-core); and switchyard's collections
//! checked field by field against the `EntityType`s of the installed `buildbot` 4.3 package
//! (`tests/interop/buildbot_fields.py` reads them).
//!
//! Needs what `./scripts/test` installs: the interop venv (`SWITCHYARD_INTEROP_PYTHON`,
//! with buildbot and buildbot-www), Node.js (`SWITCHYARD_NODE`), `tests/js/node_modules`
//! and `/usr/bin/chromium`. Without them the tests fail, saying what is missing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::browser::{png_size, run_bounded};
use common::masters::*;
use serde_json::Value;

const CHROMIUM: &str = "/usr/bin/chromium";
const USER: (&str, &str) = ("alice", "alice-password-1");
/// The screenshots the browser script takes (1280x900 PNGs).
const SHOTS: [&str; 10] = [
    "anonymous-force-refused",
    "force-dialog",
    "running",
    "success",
    "log",
    "anonymous-stop-refused",
    "stopped",
    "home",
    "builders",
    "workers",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn required_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: run ./scripts/test (the README's test command), which installs \
             the interop venv (buildbot, buildbot-www), Node.js packages and Chromium"
        ),
    }
}

/// The `static` folder of the interop venv's buildbot-www.
fn buildbot_www_dir() -> PathBuf {
    let py = required_env("SWITCHYARD_INTEROP_PYTHON");
    let out = Command::new(&py)
        .args([
            "-c",
            "import buildbot_www, os; print(os.path.join(os.path.dirname(buildbot_www.__file__), 'static'))",
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {py}: {e}"));
    assert!(
        out.status.success(),
        "buildbot-www is not installed in {py} (tests/interop/requirements.txt has it; run \
         ./scripts/test): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(dir.join("index.html").is_file(), "{}", dir.display());
    dir
}

/// A node serving Buildbot's UI, with a user, worker `w1` (one build at a time) and the
/// builders the browser script uses, plus `quick`, started by changes.
fn www_node(dir: &Path, name: &str) -> Node {
    let port = free_port();
    let builders = [
        ("ui-demo", "echo ui-build-marker; sleep 5; echo done"),
        ("long", "echo long; sleep 60"),
        ("quick", "echo quick"),
    ];
    let www = buildbot_www_dir();
    let extra = format!(
        "[master.ui]\nbuildbot_www = {:?}\n",
        www.display().to_string()
    );
    let mut config = node_head(name, port, &[]) + &master_section(name, "", 1, 1, &builders, "");
    config = config.replace(
        "[master.api]\n",
        &format!(
            "{extra}[master.api]\nusers = [{{ name = \"{}\", password = \"{}\" }}]\n",
            USER.0, USER.1
        ),
    );
    config.push_str(
        "[[master.schedulers]]\nname = \"on-change\"\ntype = \"change\"\nbuilders = [\"quick\"]\n",
    );
    Node::start(dir, name, port, &config)
}

#[test]
fn buildbot_users_work_in_buildbot_s_own_ui() {
    let node_bin = required_env("SWITCHYARD_NODE");
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: install Debian's chromium (./scripts/test does)"
    );
    assert!(
        repo()
            .join("tests/js/node_modules/playwright-core")
            .is_dir(),
        "tests/js/node_modules/playwright-core is missing: run ./scripts/test"
    );
    let dir = TempDir::new("bbwww-browser");
    let node = www_node(dir.path(), "bb-1");
    let worker = Worker::start(dir.path(), "w1", "pw-w1", &[node.ws_url()]);
    worker.wait_connected(1, Duration::from_secs(30));
    let shots = dir.path().join("shots");
    std::fs::create_dir_all(&shots).unwrap();

    let (ok, output) = run_bounded(
        Command::new(&node_bin)
            .arg(repo().join("tests/js/buildbot_www.mjs"))
            .args(["--url", &format!("http://{}", node.addr())])
            .args(["--user", USER.0, "--password", USER.1, "--token", TOKEN])
            .args(["--master", "bb-1", "--worker", "w1", "--chromium", CHROMIUM])
            .arg("--shots")
            .arg(&shots)
            .current_dir(repo().join("tests/js")),
        Duration::from_secs(240),
    );
    println!("--- buildbot_www.mjs\n{output}");
    assert!(
        ok && output.contains(" passed, 0 failed"),
        "the browser test failed (screenshots in {}):\n{output}\nnode log:\n{}",
        shots.display(),
        node.log_text()
    );
    // Each screenshot: a 1280x900 PNG with something drawn on it (a blank page compresses
    // to a few KB).
    for name in SHOTS {
        let path = shots.join(format!("{name}.png"));
        let data = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("screenshot {} missing: {e}", path.display()));
        assert_eq!(png_size(&data), Some((1280, 900)), "{}", path.display());
        assert!(
            data.len() > 20_000,
            "{} is {} bytes: a blank page?",
            path.display(),
            data.len()
        );
    }
    drop(worker);
}

/// Whether `v` has Buildbot's declared type `t` (see buildbot_fields.py); the path of the
/// first mismatch otherwise.
fn type_error(v: &Value, t: &Value, at: &str) -> Option<String> {
    let fail = || Some(format!("{at}: {v} is not {t}"));
    match t {
        Value::String(kind) => {
            let ok = match kind.as_str() {
                "integer" | "datetime" => v.is_i64() || v.is_u64(),
                "string" | "binary" => v.is_string(),
                "boolean" => v.is_boolean(),
                "json" | "properties" => v.is_object(),
                _ => false,
            };
            if ok {
                None
            } else {
                fail()
            }
        }
        Value::Object(o) => {
            if let Some(inner) = o.get("nullable") {
                return if v.is_null() {
                    None
                } else {
                    type_error(v, inner, at)
                };
            }
            if let Some(inner) = o.get("list") {
                let Some(items) = v.as_array() else {
                    return fail();
                };
                return items
                    .iter()
                    .enumerate()
                    .find_map(|(i, item)| type_error(item, inner, &format!("{at}[{i}]")));
            }
            if let Some(Value::Object(fields)) = o.get("entity") {
                let Some(obj) = v.as_object() else {
                    return fail();
                };
                return fields.iter().find_map(|(name, ft)| match obj.get(name) {
                    Some(fv) => type_error(fv, ft, &format!("{at}.{name}")),
                    None => Some(format!("{at}: field {name} missing in {v}")),
                });
            }
            fail()
        }
        _ => fail(),
    }
}

#[test]
fn every_field_of_buildbot_s_data_api_is_answered_with_its_type() {
    let py = required_env("SWITCHYARD_INTEROP_PYTHON");
    let out = Command::new(&py)
        .arg(repo().join("tests/interop/buildbot_fields.py"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {py}: {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let entities: serde_json::Map<String, Value> =
        serde_json::from_slice(&out.stdout).expect("buildbot_fields.py prints JSON");
    assert!(entities.len() > 20, "{entities:?}");

    let dir = TempDir::new("bbwww-fields");
    let node = www_node(dir.path(), "fields-1");
    let addr = node.addr();
    let worker = Worker::start(dir.path(), "w1", "pw-w1", &[node.ws_url()]);
    worker.wait_connected(1, Duration::from_secs(30));
    // Something in every collection: a change (and its build), a forced build.
    let change = serde_json::json!({"author": "dev <dev@example.com>", "branch": "main",
        "revision": "abc123", "repository": "https://example.org/r.git", "comments": "c"});
    let (status, v) = http(
        addr,
        "POST",
        "/change_hook/base",
        Some(TOKEN),
        Some(&change),
    );
    assert_eq!(status, 200, "{v}");
    force(addr, "quick");
    wait_until(Duration::from_secs(60), "two finished builds", || {
        let done = list(addr, "builds", "&complete=true");
        (done.len() >= 2).then_some(())
    });
    let first = |path: String, key: &str| {
        let (status, v) = http(addr, "GET", &format!("/api/v2/{path}"), None, None);
        assert_eq!(status, 200, "{path}: {v}");
        v[key][0].clone()
    };
    let build = first("builds".into(), "builds");
    let step = first(format!("builds/{}/steps", build["buildid"]), "steps");
    let log = first(format!("steps/{}/logs", step["stepid"]), "logs");

    // Where each collection Buildbot declares is read here (with `property=*`, builds carry
    // their `properties`, as Buildbot's do then).
    let served: Vec<(&str, String, &str)> = vec![
        ("masters", "masters".into(), "masters"),
        ("builders", "builders".into(), "builders"),
        ("workers", "workers".into(), "workers"),
        ("buildsets", "buildsets".into(), "buildsets"),
        ("buildrequests", "buildrequests".into(), "buildrequests"),
        ("builds", "builds?property=*".into(), "builds"),
        (
            "steps",
            format!("builds/{}/steps", build["buildid"]),
            "steps",
        ),
        ("logs", format!("steps/{}/logs", step["stepid"]), "logs"),
        (
            "logchunks",
            format!("logs/{}/contents", log["logid"]),
            "logchunks",
        ),
        ("changes", "changes".into(), "changes"),
        ("schedulers", "schedulers".into(), "schedulers"),
        (
            "forceschedulers",
            "forceschedulers".into(),
            "forceschedulers",
        ),
        ("specs", "application.spec".into(), "specs"),
        (
            "_properties",
            format!("builds/{}/properties", build["buildid"]),
            "properties",
        ),
    ];
    // What switchyard does not serve (no such data here); `projects` is served, empty.
    let unserved = [
        "branches",
        "build_data",
        "changesources",
        "codebases",
        "commit_graphs",
        "commits",
        "patches",
        "projects",
        "rootlinks",
        "sourcestamps",
        "test_result_sets",
        "test_results",
    ];
    let mut declared: Vec<&str> = entities.keys().map(String::as_str).collect();
    declared.sort();
    let mut accounted: Vec<&str> = served.iter().map(|(p, _, _)| *p).chain(unserved).collect();
    accounted.sort();
    assert_eq!(
        declared, accounted,
        "Buildbot's entity types changed: decide how switchyard serves the new ones"
    );
    let (status, projects) = http(addr, "GET", "/api/v2/projects", None, None);
    assert_eq!(
        (status, &projects["projects"]),
        (200, &serde_json::json!([]))
    );

    let mut errors = Vec::new();
    for (plural, path, key) in &served {
        let (status, answer) = http(addr, "GET", &format!("/api/v2/{path}"), None, None);
        assert_eq!(status, 200, "{path}: {answer}");
        let rows = answer[*key].as_array().cloned().unwrap_or_default();
        assert!(!rows.is_empty(), "{path} answered no {key}: {answer}");
        let fields = &entities[*plural];
        if *plural == "_properties" {
            // One object `name: [value, source]`, as Buildbot answers properties.
            for (name, pair) in rows[0].as_object().unwrap() {
                let ok = pair
                    .as_array()
                    .is_some_and(|p| p.len() == 2 && p[1].is_string());
                if !ok {
                    errors.push(format!("{path}: property {name} is {pair}"));
                }
            }
            continue;
        }
        let t = serde_json::json!({ "entity": fields });
        for (i, row) in rows.iter().enumerate() {
            if let Some(e) = type_error(row, &t, &format!("{path}[{i}]")) {
                errors.push(e);
            }
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    // `property=` fills them (Buildbot's build properties, e.g. `workername`), and only
    // the names asked for.
    let (_, v) = http(
        addr,
        "GET",
        "/api/v2/builds?property=workername",
        None,
        None,
    );
    for b in v["builds"].as_array().unwrap() {
        let names: Vec<&String> = b["properties"].as_object().unwrap().keys().collect();
        assert_eq!(names, ["workername"], "{b}");
        assert_eq!(b["properties"]["workername"][0], "w1", "{b}");
    }
    drop(worker);
}

/// Buildbot's WebSocket protocol on `/buildbot/ws`, from a raw client: commands answered,
/// a forced build's events as `{k, m}` with the whole entity, nothing for paths not
/// consumed, bad frames answered with an error on a connection that stays up, and another
/// site's page refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buildbot_s_websocket_protocol_carries_whole_entities() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    let dir = TempDir::new("bbwww-ws");
    let node = tokio::task::block_in_place(|| www_node(dir.path(), "ws-1"));
    let addr = node.addr();
    let worker = Worker::start(dir.path(), "w1", "pw-w1", &[node.ws_url()]);
    tokio::task::block_in_place(|| worker.wait_connected(1, Duration::from_secs(30)));
    let url = format!("ws://{addr}/buildbot/ws");

    let mut evil = url.as_str().into_client_request().unwrap();
    evil.headers_mut()
        .insert("origin", "http://evil.example".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(evil).await.is_err());

    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    async fn recv(
        ws: &mut (impl StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
    ) -> Value {
        let m = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("a frame within 30 s")
            .expect("the connection stays open")
            .unwrap();
        serde_json::from_str(m.to_text().unwrap()).unwrap()
    }
    for (frame, code) in [
        (
            r#"{"cmd":"startConsuming","path":"builds/*/*","_id":1}"#,
            200,
        ),
        (r#"{"cmd":"ping","_id":2}"#, 200),
        ("not json", 400),
        (r#"{"cmd":"launch","_id":3}"#, 404),
        (r#"{"cmd":"stopConsuming","path":"steps/*/*","_id":4}"#, 400),
    ] {
        ws.send(Message::text(frame)).await.unwrap();
        let answer = recv(&mut ws).await;
        assert_eq!(answer["code"], code, "{frame}: {answer}");
    }
    tokio::task::block_in_place(|| force(addr, "quick"));
    let mut seen = Vec::new();
    while !seen.iter().any(|k: &String| k.ends_with("/finished")) {
        let ev = recv(&mut ws).await;
        let key = ev["k"].as_str().expect("an event").to_owned();
        assert!(key.starts_with("builds/"), "a path not consumed: {ev}");
        let m = &ev["m"];
        for field in [
            "buildid",
            "number",
            "builderid",
            "buildrequestid",
            "workerid",
            "masterid",
            "started_at",
            "complete",
            "complete_at",
            "locks_duration_s",
            "state_string",
            "results",
        ] {
            assert!(m.get(field).is_some(), "{key} lacks {field}: {m}");
        }
        if key.ends_with("/finished") {
            assert_eq!(
                (m["complete"].clone(), m["results"].clone()),
                (Value::Bool(true), Value::from(0))
            );
        }
        seen.push(key);
    }
    assert!(seen[0].ends_with("/new"), "{seen:?}");
    drop(worker);
}
