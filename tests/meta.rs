//! The meta APIs over real sockets: session count/list/get/kill*, subscription and
//! registration procedures, and every meta event; WELCOME announces exactly these.

mod common;

use std::time::Duration;

use common::*;
use switchyard_router::config::RealmConfig;
use switchyard_router::wire::{code, Dict, Id, Message, Payload, Value};
use switchyard_router::RouterConfig;

/// Calls a procedure and returns the RESULT's payload, or panics with the ERROR.
async fn call(c: &mut Client, procedure: &str, a: Vec<Value>) -> Payload {
    let req = c.call(procedure, Dict::new(), args(a)).await;
    match c.recv().await {
        Message::Result {
            request, payload, ..
        } if request == req => payload,
        other => panic!("{procedure}: expected RESULT, got {other:?}"),
    }
}

async fn call_error(c: &mut Client, procedure: &str, a: Vec<Value>) -> String {
    let req = c.call(procedure, Dict::new(), args(a)).await;
    c.expect_error(code::CALL, req).await
}

fn first(p: &Payload) -> &Value {
    &p.args()[0]
}

fn id_list(v: &Value) -> Vec<Id> {
    let mut ids: Vec<Id> = v
        .as_list()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    ids.sort();
    ids
}

/// Receives the next EVENT and returns its args.
async fn event(c: &mut Client, subscription: Id) -> Vec<Value> {
    match c.recv().await {
        Message::Event {
            subscription: s,
            payload,
            ..
        } if s == subscription => payload.args().to_vec(),
        other => panic!("expected EVENT on {subscription}, got {other:?}"),
    }
}

#[tokio::test]
async fn welcome_announces_the_meta_apis() {
    let r = TestRouter::start().await;
    let mut c = r.client("wamp.2.json").await;
    let features = |m: &Message, role: &str| match m {
        Message::Welcome { details, .. } => {
            details["roles"].as_dict().unwrap()[role].as_dict().unwrap()["features"]
                .as_dict()
                .unwrap()
                .clone()
        }
        other => panic!("{other:?}"),
    };
    let w = c.hello("realm1", client_roles()).await;
    for f in ["session_meta_api", "subscription_meta_api"] {
        assert_eq!(features(&w, "broker")[f], Value::Bool(true), "{f}");
    }
    for f in [
        "session_meta_api",
        "registration_meta_api",
        "testament_meta_api",
    ] {
        assert_eq!(features(&w, "dealer")[f], Value::Bool(true), "{f}");
    }
    // A realm with the meta API off announces none of it, and has no such procedures.
    let mut off = RealmConfig::new("quiet");
    off.meta_api = false;
    let r = TestRouter::with_config(RouterConfig {
        realms: vec![off],
        ..RouterConfig::default()
    })
    .await;
    let mut c = r.client("wamp.2.json").await;
    let w = c.hello("quiet", client_roles()).await;
    assert!(!features(&w, "broker").contains_key("session_meta_api"));
    assert_eq!(
        call_error(&mut c, "wamp.session.count", vec![]).await,
        "wamp.error.no_such_procedure"
    );
}

