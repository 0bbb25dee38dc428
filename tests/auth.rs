//! Authentication per listener, over real sockets: anonymous, ticket, WAMP-CRA (plain and
//! salted), cryptosign; good and bad credentials; ABORT reasons; TLS (wss:// and RawSocket).

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use common::tls::TestCert;
use common::*;
use ed25519_dalek::{Signer, SigningKey};
use hmac::{Hmac, Mac};
use switchyard_router::auth::cryptosign::{Cryptosign, CryptosignPrincipal};
use switchyard_router::auth::methods::{AnonymousConfig, TransportAuth};
use switchyard_router::auth::roles::{Permission, Role, RoleAuthorizer};
use switchyard_router::auth::ticket::{Ticket, TicketPrincipal};
use switchyard_router::auth::wampcra::{Salt, WampCra, WampCraUser};
use switchyard_router::auth::AllowAll;
use switchyard_router::transport::ListenerConfig;
use switchyard_router::uri::MatchPolicy;
use switchyard_router::wire::{Dict, Message, Serializer, Value};
use switchyard_router::RouterConfig;

const SEED: [u8; 32] = [7; 32];

fn all_methods() -> TransportAuth {
    let mut tickets = HashMap::new();
    tickets.insert(
        "alice".to_string(),
        TicketPrincipal {
            ticket: "s3cr3t-ticket".into(),
            role: "user".into(),
            realm: None,
        },
    );
    let mut users = HashMap::new();
    users.insert(
        "bob".to_string(),
        WampCraUser::new("bob-secret", None, "user".into(), None),
    );
    users.insert(
        "carol".to_string(),
        WampCraUser::new(
            "carol-secret",
            Some(Salt {
                salt: "salt123".into(),
                iterations: 100,
                keylen: 32,
            }),
            "user".into(),
            None,
        ),
    );
    let mut principals = HashMap::new();
    principals.insert(
        "dave".to_string(),
        CryptosignPrincipal {
            authorized_keys: vec![hex::encode(
                SigningKey::from_bytes(&SEED).verifying_key().to_bytes(),
            )],
            role: "user".into(),
            realm: None,
        },
    );
    TransportAuth {
        anonymous: Some(AnonymousConfig {
            role: "guest".into(),
            authid: None,
            realm: None,
        }),
        ticket: Some(Ticket {
            principals: tickets,
        }),
        wampcra: Some(WampCra { users }),
        cryptosign: Some(Cryptosign { principals }),
        dynamic: Vec::new(),
    }
}

fn roles() -> RoleAuthorizer {
    let mut a = RoleAuthorizer::new();
    let all = Permission {
        call: true,
        register: true,
        publish: true,
        subscribe: true,
        ..Default::default()
    };
    a.add_role(
        "realm1",
        "user",
        Role::new([(MatchPolicy::Prefix, String::new(), all)]),
    );
    a.add_role("realm1", "guest", Role::new([]));
    a
}

async fn router_with(auth: TransportAuth, tls: Option<&TestCert>) -> TestRouter {
    let listener = ListenerConfig {
        auth: Some(Arc::new(auth)),
        tls: tls.map(TestCert::server_config),
        ..ListenerConfig::default()
    };
    TestRouter::with_listener(RouterConfig::default(), Arc::new(roles()), listener).await
}

