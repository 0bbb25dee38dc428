//! The trust model where messages cross the mesh: a node authorizes every call, publication
//! and registration a peer forwards against the identity the peer vouches for, with its own
//! rules (the worker guard), so a peer that lacks the guard (an older node, or one whose
//! client was not checked) cannot make a worker run anything.
//!
//! The same holds for the meta API's kill orders a peer forwards (`wamp.session.kill*`
//! called on another node).
//!
//! One guarded node (the master's authenticator and `WorkerGuard`, as `switchyard start`
//! builds them) with a real WAMP-CRA worker session; the peer is a fake mesh node speaking
//! the frames by hand, so each test names exactly the identity a forwarded message carries.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{fake_peer, fake_send, FakeLink};
use switchyard_master::auth::{BusTrust, MasterAuthenticator, WorkerGuard, WORKER_ROLE};
use switchyard_router::auth::AllowAll;
use switchyard_router::client::{CalleeMessage, Client, ClientAuth, ClientError, ClientOptions};
use switchyard_router::dealer::InvokePolicy;
use switchyard_router::kill::{KillOrder, KillTarget};
use switchyard_router::mesh::frame::{Frame, Principal};
use switchyard_router::mesh::{Mesh, MeshConfig};
use switchyard_router::service::{Answer, ServiceClient};
use switchyard_router::transport::{self, ListenerConfig};
use switchyard_router::uri::{errors, MatchPolicy};
use switchyard_router::wire::{Dict, Payload, Value};
use switchyard_router::{RealmConfig, Router, RouterConfig};

const SECRET: &str = "mesh-trust-secret";
const REALM: &str = "buildbot";
const WAIT: Duration = Duration::from_secs(5);

struct GuardedNode {
    addr: std::net::SocketAddr,
    router: Router,
    _mesh: Mesh,
}

/// A node as `switchyard start` builds it on the master's realm: workers by WAMP-CRA, the
/// worker guard, and a mesh that dials nobody (the fake peer dials it).
async fn guarded_node() -> GuardedNode {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Router::with_auth(
        RouterConfig {
            realms: vec![RealmConfig::new(REALM)],
            ..Default::default()
        },
        Arc::new(MasterAuthenticator::new(REALM, [("w1", "pw1")])),
        Arc::new(WorkerGuard::new(
            Arc::new(AllowAll),
            REALM,
            BusTrust::default(),
        )),
    );
    let mesh = Mesh::new(router.clone(), MeshConfig::new("a", SECRET), addr);
    let lc = ListenerConfig {
        mesh: Some(mesh.clone()),
        ..ListenerConfig::default()
    };
    tokio::spawn(transport::serve(listener, router.clone(), lc));
    mesh.start();
    GuardedNode {
        addr,
        router,
        _mesh: mesh,
    }
}

/// The worker `w1`, joined by WAMP-CRA and registered for `run`.
async fn worker(node: &GuardedNode) -> (Client, tokio::sync::mpsc::Receiver<CalleeMessage>) {
    let mut o = ClientOptions::new(format!("ws://{}/ws", node.addr), REALM);
    o.auth = Some(ClientAuth::wampcra("w1", "pw1"));
    let c = Client::connect(&o).await.unwrap();
    assert_eq!(c.authrole(), Some(WORKER_ROLE));
    let (_, rx) = c
        .register("switchyard.worker.w1.run", Dict::new())
        .await
        .unwrap();
    (c, rx)
}

/// Frames from the node until one satisfies `pick` (gossip, pings and the rest skipped).
async fn recv_until<T>(ws: &mut FakeLink, mut pick: impl FnMut(Frame) -> Option<T>) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(v) = pick(common::fake_recv(ws).await) {
                return v;
            }
        }
    })
    .await
    .expect("the node sent no such frame")
}

fn principal(authid: &str, authrole: &str) -> Option<Principal> {
    Some(Principal {
        authid: authid.into(),
        authrole: authrole.into(),
    })
}

fn call_frame(registration: u64, callee: u64, request: u64, by: Option<Principal>) -> Frame {
    Frame::Call {
        realm: REALM.into(),
        proxy: 77,
        request,
        registration,
        callee,
        procedure: "switchyard.worker.w1.run".into(),
        details: Dict::new(),
        payload: Payload::new(vec![Value::from("touch /tmp/pwned")], Dict::new()),
        by,
    }
}

