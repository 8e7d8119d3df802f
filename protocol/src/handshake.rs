//! The cookie handshake: both sides prove they know the node's cookie
//! before anything else is said.
//!
//! The tracer sends a random challenge, the node answers with its own; the
//! tracer proves itself with an HMAC-SHA256 over both challenges keyed by
//! the cookie, and only then does the node prove itself the same way and say
//! who it is. A tracer with a wrong cookie learns nothing about the node.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes in a challenge and in a proof.
pub const CHALLENGE_LEN: usize = 32;

/// A random challenge.
pub type Challenge = [u8; CHALLENGE_LEN];

/// An HMAC-SHA256 proof.
pub type Proof = [u8; CHALLENGE_LEN];

/// Which side a proof comes from; the two sides' proofs differ, so one
/// cannot be replayed as the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The tracer node.
    Tracer,
    /// The traced node.
    Node,
}

/// A fresh random challenge.
pub fn challenge() -> Challenge {
    let mut c = [0u8; CHALLENGE_LEN];
    getrandom::fill(&mut c).expect("the OS random source failed");
    c
}

fn mac(cookie: &str, side: Side, tracer: &Challenge, node: &Challenge) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(cookie.as_bytes()).expect("HMAC takes any key length");
    mac.update(match side {
        Side::Tracer => b"nodetrace tracer",
        Side::Node => b"nodetrace node  ",
    });
    mac.update(tracer);
    mac.update(node);
    mac
}

/// The proof that `side` knows `cookie`, over both challenges.
pub fn prove(cookie: &str, side: Side, tracer: &Challenge, node: &Challenge) -> Proof {
    mac(cookie, side, tracer, node)
        .finalize()
        .into_bytes()
        .into()
}

/// Whether `proof` shows that `side` knows `cookie` (in constant time).
pub fn verify(
    cookie: &str,
    side: Side,
    tracer: &Challenge,
    node: &Challenge,
    proof: &Proof,
) -> bool {
    mac(cookie, side, tracer, node).verify_slice(proof).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_cookie_and_side_verify() {
        let (t, n) = (challenge(), challenge());
        assert_ne!(t, n);
        let proof = prove("secret", Side::Tracer, &t, &n);
        assert!(verify("secret", Side::Tracer, &t, &n, &proof));
        assert!(!verify("other", Side::Tracer, &t, &n, &proof));
        assert!(
            !verify("secret", Side::Node, &t, &n, &proof),
            "a tracer proof is not a node proof"
        );
        assert!(
            !verify("secret", Side::Tracer, &n, &t, &proof),
            "challenges are bound in order"
        );
    }
}
