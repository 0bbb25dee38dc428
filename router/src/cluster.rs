//! What the protocol and the meta API ask of the other nodes of a mesh, through a trait the
//! mesh implements for each realm ([`Cluster`]; the realm hands it out, see
//! `Realm::cluster`), so the layers below the mesh never name it:
//! - read-your-writes interest: a SUBSCRIBED, REGISTERED, UNSUBSCRIBED or UNREGISTERED is
//!   held ([`ReplyHold`]) until every linked peer applied the change;
//! - kills that reach the sessions of every node (`wamp.session.kill*`).

use std::future::Future;
use std::pin::Pin;

use crate::kill::KillOrder;
use crate::outbound::Hold;
use crate::session::SessionHandle;
use crate::wire::Payload;
use crate::WampError;

/// The meta API's answer to a kill carried out on every node.
pub type KillAnswer = Pin<Box<dyn Future<Output = Result<Payload, WampError>> + Send>>;

/// A realm's view of the other nodes of its mesh (implemented by the mesh).
pub trait Cluster: Send + Sync {
    /// Whether replies to interest changes wait for peers now (a linked peer confirms
    /// changes); without one, nothing is held.
    fn holds_replies(&self) -> bool;

    /// An interest change is made and its reply queued behind `hold`: drop the hold once
    /// every linked peer has applied the change (bounded by the mesh's
    /// `interest_ack_timeout`), at once if none has anything left to apply. Never waits in
    /// the caller.
    fn release_when_applied(&self, hold: Hold);

    /// Carries out `order` on every node it concerns, this one included, and resolves to the
    /// meta API's answer; `None` when this node alone decides (no peer takes kill orders, or
    /// the victim of a `kill` is a session of this node).
    fn kill(&self, order: KillOrder) -> Option<KillAnswer>;
}

/// A reply held until the realm's peers applied the interest change that caused it.
///
/// [`ReplyHold::begin`] before the change is made (and its reply queued), then
/// [`ReplyHold::finish`] after it. Dropped without `finish`, it releases at once.
pub struct ReplyHold<'a> {
    held: Option<(&'a dyn Cluster, Hold)>,
}

impl<'a> ReplyHold<'a> {
    /// Holds the session's outgoing messages from here on, if the realm's cluster wants
    /// replies held now; otherwise holds nothing (a single node pays one check).
    pub fn begin(cluster: Option<&'a dyn Cluster>, session: &SessionHandle) -> ReplyHold<'a> {
        let held = cluster
            .filter(|c| c.holds_replies())
            .and_then(|c| Some((c, session.link.hold()?)));
        ReplyHold { held }
    }

    /// The change is made and its reply queued: the session's messages go on once every
    /// peer applied it, or at once if `applied` is false (the request failed).
    pub fn finish(mut self, applied: bool) {
        if let Some((cluster, hold)) = self.held.take() {
            if applied {
                cluster.release_when_applied(hold);
            }
        }
    }
}
