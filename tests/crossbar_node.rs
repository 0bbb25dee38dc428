//! The Crossbar fixture node directory (tests/fixtures/crossbar/.crossbar) run by the real
//! binary: every transport, every auth method, roles, TLS; and bad node configs refused with
//! the offending key named.

mod common;

use std::process::Command;

use base64::Engine;
use common::node::{temp_dir, FixtureNode, MASTER_TICKET};
use common::*;
use ed25519_dalek::{Signer, SigningKey};
use hmac::{Hmac, Mac};
use switchyard_router::wire::{code, Dict, Message, Serializer, Value};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

fn hello(authid: Option<&str>, methods: &[&str], extra: Option<Dict>) -> Dict {
    let mut d = client_roles();
    if let Some(a) = authid {
        d.insert("authid".into(), Value::from(a));
    }
    d.insert(
        "authmethods".into(),
        Value::List(methods.iter().map(|m| Value::from(*m)).collect()),
    );
    if let Some(e) = extra {
        d.insert("authextra".into(), Value::Dict(e));
    }
    d
}

async fn answer(c: &mut Client, signature: String) -> Dict {
    c.send(&Message::Authenticate {
        signature,
        extra: Dict::new(),
    })
    .await;
    match c.recv().await {
        Message::Welcome { details, .. } => details,
        other => panic!("expected WELCOME, got {other:?}"),
    }
}

fn challenge_extra(m: Message) -> Dict {
    match m {
        Message::Challenge { extra, .. } => extra,
        other => panic!("expected CHALLENGE, got {other:?}"),
    }
}