#[tokio::test]
async fn forwarded_calls_to_a_worker_are_authorized_where_the_worker_is() {
    let node = guarded_node().await;
    let (_worker, mut invocations) = worker(&node).await;
    let (mut peer, _) = fake_peer(node.addr, "a", "evil", SECRET, &["meta"]).await;
    // The node announces the worker's registration with the worker's identity.
    let (registration, callee, by) = recv_until(&mut peer, |f| match f {
        Frame::RegAdd {
            registration,
            callee,
            procedure,
            by,
            ..
        } if procedure == "switchyard.worker.w1.run" => Some((registration, callee, by)),
        _ => None,
    })
    .await;
    assert_eq!(by, principal("w1", WORKER_ROLE));

    // Anonymous, unnamed (an older node), and another worker: refused here, never invoked.
    let refused = [
        (1, principal("XXXX-anon", "anonymous")),
        (2, None),
        (3, principal("w2", WORKER_ROLE)),
        (4, principal("master:x", "anonymous")),
    ];
    for (request, by) in refused {
        fake_send(
            &mut peer,
            &call_frame(registration, callee, request, by.clone()),
        )
        .await;
        let error = recv_until(&mut peer, |f| match f {
            Frame::Error {
                request: r, error, ..
            } if r == request => Some(error),
            _ => None,
        })
        .await;
        assert_eq!(error, errors::NOT_AUTHORIZED, "caller {by:?}");
    }
    // A master, as its node vouches: the worker is invoked and its answer goes back.
    fake_send(
        &mut peer,
        &call_frame(registration, callee, 5, principal("master:m1", "trusted")),
    )
    .await;
    let inv = tokio::time::timeout(WAIT, invocations.recv())
        .await
        .expect("the master's call reaches the worker")
        .unwrap();
    let CalleeMessage::Invocation { request, .. } = inv else {
        panic!("expected an INVOCATION, got {inv:?}")
    };
    _worker
        .yield_result(request, Dict::new(), Payload::default())
        .await
        .unwrap();
    recv_until(&mut peer, |f| match f {
        Frame::Result { request: 5, .. } => Some(()),
        _ => None,
    })
    .await;
    // None of the refused calls reached the worker.
    assert!(invocations.try_recv().is_err());
}

fn reg_frame(registration: u64, policy: MatchPolicy, uri: &str, by: Option<Principal>) -> Frame {
    Frame::RegAdd {
        realm: REALM.into(),
        registration,
        callee: registration,
        policy,
        procedure: uri.into(),
        invoke: InvokePolicy::Single,
        created_ms: 1,
        by,
    }
}

/// Calls `uri` as soon as a callee is known for it (a peer's registration is applied a
/// moment after its frame is sent); the answer, or `Gone` after a few seconds.
fn call_once_routed(master: &Arc<ServiceClient>, uri: &str) -> tokio::task::JoinHandle<Answer> {
    let (master, uri) = (master.clone(), uri.to_owned());
    tokio::spawn(async move {
        for _ in 0..250 {
            match master.call(&uri, Payload::default()).await {
                Answer::Error(e, _) if e == errors::NO_SUCH_PROCEDURE => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                other => return other,
            }
        }
        Answer::Gone
    })
}

#[tokio::test]
async fn a_peer_cannot_install_a_fake_worker_for_an_anonymous_client() {
    let node = guarded_node().await;
    let (mut peer, _) = fake_peer(node.addr, "a", "evil", SECRET, &["meta"]).await;
    fake_send(&mut peer, &Frame::SyncDone).await;
    let master = ServiceClient::start_trusted(&node.router, REALM, "master:m1").unwrap();
    let w9 = "switchyard.worker.w9.run";
    // Refused claims: an anonymous session, an unnamed one, a worker registering another
    // worker's name, and a worker's own name as a pattern.
    fake_send(
        &mut peer,
        &reg_frame(11, MatchPolicy::Exact, w9, principal("x", "anonymous")),
    )
    .await;
    fake_send(&mut peer, &reg_frame(12, MatchPolicy::Exact, w9, None)).await;
    fake_send(
        &mut peer,
        &reg_frame(13, MatchPolicy::Exact, w9, principal("w8", WORKER_ROLE)),
    )
    .await;
    let prefix = "switchyard.worker.w9.";
    fake_send(
        &mut peer,
        &reg_frame(
            14,
            MatchPolicy::Prefix,
            prefix,
            principal("w9", WORKER_ROLE),
        ),
    )
    .await;
    // Then an ordinary registration, so the frames before it have been applied.
    fake_send(
        &mut peer,
        &reg_frame(
            15,
            MatchPolicy::Exact,
            "com.app.ping",
            principal("x", "anonymous"),
        ),
    )
    .await;
    let ping = call_once_routed(&master, "com.app.ping");
    let forwarded = recv_until(&mut peer, |f| match f {
        Frame::Call { procedure, .. } => Some(procedure),
        _ => None,
    })
    .await;
    assert_eq!(forwarded, "com.app.ping");
    ping.abort();
    match master.call(w9, Payload::default()).await {
        Answer::Error(uri, _) => assert_eq!(uri, errors::NO_SUCH_PROCEDURE),
        other => panic!("a refused claim must not be callable: {other:?}"),
    }
    // The worker itself, as its node vouches: installed, and a master's call crosses.
    fake_send(
        &mut peer,
        &reg_frame(16, MatchPolicy::Exact, w9, principal("w9", WORKER_ROLE)),
    )
    .await;
    let call = call_once_routed(&master, w9);
    let (request, proxy) = recv_until(&mut peer, |f| match f {
        Frame::Call {
            procedure,
            request,
            proxy,
            by,
            ..
        } if procedure == w9 => {
            assert_eq!(by, principal("master:m1", "trusted"));
            Some((request, proxy))
        }
        _ => None,
    })
    .await;
    fake_send(
        &mut peer,
        &Frame::Result {
            realm: REALM.into(),
            proxy,
            request,
            progress: false,
            payload: Payload::default(),
        },
    )
    .await;
    assert!(matches!(call.await.unwrap(), Answer::Result(_)));
}

