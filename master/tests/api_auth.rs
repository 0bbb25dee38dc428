//! Authentication of the REST API and the change hook over real HTTP (harness:
//! `common::api`), on SQLite and on PostgreSQL: the matrix of public and private reads,
//! users and tokens, good and bad credentials.

#[macro_use]
mod common;

use common::api::fake_control::FakeControl;
use common::api::http::{exchange, serve, Auth, Client, Resp};
use common::api::seed::seed;
use common::api::{config, default_config, TOKEN};
use common::TestDb;
use serde_json::json;

on_both_backends!(authentication,);

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
