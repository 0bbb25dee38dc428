//! Prometheus metrics: what the router counts, and ([`endpoint`]) the `/metrics` endpoint
//! that shows it (Crossbar's open-source router has none).
//!
//! Counters are plain atomics updated on the paths that already know the facts (a message
//! handled, a session refused, a slow consumer cut off); gauges (sessions, subscriptions,
//! registrations) are read from the realms when scraped, so they cost nothing in between.

pub mod endpoint;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use dashmap::DashMap;

/// A router's counters.
#[derive(Default)]
pub struct Metrics {
    /// WAMP messages received from established sessions, by (realm, message type).
    messages: DashMap<(String, &'static str), AtomicU64>,
    bytes_received: AtomicU64,
    bytes_sent: AtomicU64,
    /// Sessions refused at HELLO/AUTHENTICATE, by ABORT reason.
    auth_failures: DashMap<String, AtomicU64>,
    slow_consumers: AtomicU64,
    connections: AtomicU64,
}

impl Metrics {
    pub fn message(&self, realm: &str, kind: &'static str) {
        if let Some(c) = self.messages.get(&(realm.to_owned(), kind)) {
            c.fetch_add(1, Relaxed);
            return;
        }
        self.messages
            .entry((realm.to_owned(), kind))
            .or_default()
            .fetch_add(1, Relaxed);
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