#[tokio::test]
async fn session_count_list_get_and_join_leave_events() {
    let r = TestRouter::start().await;
    let (mut watcher, watcher_id) = r.joined("wamp.2.json").await;
    let on_join = watcher.subscribe("wamp.session.on_join", Dict::new()).await;
    let on_leave = watcher
        .subscribe("wamp.session.on_leave", Dict::new())
        .await;
    // The service session itself is not counted.
    assert_eq!(
        first(&call(&mut watcher, "wamp.session.count", vec![]).await).as_u64(),
        Some(1)
    );

    let (other, other_id) = r.joined("wamp.2.msgpack").await;
    let joined = event(&mut watcher, on_join).await;
    let d = joined[0].as_dict().unwrap();
    assert_eq!(d["session"].as_u64(), Some(other_id));
    assert_eq!(d["authrole"], Value::from("anonymous"));

    let list = call(&mut watcher, "wamp.session.list", vec![]).await;
    let mut expected = vec![watcher_id, other_id];
    expected.sort();
    assert_eq!(id_list(first(&list)), expected);
    let filtered = call(
        &mut watcher,
        "wamp.session.count",
        vec![Value::List(vec![Value::from("nobody")])],
    )
    .await;
    assert_eq!(first(&filtered).as_u64(), Some(0));

    let got = call(
        &mut watcher,
        "wamp.session.get",
        vec![Value::from(other_id)],
    )
    .await;
    assert_eq!(
        first(&got).as_dict().unwrap()["authmethod"],
        Value::from("anonymous")
    );
    assert_eq!(
        call_error(
            &mut watcher,
            "wamp.session.get",
            vec![Value::from(12345u64)]
        )
        .await,
        "wamp.error.no_such_session"
    );

    drop(other);
    let left = event(&mut watcher, on_leave).await;
    assert_eq!(left[0].as_u64(), Some(other_id));
}

/// A client's answer to the router's GOODBYE.
fn goodbye_reply() -> Message {
    Message::Goodbye {
        details: Dict::new(),
        reason: "wamp.close.goodbye_and_out".into(),
    }
}

#[tokio::test]
async fn kill_kill_by_authid_authrole_and_kill_all() {
    let r = TestRouter::start().await;
    let (mut admin, _) = r.joined("wamp.2.json").await;
    let (mut victim, victim_id) = r.joined("wamp.2.json").await;
    call(
        &mut admin,
        "wamp.session.kill",
        vec![
            Value::from(victim_id),
            Value::from("com.example.bye"),
            Value::from("go away"),
        ],
    )
    .await;
    match victim.recv().await {
        Message::Goodbye { reason, details } => {
            assert_eq!(reason, "com.example.bye");
            assert_eq!(details["message"], Value::from("go away"));
        }
        other => panic!("{other:?}"),
    }
    // The router waits for the victim's GOODBYE reply (goodbye_timeout), then closes.
    victim.send(&goodbye_reply()).await;
    victim.expect_closed().await;

    // By authid: the anonymous authid is the one the client asked for.
    let mut named = r.client("wamp.2.json").await;
    let mut d = client_roles();
    d.insert("authid".into(), Value::from("target"));
    let named_id = match named.hello("realm1", d).await {
        Message::Welcome { session, .. } => session,
        m => panic!("{m:?}"),
    };
    let killed = call(
        &mut admin,
        "wamp.session.kill_by_authid",
        vec![Value::from("target")],
    )
    .await;
    assert_eq!(id_list(first(&killed)), vec![named_id]);
    match named.recv().await {
        Message::Goodbye { reason, .. } => assert_eq!(reason, "wamp.close.killed"),
        other => panic!("{other:?}"),
    }
    named.send(&goodbye_reply()).await;
    named.expect_closed().await;

    // By authrole and kill_all spare the caller.
    let (mut a, _) = r.joined("wamp.2.json").await;
    let (mut b, _) = r.joined("wamp.2.json").await;
    let killed = call(
        &mut admin,
        "wamp.session.kill_by_authrole",
        vec![Value::from("anonymous")],
    )
    .await;
    assert_eq!(first(&killed).as_list().unwrap().len(), 2);
    for s in [&mut a, &mut b] {
        assert!(matches!(s.recv().await, Message::Goodbye { .. }));
        s.send(&goodbye_reply()).await;
        s.expect_closed().await;
    }
    let (mut c, _) = r.joined("wamp.2.json").await;
    let n = call(&mut admin, "wamp.session.kill_all", vec![]).await;
    assert_eq!(first(&n).as_u64(), Some(1));
    assert!(matches!(c.recv().await, Message::Goodbye { .. }));
    c.send(&goodbye_reply()).await;
    c.expect_closed().await;
    // The admin is still there.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let count = call(&mut admin, "wamp.session.count", vec![]).await;
    assert_eq!(first(&count).as_u64(), Some(1));
    assert_eq!(
        call_error(&mut admin, "wamp.session.kill", vec![Value::from(1u64)]).await,
        "wamp.error.no_such_session"
    );
}

