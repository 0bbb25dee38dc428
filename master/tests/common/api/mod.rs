//! The harness of the REST API tests (`api_*.rs`): the API is mounted on a real router
//! listener on 127.0.0.1:0, backed by a real store (every scenario runs on a fresh SQLite
//! file and on a fresh PostgreSQL database, which needs SWITCHYARD_TEST_POSTGRES) and a fake
//! `Control` that records what it is asked. Requests are raw HTTP/1.1, so the tests see
//! exactly what a client gets: statuses, headers and JSON bodies.
//!
//! Every response body is checked for the configured worker passwords.
//!
//! - `seed`: the rows every scenario starts with
//! - `fake_control`: the fake engine behind the control endpoints
//! - `http`: the server and a raw HTTP client

pub mod fake_control;
pub mod http;
pub mod seed;

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::Value;
use switchyard_master::config::MasterConfig;

/// Runs an `async fn(&TestDb)` scenario as two tests, one per backend.
#[allow(unused_macros)] // only the api_* tests use it
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[test]
            fn sqlite() {
                $crate::common::api::run(async {
                    let db = $crate::common::TestDb::sqlite().await;
                    super::$scenario(&db).await;
                });
            }

            #[test]
            fn postgres() {
                $crate::common::api::run(async {
                    let db = $crate::common::TestDb::postgres().await;
                    super::$scenario(&db).await;
                });
            }
        }
    )*};
}

/// Runs a scenario as a task on worker threads with roomy stacks: unoptimized builds give
/// each `.await` of a long scenario its own stack slot, more than a test thread's 2 MiB.
pub fn run(scenario: impl std::future::Future<Output = ()> + Send + 'static) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_stack_size(32 << 20)
        .enable_all()
        .build()
        .unwrap();
    if let Err(e) = rt.block_on(rt.spawn(scenario)) {
        match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("scenario did not finish: {e}"),
        }
    }
}

pub const NOW: i64 = 1_700_000_000;
pub const WORKER_PASSWORDS: [&str; 2] = ["W0rker-Pa55word-xyzzy", "An0ther-W0rker-Secret"];
pub const TOKEN: &str = "tok-0123456789abcdef";

// ---- configuration ----

pub fn config(api_section: &str) -> Arc<MasterConfig> {
    let text = format!(
        r#"
        {api_section}

        [[workers]]
        name = "local"
        password = "{}"

        [[workers]]
        name = "mac"
        password = "{}"

        [[builders]]
        name = "hello"
        workers = ["local"]
        [[builders.steps]]
        name = "checkout"
        shell = "true"

        [[builders]]
        name = "linux"
        workers = ["local", "mac"]
        [[builders.steps]]
        name = "test"
        shell = "true"

        [[schedulers]]
        name = "force"
        type = "force"
        builders = ["hello", "linux"]
        reason = "forced"

        [[schedulers]]
        name = "nightly"
        type = "periodic"
        interval_s = 86400
        builders = ["linux"]
        "#,
        WORKER_PASSWORDS[0], WORKER_PASSWORDS[1]
    );
    let c: MasterConfig = toml::from_str(&text).unwrap();
    c.validate().unwrap();
    Arc::new(c)
}

pub fn default_config() -> Arc<MasterConfig> {
    config(&format!(
        r#"
        [api]
        public_read = true
        tokens = ["{TOKEN}"]
        [[api.users]]
        name = "admin"
        password = "secret"
        "#
    ))
}

pub fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

pub fn key_set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

pub fn ids(rows: &[Value], field: &str) -> Vec<i64> {
    rows.iter().map(|r| r[field].as_i64().unwrap()).collect()
}
