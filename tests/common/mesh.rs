//! In-process mesh nodes for the `mesh*.rs` tests: several routers in one process, each on
//! its own 127.0.0.1 port, linked over real WebSocket peer links with fast heartbeats and
//! backoffs, plus the waits and fake peers those tests share.

use std::time::Duration;

use switchyard_router::mesh::{Mesh, MeshConfig};
use switchyard_router::transport::{self, ListenerConfig};
use switchyard_router::wire::{Id, Message, Value};
use switchyard_router::{Router, RouterConfig};

use super::{Client, FakeLink};

/// One in-process node: a router serving WebSocket on a loopback port, with its mesh.
pub struct Node {
    pub addr: std::net::SocketAddr,
    pub router: Router,
    pub mesh: Mesh,
}

/// A mesh config with short heartbeats, backoffs and timeouts, dialing `peers`.
pub fn fast(name: &str, secret: &str, peers: &[&Node]) -> MeshConfig {
    let mut c = MeshConfig::new(name, secret);
    c.peers = peers.iter().map(|n| format!("ws://{}", n.addr)).collect();
    c.heartbeat_interval = Duration::from_millis(200);
    c.heartbeat_timeout = Duration::from_millis(3000);
    c.reconnect_min = Duration::from_millis(50);
    c.reconnect_max = Duration::from_millis(400);
    c.handshake_timeout = Duration::from_secs(2);
    c
}

/// Starts a node; with `start`, it dials its peers at once.
pub async fn node_with(config: MeshConfig, start: bool) -> Node {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    node_on(listener, config, start)
}

/// Starts a node serving `listener` (bound by the caller, so two nodes can dial each other
/// before either runs); with `start`, it dials its peers at once.
pub fn node_on(listener: tokio::net::TcpListener, config: MeshConfig, start: bool) -> Node {
    let addr = listener.local_addr().unwrap();
    let router = Router::new(RouterConfig::default());
    let mesh = Mesh::new(router.clone(), config, addr);
    let lc = ListenerConfig {
        mesh: Some(mesh.clone()),
        ..ListenerConfig::default()
    };
    tokio::spawn(transport::serve(listener, router.clone(), lc));
    if start {
        mesh.start();
    }
    Node { addr, router, mesh }
}

/// A node on the shared test secret that dials `peers` at once.
pub async fn node(name: &str, peers: &[&Node]) -> Node {
    node_with(fast(name, "s3cret", peers), true).await
}

impl Node {
    pub async fn client(&self) -> (Client, Id) {
        self.client_with("wamp.2.json").await
    }
    pub async fn client_with(&self, subprotocol: &str) -> (Client, Id) {
        let mut c = Client::websocket(&format!("ws://{}/ws", self.addr), subprotocol).await;
        let id = c.join("realm1").await;
        (c, id)
    }
    pub fn remote_subs(&self) -> usize {
        self.mesh
            .realm("realm1")
            .unwrap()
            .remote_subscription_count()
    }
    /// Callees (local and stand-ins) of the registration of `procedure`.
    pub fn callees(&self, procedure: &str) -> usize {
        let realm = self.router.realm("realm1").unwrap();
        realm
            .dealer
            .registrations()
            .iter()
            .filter(|r| r.procedure == procedure)
            .map(|r| r.callees.len())
            .sum()
    }
}

/// Polls `cond` every 20 ms for at most 10 s.
pub async fn eventually(what: &str, cond: impl FnMut() -> bool) {
    poll_until(
        what,
        Duration::from_secs(10),
        Duration::from_millis(20),
        cond,
    )
    .await
}

/// Polls `cond` every `every` for at most `limit`; panics naming `what` when it never holds.
/// Tests on real processes poll less often (a check may start a process) and wait longer.
pub async fn poll_until(
    what: &str,
    limit: Duration,
    every: Duration,
    mut cond: impl FnMut() -> bool,
) {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return;
        }
        tokio::time::sleep(every).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Waits until every node is linked to every other and synced.
pub async fn full_mesh(nodes: &[&Node]) {
    let n = nodes.len() - 1;
    // Linked, and each peer's full snapshot applied.
    eventually("a full, synced mesh", || {
        nodes.iter().all(|x| {
            let st = x.mesh.status();
            st.peers.len() == n && st.peers.iter().all(|p| p.state == "connected" && p.synced)
        })
    })
    .await;
}

/// An EVENT's subscription, publication, details and args; panics on anything else.
pub fn event_of(
    m: Message,
) -> (
    Id,
    Id,
    std::collections::BTreeMap<String, Value>,
    Vec<Value>,
) {
    match m {
        Message::Event {
            subscription,
            publication,
            details,
            payload,
        } => (subscription, publication, details, payload.args().to_vec()),
        other => panic!("expected EVENT, got {other:?}"),
    }
}

/// A fake peer named `name` dialing `node` (see [`super::fake_peer`]).
pub async fn fake_peer(node: &Node, name: &str, features: &[&str]) -> (FakeLink, Vec<String>) {
    super::fake_peer(node.addr, node.mesh.node_name(), name, "s3cret", features).await
}