#[tokio::test]
async fn subscription_meta_procedures_and_events() {
    let r = TestRouter::start().await;
    let (mut watcher, _) = r.joined("wamp.2.json").await;
    let mut evs = Vec::new();
    for t in ["on_create", "on_subscribe", "on_unsubscribe", "on_delete"] {
        evs.push(
            watcher
                .subscribe(&format!("wamp.subscription.{t}"), Dict::new())
                .await,
        );
    }
    let (mut s1, s1_id) = r.joined("wamp.2.msgpack").await;
    let sub = s1
        .subscribe("com.example.", opts(&[("match", "prefix".into())]))
        .await;
    let created = event(&mut watcher, evs[0]).await;
    assert_eq!(created[0].as_u64(), Some(s1_id));
    let info = created[1].as_dict().unwrap();
    assert_eq!(info["id"].as_u64(), Some(sub));
    assert_eq!(info["uri"], Value::from("com.example."));
    assert_eq!(info["match"], Value::from("prefix"));
    assert_eq!(
        event(&mut watcher, evs[1]).await,
        vec![Value::from(s1_id), Value::from(sub)]
    );

    let list = call(&mut watcher, "wamp.subscription.list", vec![]).await;
    let list = first(&list).as_dict().unwrap();
    assert!(id_list(&list["prefix"]).contains(&sub));
    let looked = call(
        &mut watcher,
        "wamp.subscription.lookup",
        vec![
            Value::from("com.example."),
            Value::Dict(opts(&[("match", "prefix".into())])),
        ],
    )
    .await;
    assert_eq!(first(&looked).as_u64(), Some(sub));
    let none = call(
        &mut watcher,
        "wamp.subscription.lookup",
        vec![Value::from("com.example.")],
    )
    .await;
    assert_eq!(first(&none), &Value::Null);
    let matched = call(
        &mut watcher,
        "wamp.subscription.match",
        vec![Value::from("com.example.topic")],
    )
    .await;
    assert_eq!(id_list(first(&matched)), vec![sub]);
    let got = call(
        &mut watcher,
        "wamp.subscription.get",
        vec![Value::from(sub)],
    )
    .await;
    assert_eq!(
        first(&got).as_dict().unwrap()["uri"],
        Value::from("com.example.")
    );
    let subs = call(
        &mut watcher,
        "wamp.subscription.list_subscribers",
        vec![Value::from(sub)],
    )
    .await;
    assert_eq!(id_list(first(&subs)), vec![s1_id]);
    let n = call(
        &mut watcher,
        "wamp.subscription.count_subscribers",
        vec![Value::from(sub)],
    )
    .await;
    assert_eq!(first(&n).as_u64(), Some(1));
    assert_eq!(
        call_error(
            &mut watcher,
            "wamp.subscription.get",
            vec![Value::from(7u64)]
        )
        .await,
        "wamp.error.no_such_subscription"
    );

    // Unsubscribing the last subscriber deletes the subscription.
    let req = s1.request_id();
    s1.send(&Message::Unsubscribe {
        request: req,
        subscription: sub,
    })
    .await;
    assert!(matches!(s1.recv().await, Message::Unsubscribed { .. }));
    assert_eq!(
        event(&mut watcher, evs[2]).await,
        vec![Value::from(s1_id), Value::from(sub)]
    );
    assert_eq!(
        event(&mut watcher, evs[3]).await,
        vec![Value::from(s1_id), Value::from(sub)]
    );

    // A session that goes away is unsubscribed with the same events.
    let sub = s1.subscribe("com.other", Dict::new()).await;
    event(&mut watcher, evs[0]).await;
    event(&mut watcher, evs[1]).await;
    drop(s1);
    assert_eq!(event(&mut watcher, evs[2]).await[1].as_u64(), Some(sub));
    assert_eq!(event(&mut watcher, evs[3]).await[1].as_u64(), Some(sub));
}

