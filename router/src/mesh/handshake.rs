//! Peer authentication: mutual challenge/response over the shared mesh secret.
//!
//! ```text
//! dialer   → acceptor  Hello     {node, incarnation, url, nonce_d}
//! acceptor → dialer    Challenge {node, incarnation, url, nonce_a}
//! dialer   → acceptor  Auth      {proof_d}
//! acceptor → dialer    Welcome   {proof_a}
//! proof_d = HMAC-SHA256(secret, "dialer"   | nonce_a | nonce_d | dialer | acceptor)
//! proof_a = HMAC-SHA256(secret, "acceptor" | nonce_d | nonce_a | acceptor | dialer)
//! ```
//! Each side proves knowledge of the secret over a nonce the other side just chose, so the
//! secret never crosses the wire and a recorded exchange cannot be replayed. The dialer
//! proves first: anyone can connect to the mesh port, and an acceptor that answered with a
//! proof first would hand every stranger material for an offline guess at the secret. The
//! role label keeps a proof from being reflected back to its sender. Fields are
//! length-prefixed so no two different inputs hash the same bytes.

use bytes::Bytes;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

pub const NONCE_LEN: usize = 32;

/// Longest node name a peer may announce in HELLO or CHALLENGE, in bytes.
pub const MAX_NODE_NAME_BYTES: usize = 128;
/// Longest URL a peer may announce, in bytes.
pub const MAX_PEER_URL_BYTES: usize = 2048;

/// Checks what a peer announces about itself before it has proved anything: a node name of
/// at most [`MAX_NODE_NAME_BYTES`], a URL of at most [`MAX_PEER_URL_BYTES`]. The error says
/// which limit was passed (it is sent to the peer and logged).
pub fn check_announced(node: &str, url: &str) -> Result<(), String> {
    if node.is_empty() || node.len() > MAX_NODE_NAME_BYTES {
        return Err(format!(
            "node name of {} bytes; 1 to {MAX_NODE_NAME_BYTES} are accepted",
            node.len()
        ));
    }
    if url.len() > MAX_PEER_URL_BYTES {
        return Err(format!(
            "node URL of {} bytes; at most {MAX_PEER_URL_BYTES} are accepted",
            url.len()
        ));
    }
    Ok(())
}

pub fn nonce() -> Bytes {
    let mut n = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut n);
    Bytes::copy_from_slice(&n)
}

fn mac(secret: &str, parts: &[&[u8]]) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    for p in parts {
        m.update(&(p.len() as u64).to_be_bytes());
        m.update(p);
    }
    m
}

/// The proof `role` ("acceptor" or "dialer") sends: over the other side's nonce first.
pub fn proof(secret: &str, role: &str, theirs: &[u8], mine: &[u8], me: &str, them: &str) -> Bytes {
    let m = mac(
        secret,
        &[
            role.as_bytes(),
            theirs,
            mine,
            me.as_bytes(),
            them.as_bytes(),
        ],
    );
    Bytes::copy_from_slice(&m.finalize().into_bytes())
}

/// Checks a proof in constant time.
pub fn verify(
    secret: &str,
    role: &str,
    theirs: &[u8],
    mine: &[u8],
    me: &str,
    them: &str,
    proof: &[u8],
) -> bool {
    mac(
        secret,
        &[
            role.as_bytes(),
            theirs,
            mine,
            me.as_bytes(),
            them.as_bytes(),
        ],
    )
    .verify_slice(proof)
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_need_the_same_secret_role_and_nonces() {
        let (na, nd) = (nonce(), nonce());
        let p = proof("s3cret", "acceptor", &nd, &na, "b", "a");
        assert!(verify("s3cret", "acceptor", &nd, &na, "b", "a", &p));
        assert!(!verify("other", "acceptor", &nd, &na, "b", "a", &p));
        assert!(!verify("s3cret", "dialer", &nd, &na, "b", "a", &p));
        assert!(!verify("s3cret", "acceptor", &na, &nd, "b", "a", &p));
    }
}
