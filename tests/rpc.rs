//! Dealer behaviour over real connections: registration, patterns, shared registrations,
//! progressive results, cancel, timeout, disclosure, and callees that vanish mid-call.

mod common;

use std::time::{Duration, Instant};

use common::*;
use switchyard_router::wire::{code, Dict, Id, Message, Payload, Value};

/// Receives an INVOCATION and returns (request, registration, details, payload).
async fn invocation(c: &mut Client) -> (Id, Id, Dict, Payload) {
    match c.recv().await {
        Message::Invocation {
            request,
            registration,
            details,
            payload,
        } => (request, registration, details, payload),
        other => panic!("expected INVOCATION, got {other:?}"),
    }
}

#[tokio::test]
async fn call_and_result_with_args_and_kwargs_on_every_serializer() {
    let r = TestRouter::start().await;
    for sp in [
        "wamp.2.json",
        "wamp.2.msgpack",
        "wamp.2.cbor",
        "wamp.2.msgpack.batched",
    ] {
        let (mut callee, _) = r.joined(sp).await;
        let (mut caller, _) = r.joined("wamp.2.json").await;
        let reg = callee.register("com.add", Dict::new()).await;
        let mut kw = Dict::new();
        kw.insert("scale".into(), Value::Int(10));
        let req = caller
            .call(
                "com.add",
                Dict::new(),
                Payload::new(vec![2u64.into(), 3u64.into()], kw.clone()),
            )
            .await;
        let (inv, inv_reg, details, payload) = invocation(&mut callee).await;
        assert_eq!(inv_reg, reg);
        assert!(
            !details.contains_key("procedure"),
            "exact registrations carry no procedure"
        );
        assert_eq!(payload.args(), &[Value::Int(2), Value::Int(3)]);
        assert_eq!(payload.kwargs(), Some(&kw));
        callee
            .send(&Message::Yield {
                request: inv,
                options: Dict::new(),
                payload: args(vec![50u64.into()]),
            })
            .await;
        match caller.recv().await {
            Message::Result {
                request,
                details,
                payload,
            } => {
                assert_eq!(request, req);
                assert!(!details.contains_key("progress"));
                assert_eq!(payload.args(), &[Value::Int(50)], "{sp}");
            }
            other => panic!("{sp}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn registration_errors() {
    let r = TestRouter::start().await;
    let (mut a, _) = r.joined("wamp.2.json").await;
    let (mut b, _) = r.joined("wamp.2.json").await;
    let reg = a.register("com.p", Dict::new()).await;
    let req = b.request_id();
    b.send(&Message::Register {
        request: req,
        options: Dict::new(),
        procedure: "com.p".into(),
    })
    .await;
    assert_eq!(
        b.expect_error(code::REGISTER, req).await,
        "wamp.error.procedure_already_exists"
    );
    let req = b.call("com.nothing", Dict::new(), Payload::default()).await;
    assert_eq!(
        b.expect_error(code::CALL, req).await,
        "wamp.error.no_such_procedure"
    );
    let req = b.request_id();
    b.send(&Message::Register {
        request: req,
        options: Dict::new(),
        procedure: "wamp.mine".into(),
    })
    .await;
    assert_eq!(
        b.expect_error(code::REGISTER, req).await,
        "wamp.error.invalid_uri"
    );
    let req = b.request_id();
    b.send(&Message::Register {
        request: req,
        options: Dict::new(),
        procedure: "com..bad".into(),
    })
    .await;
    assert_eq!(
        b.expect_error(code::REGISTER, req).await,
        "wamp.error.invalid_uri"
    );
    // Only the owner can unregister; afterwards the procedure is gone.
    let req = b.request_id();
    b.send(&Message::Unregister {
        request: req,
        registration: reg,
    })
    .await;
    assert_eq!(
        b.expect_error(code::UNREGISTER, req).await,
        "wamp.error.no_such_registration"
    );
    let req = a.request_id();
    a.send(&Message::Unregister {
        request: req,
        registration: reg,
    })
    .await;
    assert_eq!(
        a.recv().await,
        Message::Unregistered {
            request: req,
            details: None
        }
    );
    let req = b.call("com.p", Dict::new(), Payload::default()).await;
    assert_eq!(
        b.expect_error(code::CALL, req).await,
        "wamp.error.no_such_procedure"
    );
}

#[tokio::test]
async fn pattern_registrations_follow_precedence() {
    let r = TestRouter::start().await;
    let (mut wild, _) = r.joined("wamp.2.json").await;
    let (mut pre, _) = r.joined("wamp.2.json").await;
    let (mut exact, _) = r.joined("wamp.2.json").await;
    let (mut caller, _) = r.joined("wamp.2.json").await;
    wild.register("com.app..run", opts(&[("match", "wildcard".into())]))
        .await;
    pre.register("com.app.x", opts(&[("match", "prefix".into())]))
        .await;
    exact.register("com.app.x.run", Dict::new()).await;

    caller
        .call("com.app.x.run", Dict::new(), Payload::default())
        .await;
    let (_, _, d, _) = invocation(&mut exact).await;
    assert!(!d.contains_key("procedure"));
    caller
        .call("com.app.x.stop", Dict::new(), Payload::default())
        .await;
    let (_, _, d, _) = invocation(&mut pre).await;
    assert_eq!(d["procedure"], Value::from("com.app.x.stop"));
    caller
        .call("com.app.y.run", Dict::new(), Payload::default())
        .await;
    let (_, _, d, _) = invocation(&mut wild).await;
    assert_eq!(d["procedure"], Value::from("com.app.y.run"));
}

#[tokio::test]
async fn shared_registrations_pick_callees_by_policy() {
    let r = TestRouter::start().await;
    for policy in ["roundrobin", "first", "last", "random"] {
        let mut callees = Vec::new();
        let proc_uri = format!("com.shared.{policy}");
        for _ in 0..3 {
            let (mut c, _) = r.joined("wamp.2.msgpack").await;
            c.register(&proc_uri, opts(&[("invoke", policy.into())]))
                .await;
            callees.push(c);
        }
        let (mut caller, _) = r.joined("wamp.2.json").await;
        let mut hits = vec![0usize; 3];
        for _ in 0..6 {
            let req = caller
                .call(&proc_uri, Dict::new(), Payload::default())
                .await;
            // Exactly one callee gets it; find which.
            let mut answered = false;
            for (i, c) in callees.iter_mut().enumerate() {
                if let Ok(Some(Message::Invocation { request, .. })) =
                    tokio::time::timeout(Duration::from_millis(100), c.recv_opt()).await
                {
                    hits[i] += 1;
                    c.send(&Message::Yield {
                        request,
                        options: Dict::new(),
                        payload: Payload::default(),
                    })
                    .await;
                    answered = true;
                }
            }
            assert!(answered);
            assert!(
                matches!(caller.recv().await, Message::Result { request, .. } if request == req)
            );
        }
        match policy {
            "roundrobin" => assert_eq!(hits, vec![2, 2, 2]),
            "first" => assert_eq!(hits, vec![6, 0, 0]),
            "last" => assert_eq!(hits, vec![0, 0, 6]),
            _ => assert_eq!(hits.iter().sum::<usize>(), 6),
        }
        // A different policy on the same URI is refused.
        let (mut other, _) = r.joined("wamp.2.json").await;
        let req = other.request_id();
        let other_policy = if policy == "first" { "last" } else { "first" };
        other
            .send(&Message::Register {
                request: req,
                options: opts(&[("invoke", other_policy.into())]),
                procedure: proc_uri.clone(),
            })
            .await;
        assert_eq!(
            other.expect_error(code::REGISTER, req).await,
            "wamp.error.procedure_exists_with_different_invocation_policy"
        );
    }
}

#[tokio::test]
async fn caller_disclosure() {
    let r = TestRouter::start().await;
    let (mut callee, _) = r.joined("wamp.2.json").await;
    let (mut caller, caller_id) = r.joined("wamp.2.json").await;
    callee.register("com.who", Dict::new()).await;
    caller
        .call(
            "com.who",
            opts(&[("disclose_me", true.into())]),
            Payload::default(),
        )
        .await;
    let (_, _, d, _) = invocation(&mut callee).await;
    assert_eq!(d["caller"], Value::from(caller_id));
    assert_eq!(d["caller_authrole"], Value::from("anonymous"));
}

#[tokio::test]
async fn progressive_results_then_final() {
    let r = TestRouter::start().await;
    let (mut callee, _) = r.joined("wamp.2.cbor").await;
    let (mut caller, _) = r.joined("wamp.2.json").await;
    callee.register("com.stream", Dict::new()).await;
    let req = caller
        .call(
            "com.stream",
            opts(&[("receive_progress", true.into())]),
            Payload::default(),
        )
        .await;
    let (inv, _, d, _) = invocation(&mut callee).await;
    assert_eq!(d["receive_progress"], Value::Bool(true));
    for i in 0..3u64 {
        callee
            .send(&Message::Yield {
                request: inv,
                options: opts(&[("progress", true.into())]),
                payload: args(vec![i.into()]),
            })
            .await;
    }
    callee
        .send(&Message::Yield {
            request: inv,
            options: Dict::new(),
            payload: args(vec!["done".into()]),
        })
        .await;
    for i in 0..3u64 {
        match caller.recv().await {
            Message::Result {
                request,
                details,
                payload,
            } => {
                assert_eq!(request, req);
                assert_eq!(details["progress"], Value::Bool(true));
                assert_eq!(payload.args(), &[Value::from(i)]);
            }
            other => panic!("{other:?}"),
        }
    }
    match caller.recv().await {
        Message::Result {
            details, payload, ..
        } => {
            assert!(!details.contains_key("progress"));
            assert_eq!(payload.args(), &[Value::from("done")]);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn callee_errors_reach_the_caller() {
    let r = TestRouter::start().await;
    let (mut callee, _) = r.joined("wamp.2.json").await;
    let (mut caller, _) = r.joined("wamp.2.msgpack").await;
    callee.register("com.fail", Dict::new()).await;
    let req = caller
        .call("com.fail", Dict::new(), Payload::default())
        .await;
    let (inv, _, _, _) = invocation(&mut callee).await;
    callee
        .send(&Message::Error {
            request_type: code::INVOCATION,
            request: inv,
            details: Dict::new(),
            error: "com.myapp.error.bad".into(),
            payload: args(vec!["why".into()]),
        })
        .await;
    match caller.recv().await {
        Message::Error {
            request_type,
            request,
            error,
            payload,
            ..
        } => {
            assert_eq!((request_type, request), (code::CALL, req));
            assert_eq!(error, "com.myapp.error.bad");
            assert_eq!(payload.args(), &[Value::from("why")]);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn cancel_modes() {
    let r = TestRouter::start().await;
    let (mut callee, _) = r.joined("wamp.2.json").await;
    let (mut caller, _) = r.joined("wamp.2.json").await;
    callee.register("com.slow", Dict::new()).await;

    // skip: the caller is answered at once; the callee hears nothing; its late YIELD is dropped.
    let req = caller
        .call("com.slow", Dict::new(), Payload::default())
        .await;
    let (inv, _, _, _) = invocation(&mut callee).await;
    caller
        .send(&Message::Cancel {
            request: req,
            options: opts(&[("mode", "skip".into())]),
        })
        .await;
    assert_eq!(
        caller.expect_error(code::CALL, req).await,
        "wamp.error.canceled"
    );
    callee.expect_silence(Duration::from_millis(100)).await;
    callee
        .send(&Message::Yield {
            request: inv,
            options: Dict::new(),
            payload: Payload::default(),
        })
        .await;
    caller.expect_silence(Duration::from_millis(100)).await;

    // killnowait: INTERRUPT to the callee and the caller answered at once.
    let req = caller
        .call("com.slow", Dict::new(), Payload::default())
        .await;
    let (inv, _, _, _) = invocation(&mut callee).await;
    caller
        .send(&Message::Cancel {
            request: req,
            options: opts(&[("mode", "killnowait".into())]),
        })
        .await;
    match callee.recv().await {
        Message::Interrupt { request, options } => {
            assert_eq!(request, inv);
            assert_eq!(options["mode"], Value::from("killnowait"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        caller.expect_error(code::CALL, req).await,
        "wamp.error.canceled"
    );

    // kill: INTERRUPT, and the caller is answered when the callee answers.
    let req = caller
        .call("com.slow", Dict::new(), Payload::default())
        .await;
    let (inv, _, _, _) = invocation(&mut callee).await;
    caller
        .send(&Message::Cancel {
            request: req,
            options: opts(&[("mode", "kill".into())]),
        })
        .await;
    assert!(matches!(callee.recv().await, Message::Interrupt { request, .. } if request == inv));
    caller.expect_silence(Duration::from_millis(100)).await;
    callee
        .send(&Message::Error {
            request_type: code::INVOCATION,
            request: inv,
            details: Dict::new(),
            error: "wamp.error.canceled".into(),
            payload: Payload::default(),
        })
        .await;
    assert_eq!(
        caller.expect_error(code::CALL, req).await,
        "wamp.error.canceled"
    );
    assert_eq!(r.router.realm("realm1").unwrap().dealer.pending_count(), 0);
}

#[tokio::test]
async fn call_timeout_is_in_milliseconds() {
    let r = TestRouter::start().await;
    let (mut callee, _) = r.joined("wamp.2.json").await;
    let (mut caller, _) = r.joined("wamp.2.json").await;
    callee.register("com.never", Dict::new()).await;
    let started = Instant::now();
    let req = caller
        .call(
            "com.never",
            opts(&[("timeout", 300u64.into())]),
            Payload::default(),
        )
        .await;
    let (inv, _, d, _) = invocation(&mut callee).await;
    assert_eq!(d["timeout"], Value::from(300u64));
    assert_eq!(
        caller.expect_error(code::CALL, req).await,
        "wamp.error.timeout"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "took {took:?}"
    );
    assert!(matches!(callee.recv().await, Message::Interrupt { request, .. } if request == inv));
}

#[tokio::test]
async fn callee_leaving_mid_call_answers_the_caller_at_once() {
    let r = TestRouter::start().await;
    let (mut callee, _) = r.joined("wamp.2.json").await;
    let (mut caller, _) = r.joined("wamp.2.json").await;
    callee.register("com.dies", Dict::new()).await;
    let req = caller
        .call("com.dies", Dict::new(), Payload::default())
        .await;
    invocation(&mut callee).await;
    drop(callee); // the TCP connection goes away without GOODBYE
    let started = Instant::now();
    assert_eq!(
        caller.expect_error(code::CALL, req).await,
        "wamp.error.canceled"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    // Its registration is gone too.
    let req = caller
        .call("com.dies", Dict::new(), Payload::default())
        .await;
    assert_eq!(
        caller.expect_error(code::CALL, req).await,
        "wamp.error.no_such_procedure"
    );
}

#[tokio::test]
async fn caller_leaving_mid_call_interrupts_the_callee() {
    let r = TestRouter::start().await;
    let (mut callee, _) = r.joined("wamp.2.json").await;
    let (mut caller, _) = r.joined("wamp.2.json").await;
    callee.register("com.orphan", Dict::new()).await;
    caller
        .call("com.orphan", Dict::new(), Payload::default())
        .await;
    let (inv, _, _, _) = invocation(&mut callee).await;
    drop(caller);
    match callee.recv().await {
        Message::Interrupt { request, options } => {
            assert_eq!(request, inv);
            assert_eq!(options["mode"], Value::from("killnowait"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn calls_in_flight_are_bounded_per_session() {
    let mut config = switchyard_router::RouterConfig::default();
    config.limits.max_calls_in_flight = 2;
    let r = TestRouter::with_config(config).await;
    let (mut callee, _) = r.joined("wamp.2.json").await;
    let (mut caller, _) = r.joined("wamp.2.json").await;
    let (mut other, _) = r.joined("wamp.2.json").await;
    callee.register("com.hold", Dict::new()).await;
    caller
        .call("com.hold", Dict::new(), Payload::default())
        .await;
    caller
        .call("com.hold", Dict::new(), Payload::default())
        .await;
    let (first, _, _, _) = invocation(&mut callee).await;
    invocation(&mut callee).await;
    // The third is refused and never reaches the callee...
    let req = caller
        .call("com.hold", Dict::new(), Payload::default())
        .await;
    assert_eq!(
        caller.expect_error(code::CALL, req).await,
        "wamp.error.unavailable"
    );
    callee.expect_silence(Duration::from_millis(100)).await;
    // ...while another session's calls are not affected.
    other
        .call("com.hold", Dict::new(), Payload::default())
        .await;
    invocation(&mut callee).await;
    // An answered call frees a slot.
    callee
        .send(&Message::Yield {
            request: first,
            options: Dict::new(),
            payload: Payload::default(),
        })
        .await;
    assert!(matches!(caller.recv().await, Message::Result { .. }));
    caller
        .call("com.hold", Dict::new(), Payload::default())
        .await;
    invocation(&mut callee).await;
}