fn hello_details(authid: Option<&str>, methods: &[&str], extra: Option<Dict>) -> Dict {
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

fn welcome_details(m: Message) -> Dict {
    match m {
        Message::Welcome { details, .. } => details,
        other => panic!("expected WELCOME, got {other:?}"),
    }
}

fn challenge(m: Message) -> (String, Dict) {
    match m {
        Message::Challenge { method, extra } => (method, extra),
        other => panic!("expected CHALLENGE, got {other:?}"),
    }
}

async fn authenticate(c: &mut Client, signature: String) -> Message {
    c.send(&Message::Authenticate {
        signature,
        extra: Dict::new(),
    })
    .await;
    c.recv().await
}

fn hmac_b64(key: &[u8], msg: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(msg.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[tokio::test]
async fn anonymous_gets_the_configured_role_and_ignores_the_client_authid() {
    let r = router_with(all_methods(), None).await;
    let mut c = r.client("wamp.2.json").await;
    let d = welcome_details(
        c.hello("realm1", hello_details(Some("root"), &["anonymous"], None))
            .await,
    );
    assert_eq!(d["authrole"], Value::from("guest"));
    assert_eq!(d["authmethod"], Value::from("anonymous"));
    assert_ne!(d["authid"], Value::from("root"));
}

#[tokio::test]
async fn transport_without_auth_is_anonymous_only() {
    let r = router_with(TransportAuth::default(), None).await;
    let mut c = r.client("wamp.2.json").await;
    let d = welcome_details(c.hello("realm1", client_roles()).await);
    assert_eq!(d["authrole"], Value::from("anonymous"));
    let mut c = r.client("wamp.2.json").await;
    let reason = match c
        .hello("realm1", hello_details(Some("alice"), &["ticket"], None))
        .await
    {
        Message::Abort { reason, .. } => reason,
        other => panic!("{other:?}"),
    };
    assert_eq!(reason, "wamp.error.no_auth_method");
}

#[tokio::test]
async fn unconfigured_method_is_refused() {
    let auth = TransportAuth {
        ticket: all_methods().ticket,
        ..Default::default()
    };
    let r = router_with(auth, None).await;
    let mut c = r.client("wamp.2.msgpack").await;
    c.send(&Message::Hello {
        realm: "realm1".into(),
        details: hello_details(None, &["anonymous", "wampcra"], None),
    })
    .await;
    assert_eq!(c.expect_abort().await, "wamp.error.no_auth_method");
    c.expect_closed().await;
}

#[tokio::test]
async fn ticket_good_bad_and_unknown() {
    let r = router_with(all_methods(), None).await;
    // Good ticket.
    let mut c = r.client("wamp.2.json").await;
    let (method, _) = challenge(
        c.hello("realm1", hello_details(Some("alice"), &["ticket"], None))
            .await,
    );
    assert_eq!(method, "ticket");
    let d = welcome_details(authenticate(&mut c, "s3cr3t-ticket".into()).await);
    assert_eq!(d["authid"], Value::from("alice"));
    assert_eq!(d["authrole"], Value::from("user"));
    assert_eq!(d["authmethod"], Value::from("ticket"));
    assert_eq!(d["authprovider"], Value::from("static"));

    // Bad ticket.
    let mut c = r.client("wamp.2.json").await;
    challenge(
        c.hello("realm1", hello_details(Some("alice"), &["ticket"], None))
            .await,
    );
    match authenticate(&mut c, "s3cr3t-tickeT".into()).await {
        Message::Abort { reason, details } => {
            assert_eq!(reason, "wamp.error.authentication_failed");
            // No secret in the message.
            assert!(!format!("{details:?}").contains("s3cr3t"));
        }
        other => panic!("{other:?}"),
    }
    c.expect_closed().await;

    // Unknown principal.
    let mut c = r.client("wamp.2.json").await;
    match c
        .hello("realm1", hello_details(Some("mallory"), &["ticket"], None))
        .await
    {
        Message::Abort { reason, .. } => assert_eq!(reason, "wamp.error.no_such_principal"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn wampcra_plain_good_and_bad() {
    let r = router_with(all_methods(), None).await;
    let mut c = r.client("wamp.2.cbor").await;
    c.send(&Message::Hello {
        realm: "realm1".into(),
        details: hello_details(Some("bob"), &["wampcra"], None),
    })
    .await;
    let (method, extra) = challenge(c.recv().await);
    assert_eq!(method, "wampcra");
    assert!(!extra.contains_key("salt"));
    let ch = extra["challenge"].as_str().unwrap().to_owned();
    let parsed: serde_json::Value = serde_json::from_str(&ch).unwrap();
    assert_eq!(parsed["authid"], "bob");
    assert_eq!(parsed["authrole"], "user");
    assert_eq!(parsed["authmethod"], "wampcra");
    let session = parsed["session"].as_u64().unwrap();
    let msg = authenticate(&mut c, hmac_b64(b"bob-secret", &ch)).await;
    match msg {
        Message::Welcome {
            session: s,
            details,
        } => {
            assert_eq!(
                s, session,
                "the challenge names the session ID WELCOME gives"
            );
            assert_eq!(details["authmethod"], Value::from("wampcra"));
        }
        other => panic!("{other:?}"),
    }

    let mut c = r.client("wamp.2.json").await;
    let (_, extra) = challenge(
        c.hello("realm1", hello_details(Some("bob"), &["wampcra"], None))
            .await,
    );
    let ch = extra["challenge"].as_str().unwrap();
    match authenticate(&mut c, hmac_b64(b"wrong", ch)).await {
        Message::Abort { reason, .. } => assert_eq!(reason, "wamp.error.authentication_failed"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn wampcra_salted_as_autobahn_derives_the_key() {
    let r = router_with(all_methods(), None).await;
    let mut c = r.client("wamp.2.json").await;
    let (_, extra) = challenge(
        c.hello("realm1", hello_details(Some("carol"), &["wampcra"], None))
            .await,
    );
    assert_eq!(extra["salt"], Value::from("salt123"));
    assert_eq!(extra["iterations"].as_u64(), Some(100));
    assert_eq!(extra["keylen"].as_u64(), Some(32));
    // The client side of autobahn's derive_key, computed independently.
    let mut key = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(b"carol-secret", b"salt123", 100, &mut key);
    let key_b64 = base64::engine::general_purpose::STANDARD.encode(key);
    let sig = hmac_b64(key_b64.as_bytes(), extra["challenge"].as_str().unwrap());
    let d = welcome_details(authenticate(&mut c, sig).await);
    assert_eq!(d["authid"], Value::from("carol"));

    // The unsalted secret does not work for a salted user.
    let mut c = r.client("wamp.2.json").await;
    let (_, extra) = challenge(
        c.hello("realm1", hello_details(Some("carol"), &["wampcra"], None))
            .await,
    );
    let sig = hmac_b64(b"carol-secret", extra["challenge"].as_str().unwrap());
    assert!(matches!(
        authenticate(&mut c, sig).await,
        Message::Abort { .. }
    ));
}

fn pubkey_extra(key: &SigningKey) -> Dict {
    opts(&[(
        "pubkey",
        Value::from(hex::encode(key.verifying_key().to_bytes())),
    )])
}

fn sign_challenge(key: &SigningKey, extra: &Dict) -> String {
    let challenge = hex::decode(extra["challenge"].as_str().unwrap()).unwrap();
    let sig = key.sign(&challenge);
    format!("{}{}", hex::encode(sig.to_bytes()), hex::encode(&challenge))
}

#[tokio::test]
async fn cryptosign_good_key_wrong_key_bad_signature() {
    let r = router_with(all_methods(), None).await;
    let key = SigningKey::from_bytes(&SEED);

    // Good, with and without an authid (the key names the principal).
    for authid in [Some("dave"), None] {
        let mut c = r.client("wamp.2.msgpack").await;
        let (method, extra) = challenge(
            c.hello(
                "realm1",
                hello_details(authid, &["cryptosign"], Some(pubkey_extra(&key))),
            )
            .await,
        );
        assert_eq!(method, "cryptosign");
        assert_eq!(extra["challenge"].as_str().unwrap().len(), 64);
        let d = welcome_details(authenticate(&mut c, sign_challenge(&key, &extra)).await);
        assert_eq!(d["authid"], Value::from("dave"));
        assert_eq!(d["authmethod"], Value::from("cryptosign"));
    }

    // A key that is not authorized.
    let other = SigningKey::from_bytes(&[9; 32]);
    let mut c = r.client("wamp.2.msgpack").await;
    match c
        .hello(
            "realm1",
            hello_details(Some("dave"), &["cryptosign"], Some(pubkey_extra(&other))),
        )
        .await
    {
        Message::Abort { reason, .. } => assert_eq!(reason, "wamp.error.authentication_failed"),
        m => panic!("{m:?}"),
    }

    // The authorized key's pubkey, signed by another key.
    let mut c = r.client("wamp.2.msgpack").await;
    let (_, extra) = challenge(
        c.hello(
            "realm1",
            hello_details(Some("dave"), &["cryptosign"], Some(pubkey_extra(&key))),
        )
        .await,
    );
    match authenticate(&mut c, sign_challenge(&other, &extra)).await {
        Message::Abort { reason, .. } => assert_eq!(reason, "wamp.error.authentication_failed"),
        m => panic!("{m:?}"),
    }

    // Garbage.
    let mut c = r.client("wamp.2.msgpack").await;
    challenge(
        c.hello(
            "realm1",
            hello_details(Some("dave"), &["cryptosign"], Some(pubkey_extra(&key))),
        )
        .await,
    );
    assert!(matches!(
        authenticate(&mut c, "zz".into()).await,
        Message::Abort { .. }
    ));
}

#[tokio::test]
async fn client_order_of_methods_decides() {
    let r = router_with(all_methods(), None).await;
    let mut c = r.client("wamp.2.json").await;
    let (method, _) = challenge(
        c.hello(
            "realm1",
            hello_details(Some("alice"), &["ticket", "anonymous"], None),
        )
        .await,
    );
    assert_eq!(method, "ticket");
    let mut c = r.client("wamp.2.json").await;
    let d = welcome_details(
        c.hello(
            "realm1",
            hello_details(Some("alice"), &["anonymous", "ticket"], None),
        )
        .await,
    );
    assert_eq!(d["authmethod"], Value::from("anonymous"));
}

#[tokio::test]
async fn a_role_the_realm_lacks_is_refused() {
    let mut auth = all_methods();
    auth.ticket
        .as_mut()
        .unwrap()
        .principals
        .get_mut("alice")
        .unwrap()
        .role = "nonexistent".into();
    let r = router_with(auth, None).await;
    let mut c = r.client("wamp.2.json").await;
    challenge(
        c.hello("realm1", hello_details(Some("alice"), &["ticket"], None))
            .await,
    );
    match authenticate(&mut c, "s3cr3t-ticket".into()).await {
        Message::Abort { reason, .. } => assert_eq!(reason, "wamp.error.no_such_role"),
        m => panic!("{m:?}"),
    }
}

#[tokio::test]
async fn anything_but_authenticate_after_challenge_is_a_violation() {
    let r = router_with(all_methods(), None).await;
    let mut c = r.client("wamp.2.json").await;
    challenge(
        c.hello("realm1", hello_details(Some("alice"), &["ticket"], None))
            .await,
    );
    c.publish("com.x", Dict::new(), args(vec![])).await;
    assert_eq!(c.expect_abort().await, "wamp.error.protocol_violation");
}

#[tokio::test]
async fn tls_websocket_and_rawsocket_with_ticket() {
    let cert = TestCert::generate();
    let r = router_with(all_methods(), Some(&cert)).await;
    // wss://
    let io = cert.connect(r.addr).await;
    let mut c = Client::websocket_over(
        io,
        &format!("wss://localhost:{}/ws", r.addr.port()),
        "wamp.2.json",
    )
    .await;
    challenge(
        c.hello("realm1", hello_details(Some("alice"), &["ticket"], None))
            .await,
    );
    welcome_details(authenticate(&mut c, "s3cr3t-ticket".into()).await);
    // TLS RawSocket on the same port.
    let io = cert.connect(r.addr).await;
    let mut c = Client::rawsocket_over(io, Serializer::MsgPack).await;
    challenge(
        c.hello("realm1", hello_details(Some("alice"), &["ticket"], None))
            .await,
    );
    welcome_details(authenticate(&mut c, "s3cr3t-ticket".into()).await);
    // Plain TCP to a TLS port gets nowhere.
    let mut plain = tokio::net::TcpStream::connect(r.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    plain.write_all(&[0x7f, 0xf2, 0, 0]).await.unwrap();
    let mut buf = [0u8; 4];
    let n = tokio::time::timeout(WAIT, plain.read(&mut buf))
        .await
        .unwrap();
    assert!(
        !matches!(n, Ok(4) if buf[0] == 0x7f),
        "plain RawSocket must not be served on a TLS port"
    );
}

#[tokio::test]
async fn router_default_authenticator_still_applies_without_listener_auth() {
    let r = TestRouter::with_listener(
        RouterConfig::default(),
        Arc::new(AllowAll),
        ListenerConfig::default(),
    )
    .await;
    let (mut c, _) = r.joined("wamp.2.json").await;
    c.subscribe("com.x", Dict::new()).await;
}

/// An in-process authenticator, as an application would register one with Crossbar.
fn spawn_authenticator(r: &TestRouter) {
    use switchyard_router::wire::code;
    let mut local = r
        .router
        .connect_local("realm1", "authenticator", "trusted")
        .unwrap();
    local.send(Message::Register {
        request: 1,
        options: Dict::new(),
        procedure: "com.example.authenticate".into(),
    });
    tokio::spawn(async move {
        while let Some(msg) = local.recv().await {
            let Message::Invocation {
                request, payload, ..
            } = msg
            else {
                continue;
            };
            let a = payload.args();
            let authid = a.get(1).and_then(Value::as_str).unwrap_or("");
            let details = a[2].as_dict().unwrap();
            let method = details["authmethod"].as_str().unwrap();
            let principal = match method {
                "ticket" if details.get("ticket") == Some(&Value::from("good-ticket")) => {
                    Some(Value::from("user"))
                }
                "wampcra" if authid == "erin" => Some(Value::Dict(opts(&[
                    ("secret", Value::from("erin-secret")),
                    ("role", Value::from("user")),
                ]))),
                "cryptosign" => Some(Value::Dict(opts(&[
                    (
                        "pubkey",
                        Value::from(hex::encode(
                            SigningKey::from_bytes(&SEED).verifying_key().to_bytes(),
                        )),
                    ),
                    ("role", Value::from("user")),
                    ("authid", Value::from("frank")),
                ]))),
                "anonymous" => Some(Value::from("guest")),
                _ => None,
            };
            local.send(match principal {
                Some(p) => Message::Yield {
                    request,
                    options: Dict::new(),
                    payload: args(vec![p]),
                },
                None => Message::error(
                    code::INVOCATION,
                    request,
                    "com.example.invalid_credentials",
                    Some("no".into()),
                ),
            });
        }
    });
}

#[tokio::test]
async fn dynamic_authenticators_for_every_method() {
    use switchyard_router::auth::dynamic::{DynamicAuth, DynamicMethod};
    let dynamic = [
        DynamicMethod::Anonymous,
        DynamicMethod::Ticket,
        DynamicMethod::WampCra,
        DynamicMethod::Cryptosign,
    ]
    .into_iter()
    .map(|m| Arc::new(DynamicAuth::new(m, "com.example.authenticate".into(), None)))
    .collect();
    let r = router_with(
        TransportAuth {
            dynamic,
            ..Default::default()
        },
        None,
    )
    .await;
    spawn_authenticator(&r);

    // Ticket: checked by the procedure, after AUTHENTICATE.
    let mut c = r.client("wamp.2.json").await;
    challenge(
        c.hello("realm1", hello_details(Some("x"), &["ticket"], None))
            .await,
    );
    let d = welcome_details(authenticate(&mut c, "good-ticket".into()).await);
    assert_eq!(d["authrole"], Value::from("user"));
    assert_eq!(d["authprovider"], Value::from("dynamic"));
    let mut c = r.client("wamp.2.json").await;
    challenge(
        c.hello("realm1", hello_details(Some("x"), &["ticket"], None))
            .await,
    );
    match authenticate(&mut c, "bad".into()).await {
        Message::Abort { reason, .. } => assert_eq!(reason, "com.example.invalid_credentials"),
        m => panic!("{m:?}"),
    }

    // WAMP-CRA: the procedure supplies the secret.
    let mut c = r.client("wamp.2.msgpack").await;
    let (_, extra) = challenge(
        c.hello("realm1", hello_details(Some("erin"), &["wampcra"], None))
            .await,
    );
    let sig = hmac_b64(b"erin-secret", extra["challenge"].as_str().unwrap());
    let d = welcome_details(authenticate(&mut c, sig).await);
    assert_eq!(d["authid"], Value::from("erin"));

    // Cryptosign: the procedure names the key and the authid.
    let key = SigningKey::from_bytes(&SEED);
    let mut c = r.client("wamp.2.json").await;
    let (_, extra) = challenge(
        c.hello(
            "realm1",
            hello_details(None, &["cryptosign"], Some(pubkey_extra(&key))),
        )
        .await,
    );
    let d = welcome_details(authenticate(&mut c, sign_challenge(&key, &extra)).await);
    assert_eq!(d["authid"], Value::from("frank"));

    // Anonymous.
    let mut c = r.client("wamp.2.json").await;
    let d = welcome_details(
        c.hello("realm1", hello_details(None, &["anonymous"], None))
            .await,
    );
    assert_eq!(d["authrole"], Value::from("guest"));
}
