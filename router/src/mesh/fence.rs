//! Read-your-writes interest: SUBSCRIBED, REGISTERED, UNSUBSCRIBED and UNREGISTERED reach
//! the client only once every linked peer has applied the change, so that once a client
//! holds SUBSCRIBED a publication from any node reaches it, and once it holds REGISTERED a
//! call from any node finds it.
//!
//! Per link, the frames that change what a peer knows of this node (`sub±`, `reg±`,
//! `subscriber±`, `session±`, and the resync's `synced`) are numbered, under the link's fence
//! lock, in the order they are queued. A reply that must wait asks each link for the number
//! of the last such frame: if the peer confirmed that one (or a later one) already, there is
//! nothing to wait for; otherwise a `fence {n}` frame follows on the link (unless one for `n`
//! or later is on its way already), and the peer, which applies a link's frames in order,
//! answers `fenced {n}` as soon as it reads it.
//!
//! Meanwhile the session's outgoing queue is held at the reply ([`Hold`], placed by
//! `crate::cluster::ReplyHold`, which calls [`release_when_applied`] through the realm's
//! `Cluster`, implemented by `super::RealmMesh`): the reply and everything after it (EVENTs
//! of the new subscription included) wait, in order, while the session's reader goes on and
//! other sessions are unaffected. The hold ends when every link
//! confirmed, ended, or `interest_ack_timeout` passed (a silent peer is then left to the
//! heartbeat rules, which drop its link). A node with no linked peer that announced
//! [`super::frame::FEATURE_FENCE`] holds nothing.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;

use super::frame::Frame;
use super::link::LinkHandle;
use super::Inner;
use crate::outbound::Hold;

/// One link's numbering of interest frames and what its peer confirmed.
pub(crate) struct Fence {
    st: Mutex<FenceState>,
    /// The highest number the peer confirmed; `u64::MAX` once the link ended.
    acked: watch::Sender<u64>,
}

#[derive(Default)]
struct FenceState {
    /// Number of the last interest frame queued.
    sent: u64,
    /// The highest number a `fence` was queued for.
    requested: u64,
    /// `synced` is queued: the resync snapshot is complete on the link.
    resynced: bool,
    /// A fence was asked for before that: it follows `synced`.
    after_resync: bool,
    /// A wait on this link timed out once (logged at WARN once per link).
    warned: bool,
}

/// What one link's peer must confirm.
pub(crate) struct Wait {
    link: Arc<LinkHandle>,
    rx: watch::Receiver<u64>,
    seq: u64,
}

impl Fence {
    pub(crate) fn new() -> Fence {
        Fence {
            st: Mutex::new(FenceState::default()),
            acked: watch::Sender::new(0),
        }
    }

    /// Queues an interest frame (`push`) under its number.
    pub(crate) fn numbered(&self, push: impl FnOnce()) {
        let mut st = self.st.lock();
        st.sent += 1;
        push();
    }

    /// Queues the resync's `synced` (`push`), numbered; a fence asked for while the snapshot
    /// was being sent is queued right after it (`fence` queues one).
    pub(crate) fn resynced(&self, push: impl FnOnce(), fence: impl FnOnce(Frame)) {
        let mut st = self.st.lock();
        st.sent += 1;
        push();
        st.resynced = true;
        if st.after_resync {
            st.requested = st.sent;
            fence(Frame::Fence { seq: st.sent });
        }
    }

    /// What to wait for so that the peer has applied every interest frame queued so far;
    /// queues a `fence` (through `fence`) when none covering them is on its way.
    fn request(&self, link: &Arc<LinkHandle>, fence: impl FnOnce(Frame)) -> Option<Wait> {
        let mut st = self.st.lock();
        let acked = *self.acked.borrow();
        let seq = if !st.resynced {
            // The snapshot is still being queued: wait for the fence that will follow it.
            st.after_resync = true;
            st.sent + 1
        } else if acked >= st.sent {
            return None;
        } else {
            if st.requested < st.sent {
                st.requested = st.sent;
                fence(Frame::Fence { seq: st.sent });
            }
            st.sent
        };
        Some(Wait {
            link: link.clone(),
            rx: self.acked.subscribe(),
            seq,
        })
    }

    /// The peer answered `fenced {seq}`.
    pub(crate) fn confirmed(&self, seq: u64) {
        self.acked.send_if_modified(|v| {
            let newer = seq > *v;
            if newer {
                *v = seq;
            }
            newer
        });
    }

    /// The link ended: nobody waits for it any more.
    pub(crate) fn close(&self) {
        self.acked.send_replace(u64::MAX);
    }

    fn first_timeout(&self) -> bool {
        !std::mem::replace(&mut self.st.lock().warned, true)
    }
}

/// Whether some linked peer confirms interest changes (replies are held for it).
pub(crate) fn any_confirming(inner: &Inner) -> bool {
    inner.peers.lock().links().any(|l| l.fence)
}

/// Drops `hold` once every linked peer that confirms changes has applied every interest
/// frame queued so far (a fence is queued on the links that need one), or its link ended,
/// or `interest_ack_timeout` passed; at once if none has anything left to apply.
pub(crate) fn release_when_applied(inner: &Inner, hold: Hold) {
    let waits: Vec<Wait> = {
        let peers = inner.peers.lock();
        peers
            .links()
            .filter(|l| l.fence)
            .filter_map(|l| l.fence_state.request(l, |f| l.send_bytes(f.encode())))
            .collect()
    };
    if waits.is_empty() {
        return;
    }
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let timeout = inner.config.interest_ack_timeout();
    rt.spawn(async move {
        confirmed(waits, timeout).await;
        drop(hold);
    });
}

/// Waits until every link confirmed (or ended), at most `timeout`; names the silent peers.
async fn confirmed(mut waits: Vec<Wait>, timeout: Duration) {
    let all = async {
        for w in waits.iter_mut() {
            let seq = w.seq;
            // An error means the link is gone: nothing to wait for.
            let _ = w.rx.wait_for(|a| *a >= seq).await;
        }
    };
    if tokio::time::timeout(timeout, all).await.is_ok() {
        return;
    }
    for w in waits.iter().filter(|w| *w.rx.borrow() < w.seq) {
        let node = &w.link.node;
        if w.link.fence_state.first_timeout() {
            tracing::warn!(peer = %node, "mesh peer '{node}' did not confirm an interest change within {timeout:?}; replying anyway (the heartbeat rules drop a silent link)");
        } else {
            tracing::debug!(peer = %node, "mesh peer did not confirm an interest change in time");
        }
    }
}
