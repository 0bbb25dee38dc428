//! The JSON-RPC control endpoints over real HTTP (harness: `common::api`), each scenario on
//! SQLite and on PostgreSQL: every method reaches `Control` with what was asked, and each
//! `ControlError` comes back as its HTTP status and JSON-RPC code.

#[macro_use]
mod common;

use common::api::fake_control::{Call, Failure, FakeControl};
use common::api::http::{base64, exchange, serve, Auth, Client};
use common::api::seed::seed;
use common::api::{default_config, TOKEN};
use common::TestDb;
use serde_json::{json, Value};
use switchyard_master::api;
use switchyard_master::control::{ControlError, MasterAction, WorkerAction};
use switchyard_master::StoreError;

on_both_backends!(control_calls_reach_control, control_errors,);

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
