//! Prometheus metrics: what the router counts, and ([`endpoint`]) the `/metrics` endpoint
//! that shows it (Crossbar's open-source router has none).
//!
//! Counters are plain atomics updated on the paths that already know the facts (a message
//! handled, a session refused, a slow consumer cut off); gauges (sessions, subscriptions,
//! registrations) are read from the realms when scraped, so they cost nothing in between.
//! A session resolves its realm's message counters once, when it joins
//! ([`Metrics::realm_messages`]): counting a message is then one atomic add, with no lookup
//! and no allocation.

pub mod endpoint;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use dashmap::DashMap;

/// A router's counters.
#[derive(Default)]
pub struct Metrics {
    /// WAMP messages received from established sessions, by realm (then by type).
    messages: DashMap<String, Arc<RealmMessages>>,
    bytes_received: AtomicU64,
    bytes_sent: AtomicU64,
    /// Sessions refused at HELLO/AUTHENTICATE, by ABORT reason.
    auth_failures: DashMap<String, AtomicU64>,
    slow_consumers: AtomicU64,
    connections: AtomicU64,
}

/// WAMP message type codes are all below this (the highest, YIELD, is 70).
const MESSAGE_CODES: usize = 128;

/// One realm's counters of WAMP messages received, by message type code.
pub struct RealmMessages {
    by_code: [AtomicU64; MESSAGE_CODES],
}

impl Default for RealmMessages {
    fn default() -> Self {
        RealmMessages {
            by_code: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl RealmMessages {
    /// Counts one message of type `code` (a `Message::code`).
    pub fn message(&self, code: u64) {
        if let Some(c) = self.by_code.get(code as usize) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// The types counted so far, with their counts: (code, count).
    fn counted(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.by_code
            .iter()
            .enumerate()
            .map(|(code, c)| (code as u64, c.load(Relaxed)))
            .filter(|&(_, n)| n > 0)
    }
}

impl Metrics {
    /// The message counters of realm `realm`, for a session to keep while it is joined
    /// (created on first use; the name is copied only then).
    pub fn realm_messages(&self, realm: &str) -> Arc<RealmMessages> {
        if let Some(m) = self.messages.get(realm) {
            return m.clone();
        }
        self.messages.entry(realm.to_owned()).or_default().clone()
    }

    pub fn bytes_received(&self, n: usize) {
        self.bytes_received.fetch_add(n as u64, Relaxed);
    }

    pub fn bytes_sent(&self, n: usize) {
        self.bytes_sent.fetch_add(n as u64, Relaxed);
    }

    pub fn auth_failure(&self, reason: &str) {
        self.auth_failures
            .entry(reason.to_owned())
            .or_default()
            .fetch_add(1, Relaxed);
    }

    pub fn slow_consumer(&self) {
        self.slow_consumers.fetch_add(1, Relaxed);
    }

    pub fn connection(&self) {
        self.connections.fetch_add(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::Metrics;

    #[test]
    fn a_realms_sessions_share_its_counters() {
        let m = Metrics::default();
        let (a, b) = (m.realm_messages("r"), m.realm_messages("r"));
        assert!(Arc::ptr_eq(&a, &b));
        a.message(16);
        b.message(16);
        m.realm_messages("s").message(32);
        assert_eq!(a.counted().collect::<Vec<_>>(), vec![(16, 2)]);
        assert_eq!(m.messages.len(), 2);
    }
}
