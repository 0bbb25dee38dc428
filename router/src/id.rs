//! Global IDs in `[1, 2^53]`: random ones (sessions, publications), and the subscription and
//! registration IDs, derived from what they are so that every node of a mesh gives the same
//! (realm, match policy, URI) the same ID, as one router would.

use rand::Rng;

use crate::wire::{Id, MAX_ID};

/// A uniformly random ID, as the spec asks for session and publication IDs.
pub fn random_id() -> Id {
    rand::rng().random_range(1..=MAX_ID)
}

/// The ID of the subscription or registration (`kind`) for (`policy`, `uri`) in `realm`: a
/// hash of the four, so every node derives the same one, and a restarted node too. `taken`
/// says whether an ID is already used here by something else (a collision in 2^53, in
/// practice never): the next candidate in a fixed sequence is taken then.
pub fn scoped_id(
    realm: &str,
    kind: &str,
    policy: crate::uri::MatchPolicy,
    uri: &str,
    taken: impl Fn(Id) -> bool,
) -> Id {
    use sha2::{Digest, Sha256};
    for attempt in 0u32.. {
        let mut h = Sha256::new();
        for part in [realm, kind, policy.name(), uri] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        h.update(attempt.to_be_bytes());
        let d = h.finalize();
        let n = u64::from_be_bytes(d[..8].try_into().expect("8 bytes"));
        let id = n % MAX_ID + 1;
        if !taken(id) {
            return id;
        }
    }
    unreachable!("2^32 colliding IDs")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uri::MatchPolicy;

    #[test]
    fn scoped_ids_depend_on_everything_they_name_and_nothing_else() {
        let id = |r, k, p, u| scoped_id(r, k, p, u, |_| false);
        let a = id("r", "sub", MatchPolicy::Exact, "a.b");
        assert_eq!(a, id("r", "sub", MatchPolicy::Exact, "a.b"));
        assert!((1..=MAX_ID).contains(&a));
        assert_ne!(a, id("r2", "sub", MatchPolicy::Exact, "a.b"));
        assert_ne!(a, id("r", "reg", MatchPolicy::Exact, "a.b"));
        assert_ne!(a, id("r", "sub", MatchPolicy::Prefix, "a.b"));
        assert_ne!(a, id("r", "sub", MatchPolicy::Exact, "a.c"));
        // A taken ID moves to the next candidate, the same one everywhere.
        let b = scoped_id("r", "sub", MatchPolicy::Exact, "a.b", |x| x == a);
        assert_ne!(a, b);
        assert_eq!(
            b,
            scoped_id("r", "sub", MatchPolicy::Exact, "a.b", |x| x == a)
        );
    }
}
