//! The connection loop: the router URLs in turn (those a `reconnect` call gave first),
//! connecting and joining with WAMP-CRA under a timeout, refusing a session the router
//! established without the challenge, and exponential backoff with jitter between attempts.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use switchyard_router::client::{Client, ClientAuth, ClientError, ClientOptions};
use switchyard_router::logsafe::Trunc;
use switchyard_router::uri::errors;
use switchyard_router::wire::Value;
use tokio::time::Instant;

use super::{End, Worker, GOODBYE_TIMEOUT};

/// Connecting plus joining, at most.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_FACTOR: f64 = 1.5;
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A session that lasted this long resets the backoff.
const STABLE_SESSION: Duration = Duration::from_secs(10);

/// Exponential backoff with jitter.
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Backoff {
            next: BACKOFF_START,
        }
    }

    fn reset(&mut self) {
        self.next = BACKOFF_START;
    }

    /// The delay to wait now (±25 % around the current step); the step grows.
    fn delay(&mut self) -> Duration {
        let base = self.next;
        self.next = base.mul_f64(BACKOFF_FACTOR).min(BACKOFF_MAX);
        base.mul_f64(rand::rng().random_range(0.75..=1.25))
    }
}

impl Worker {
    /// The connection loop; returns when the worker is to stop.
    pub(crate) async fn run(self) {
        let this = Arc::new(self);
        let mut backoff = Backoff::new();
        let mut preferred: VecDeque<String> = VecDeque::new();
        let mut next = 0usize;
        let mut seq = 0u64;
        loop {
            let url = match preferred.pop_front() {
                Some(u) => u,
                None => {
                    let u = this.opts.urls[next % this.opts.urls.len()].clone();
                    next = next.wrapping_add(1);
                    u
                }
            };
            tracing::debug!(url, "worker {}: connecting", this.name());
            let attempt = tokio::select! {
                _ = this.shutdown.cancelled() => return,
                r = this.connect(&url) => r,
            };
            let mut wait = true;
            match attempt {
                Err(e) => {
                    let hint = match &e {
                        ClientError::Aborted { reason, .. }
                            if reason == errors::AUTHENTICATION_FAILED
                                || reason == errors::NO_SUCH_PRINCIPAL =>
                        {
                            " (check the worker's name and password)"
                        }
                        _ => "",
                    };
                    tracing::warn!("worker {}: cannot join {url}: {e}{hint}", this.name());
                }
                Ok(client) if !Self::authenticated(&client, this.name(), &url) => {
                    Self::leave(&client).await;
                }
                Ok(client) => {
                    seq += 1;
                    let joined = Instant::now();
                    match this.clone().session(client, &url, seq).await {
                        End::Stop => return,
                        End::Reconnect(urls) => {
                            preferred = urls.into();
                            backoff.reset();
                            wait = false;
                        }
                        End::Lost(cause) => {
                            let lasted = joined.elapsed();
                            tracing::warn!(
                                "worker {}: disconnected from {url} after {:.1}s: {cause}",
                                this.name(),
                                lasted.as_secs_f64()
                            );
                            if lasted > STABLE_SESSION {
                                backoff.reset();
                            }
                        }
                        End::Refused => {}
                    }
                }
            }
            if this.shutdown.is_cancelled() {
                return;
            }
            if wait {
                let d = backoff.delay();
                tracing::info!(
                    "worker {}: next connection attempt in {:.1}s",
                    this.name(),
                    d.as_secs_f64()
                );
                tokio::select! {
                    _ = this.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(d) => {}
                }
            }
        }
    }

    async fn connect(&self, url: &str) -> Result<Client, ClientError> {
        let mut o = ClientOptions::new(url, self.opts.realm.as_str());
        o.timeout = CONNECT_TIMEOUT;
        o.tls = self.opts.tls.clone();
        o.auth = Some(ClientAuth::wampcra(
            self.opts.name.as_str(),
            self.opts.password.as_str(),
        ));
        match tokio::time::timeout(CONNECT_TIMEOUT, Client::connect(&o)).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout(CONNECT_TIMEOUT)),
        }
    }

    /// Whether the router established the session through the WAMP-CRA challenge the worker
    /// asked for, as this worker with the worker role. Anything else (a router that
    /// welcomed it anonymously, under another role or name) could let anyone call it: the
    /// worker registers nothing there, says why, and retries with backoff.
    fn authenticated(client: &Client, name: &str, url: &str) -> bool {
        let text = |k: &str| {
            client
                .welcome_details()
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        let (method, role, authid) = (text("authmethod"), text("authrole"), text("authid"));
        let ok = client.was_challenged()
            && method == "wampcra"
            && role == crate::WORKER_ROLE
            && authid == name;
        if !ok {
            tracing::error!(
                "worker {name}: {url} let this worker join without the WAMP-CRA challenge it \
                 asked for (challenged: {}, authmethod {:?}, authrole {:?}, authid {:?}): \
                 refusing the session, registering nothing; is the worker configured in \
                 [master] workers on that node?",
                client.was_challenged(),
                Trunc(&method),
                Trunc(&role),
                Trunc(&authid)
            );
        }
        ok
    }

    /// Says GOODBYE and waits (bounded) for the router's reply; then drops the connection.
    pub(super) async fn leave(client: &Client) {
        if !client.is_closed() {
            let _ = tokio::time::timeout(GOODBYE_TIMEOUT, async {
                if client.leave().await.is_ok() {
                    client.closed().await;
                }
            })
            .await;
        }
        client.disconnect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::new();
        let d = b.delay();
        assert!(
            d >= Duration::from_millis(375) && d <= Duration::from_millis(625),
            "{d:?}"
        );
        let d = b.delay();
        assert!(
            d >= Duration::from_millis(562) && d <= Duration::from_millis(938),
            "{d:?}"
        );
        for _ in 0..30 {
            b.delay();
        }
        let d = b.delay();
        assert!(
            d >= Duration::from_millis(22_500) && d <= Duration::from_millis(37_500),
            "{d:?}"
        );
        b.reset();
        assert!(b.delay() <= Duration::from_millis(625));
    }
}
