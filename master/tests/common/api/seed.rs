//! The rows every scenario starts with: two masters, two builders, two workers, two
//! buildsets with their requests, a finished and a running build with steps, a log, changes,
//! build properties and schedulers.

use std::sync::Arc;

use switchyard_master::{Results, Store};

use super::NOW;
use crate::common::TestDb;

/// Ids of the rows every scenario starts with.
#[allow(dead_code)]
pub struct Seed {
    pub m1: i64,
    pub m2: i64,
    pub hello: i64,
    pub linux: i64,
    pub local: i64,
    pub mac: i64,
    pub bs1: i64,
    pub bs2: i64,
    /// bs1's requests (claimed by m1; r_hello completed) and bs2's (unclaimed, priority 5).
    pub r_hello: i64,
    pub r_linux: i64,
    pub r_nightly: i64,
    /// hello #1, finished SUCCESS; linux #1, running.
    pub b1: i64,
    pub b2: i64,
    pub s1: i64,
    pub s2: i64,
    pub log: i64,
    pub c1: i64,
    pub c2: i64,
}

pub async fn seed(db: &TestDb) -> (Store, Seed) {
    let store = db.store().await.with_clock(Arc::new(|| NOW));
    let m1 = store.register_master("host-a:/srv/a").await.unwrap();
    let m2 = store.register_master("host-b:/srv/b").await.unwrap();
    let hello = store.ensure_builder("hello").await.unwrap();
    let linux = store.ensure_builder("linux").await.unwrap();
    let local = store.ensure_worker("local").await.unwrap();
    let mac = store.ensure_worker("mac").await.unwrap();
    store.worker_connected(m1, local).await.unwrap();
    let (bs1, reqs) = store
        .add_buildset("force build", &[hello, linux], 0)
        .await
        .unwrap();
    let (r_hello, r_linux) = (reqs[0].1, reqs[1].1);
    let (bs2, reqs) = store.add_buildset("nightly", &[linux], 5).await.unwrap();
    let r_nightly = reqs[0].1;
    store
        .claim_buildrequests(m1, &[r_hello, r_linux])
        .await
        .unwrap();
    let (b1, _) = store
        .add_build(m1, r_hello, Some(local), "building")
        .await
        .unwrap();
    store.finish_build(m1, b1, Results::Success).await.unwrap();
    store
        .complete_buildrequests(m1, &[r_hello], Results::Success)
        .await
        .unwrap();
    let (b2, _) = store
        .add_build(m1, r_linux, Some(local), "building")
        .await
        .unwrap();

    // What has no store operation yet goes in with SQL.
    let sql = pool(db).await;
    for (b, m) in [(hello, m1), (linux, m1), (linux, m2)] {
        exec(
            &sql,
            "INSERT INTO builder_masters (builderid, masterid) VALUES ($1, $2)",
            &[b, m],
        )
        .await;
    }
    sqlx::query("UPDATE workers SET info = $1 WHERE id = $2")
        .bind(r#"{"host": "mac.local"}"#)
        .bind(mac)
        .execute(&sql)
        .await
        .unwrap();
    let s1 = insert_id(
        sqlx::query(
            "INSERT INTO steps (number, name, buildid, started_at, complete_at, state_string, \
             results, urls_json) VALUES (0, 'checkout', $1, $2, $3, 'updated', 0, $4) RETURNING id",
        )
        .bind(b1)
        .bind(NOW)
        .bind(NOW + 1)
        .bind(r#"[{"name": "commit", "url": "https://example.org/c/1"}]"#),
        &sql,
    )
    .await;
    let s2 = insert_id(
        sqlx::query(
            "INSERT INTO steps (number, name, buildid, started_at, state_string, hidden) \
             VALUES (1, 'test', $1, $2, 'running', 1) RETURNING id",
        )
        .bind(b1)
        .bind(NOW + 1),
        &sql,
    )
    .await;
    let log = insert_id(
        sqlx::query(
            "INSERT INTO logs (name, slug, stepid, complete, num_lines, type) \
             VALUES ('stdio', 'stdio', $1, 1, 3, 's') RETURNING id",
        )
        .bind(s1),
        &sql,
    )
    .await;
    for (first, last, content) in [(0i64, 1i64, "ohello\neworld\n"), (2, 2, "hexit 0\n")] {
        sqlx::query(
            "INSERT INTO logchunks (logid, first_line, last_line, content) VALUES ($1, $2, $3, $4)",
        )
        .bind(log)
        .bind(first)
        .bind(last)
        .bind(content.as_bytes().to_vec())
        .execute(&sql)
        .await
        .unwrap();
    }
    let mut changes = Vec::new();
    for (author, branch, when) in [("alice", "main", NOW - 100), ("bob", "dev", NOW - 50)] {
        changes.push(
            insert_id(
                sqlx::query(
                    "INSERT INTO changes (author, comments, branch, revision, when_timestamp, \
                     repository, project, properties, files) \
                     VALUES ($1, 'a change', $2, 'abc123', $3, 'https://example.org/r.git', \
                     'proj', '{\"ci\": [true, \"Change\"]}', '[\"src/main.rs\"]') \
                     RETURNING changeid AS id",
                )
                .bind(author)
                .bind(branch)
                .bind(when),
                &sql,
            )
            .await,
        );
    }
    for (name, value, source) in [
        ("owner", r#""alice""#, "Force Build Form"),
        ("branch", r#""main""#, "Change"),
    ] {
        sqlx::query(
            "INSERT INTO build_properties (buildid, name, value, source) VALUES ($1, $2, $3, $4)",
        )
        .bind(b1)
        .bind(name)
        .bind(value)
        .bind(source)
        .execute(&sql)
        .await
        .unwrap();
    }
    let force = insert_id(
        sqlx::query("INSERT INTO schedulers (name) VALUES ('force') RETURNING id"),
        &sql,
    )
    .await;
    sqlx::query("INSERT INTO schedulers (name, enabled) VALUES ('nightly', 0)")
        .execute(&sql)
        .await
        .unwrap();
    exec(
        &sql,
        "INSERT INTO scheduler_masters (schedulerid, masterid, claimed_at) VALUES ($1, $2, $3)",
        &[force, m1, NOW],
    )
    .await;
    sql.close().await;
    let seed = Seed {
        m1,
        m2,
        hello,
        linux,
        local,
        mac,
        bs1,
        bs2,
        r_hello,
        r_linux,
        r_nightly,
        b1,
        b2,
        s1,
        s2,
        log,
        c1: changes[0],
        c2: changes[1],
    };
    (store, seed)
}

pub async fn pool(db: &TestDb) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::any::AnyPoolOptions::new()
        .max_connections(2)
        .connect(db.url())
        .await
        .unwrap()
}

async fn exec(pool: &sqlx::AnyPool, sql: &str, binds: &[i64]) {
    let mut q = sqlx::query(sql);
    for b in binds {
        q = q.bind(*b);
    }
    q.execute(pool).await.unwrap();
}

async fn insert_id<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    pool: &sqlx::AnyPool,
) -> i64 {
    use sqlx::Row;
    q.fetch_one(pool).await.unwrap().try_get("id").unwrap()
}
