//! The data API's reads over real HTTP (harness: `common::api`), each scenario on SQLite and
//! on PostgreSQL: every endpoint's shape, Buildbot's query arguments evaluated in SQL and in
//! Rust, and a huge table filtered, ordered and paged by the database.

#[macro_use]
mod common;

use common::api::fake_control::FakeControl;
use common::api::http::{serve, Auth, Client};
use common::api::seed::{pool, seed};
use common::api::{default_config, ids, key_set, keys, NOW};
use common::TestDb;
use serde_json::{json, Value};

on_both_backends!(
    read_endpoints,
    query_arguments,
    huge_tables_page_in_the_database,
);

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
