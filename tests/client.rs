//! The built-in WAMP client (used by `switchyard bench`) against the router, over both
//! transports.

mod common;

use common::*;
use switchyard_router::client::{CalleeMessage, Client, ClientError, ClientOptions};
use switchyard_router::wire::{Dict, Message, Payload, Serializer, Value};

fn options(url: String, serializer: Serializer, batched: bool) -> ClientOptions {
    let mut o = ClientOptions::new(url, "realm1");
    o.serializer = serializer;
    o.batched = batched;
    o
}

#[tokio::test]
async fn pubsub_and_rpc_over_both_transports() {
    let r = TestRouter::start().await;
    let urls = [
        (format!("ws://{}/ws", r.addr), Serializer::Json, true),
        (format!("ws://{}/ws", r.addr), Serializer::Cbor, false),
        (format!("tcp://{}", r.addr), Serializer::MsgPack, false),
    ];
    for (url, ser, batched) in urls {
        let a = Client::connect(&options(url.clone(), ser, batched))
            .await
            .unwrap();
        let b = Client::connect(&options(url.clone(), ser, batched))
            .await
            .unwrap();
        let (_, mut events) = b.subscribe("com.c", Dict::new()).await.unwrap();
        a.publish_acknowledged("com.c", Dict::new(), args(vec![Value::Int(1)]))
            .await
            .unwrap();
        assert_eq!(
            events.recv().await.unwrap().payload.args(),
            &[Value::Int(1)]
        );

        let (_, mut calls) = b.register("com.c.double", Dict::new()).await.unwrap();
        let callee = b.clone();
        tokio::spawn(async move {
            while let Some(CalleeMessage::Invocation {
                request, payload, ..
            }) = calls.recv().await
            {
                let n = payload.args()[0].as_u64().unwrap();
                callee
                    .yield_result(request, Dict::new(), args(vec![Value::from(n * 2)]))
                    .await
                    .unwrap();
            }
        });
        let result = a
            .call("com.c.double", Dict::new(), args(vec![Value::Int(21)]))
            .await
            .unwrap();
        assert_eq!(result.args(), &[Value::Int(42)], "{url} {ser}");
        match a.call("com.c.none", Dict::new(), Payload::default()).await {
            Err(ClientError::Wamp { uri, .. }) => assert_eq!(uri, "wamp.error.no_such_procedure"),
            other => panic!("{other:?}"),
        }
        // Leaving ends the session: its registration is gone before the next round.
        b.leave().await.unwrap();
        let realm = r.router.realm("realm1").unwrap();
        for _ in 0..100 {
            if realm.session(b.session_id()).is_none() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(realm.session(b.session_id()).is_none());
    }
}

#[tokio::test]
async fn progressive_calls_and_cancel() {
    let r = TestRouter::start().await;
    let url = format!("ws://{}/ws", r.addr);
    let caller = Client::connect(&options(url.clone(), Serializer::MsgPack, false))
        .await
        .unwrap();
    let callee = Client::connect(&options(url, Serializer::MsgPack, false))
        .await
        .unwrap();
    let (_, mut calls) = callee.register("com.p", Dict::new()).await.unwrap();
    let (req, mut results) = caller
        .call_progressive("com.p", Dict::new(), Payload::default())
        .await
        .unwrap();
    let inv = match calls.recv().await.unwrap() {
        CalleeMessage::Invocation { request, .. } => request,
        other => panic!("{other:?}"),
    };
    let mut progress = Dict::new();
    progress.insert("progress".into(), Value::Bool(true));
    callee
        .yield_result(inv, progress, args(vec![Value::Int(1)]))
        .await
        .unwrap();
    assert!(
        matches!(results.recv().await.unwrap(), Message::Result { details, .. } if details.contains_key("progress"))
    );
    caller.cancel(req, "killnowait").await.unwrap();
    assert!(
        matches!(calls.recv().await.unwrap(), CalleeMessage::Interrupt { request, .. } if request == inv)
    );
    assert!(
        matches!(results.recv().await.unwrap(), Message::Error { error, .. } if error == "wamp.error.canceled")
    );
}

#[tokio::test]
async fn join_failures_are_reported() {
    let r = TestRouter::start().await;
    let mut o = options(format!("ws://{}/ws", r.addr), Serializer::Json, false);
    o.realm = "nope".into();
    match Client::connect(&o).await {
        Err(ClientError::Aborted { reason, .. }) => assert_eq!(reason, "wamp.error.no_such_realm"),
        other => panic!("{:?}", other.err()),
    }
    let o = options("http://x".into(), Serializer::Json, false);
    assert!(matches!(
        Client::connect(&o).await,
        Err(ClientError::Url(_))
    ));
    let o = options("tcp://127.0.0.1:1".into(), Serializer::Json, false);
    assert!(matches!(
        Client::connect(&o).await,
        Err(ClientError::Connect { .. })
    ));
}

/// A router whose listener knows WAMP-CRA users (plain and salted) and a ticket principal.
async fn auth_router() -> TestRouter {
    use std::collections::HashMap;
    use std::sync::Arc;
    use switchyard_router::auth::methods::TransportAuth;
    use switchyard_router::auth::roles::{Permission, Role, RoleAuthorizer};
    use switchyard_router::auth::ticket::{Ticket, TicketPrincipal};
    use switchyard_router::auth::wampcra::{Salt, WampCra, WampCraUser};
    use switchyard_router::transport::ListenerConfig;
    use switchyard_router::uri::MatchPolicy;

    let mut users = HashMap::new();
    users.insert(
        "w1".to_string(),
        WampCraUser::new("w1-secret", None, "worker".into(), None),
    );
    users.insert(
        "salty".to_string(),
        WampCraUser::new(
            "salty-secret",
            Some(Salt {
                salt: "pepper".into(),
                iterations: 100,
                keylen: 32,
            }),
            "worker".into(),
            None,
        ),
    );
    let mut tickets = HashMap::new();
    tickets.insert(
        "master".to_string(),
        TicketPrincipal {
            ticket: "master-ticket".into(),
            role: "master".into(),
            realm: None,
        },
    );
    let auth = TransportAuth {
        wampcra: Some(WampCra { users }),
        ticket: Some(Ticket {
            principals: tickets,
        }),
        ..Default::default()
    };
    let mut roles = RoleAuthorizer::new();
    let all = Permission {
        call: true,
        register: true,
        publish: true,
        subscribe: true,
        ..Default::default()
    };
    for role in ["worker", "master"] {
        roles.add_role(
            "realm1",
            role,
            Role::new([(MatchPolicy::Prefix, String::new(), all.clone())]),
        );
    }
    let listener = ListenerConfig {
        auth: Some(Arc::new(auth)),
        ..ListenerConfig::default()
    };
    TestRouter::with_listener(
        switchyard_router::RouterConfig::default(),
        Arc::new(roles),
        listener,
    )
    .await
}

#[tokio::test]
async fn authenticates_with_wampcra_and_ticket() {
    use switchyard_router::client::ClientAuth;
    let r = auth_router().await;
    let url = format!("ws://{}/ws", r.addr);
    let raw = format!("tcp://{}", r.addr);
    let with = |url: &str, auth: ClientAuth| {
        let mut o = options(url.to_owned(), Serializer::Json, false);
        o.auth = Some(auth);
        o
    };

    // Plain WAMP-CRA over both transports: the router's authid and role.
    for u in [&url, &raw] {
        let c = Client::connect(&with(u, ClientAuth::wampcra("w1", "w1-secret")))
            .await
            .unwrap();
        assert_eq!(c.authid(), Some("w1"), "{u}");
        assert_eq!(c.authrole(), Some("worker"), "{u}");
        assert_eq!(
            c.welcome_details()["authmethod"],
            Value::from("wampcra"),
            "{u}"
        );
        // The session works: its role may register.
        let proc = format!("com.auth.{}", &u[..2]);
        c.register(&proc, Dict::new()).await.unwrap();
    }

    // Salted WAMP-CRA: the client derives the key from the challenge's salt.
    let c = Client::connect(&with(&url, ClientAuth::wampcra("salty", "salty-secret")))
        .await
        .unwrap();
    assert_eq!(c.authid(), Some("salty"));
    assert_eq!(c.authrole(), Some("worker"));

    // Ticket.
    let c = Client::connect(&with(&url, ClientAuth::ticket("master", "master-ticket")))
        .await
        .unwrap();
    assert_eq!(c.authrole(), Some("master"));
    assert_eq!(c.welcome_details()["authmethod"], Value::from("ticket"));

    // Wrong secrets are refused with the router's reason.
    for auth in [
        ClientAuth::wampcra("w1", "not-the-secret"),
        ClientAuth::wampcra("salty", "w1-secret"),
        ClientAuth::ticket("master", "nope"),
    ] {
        match Client::connect(&with(&url, auth.clone())).await {
            Err(ClientError::Aborted { reason, .. }) => {
                assert_eq!(reason, "wamp.error.authentication_failed", "{auth:?}")
            }
            Err(e) => panic!("{auth:?}: {e}"),
            Ok(_) => panic!("{auth:?}: joined with a wrong secret"),
        }
    }
    // An unknown authid, and anonymous on a transport that does not allow it.
    match Client::connect(&with(&url, ClientAuth::wampcra("nobody", "x"))).await {
        Err(ClientError::Aborted { reason, .. }) => {
            assert_eq!(reason, "wamp.error.no_such_principal")
        }
        other => panic!("{:?}", other.err()),
    }
    match Client::connect(&options(url.clone(), Serializer::Json, false)).await {
        Err(ClientError::Aborted { reason, .. }) => {
            assert_eq!(reason, "wamp.error.no_auth_method")
        }
        other => panic!("{:?}", other.err()),
    }
    // Debug output never shows the secret.
    let shown = format!("{:?}", with(&url, ClientAuth::wampcra("w1", "w1-secret")));
    assert!(!shown.contains("w1-secret"), "{shown}");
}

#[tokio::test]
async fn closed_reports_why_the_session_ended() {
    let r = TestRouter::start().await;
    let c = Client::connect(&options(
        format!("ws://{}/ws", r.addr),
        Serializer::MsgPack,
        false,
    ))
    .await
    .unwrap();
    assert!(!c.is_closed());
    assert_eq!(c.close_reason(), None);
    r.router.shutdown().trigger();
    tokio::time::timeout(WAIT, c.closed()).await.unwrap();
    let reason = c.close_reason().unwrap();
    assert!(reason.contains("wamp.close.system_shutdown"), "{reason}");
}

#[tokio::test]
async fn disconnect_drops_the_connection_at_once() {
    let r = TestRouter::start().await;
    for url in [format!("ws://{}/ws", r.addr), format!("tcp://{}", r.addr)] {
        let c = Client::connect(&options(url.clone(), Serializer::MsgPack, false))
            .await
            .unwrap();
        let realm = r.router.realm("realm1").unwrap();
        assert!(realm.session(c.session_id()).is_some());
        c.disconnect();
        tokio::time::timeout(WAIT, c.closed()).await.unwrap();
        assert_eq!(c.close_reason().as_deref(), Some("the client disconnected"));
        // The router sees the socket close and the session leave.
        let mut gone = false;
        for _ in 0..250 {
            if realm.session(c.session_id()).is_none() {
                gone = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(gone, "{url}: the router still has the session");
        match c.call("com.x", Dict::new(), Payload::default()).await {
            Err(ClientError::Closed) => {}
            other => panic!("{url}: {:?}", other.err()),
        }
    }
}