#[tokio::test]
async fn registration_meta_procedures_and_events() {
    let r = TestRouter::start().await;
    let (mut watcher, _) = r.joined("wamp.2.json").await;
    let mut evs = Vec::new();
    for t in ["on_create", "on_register", "on_unregister", "on_delete"] {
        evs.push(
            watcher
                .subscribe(&format!("wamp.registration.{t}"), Dict::new())
                .await,
        );
    }
    // The meta procedures themselves are hidden from the list.
    let list = call(&mut watcher, "wamp.registration.list", vec![]).await;
    assert!(first(&list).as_dict().unwrap()["exact"]
        .as_list()
        .unwrap()
        .is_empty());

    let (mut callee, callee_id) = r.joined("wamp.2.cbor").await;
    let reg = callee
        .register("com.example.add", opts(&[("invoke", "roundrobin".into())]))
        .await;
    let created = event(&mut watcher, evs[0]).await;
    assert_eq!(created[0].as_u64(), Some(callee_id));
    let info = created[1].as_dict().unwrap();
    assert_eq!(info["uri"], Value::from("com.example.add"));
    assert_eq!(info["invoke"], Value::from("roundrobin"));
    assert_eq!(
        event(&mut watcher, evs[1]).await,
        vec![Value::from(callee_id), Value::from(reg)]
    );
    let list = call(&mut watcher, "wamp.registration.list", vec![]).await;
    assert_eq!(
        id_list(&first(&list).as_dict().unwrap()["exact"]),
        vec![reg]
    );
    let looked = call(
        &mut watcher,
        "wamp.registration.lookup",
        vec![Value::from("com.example.add")],
    )
    .await;
    assert_eq!(first(&looked).as_u64(), Some(reg));
    let matched = call(
        &mut watcher,
        "wamp.registration.match",
        vec![Value::from("com.example.add")],
    )
    .await;
    assert_eq!(first(&matched).as_u64(), Some(reg));
    let nomatch = call(
        &mut watcher,
        "wamp.registration.match",
        vec![Value::from("com.nothing")],
    )
    .await;
    assert_eq!(first(&nomatch), &Value::Null);
    let got = call(
        &mut watcher,
        "wamp.registration.get",
        vec![Value::from(reg)],
    )
    .await;
    assert_eq!(
        first(&got).as_dict().unwrap()["match"],
        Value::from("exact")
    );
    let callees = call(
        &mut watcher,
        "wamp.registration.list_callees",
        vec![Value::from(reg)],
    )
    .await;
    assert_eq!(id_list(first(&callees)), vec![callee_id]);
    let n = call(
        &mut watcher,
        "wamp.registration.count_callees",
        vec![Value::from(reg)],
    )
    .await;
    assert_eq!(first(&n).as_u64(), Some(1));
    assert_eq!(
        call_error(
            &mut watcher,
            "wamp.registration.get",
            vec![Value::from(9u64)]
        )
        .await,
        "wamp.error.no_such_registration"
    );

    let req = callee.request_id();
    callee
        .send(&Message::Unregister {
            request: req,
            registration: reg,
        })
        .await;
    assert!(matches!(callee.recv().await, Message::Unregistered { .. }));
    assert_eq!(
        event(&mut watcher, evs[2]).await,
        vec![Value::from(callee_id), Value::from(reg)]
    );
    assert_eq!(
        event(&mut watcher, evs[3]).await,
        vec![Value::from(callee_id), Value::from(reg)]
    );
}

#[tokio::test]
async fn clients_cannot_register_meta_procedures() {
    let r = TestRouter::start().await;
    let (mut c, _) = r.joined("wamp.2.json").await;
    let req = c.request_id();
    c.send(&Message::Register {
        request: req,
        options: Dict::new(),
        procedure: "wamp.session.count".into(),
    })
    .await;
    assert_eq!(
        c.expect_error(code::REGISTER, req).await,
        "wamp.error.invalid_uri"
    );
}

