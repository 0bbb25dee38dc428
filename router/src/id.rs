//! Random global IDs (sessions, publications, subscriptions, registrations) in `[1, 2^53]`.

use rand::Rng;

use crate::wire::{Id, MAX_ID};

/// A uniformly random ID, as the spec asks for session and publication IDs. Subscription and
/// registration IDs use it too, so IDs stay unique when nodes of a mesh exchange them.
pub fn random_id() -> Id {
    rand::rng().random_range(1..=MAX_ID)
}