fn hmac_b64(key: &[u8], msg: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(msg.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

async fn cryptosign(c: &mut Client, realm: &str, authid: &str, seed: u8) -> Dict {
    let key = SigningKey::from_bytes(&[seed; 32]);
    let extra = opts(&[(
        "pubkey",
        Value::from(hex::encode(key.verifying_key().to_bytes())),
    )]);
    let ch = challenge_extra(
        c.hello(realm, hello(Some(authid), &["cryptosign"], Some(extra)))
            .await,
    );
    let bytes = hex::decode(ch["challenge"].as_str().unwrap()).unwrap();
    let sig = key.sign(&bytes);
    answer(
        c,
        format!("{}{}", hex::encode(sig.to_bytes()), hex::encode(&bytes)),
    )
    .await
}

#[tokio::test]
async fn fixture_universal_websocket_all_methods_and_roles() {
    let node = FixtureNode::start();
    let url = format!("ws://{}/ws", node.addrs[0]);

    // Anonymous: role anonymous, may subscribe under com.example. but not publish.
    let mut anon = Client::websocket(&url, "wamp.2.json").await;
    let d = match anon
        .hello("realm1", hello(None, &["anonymous"], None))
        .await
    {
        Message::Welcome { details, .. } => details,
        m => panic!("{m:?}"),
    };
    assert_eq!(d["authrole"], Value::from("anonymous"));
    anon.subscribe("com.example.news", Dict::new()).await;
    let req = anon
        .publish(
            "com.example.news",
            opts(&[("acknowledge", true.into())]),
            args(vec![]),
        )
        .await;
    assert_eq!(
        anon.expect_error(code::PUBLISH, req).await,
        "wamp.error.not_authorized"
    );

    // Ticket: alice is a user and may publish (disclosed as publisher by her role).
    let mut alice = Client::websocket(&url, "wamp.2.msgpack").await;
    challenge_extra(
        alice
            .hello("realm1", hello(Some("alice"), &["ticket"], None))
            .await,
    );
    let d = answer(&mut alice, "alice-ticket-secret".into()).await;
    assert_eq!(d["authrole"], Value::from("user"));
    alice
        .publish(
            "com.example.news",
            Dict::new(),
            args(vec![Value::from("hi")]),
        )
        .await;
    match anon.recv().await {
        Message::Event { details, .. } => {
            assert_eq!(details["publisher_authid"], Value::from("alice"))
        }
        m => panic!("{m:?}"),
    }
    // ...but not on admin topics (wildcard permission).
    let req = alice
        .publish(
            "com.example.x.admin",
            opts(&[("acknowledge", true.into())]),
            args(vec![]),
        )
        .await;
    assert_eq!(
        alice.expect_error(code::PUBLISH, req).await,
        "wamp.error.not_authorized"
    );

    // WAMP-CRA salted: carol is a backend and registers a procedure.
    let mut carol = Client::websocket(&url, "wamp.2.cbor").await;
    let ch = challenge_extra(
        carol
            .hello("realm1", hello(Some("carol"), &["wampcra"], None))
            .await,
    );
    let mut key = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(b"carol-secret", b"salt123", 100, &mut key);
    let key = base64::engine::general_purpose::STANDARD.encode(key);
    let d = answer(
        &mut carol,
        hmac_b64(key.as_bytes(), ch["challenge"].as_str().unwrap()),
    )
    .await;
    assert_eq!(d["authrole"], Value::from("backend"));
    carol.register("com.example.public.echo", Dict::new()).await;

    // Anonymous may call public procedures, disclosed to the callee by its role.
    anon.call("com.example.public.echo", Dict::new(), args(vec![]))
        .await;
    match carol.recv().await {
        Message::Invocation { details, .. } => {
            assert_eq!(details["caller_authrole"], Value::from("anonymous"))
        }
        m => panic!("{m:?}"),
    }

    // WAMP-CRA plain (bob) with a wrong signature fails.
    let mut bob = Client::websocket(&url, "wamp.2.json").await;
    challenge_extra(
        bob.hello("realm1", hello(Some("bob"), &["wampcra"], None))
            .await,
    );
    bob.send(&Message::Authenticate {
        signature: hmac_b64(b"not-bobs", "x"),
        extra: Dict::new(),
    })
    .await;
    assert_eq!(bob.expect_abort().await, "wamp.error.authentication_failed");

    // The meta API obeys roles: anonymous may count sessions, a user may not.
    let req = anon
        .call("wamp.session.count", Dict::new(), args(vec![]))
        .await;
    match anon.recv().await {
        Message::Result {
            request, payload, ..
        } if request == req => {
            assert!(payload.args()[0].as_u64().unwrap() >= 3)
        }
        m => panic!("{m:?}"),
    }
    let req = alice
        .call("wamp.session.count", Dict::new(), args(vec![]))
        .await;
    assert_eq!(
        alice.expect_error(code::CALL, req).await,
        "wamp.error.not_authorized"
    );

    // Cryptosign: dave is a backend.
    let mut dave = Client::websocket(&url, "wamp.2.json").await;
    let d = cryptosign(&mut dave, "realm1", "dave", 7).await;
    assert_eq!(d["authrole"], Value::from("backend"));
}

#[tokio::test]
async fn fixture_rawsocket_ticket_from_environment_and_wampcra() {
    let node = FixtureNode::start();
    // Ticket read from ${SWITCHYARD_TEST_MASTER_TICKET}; role master on realm buildbot.
    let mut master = Client::rawsocket(node.addrs[0], Serializer::MsgPack).await;
    challenge_extra(
        master
            .hello("buildbot", hello(Some("master"), &["ticket"], None))
            .await,
    );
    let d = answer(&mut master, MASTER_TICKET.into()).await;
    assert_eq!(d["authrole"], Value::from("master"));
    master.register("org.buildbot.ping", Dict::new()).await;
    // RawSocket does not offer anonymous on this transport.
    let mut anon = Client::rawsocket(node.addrs[0], Serializer::Json).await;
    match anon.hello("realm1", client_roles()).await {
        Message::Abort { reason, .. } => assert_eq!(reason, "wamp.error.no_auth_method"),
        m => panic!("{m:?}"),
    }
    // WAMP-CRA unsalted.
    let mut worker = Client::rawsocket(node.addrs[0], Serializer::Cbor).await;
    let ch = challenge_extra(
        worker
            .hello("realm1", hello(Some("worker"), &["wampcra"], None))
            .await,
    );
    let d = answer(
        &mut worker,
        hmac_b64(b"worker-secret", ch["challenge"].as_str().unwrap()),
    )
    .await;
    assert_eq!(d["authid"], Value::from("worker"));
}

#[tokio::test]
async fn fixture_tls_web_transport_and_realm_bound_principal() {
    let node = FixtureNode::start();
    let url = format!("wss://localhost:{}/ws", node.addrs[1].port());
    // Ticket over wss://.
    let io = node.cert.connect(node.addrs[1]).await;
    let mut alice = Client::websocket_over(io, &url, "wamp.2.json").await;
    challenge_extra(
        alice
            .hello("realm1", hello(Some("alice"), &["ticket"], None))
            .await,
    );
    answer(&mut alice, "alice-ticket-secret".into()).await;
    // The sensor's principal is bound to realm iot.
    let io = node.cert.connect(node.addrs[1]).await;
    let mut sensor = Client::websocket_over(io, &url, "wamp.2.msgpack").await;
    let d = cryptosign(&mut sensor, "iot", "sensor-1", 8).await;
    assert_eq!(d["realm"], Value::from("iot"));
    assert_eq!(d["authrole"], Value::from("device"));
    let req = sensor
        .publish(
            "io.sensor.s1.reading",
            opts(&[("acknowledge", true.into())]),
            args(vec![]),
        )
        .await;
    assert!(matches!(sensor.recv().await, Message::Published { request, .. } if request == req));
    let req = sensor
        .publish(
            "io.sensor.s1.config",
            opts(&[("acknowledge", true.into())]),
            args(vec![]),
        )
        .await;
    assert_eq!(
        sensor.expect_error(code::PUBLISH, req).await,
        "wamp.error.not_authorized"
    );
    // This transport serves json and msgpack only.
    let io = node.cert.connect(node.addrs[1]).await;
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        url.as_str(),
    )
    .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "wamp.2.cbor".parse().unwrap());
    assert!(tokio_tungstenite::client_async(req, io).await.is_err());
}

