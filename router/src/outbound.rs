//! A session's bounded outbound queue.
//!
//! Routing code never awaits a slow socket: it pushes already-encoded bytes here and moves on.
//! The connection's writer task takes everything queued in one go and writes it as one batch
//! (one syscall for RawSocket, one flush for WebSocket). The queue is bounded in messages and
//! bytes: above the soft byte limit for longer than `slow_consumer_timeout`, or above the hard
//! limit at any time, the session is cut off as a slow consumer, so router memory never grows
//! with a subscriber that does not read.
//!
//! A [`Hold`] stops the writer at a point in the queue: what was queued before it is
//! written, what is queued after it (a SUBSCRIBED waiting for the mesh's peers to confirm the
//! subscription, and every EVENT behind it) waits until the hold is released. Order is kept,
//! the bounds still apply, and closing the queue releases every hold.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;

/// Limits of one session's outbound queue.
#[derive(Clone, Debug)]
pub struct QueueLimits {
    /// Above this many queued bytes, the slow-consumer clock starts.
    pub soft_bytes: usize,
    /// Above this many queued bytes, the session is cut off at once.
    pub hard_bytes: usize,
    /// Above this many queued messages, the session is cut off at once.
    pub max_messages: usize,
    /// How long a session may stay above `soft_bytes`.
    pub slow_consumer_timeout: Duration,
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits {
            soft_bytes: 4 << 20,
            hard_bytes: 32 << 20,
            max_messages: 100_000,
            slow_consumer_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a queue stopped accepting messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closed {
    /// The session ended normally (goodbye, abort, transport closed, shutdown).
    Normal,
    /// The session did not read fast enough and was cut off.
    SlowConsumer,
}

struct State<T> {
    items: VecDeque<T>,
    bytes: usize,
    over_soft_since: Option<Instant>,
    /// Set once closed; `flush_first` says whether queued items are still written.
    closed: Option<(Closed, bool)>,
    /// Items and bytes ever pushed (positions of holds are counted in these).
    pushed: u64,
    pushed_bytes: u64,
    /// Active holds, oldest first: the writer takes nothing queued after the first one.
    holds: VecDeque<HoldPoint>,
    next_hold: u64,
}

/// Where a hold stops the writer: after `items` items and `bytes` bytes ever pushed.
struct HoldPoint {
    token: u64,
    items: u64,
    bytes: u64,
    released: bool,
}

impl<T> State<T> {
    /// How many queued items the writer may take now (those before the first hold).
    fn available(&self) -> usize {
        match self.holds.front() {
            None => self.items.len(),
            Some(h) => {
                let behind = (self.pushed - h.items) as usize;
                self.items.len().saturating_sub(behind)
            }
        }
    }

    fn clear(&mut self) {
        self.items.clear();
        self.bytes = 0;
        self.holds.clear();
    }
}

/// A bounded multi-producer, single-consumer queue of outgoing items.
pub struct Queue<T> {
    state: Mutex<State<T>>,
    /// Wakes the single consumer (the writer) when items arrive or the queue closes.
    notify: Notify,
    /// Wakes everyone waiting in [`Queue::closed`] (the reader side), once.
    closed_notify: Notify,
    limits: QueueLimits,
}

/// What the writer gets from [`Queue::take`].
pub enum Taken {
    /// Items were moved into the caller's buffer.
    Items,
    /// The queue is closed and drained; the writer should end the transport.
    Closed(Closed),
}

impl<T> Queue<T> {
    pub fn new(limits: QueueLimits) -> Self {
        Queue {
            state: Mutex::new(State {
                items: VecDeque::new(),
                bytes: 0,
                over_soft_since: None,
                closed: None,
                pushed: 0,
                pushed_bytes: 0,
                holds: VecDeque::new(),
                next_hold: 0,
            }),
            notify: Notify::new(),
            closed_notify: Notify::new(),
            limits,
        }
    }

    /// Queues an item of `size` bytes. Returns the reason if the queue is closed or this push
    /// made the session a slow consumer (the queue is then closed and emptied).
    pub fn push(&self, item: T, size: usize) -> Result<(), Closed> {
        let mut st = self.state.lock();
        if let Some((reason, _)) = st.closed {
            return Err(reason);
        }
        let was_empty = st.items.is_empty();
        st.items.push_back(item);
        st.bytes += size;
        st.pushed += 1;
        st.pushed_bytes += size as u64;
        let over_hard =
            st.bytes > self.limits.hard_bytes || st.items.len() > self.limits.max_messages;
        let over_soft_too_long = if st.bytes > self.limits.soft_bytes {
            let since = *st.over_soft_since.get_or_insert_with(Instant::now);
            since.elapsed() > self.limits.slow_consumer_timeout
        } else {
            false
        };
        if over_hard || over_soft_too_long {
            st.clear();
            st.closed = Some((Closed::SlowConsumer, false));
            drop(st);
            self.wake_all();
            return Err(Closed::SlowConsumer);
        }
        drop(st);
        // Only the empty → non-empty transition needs a wakeup: until the writer takes the
        // batch, it has a wakeup pending already (notifying on every push cost 13% of the
        // router's CPU in a 1→100 fan-out profile).
        if was_empty {
            self.notify.notify_one();
        }
        Ok(())
    }

    /// Closes the queue. With `flush_first`, items already queued (say a final GOODBYE or
    /// ABORT) are still handed to the writer; otherwise they are dropped.
    pub fn close(&self, reason: Closed, flush_first: bool) {
        let mut st = self.state.lock();
        if st.closed.is_none() {
            st.closed = Some((reason, flush_first));
            st.holds.clear();
            if !flush_first {
                st.clear();
            }
        }
        drop(st);
        self.wake_all();
    }

    /// Queues a last item and closes the queue behind it.
    pub fn push_and_close(&self, item: T, size: usize) {
        let mut st = self.state.lock();
        if st.closed.is_none() {
            st.items.push_back(item);
            st.bytes += size;
            st.pushed += 1;
            st.pushed_bytes += size as u64;
            st.holds.clear();
            st.closed = Some((Closed::Normal, true));
        }
        drop(st);
        self.wake_all();
    }

    fn wake_all(&self) {
        self.notify.notify_one();
        self.closed_notify.notify_waiters();
    }

    pub fn is_closed(&self) -> bool {
        self.state.lock().closed.is_some()
    }

    /// Waits for items and takes all of them: `out` (which the caller has emptied) is swapped
    /// with the queue's buffer, so both keep their capacity and nothing is copied.
    pub async fn take(&self, out: &mut VecDeque<T>) -> Taken {
        debug_assert!(out.is_empty());
        loop {
            {
                let mut st = self.state.lock();
                let n = st.available();
                if n > 0 && n == st.items.len() {
                    std::mem::swap(&mut st.items, out);
                    st.bytes = 0;
                    st.over_soft_since = None;
                    return Taken::Items;
                }
                if n > 0 {
                    // Up to the first hold: what is left was pushed after it.
                    out.extend(st.items.drain(..n));
                    let at = st.holds.front().map_or(st.pushed_bytes, |h| h.bytes);
                    st.bytes = (st.pushed_bytes - at) as usize;
                    return Taken::Items;
                }
                if st.items.is_empty() {
                    if let Some((reason, _)) = st.closed {
                        return Taken::Closed(reason);
                    }
                }
            }
            self.notify.notified().await;
        }
    }

    /// Moves everything queued into `out` without waiting (benchmarks, in-process drains),
    /// holds or not.
    pub fn drain_now(&self, out: &mut VecDeque<T>) {
        let mut st = self.state.lock();
        out.extend(st.items.drain(..));
        st.bytes = 0;
        st.over_soft_since = None;
    }

    /// Holds back everything queued from now on (see [`Hold`]) until the hold is dropped.
    /// On a closed queue the hold holds nothing.
    pub fn hold(self: &Arc<Self>) -> Hold
    where
        T: Send + 'static,
    {
        let mut st = self.state.lock();
        let token = st.next_hold;
        st.next_hold += 1;
        if st.closed.is_none() {
            let (items, bytes) = (st.pushed, st.pushed_bytes);
            st.holds.push_back(HoldPoint {
                token,
                items,
                bytes,
                released: false,
            });
        }
        drop(st);
        let queue = self.clone();
        Hold {
            release: Some(Box::new(move || queue.release(token))),
        }
    }

    fn release(&self, token: u64) {
        let mut st = self.state.lock();
        let Some(h) = st.holds.iter_mut().find(|h| h.token == token) else {
            return;
        };
        h.released = true;
        let mut front_moved = false;
        while st.holds.front().is_some_and(|h| h.released) {
            st.holds.pop_front();
            front_moved = true;
        }
        drop(st);
        if front_moved {
            self.notify.notify_one();
        }
    }

    /// Resolves once the queue is closed (for the reader side to stop reading).
    pub async fn closed(&self) -> Closed {
        loop {
            let notified = self.closed_notify.notified();
            tokio::pin!(notified);
            // Register before checking, so a close between the check and the await is seen.
            notified.as_mut().enable();
            if let Some((reason, _)) = self.state.lock().closed {
                return reason;
            }
            notified.await;
        }
    }

    /// Bytes currently queued, for metrics and tests.
    pub fn queued_bytes(&self) -> usize {
        self.state.lock().bytes
    }
}

/// A point in a session's queue the writer does not pass while this value lives: what is
/// queued after it waits, in order, until it is dropped. Made by [`Queue::hold`].
pub struct Hold {
    release: Option<Box<dyn FnOnce() + Send>>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release();
        }
    }
}

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hold")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> QueueLimits {
        QueueLimits {
            soft_bytes: 10,
            hard_bytes: 100,
            max_messages: 5,
            slow_consumer_timeout: Duration::from_millis(0),
        }
    }

    #[test]
    fn hard_limit_cuts_off_and_frees_memory() {
        let q = Queue::new(limits());
        for _ in 0..5 {
            q.push(1u8, 1).unwrap();
        }
        assert_eq!(q.push(1u8, 1), Err(Closed::SlowConsumer));
        assert_eq!(q.queued_bytes(), 0);
        assert_eq!(q.push(1u8, 1), Err(Closed::SlowConsumer));
    }

    #[test]
    fn soft_limit_needs_time_over_it() {
        let q = Queue::new(QueueLimits {
            slow_consumer_timeout: Duration::from_secs(60),
            ..limits()
        });
        q.push(1u8, 11).unwrap();
        q.push(1u8, 11).unwrap();
        let q = Queue::new(QueueLimits {
            slow_consumer_timeout: Duration::from_millis(1),
            ..limits()
        });
        q.push(1u8, 11).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(q.push(1u8, 1), Err(Closed::SlowConsumer));
    }

    #[tokio::test]
    async fn take_drains_then_reports_close() {
        let q = Queue::new(QueueLimits::default());
        q.push(7u8, 1).unwrap();
        q.push_and_close(8u8, 1);
        let mut out = VecDeque::new();
        assert!(matches!(q.take(&mut out).await, Taken::Items));
        assert_eq!(out, vec![7, 8]);
        out.clear();
        assert!(matches!(
            q.take(&mut out).await,
            Taken::Closed(Closed::Normal)
        ));
    }

    #[tokio::test]
    async fn a_hold_stops_the_writer_at_its_point_and_keeps_order() {
        let q = Arc::new(Queue::new(QueueLimits::default()));
        q.push(1u8, 10).unwrap();
        let first = q.hold();
        q.push(2u8, 20).unwrap();
        let second = q.hold();
        q.push(3u8, 30).unwrap();
        let mut out = VecDeque::new();
        assert!(matches!(q.take(&mut out).await, Taken::Items));
        assert_eq!(out, vec![1]);
        assert_eq!(q.queued_bytes(), 50);
        out.clear();
        // Releasing the later hold first changes nothing: the first still stops the writer.
        drop(second);
        let waiting = tokio::time::timeout(Duration::from_millis(50), q.take(&mut out)).await;
        assert!(waiting.is_err(), "took {out:?} past a hold");
        drop(first);
        assert!(matches!(q.take(&mut out).await, Taken::Items));
        assert_eq!(out, vec![2, 3]);
        assert_eq!(q.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn closing_releases_every_hold() {
        let q = Arc::new(Queue::new(QueueLimits::default()));
        let _hold = q.hold();
        q.push(1u8, 1).unwrap();
        q.push_and_close(2u8, 1);
        let mut out = VecDeque::new();
        assert!(matches!(q.take(&mut out).await, Taken::Items));
        assert_eq!(out, vec![1, 2]);
        out.clear();
        assert!(matches!(
            q.take(&mut out).await,
            Taken::Closed(Closed::Normal)
        ));
    }
}
