//! Authorization by role over real sockets: allowed and denied actions, nothing delivered on a
//! denial, and disclosure forced by a permission.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use switchyard_router::auth::methods::{AnonymousConfig, TransportAuth};
use switchyard_router::auth::roles::{Permission, Role, RoleAuthorizer};
use switchyard_router::auth::ticket::{Ticket, TicketPrincipal};
use switchyard_router::transport::ListenerConfig;
use switchyard_router::uri::MatchPolicy::{self, *};
use switchyard_router::wire::{code, Dict, Message, Value};
use switchyard_router::RouterConfig;

fn perm(call: bool, register: bool, publish: bool, subscribe: bool) -> Permission {
    Permission {
        call,
        register,
        publish,
        subscribe,
        ..Default::default()
    }
}

fn p(policy: MatchPolicy, uri: &str, perm: Permission) -> (MatchPolicy, String, Permission) {
    (policy, uri.to_owned(), perm)
}

/// `backend` may do everything under `com.app.`; `frontend` (anonymous) may subscribe under
/// `com.app.`, call `com.app.rpc.*` (disclosed), publish only `com.app.chat`, and nothing on
/// `com.app.*.admin`.
async fn router() -> TestRouter {
    let mut a = RoleAuthorizer::new();
    a.add_role(
        "realm1",
        "backend",
        Role::new([p(Prefix, "com.app.", perm(true, true, true, true))]),
    );
    a.add_role(
        "realm1",
        "frontend",
        Role::new([
            p(Prefix, "com.app.", perm(false, false, false, true)),
            p(
                Prefix,
                "com.app.rpc.",
                Permission {
                    call: true,
                    disclose_caller: true,
                    ..Default::default()
                },
            ),
            p(Exact, "com.app.chat", perm(false, false, true, true)),
            p(Wildcard, "com.app..admin", perm(false, false, false, false)),
        ]),
    );
    let mut principals = std::collections::HashMap::new();
    principals.insert(
        "backend".to_string(),
        TicketPrincipal {
            ticket: "b".into(),
            role: "backend".into(),
            realm: None,
        },
    );
    let auth = TransportAuth {
        anonymous: Some(AnonymousConfig {
            role: "frontend".into(),
            authid: None,
            realm: None,
        }),
        ticket: Some(Ticket { principals }),
        ..Default::default()
    };
    let listener = ListenerConfig {
        auth: Some(Arc::new(auth)),
        ..ListenerConfig::default()
    };
    TestRouter::with_listener(RouterConfig::default(), Arc::new(a), listener).await
}

async fn backend(r: &TestRouter) -> Client {
    let mut c = r.client("wamp.2.json").await;
    let mut d = client_roles();
    d.insert("authid".into(), Value::from("backend"));
    d.insert(
        "authmethods".into(),
        Value::List(vec![Value::from("ticket")]),
    );
    assert!(matches!(
        c.hello("realm1", d).await,
        Message::Challenge { .. }
    ));
    c.send(&Message::Authenticate {
        signature: "b".into(),
        extra: Dict::new(),
    })
    .await;
    assert!(matches!(c.recv().await, Message::Welcome { .. }));
    c
}

fn ack() -> Dict {
    opts(&[("acknowledge", true.into())])
}

#[tokio::test]
async fn denied_publish_delivers_nothing() {
    let r = router().await;
    let mut be = backend(&r).await;
    be.subscribe("com.app.news", Dict::new()).await;
    let (mut fe, _) = r.joined("wamp.2.json").await;
    let req = fe
        .publish("com.app.news", ack(), args(vec![Value::from("spoof")]))
        .await;
    assert_eq!(
        fe.expect_error(code::PUBLISH, req).await,
        "wamp.error.not_authorized"
    );
    // Unacknowledged, too: silently dropped, never delivered.
    fe.publish("com.app.news", Dict::new(), args(vec![])).await;
    be.expect_silence(Duration::from_millis(200)).await;
    // Allowed by the exact permission.
    be.subscribe("com.app.chat", Dict::new()).await;
    let req = fe.publish("com.app.chat", ack(), args(vec![])).await;
    assert!(matches!(fe.recv().await, Message::Published { request, .. } if request == req));
    assert!(matches!(be.recv().await, Message::Event { .. }));
}

#[tokio::test]
async fn subscribe_register_call_checked() {
    let r = router().await;
    let mut be = backend(&r).await;
    let (mut fe, _) = r.joined("wamp.2.msgpack").await;
    // Subscribe: allowed by prefix, denied by the wildcard on admin topics and outside com.app.
    fe.subscribe("com.app.news", Dict::new()).await;
    for topic in ["com.app.x.admin", "org.other"] {
        let req = fe.request_id();
        fe.send(&Message::Subscribe {
            request: req,
            options: Dict::new(),
            topic: topic.into(),
        })
        .await;
        assert_eq!(
            fe.expect_error(code::SUBSCRIBE, req).await,
            "wamp.error.not_authorized",
            "{topic}"
        );
    }
    // Register: frontend may not.
    let req = fe.request_id();
    fe.send(&Message::Register {
        request: req,
        options: Dict::new(),
        procedure: "com.app.rpc.add".into(),
    })
    .await;
    assert_eq!(
        fe.expect_error(code::REGISTER, req).await,
        "wamp.error.not_authorized"
    );
    // Call: not allowed outside com.app.rpc., and the callee sees nothing.
    be.register("com.app.internal", Dict::new()).await;
    let req = fe.call("com.app.internal", Dict::new(), args(vec![])).await;
    assert_eq!(
        fe.expect_error(code::CALL, req).await,
        "wamp.error.not_authorized"
    );
    be.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn permission_forces_caller_disclosure() {
    let r = router().await;
    let mut be = backend(&r).await;
    be.register("com.app.rpc.add", Dict::new()).await;
    let (mut fe, fe_id) = r.joined("wamp.2.json").await;
    // The caller did not ask for disclosure; the role forces it.
    let req = fe
        .call("com.app.rpc.add", Dict::new(), args(vec![Value::Int(1)]))
        .await;
    let inv = match be.recv().await {
        Message::Invocation {
            request, details, ..
        } => {
            assert_eq!(details["caller"], Value::from(fe_id));
            assert_eq!(details["caller_authrole"], Value::from("frontend"));
            request
        }
        other => panic!("{other:?}"),
    };
    be.send(&Message::Yield {
        request: inv,
        options: Dict::new(),
        payload: args(vec![Value::Int(2)]),
    })
    .await;
    assert!(matches!(fe.recv().await, Message::Result { request, .. } if request == req));
    // The backend's own calls are not disclosed (its permission does not say so).
    let mut be2 = backend(&r).await;
    be2.call("com.app.rpc.add", Dict::new(), args(vec![])).await;
    match be.recv().await {
        Message::Invocation { details, .. } => assert!(!details.contains_key("caller")),
        other => panic!("{other:?}"),
    }
}