#[tokio::test]
async fn forwarded_publications_are_authorized_where_they_are_delivered() {
    let node = guarded_node().await;
    let (mut peer, _) = fake_peer(node.addr, "a", "evil", SECRET, &["meta"]).await;
    // Only masters may publish in the worker namespace; a master's session listens there.
    let master = ServiceClient::start_trusted(&node.router, REALM, "master:m1").unwrap();
    let topic = "switchyard.worker.w1.notice";
    let (_, mut events) = master.subscribe(topic, Dict::new()).await.unwrap();
    let publish = |id: u64, authid: &str, authrole: &str| Frame::Publish {
        realm: REALM.into(),
        publication: id,
        topic: topic.into(),
        options: Dict::new(),
        publisher: id,
        authid: authid.into(),
        authrole: authrole.into(),
        payload: Payload::default(),
    };
    fake_send(&mut peer, &publish(1, "x", "anonymous")).await;
    fake_send(&mut peer, &publish(2, "w1", WORKER_ROLE)).await;
    fake_send(&mut peer, &publish(3, "master:m2", "trusted")).await;
    // One link is one ordered stream: the first event delivered is the master's.
    let ev = tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("the master's publication is delivered")
        .unwrap();
    assert_eq!(ev.publication, 3);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), events.recv())
            .await
            .is_err(),
        "nothing else is delivered"
    );
}

/// A client that offers WAMP-CRA for a name the node does not know is refused, not
/// welcomed anonymously: a worker can never end up registered by accident.
#[tokio::test]
async fn an_unknown_worker_is_refused_not_welcomed_anonymously() {
    let node = guarded_node().await;
    let mut o = ClientOptions::new(format!("ws://{}/ws", node.addr), REALM);
    o.auth = Some(ClientAuth::wampcra("w7", "guess"));
    match Client::connect(&o).await {
        Err(ClientError::Aborted { reason, .. }) => assert!(
            reason == errors::NO_SUCH_PRINCIPAL || reason == errors::AUTHENTICATION_FAILED,
            "{reason}"
        ),
        Err(e) => panic!("expected an ABORT, got {e}"),
        Ok(_) => panic!("an unknown worker must not be welcomed"),
    }
}

fn kill_frame(request: u64, target: KillTarget, by: Option<Principal>) -> Frame {
    Frame::Kill {
        realm: REALM.into(),
        request,
        order: KillOrder {
            target,
            reason: "wamp.close.killed".into(),
            message: None,
            except: None,
        },
        by,
    }
}

/// A peer's kill orders (`wamp.session.kill*` called on another node) are authorized where
/// the victim is: on the master's realm, orders for an anonymous caller, an unnamed one or a
/// worker are refused and the worker stays connected; a master's order ends its session.
#[tokio::test]
async fn kill_orders_are_authorized_where_the_victim_is() {
    let node = guarded_node().await;
    let (worker, _invocations) = worker(&node).await;
    let victim = worker.session_id();
    let (mut peer, _) = fake_peer(node.addr, "a", "evil", SECRET, &["meta", "kill"]).await;
    let refused = [
        (
            1,
            KillTarget::Session(victim),
            principal("XXXX-anon", "anonymous"),
        ),
        (2, KillTarget::Authid("w1".into()), None),
        (
            3,
            KillTarget::Authrole(WORKER_ROLE.into()),
            principal("w2", WORKER_ROLE),
        ),
        (4, KillTarget::All, principal("master:x", "anonymous")),
    ];
    for (request, target, by) in refused {
        fake_send(&mut peer, &kill_frame(request, target, by.clone())).await;
        let (sessions, error) = recv_until(&mut peer, |f| match f {
            Frame::Killed {
                request: r,
                sessions,
                error,
                ..
            } if r == request => Some((sessions, error)),
            _ => None,
        })
        .await;
        assert!(sessions.is_empty(), "caller {by:?} killed {sessions:?}");
        assert_eq!(
            error.as_deref(),
            Some(errors::NOT_AUTHORIZED),
            "caller {by:?}"
        );
    }
    assert!(!worker.is_closed());
    assert!(node.router.realm(REALM).unwrap().session(victim).is_some());
    // A master, as its node vouches: the worker's session ends.
    let by = principal("master:m1", "trusted");
    fake_send(&mut peer, &kill_frame(5, KillTarget::Session(victim), by)).await;
    let sessions = recv_until(&mut peer, |f| match f {
        Frame::Killed {
            request: 5,
            sessions,
            error: None,
            ..
        } => Some(sessions),
        _ => None,
    })
    .await;
    assert_eq!(sessions, vec![victim]);
    tokio::time::timeout(WAIT, worker.closed())
        .await
        .expect("the killed worker's session ends");
}