#[tokio::test]
async fn testaments_fire_when_the_session_goes_and_can_be_flushed() {
    let r = TestRouter::start().await;
    let (mut watcher, _) = r.joined("wamp.2.json").await;
    let sub = watcher.subscribe("com.example.will", Dict::new()).await;

    // Added, then the session's transport drops: published on its behalf.
    let (mut a, a_id) = r.joined("wamp.2.msgpack").await;
    call(
        &mut a,
        "wamp.session.add_testament",
        vec![
            Value::from("com.example.will"),
            Value::List(vec![Value::from("gone")]),
            Value::Dict(opts(&[("who", Value::from(a_id))])),
        ],
    )
    .await;
    drop(a);
    match watcher.recv().await {
        Message::Event {
            subscription,
            payload,
            ..
        } => {
            assert_eq!(subscription, sub);
            assert_eq!(payload.args(), &[Value::from("gone")]);
            assert_eq!(payload.kwargs().unwrap()["who"], Value::from(a_id));
        }
        other => panic!("{other:?}"),
    }

    // Added then flushed: nothing is published.
    let (mut b, _) = r.joined("wamp.2.json").await;
    call(
        &mut b,
        "wamp.session.add_testament",
        vec![
            Value::from("com.example.will"),
            Value::List(vec![]),
            Value::Dict(Dict::new()),
        ],
    )
    .await;
    let n = call(&mut b, "wamp.session.flush_testaments", vec![]).await;
    assert_eq!(first(&n).as_u64(), Some(1));
    assert_eq!(
        call_error(
            &mut b,
            "wamp.session.flush_testaments",
            vec![Value::from("forever")]
        )
        .await,
        "wamp.error.testament_error"
    );
    drop(b);
    watcher.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn event_history_where_the_realm_keeps_it() {
    use switchyard_router::config::EventHistory;
    use switchyard_router::uri::MatchPolicy;
    let mut realm = RealmConfig::new("realm1");
    realm.event_history.push(EventHistory {
        uri: "com.example.log".into(),
        policy: MatchPolicy::Exact,
        limit: 2,
    });
    let r = TestRouter::with_config(RouterConfig {
        realms: vec![realm],
        ..RouterConfig::default()
    })
    .await;
    let mut c = r.client("wamp.2.json").await;
    let broker_features = match c.hello("realm1", client_roles()).await {
        Message::Welcome { details, .. } => details["roles"].as_dict().unwrap()["broker"]
            .as_dict()
            .unwrap()["features"]
            .as_dict()
            .unwrap()
            .clone(),
        m => panic!("{m:?}"),
    };
    assert_eq!(broker_features["event_history"], Value::Bool(true));
    // Events are kept even before anyone subscribes.
    for i in 0..3 {
        c.publish(
            "com.example.log",
            opts(&[("acknowledge", true.into())]),
            args(vec![Value::Int(i)]),
        )
        .await;
        assert!(matches!(c.recv().await, Message::Published { .. }));
    }
    let sub = c.subscribe("com.example.log", Dict::new()).await;
    let events = call(
        &mut c,
        "wamp.subscription.get_events",
        vec![Value::from(sub)],
    )
    .await;
    let events = first(&events).as_list().unwrap().to_vec();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(
        events[0].as_dict().unwrap()["args"],
        Value::List(vec![Value::Int(2)])
    );
    assert_eq!(
        events[1].as_dict().unwrap()["args"],
        Value::List(vec![Value::Int(1)])
    );
    let other = c.subscribe("com.example.other", Dict::new()).await;
    assert_eq!(
        call_error(
            &mut c,
            "wamp.subscription.get_events",
            vec![Value::from(other)]
        )
        .await,
        "wamp.error.history_unavailable"
    );
}
