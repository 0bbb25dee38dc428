//! The peer mesh: the same router on every host, one bus. See docs/mesh.md.
//!
//! This module owns the node's identity, its table of peer links, and the policy that keeps
//! the mesh complete: dial every configured and gossiped peer with backoff, keep one link per
//! node pair, resync on every new link, drop a peer's state when its link goes.
//!
//! - [`frame`]: what peers say to each other and its encoding;
//! - [`handshake`]: challenge/response over the shared secret;
//! - [`link`]: one peer link's tasks (dial, accept, read, write, heartbeat);
//! - `realm`: per-realm interest tables and the broker/dealer/realm hooks;
//! - `state`: what a peer created here through one link, and applying its frames;
//! - `rpc`: the stand-in sessions that carry calls across a link;
//! - `conflict`: the registration conflict rule (the older claim wins everywhere);
//! - `fence`: replies to interest changes held until every peer applied them;
//! - `kill`: the meta API's kills carried out on the node of each victim.

mod conflict;
mod fence;
pub mod frame;
pub mod handshake;
pub(crate) mod kill;
pub mod link;
mod realm;
mod rpc;
mod state;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::outbound::QueueLimits;
use crate::Router;
use frame::Frame;
use link::LinkHandle;
pub use realm::RealmMesh;

/// Mesh settings.
#[derive(Clone, Debug)]
pub struct MeshConfig {
    /// This node's name: unique in the mesh, stable across restarts.
    pub node_name: String,
    /// Peer URLs to dial (`ws://host:port` or `wss://host:port`, `/mesh` is appended when
    /// no path is given). Listing this node itself is fine: it is recognized and skipped.
    pub peers: Vec<String>,
    /// The shared secret every node of the mesh is configured with.
    pub secret: String,
    /// The URL other nodes should dial to reach this one (gossiped). Defaults to
    /// `ws://<listen address><path>` (`wss://` when [`MeshConfig::listen_tls`]).
    pub advertise: Option<String>,
    /// The node's listener serves TLS: the default advertised URL is `wss://`.
    pub listen_tls: bool,
    /// Trust anchors for verifying the certificates of `wss://` peers (each is checked against
    /// the host of the URL it was dialed by). `None`: `wss://` peers cannot be dialed (each
    /// attempt fails, with that reason in the peer's status).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The HTTP path peer links upgrade on.
    pub path: String,
    /// How often a link sends a heartbeat.
    pub heartbeat_interval: Duration,
    /// A link with no frame for this long is declared dead and its peer's state dropped.
    pub heartbeat_timeout: Duration,
    /// Time allowed for connect + WebSocket upgrade + authentication.
    pub handshake_timeout: Duration,
    /// First and largest delay between dial attempts (doubling, with jitter).
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// How long one batch write to a peer may take.
    pub write_timeout: Duration,
    /// Bounds of each peer link's outbound queue; a link over them is cut (the peer resyncs
    /// when it reconnects) so a stuck peer cannot grow this node's memory.
    pub queue: QueueLimits,
    /// Most sessions one peer may add to this node's meta directory (across realms); the
    /// meta API leaves out the rest (logged once per link).
    pub max_remote_sessions: usize,
    /// Most subscriber entries (session, subscription) one peer may add to it.
    pub max_remote_subscribers: usize,
    /// How long a SUBSCRIBED, REGISTERED, UNSUBSCRIBED or UNREGISTERED waits for the peers to
    /// confirm the change (and a kill order for their answer); `None`: `heartbeat_timeout`
    /// plus 500 ms, so a peer that stays silent has lost its link by then.
    pub interest_ack_timeout: Option<Duration>,
}