#[tokio::test]
async fn fixture_plain_websocket_transport_is_anonymous_only() {
    let node = FixtureNode::start();
    // Any path works on a websocket transport.
    let mut c = Client::websocket(&format!("ws://{}/", node.addrs[2]), "wamp.2.json").await;
    match c
        .hello("realm1", hello(Some("alice"), &["ticket"], None))
        .await
    {
        Message::Abort { reason, .. } => assert_eq!(reason, "wamp.error.no_auth_method"),
        m => panic!("{m:?}"),
    }
    let mut c = Client::websocket(&format!("ws://{}/anything", node.addrs[2]), "wamp.2.json").await;
    c.join("realm1").await;
}

#[test]
fn bad_node_config_is_refused_naming_the_key() {
    let dir = temp_dir("bad");
    std::fs::write(
        dir.join("config.yaml"),
        "version: 2\nworkers:\n  - type: router\n    realms:\n      - name: realm1\n    transports:\n      - type: websocket\n        endpoint: {type: tcp, port: 0, interface: 127.0.0.1}\n        auth:\n          ticket: {type: function, create: mymodule.auth}\n",
    )
    .unwrap();
    for cmd in ["start", "check"] {
        let out = Command::new(BIN)
            .args([cmd, "--cbdir"])
            .arg(&dir)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("workers[0].transports[0].auth.ticket.type"),
            "{cmd}: {err}"
        );
    }
    let out = Command::new(BIN)
        .args(["start", "--cbdir"])
        .arg(dir.join("missing"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no config.json, config.yaml or config.toml")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// One HTTP/1.1 request on a fresh connection; returns the status and the JSON body.
async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    let status = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn fixture_http_bridge_publisher_and_caller() {
    let node = FixtureNode::start();
    let addr = node.addrs[0];
    let mut anon = Client::websocket(&format!("ws://{addr}/ws"), "wamp.2.json").await;
    anon.join("realm1").await;
    anon.subscribe("com.example.news", Dict::new()).await;

    // publisher: acts as role backend.
    let (status, body) = http(
        addr,
        "POST",
        "/publish",
        r#"{"topic": "com.example.news", "args": ["hello"], "kwargs": {"n": 1}}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["id"].as_u64().is_some(), "{body}");
    match anon.recv().await {
        Message::Event { payload, .. } => {
            assert_eq!(payload.args(), &[Value::from("hello")]);
            assert_eq!(payload.kwargs().unwrap()["n"], Value::Int(1));
        }
        m => panic!("{m:?}"),
    }
    let (status, body) = http(addr, "POST", "/publish", r#"{"args": []}"#).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = http(addr, "POST", "/publish", r#"{"topic": "wamp.fake"}"#).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (200, Some("wamp.error.invalid_uri"))
    );
    let (status, _) = http(addr, "GET", "/publish", "").await;
    assert_eq!(status, 405);
    let big = format!(
        r#"{{"topic": "com.example.news", "args": ["{}"]}}"#,
        "x".repeat(70_000)
    );
    let (status, _) = http(addr, "POST", "/publish", &big).await;
    assert_eq!(status, 413);

    // caller: acts as role anonymous, whose permissions apply.
    let (status, body) = http(
        addr,
        "POST",
        "/call",
        r#"{"procedure": "wamp.session.count"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["args"][0].as_u64().unwrap() >= 1, "{body}");
    let (status, body) = http(
        addr,
        "POST",
        "/call",
        r#"{"procedure": "com.example.secret"}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["error"], "wamp.error.not_authorized", "{body}");
    let (status, body) = http(
        addr,
        "POST",
        "/call",
        r#"{"procedure": "com.example.public.none"}"#,
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (200, Some("wamp.error.no_such_procedure"))
    );
    let (status, _) = http(addr, "POST", "/call", "not json").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn allowed_origins_are_enforced_for_browsers() {
    let dir = temp_dir("origins");
    std::fs::write(
        dir.join("config.json"),
        r#"{"version": 2, "workers": [{"type": "router",
            "realms": [{"name": "realm1", "roles": []}],
            "transports": [{"type": "websocket",
                "endpoint": {"type": "tcp", "port": 0, "interface": "127.0.0.1"},
                "options": {"allowed_origins": ["https://*.example.com"], "allow_null_origin": false}}]}]}"#,
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["start", "--cbdir"])
        .arg(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // Killed (and its directory removed) even if an assertion fails.
    let _guard = Kill(child, dir);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("switchyard listening on ")
        .unwrap()
        .to_owned();
    let upgrade = |origin: Option<&str>| {
        let mut req =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                format!("ws://{addr}/ws"),
            )
            .unwrap();
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", "wamp.2.json".parse().unwrap());
        if let Some(o) = origin {
            req.headers_mut().insert("Origin", o.parse().unwrap());
        }
        req
    };
    let ok = |r: &Result<_, tokio_tungstenite::tungstenite::Error>| r.is_ok();
    assert!(ok(&tokio_tungstenite::connect_async(upgrade(None))
        .await
        .map(|_| ())));
    assert!(ok(&tokio_tungstenite::connect_async(upgrade(Some(
        "https://app.example.com"
    )))
    .await
    .map(|_| ())));
    assert!(!ok(&tokio_tungstenite::connect_async(upgrade(Some(
        "https://evil.org"
    )))
    .await
    .map(|_| ())));
    assert!(!ok(&tokio_tungstenite::connect_async(upgrade(Some(
        "null"
    )))
    .await
    .map(|_| ())));
}

struct Kill(std::process::Child, std::path::PathBuf);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

#[tokio::test]
async fn static_web_path_serves_files_inside_its_directory_only() {
    let dir = temp_dir("static");
    let node_dir = dir.join(".crossbar");
    std::fs::create_dir_all(node_dir.join("../web/sub")).unwrap();
    std::fs::write(dir.join("web/index.html"), "<h1>hello</h1>").unwrap();
    std::fs::write(dir.join("web/sub/app.js"), "console.log(1)").unwrap();
    std::fs::write(dir.join("secret.txt"), "do not serve").unwrap();
    std::fs::write(
        node_dir.join("config.json"),
        r#"{"version": 2, "workers": [{"type": "router",
            "realms": [{"name": "realm1", "roles": []}],
            "transports": [{"type": "web",
                "endpoint": {"type": "tcp", "port": 0, "interface": "127.0.0.1"},
                "paths": {"/": {"type": "static", "directory": "../web",
                                "options": {"cache_timeout": 60}},
                          "ws": {"type": "websocket"}}}]}]}"#,
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["start", "--cbdir"])
        .arg(&node_dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _guard = Kill(child, dir.clone());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
    let addr: std::net::SocketAddr = line
        .trim()
        .strip_prefix("switchyard listening on ")
        .unwrap()
        .parse()
        .unwrap();
    let get = |path: &'static str| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    let r = get("/").await;
    assert!(
        r.starts_with("HTTP/1.1 200") && r.ends_with("<h1>hello</h1>"),
        "{r}"
    );
    assert!(
        r.to_ascii_lowercase().contains("cache-control: max-age=60"),
        "{r}"
    );
    let r = get("/sub/app.js").await;
    assert!(
        r.to_ascii_lowercase()
            .contains("content-type: text/javascript"),
        "{r}"
    );
    for outside in [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/sub/..%2f..%2fsecret.txt",
    ] {
        let r = get(outside).await;
        assert!(!r.contains("do not serve"), "{outside}: {r}");
    }
    assert!(get("/ws").await.starts_with("HTTP/1.1 426"));
    let mut c = Client::websocket(&format!("ws://{addr}/ws"), "wamp.2.json").await;
    c.join("realm1").await;
}
