//! The router's configuration model. The binary fills it from its TOML file and flags (and,
//! later, from a Crossbar node directory); the router crate never parses files itself.

use std::time::Duration;

use crate::outbound::QueueLimits;
use crate::uri::UriCheck;

/// One realm's settings.
#[derive(Clone, Debug)]
pub struct RealmConfig {
    pub name: String,
    pub uri_check: UriCheck,
    /// Serve the session, subscription and registration meta APIs (`wamp.session.*`, ...)
    /// on this realm, as Crossbar does by default (`enable_meta_api`).
    pub meta_api: bool,
    /// Topics whose last events are kept for `wamp.subscription.get_events` (Crossbar's
    /// `store.event-history`): pattern, match policy, how many events.
    pub event_history: Vec<EventHistory>,
    /// Disclosure of callers and publishers is decided by the roles only (Crossbar's rule:
    /// a client's `disclose_me` is ignored); set for the realms of a Crossbar config.
    /// In-process sessions keep their own `disclose_me`.
    pub disclosure_by_role: bool,
}

/// One `event-history` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventHistory {
    pub uri: String,
    pub policy: crate::uri::MatchPolicy,
    pub limit: usize,
}

impl RealmConfig {
    pub fn new(name: impl Into<String>) -> Self {
        RealmConfig {
            name: name.into(),
            uri_check: UriCheck::Loose,
            meta_api: true,
            event_history: Vec::new(),
            disclosure_by_role: false,
        }
    }
}

/// Limits and timeouts that protect the router from slow, silent or hostile peers.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest message accepted or sent, in bytes (WebSocket message, RawSocket frame).
    pub max_message_size: usize,
    /// Per-session outbound queue.
    pub queue: QueueLimits,
    /// Time allowed from connect to a complete HELLO (and from CHALLENGE to AUTHENTICATE).
    pub handshake_timeout: Duration,
    /// WebSocket ping interval when the peer is idle; `None` disables pings.
    pub ping_interval: Option<Duration>,
    /// How long a ping may go unanswered before the connection is dropped.
    pub ping_timeout: Duration,
    /// How long one batch write may take before the peer is considered stalled.
    pub write_timeout: Duration,
    /// How long to wait for the peer's GOODBYE after the router said goodbye.
    pub goodbye_timeout: Duration,
    /// Most calls one session may have in flight; more get `wamp.error.unavailable`.
    pub max_calls_in_flight: usize,
    /// How long an HTTP request's body may take to arrive once its head is read.
    pub http_body_timeout: Duration,
    /// How long an HTTP request may take from its head to its response head (a streamed
    /// response body, Server-Sent Events, is not bounded by it).
    pub http_request_timeout: Duration,
    /// Most subscriptions one network session may hold; more get an ERROR.
    pub max_subscriptions_per_session: usize,
    /// Most registrations one network session may hold; more get an ERROR.
    pub max_registrations_per_session: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 16 << 20,
            queue: QueueLimits::default(),
            handshake_timeout: Duration::from_secs(10),
            ping_interval: Some(Duration::from_secs(30)),
            ping_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            goodbye_timeout: Duration::from_secs(2),
            max_calls_in_flight: crate::dealer::DEFAULT_CALLS_IN_FLIGHT,
            http_body_timeout: Duration::from_secs(30),
            http_request_timeout: Duration::from_secs(30),
            max_subscriptions_per_session: 10_000,
            max_registrations_per_session: 10_000,
        }
    }
}

/// Everything a [`crate::Router`] needs.
#[derive(Clone, Debug)]
pub struct RouterConfig {
    pub realms: Vec<RealmConfig>,
    pub limits: Limits,
}

impl Default for RouterConfig {
    /// The embedded defaults: realms `realm1` and `buildbot`, open to anonymous clients.
    fn default() -> Self {
        RouterConfig {
            realms: vec![RealmConfig::new("realm1"), RealmConfig::new("buildbot")],
            limits: Limits::default(),
        }
    }
}