impl MeshConfig {
    pub fn new(node_name: impl Into<String>, secret: impl Into<String>) -> Self {
        MeshConfig {
            node_name: node_name.into(),
            peers: Vec::new(),
            secret: secret.into(),
            advertise: None,
            listen_tls: false,
            tls: None,
            path: "/mesh".into(),
            heartbeat_interval: Duration::from_millis(1000),
            heartbeat_timeout: Duration::from_millis(3500),
            handshake_timeout: Duration::from_secs(5),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(3),
            write_timeout: Duration::from_secs(10),
            queue: QueueLimits {
                soft_bytes: 16 << 20,
                hard_bytes: 64 << 20,
                max_messages: 500_000,
                slow_consumer_timeout: Duration::from_secs(10),
            },
            max_remote_sessions: 100_000,
            max_remote_subscribers: 1_000_000,
            interest_ack_timeout: None,
        }
    }

    /// The effective [`MeshConfig::interest_ack_timeout`].
    pub fn interest_ack_timeout(&self) -> Duration {
        self.interest_ack_timeout
            .unwrap_or(self.heartbeat_timeout + Duration::from_millis(500))
    }
}

/// Normalizes a peer URL: `ws://host:port` gets the default mesh path.
pub fn peer_url(url: &str, path: &str) -> String {
    let rest = url
        .strip_prefix("ws://")
        .or_else(|| url.strip_prefix("wss://"))
        .unwrap_or(url);
    if rest.contains('/') {
        url.to_owned()
    } else if url.contains("://") {
        format!("{url}{path}")
    } else {
        format!("ws://{url}{path}")
    }
}

/// What `switchyard mesh status` shows for one peer.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PeerStatus {
    pub node: Option<String>,
    pub url: Option<String>,
    /// `connected`, `connecting`, `refused` or `unreachable`.
    pub state: String,
    pub incarnation: Option<u64>,
    /// Which node dialed the link.
    pub dialed_by: Option<String>,
    pub connected_ms: Option<u64>,
    /// The last dial error, for peers that are not connected.
    pub last_error: Option<String>,
    /// Whether the peer's full interest snapshot has arrived on this link.
    pub synced: bool,
}

/// The whole status document.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MeshStatus {
    pub node: String,
    pub incarnation: u64,
    pub url: String,
    pub peers: Vec<PeerStatus>,
    /// Set while none of the configured peers is linked: this node runs alone, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// How often a node none of whose configured peers is linked says so at WARN.
pub const ALONE_WARNING_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// What the dialer for one URL last saw.
#[derive(Clone, Debug, Default)]
struct DialState {
    node: Option<String>,
    last_error: Option<String>,
    refused: bool,
    /// The URL turned out to be this node: never dialed again.
    is_self: bool,
}

#[derive(Default)]
pub(crate) struct Peers {
    /// The one active link per peer node.
    active: HashMap<String, Arc<LinkHandle>>,
    /// The same links by link ID (interest tables refer to links by ID).
    by_id: HashMap<u64, Arc<LinkHandle>>,
    /// Every URL a dialer runs for.
    dialers: HashMap<String, DialState>,
    /// The most recent active link per node, ended or not (see [`Attach::Active`]).
    last: HashMap<String, Arc<LinkHandle>>,
}

impl Peers {
    pub(crate) fn link(&self, id: u64) -> Option<&Arc<LinkHandle>> {
        self.by_id.get(&id)
    }

    pub(crate) fn links(&self) -> impl Iterator<Item = &Arc<LinkHandle>> {
        self.by_id.values()
    }
}

pub(crate) struct Inner {
    pub(crate) config: MeshConfig,
    pub(crate) router: Router,
    pub(crate) incarnation: u64,
    pub(crate) url: String,
    pub(crate) peers: Mutex<Peers>,
    pub(crate) realms: HashMap<String, Arc<RealmMesh>>,
    /// Wakes dialers when a link comes or goes.
    pub(crate) changed: Notify,
    next_link: AtomicU64,
    /// Kill orders sent to peers, waiting for their answers.
    pub(crate) kills: kill::Pending,
}

/// A node's mesh; cheap to clone.
#[derive(Clone)]
pub struct Mesh {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("node", &self.inner.config.node_name)
            .finish_non_exhaustive()
    }
}

