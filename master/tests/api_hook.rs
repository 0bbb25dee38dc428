//! The base change hook over real HTTP (harness: `common::api`), on SQLite and on
//! PostgreSQL: forms and JSON become changes for `Control`, bad changes are 400s naming the
//! field, and `Control`'s refusals come back with their status.

#[macro_use]
mod common;

use common::api::fake_control::{Call, FakeControl};
use common::api::http::{serve, Auth, Client};
use common::api::seed::seed;
use common::api::{default_config, TOKEN};
use common::TestDb;
use serde_json::json;
use switchyard_master::control::ControlError;
use switchyard_master::StoreError;

on_both_backends!(change_hook,);

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