/// The outcome of offering a freshly authenticated link to the peer table.
pub(crate) enum Attach {
    /// This link is the node's link now. `previous` is the node's link before it (replaced
    /// or already ended), whose state must be gone before this link's frames are applied.
    Active { previous: Option<Arc<LinkHandle>> },
    /// Another link to the same node is preferred; this one is closed.
    Duplicate,
}

impl Mesh {
    /// Creates the mesh for `router` and hooks it into every realm's broker and dealer.
    /// `listen` is the bound address, used for the default advertised URL. Nothing is dialed
    /// until [`Mesh::start`].
    pub fn new(router: Router, config: MeshConfig, listen: std::net::SocketAddr) -> Mesh {
        let url = config
            .advertise
            .clone()
            .map(|u| peer_url(&u, &config.path))
            .unwrap_or_else(|| {
                let scheme = if config.listen_tls { "wss" } else { "ws" };
                format!("{scheme}://{listen}{}", config.path)
            });
        let incarnation = rand::random::<u64>() >> 11; // fits a WAMP ID / f64 exactly
        let peers = Mutex::new(Peers::default());
        let mut realms = HashMap::new();
        for realm in router.realms() {
            realms.insert(
                realm.name().to_owned(),
                Arc::new(RealmMesh::new(realm.name(), realm.directory().clone())),
            );
        }
        let mesh = Mesh {
            inner: Arc::new(Inner {
                config,
                router: router.clone(),
                incarnation,
                url,
                peers,
                realms,
                changed: Notify::new(),
                next_link: AtomicU64::new(1),
                kills: kill::Pending::default(),
            }),
        };
        for realm in router.realms() {
            let rm = mesh.inner.realms[realm.name()].clone();
            rm.bind(Arc::downgrade(&mesh.inner));
            realm.broker.set_hook(rm.clone());
            realm.dealer.set_hook(rm.clone());
            realm.set_cluster(rm.clone());
            realm.set_hook(rm);
        }
        mesh
    }

    /// Starts dialing the configured peers.
    pub fn start(&self) {
        let peers: Vec<String> = self.inner.config.peers.clone();
        let configured = !peers.is_empty();
        for url in peers {
            self.ensure_dialer(&peer_url(&url, &self.inner.config.path));
        }
        if configured {
            let mesh = self.clone();
            let shutdown = self.inner.router.shutdown().clone();
            shutdown.clone().spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(ALONE_WARNING_EVERY) => {}
                        _ = shutdown.requested() => break,
                    }
                    if let Some(w) = mesh.alone() {
                        tracing::warn!("{w}");
                    }
                }
            });
        }
    }

    /// Why this node runs alone, when it has configured peers and none is linked.
    pub fn alone(&self) -> Option<String> {
        if self.inner.config.peers.is_empty() {
            return None;
        }
        let peers = self.inner.peers.lock();
        if !peers.active.is_empty() {
            return None;
        }
        let mut causes: Vec<String> = peers
            .dialers
            .iter()
            .filter(|(_, d)| !d.is_self)
            .map(|(url, d)| {
                let cause = d.last_error.as_deref().unwrap_or("connecting");
                format!("{url}: {cause}")
            })
            .collect();
        if causes.is_empty() {
            return None;
        }
        causes.sort();
        Some(format!(
            "mesh: none of this node's peers is linked; it runs alone ({})",
            causes.join("; ")
        ))
    }

    pub fn node_name(&self) -> &str {
        &self.inner.config.node_name
    }

    pub fn url(&self) -> &str {
        &self.inner.url
    }

    pub fn path(&self) -> &str {
        &self.inner.config.path
    }

    pub(crate) fn next_link_id(&self) -> u64 {
        self.inner.next_link.fetch_add(1, Ordering::Relaxed)
    }

    /// Starts a dialer task for `url` unless one runs already (or it is our own URL).
    pub(crate) fn ensure_dialer(&self, url: &str) {
        if url == self.inner.url {
            return;
        }
        {
            let mut peers = self.inner.peers.lock();
            if peers.dialers.contains_key(url) {
                return;
            }
            peers.dialers.insert(url.to_owned(), DialState::default());
        }
        let (mesh, url) = (self.clone(), url.to_owned());
        let shutdown = self.inner.router.shutdown().clone();
        shutdown.spawn(async move { link::dial_loop(mesh, url).await });
    }

    pub(crate) fn dial_update<R>(
        &self,
        url: &str,
        f: impl FnOnce(&mut DialStateRef<'_>) -> R,
    ) -> Option<R> {
        let mut peers = self.inner.peers.lock();
        peers.dialers.get_mut(url).map(|d| f(&mut DialStateRef(d)))
    }

    /// Whether the dialer for `url` should wait instead of dialing: the node behind it is
    /// already linked (in either direction) or it is this node.
    pub(crate) fn dial_idle(&self, url: &str) -> Option<bool> {
        let peers = self.inner.peers.lock();
        let d = peers.dialers.get(url)?;
        if d.is_self {
            return None;
        }
        Some(
            d.node
                .as_ref()
                .is_some_and(|n| peers.active.contains_key(n)),
        )
    }

    /// Offers an authenticated link. Rule for two links between the same pair (simultaneous
    /// dials): both nodes keep the one dialed by the node with the smaller name; between two
    /// links dialed the same way, or from different incarnations, the newer one wins.
    pub(crate) fn attach(&self, link: &Arc<LinkHandle>) -> Attach {
        let me = &self.inner.config.node_name;
        let (replaced, previous) = {
            let mut peers = self.inner.peers.lock();
            let preferred_dialer = me.min(&link.node).clone();
            if let Some(old) = peers.active.get(&link.node) {
                let keep_old = old.incarnation == link.incarnation
                    && old.dialer == preferred_dialer
                    && link.dialer != preferred_dialer;
                if keep_old {
                    tracing::debug!(peer = %link.node, "duplicate mesh link closed (the link dialed by '{preferred_dialer}' is kept)");
                    return Attach::Duplicate;
                }
            }
            let old = peers.active.insert(link.node.clone(), link.clone());
            if let Some(old) = &old {
                peers.by_id.remove(&old.id);
            }
            peers.by_id.insert(link.id, link.clone());
            let previous = peers.last.insert(link.node.clone(), link.clone());
            (old, previous)
        };
        if let Some(old) = replaced {
            tracing::info!(peer = %link.node, "mesh link to '{}' replaced by a newer one", old.node);
            old.stop();
        }
        tracing::info!(peer = %link.node, url = %link.url, incarnation = link.incarnation, dialed_by = %link.dialer, "mesh peer linked");
        // Resync: our full local interest, ordered with later deltas (see RealmMesh::snapshot).
        for realm in self.inner.router.realms() {
            if let Some(rm) = self.inner.realms.get(realm.name()) {
                rm.snapshot(realm, link);
            }
        }
        link.send_synced();
        self.gossip();
        self.inner.changed.notify_waiters();
        Attach::Active { previous }
    }

    /// Removes a link that ended; its peer's state is dropped by the link's own task.
    pub(crate) fn detach(&self, link: &LinkHandle) {
        let removed = {
            let mut peers = self.inner.peers.lock();
            let is_active = peers
                .active
                .get(&link.node)
                .is_some_and(|l| l.id == link.id);
            if is_active {
                peers.active.remove(&link.node);
            }
            peers.by_id.remove(&link.id).is_some()
        };
        if removed {
            tracing::info!(peer = %link.node, "mesh peer unlinked");
            self.gossip();
        }
        self.inner.changed.notify_waiters();
    }

    /// The mesh side of a realm (remote interest, for tests and status).
    pub fn realm(&self, name: &str) -> Option<&Arc<RealmMesh>> {
        self.inner.realms.get(name)
    }

    /// Drops every current link (they are redialed and resync): what a network blip does.
    pub fn drop_links(&self) {
        let links: Vec<Arc<LinkHandle>> = self.inner.peers.lock().by_id.values().cloned().collect();
        for l in links {
            // Out of the table at once, so nothing more is routed to it.
            self.detach(&l);
            l.stop();
        }
    }

    /// Tells every peer which nodes we are linked to, so each can complete the full mesh.
    fn gossip(&self) {
        let peers = self.inner.peers.lock();
        let mut list: Vec<(String, String)> = peers
            .active
            .values()
            .map(|l| (l.node.clone(), l.url.clone()))
            .collect();
        list.push((self.inner.config.node_name.clone(), self.inner.url.clone()));
        let frame = Frame::Peers(list).encode();
        for l in peers.active.values() {
            l.send_bytes(frame.clone());
        }
    }

    /// Learns peers from gossip and dials the ones we have no link or dialer for.
    pub(crate) fn learn(&self, peers: Vec<(String, String)>) {
        for (node, url) in peers {
            if node == self.inner.config.node_name {
                continue;
            }
            let known = {
                let p = self.inner.peers.lock();
                p.active.contains_key(&node) || p.dialers.contains_key(&url)
            };
            if !known {
                tracing::info!(peer = %node, %url, "learned mesh peer from gossip");
                self.ensure_dialer(&url);
            }
            self.dial_update(&url, |d| d.learned(&node));
        }
    }

    /// The names of the nodes currently linked.
    pub fn linked_nodes(&self) -> Vec<String> {
        let mut v: Vec<String> = self.inner.peers.lock().active.keys().cloned().collect();
        v.sort();
        v
    }

    /// Peers and their state, for `switchyard mesh status`.
    pub fn status(&self) -> MeshStatus {
        let warning = self.alone();
        let peers = self.inner.peers.lock();
        let now = Instant::now();
        let mut out: Vec<PeerStatus> = peers
            .active
            .values()
            .map(|l| PeerStatus {
                node: Some(l.node.clone()),
                url: Some(l.url.clone()),
                state: "connected".into(),
                incarnation: Some(l.incarnation),
                dialed_by: Some(l.dialer.clone()),
                connected_ms: Some(now.duration_since(l.since).as_millis() as u64),
                last_error: None,
                synced: l.synced(),
            })
            .collect();
        for (url, d) in &peers.dialers {
            if d.is_self
                || d.node
                    .as_ref()
                    .is_some_and(|n| peers.active.contains_key(n))
            {
                continue;
            }
            out.push(PeerStatus {
                node: d.node.clone(),
                url: Some(url.clone()),
                state: if d.refused {
                    "refused"
                } else if d.last_error.is_some() {
                    "unreachable"
                } else {
                    "connecting"
                }
                .into(),
                incarnation: None,
                dialed_by: None,
                connected_ms: None,
                last_error: d.last_error.clone(),
                synced: false,
            });
        }
        out.sort_by(|a, b| (&a.node, &a.url).cmp(&(&b.node, &b.url)));
        MeshStatus {
            node: self.inner.config.node_name.clone(),
            incarnation: self.inner.incarnation,
            url: self.inner.url.clone(),
            peers: out,
            warning,
        }
    }
}

/// Mutable access to a dialer's state for [`Mesh::dial_update`].
pub(crate) struct DialStateRef<'a>(&'a mut DialState);

impl DialStateRef<'_> {
    pub(crate) fn connected(&mut self, node: &str) {
        self.0.node = Some(node.to_owned());
        self.0.last_error = None;
        self.0.refused = false;
    }
    /// Records a failed attempt; `true` when its cause differs from the previous attempt's
    /// (worth a log line: retries with the same cause are not).
    pub(crate) fn failed(&mut self, error: String, refused: bool) -> bool {
        let new = self.0.last_error.as_deref() != Some(error.as_str());
        self.0.last_error = Some(error);
        self.0.refused = refused;
        new
    }
    pub(crate) fn is_self(&mut self) {
        self.0.is_self = true;
    }
    fn learned(&mut self, node: &str) {
        if self.0.node.is_none() {
            self.0.node = Some(node.to_owned());
        }
    }
}
