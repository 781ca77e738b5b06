//! Login proofs: OWASP's "device cookies" (Slow Down Online Guessing Attacks with Device
//! Cookies). After a successful password login the server hands the client a proof bound to
//! the account; a later password login that presents it is trusted: it is exempt from the
//! per-account, per-address and server-wide failure budgets that untrusted attempts share
//! (so a flood of wrong guesses cannot lock the owner out), and has a small failure budget
//! of its own, after which the proof is void.
//!
//! A proof is `base64url(version ‖ user id ‖ issued at ‖ nonce ‖ HMAC-SHA256)`, the MAC
//! taken with the server's key over a domain label, the fields before it and the account's
//! normalised name. It carries no secret of the user's and grants nothing by itself: the
//! password is still checked. This module only makes and checks proofs (in constant time,
//! never touching the database); the failure counts live in [`super::Auth`] and the store.

use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::ids::UserId;
use crate::protocol::Secret;

/// How long a proof stays valid after it is issued, in seconds (a year). Every password
/// login with or without one issues a fresh proof, so only a device that has not logged in
/// by password for this long falls back to the untrusted budgets.
pub const PROOF_LIFETIME_SECS: i64 = 365 * 24 * 60 * 60;
/// Failed password checks a proof allows; the next attempt with it is untrusted.
pub const PROOF_FAILURE_BUDGET: u32 = 3;
/// A proof issued this far in the future (clock steps) is still accepted, in seconds.
const CLOCK_SKEW_SECS: i64 = 5 * 60;

const VERSION: u8 = 1;
const NONCE_LEN: usize = 16;
const MAC_LEN: usize = 32;
/// version, user id, issued at, nonce, MAC.
const PROOF_LEN: usize = 1 + 8 + 8 + NONCE_LEN + MAC_LEN;
/// Separates these MACs from any other use of the key.
const DOMAIN: &[u8] = b"chatd login proof\0";

/// The nonce that names one proof (its failures are counted under it).
pub type ProofNonce = [u8; NONCE_LEN];

/// The server's proof key. Its `Debug` is redacted.
#[derive(Clone)]
pub struct ProofKey {
    key: [u8; 32],
}

impl std::fmt::Debug for ProofKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProofKey(***)")
    }
}

/// A proof whose MAC and age checked out, for the account named at login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidProof {
    /// The account it was issued to; the login must resolve to the same id.
    pub user_id: UserId,
    pub nonce: ProofNonce,
    /// When it stops being valid, Unix seconds.
    pub expires_at: i64,
}

impl ProofKey {
    /// A key from 32 secret bytes (the store keeps them).
    pub fn new(key: [u8; 32]) -> ProofKey {
        ProofKey { key }
    }

    /// A fresh proof for the account `user_id` named `name` (normalised), issued at `now`
    /// (Unix seconds).
    pub fn issue(&self, user_id: UserId, name: &str, now: i64) -> Secret {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let mut out = Vec::with_capacity(PROOF_LEN);
        out.push(VERSION);
        out.extend_from_slice(&user_id.get().to_be_bytes());
        out.extend_from_slice(&now.to_be_bytes());
        out.extend_from_slice(&nonce);
        let mac = self.mac(&out, name).finalize().into_bytes();
        out.extend_from_slice(&mac);
        Secret::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out))
    }

    /// The proof, if `proof` is one this key issued for the account named `name` and it has
    /// not expired at `now`. Anything else (garbage, another account's, tampered, expired)
    /// is `None`: the login is then untrusted, exactly as without a proof.
    pub fn check(&self, proof: &str, name: &str, now: i64) -> Option<ValidProof> {
        // Bounded before decoding: the longest valid encoding is 87 characters.
        if proof.len() > 2 * PROOF_LEN {
            return None;
        }
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(proof)
            .ok()?;
        if raw.len() != PROOF_LEN || raw[0] != VERSION {
            return None;
        }
        let (fields, mac) = raw.split_at(PROOF_LEN - MAC_LEN);
        // `verify_slice` compares in constant time.
        self.mac(fields, name).verify_slice(mac).ok()?;
        let user_id = UserId(i64::from_be_bytes(fields[1..9].try_into().ok()?));
        let issued = i64::from_be_bytes(fields[9..17].try_into().ok()?);
        let nonce: ProofNonce = fields[17..17 + NONCE_LEN].try_into().ok()?;
        let expires_at = issued.saturating_add(PROOF_LIFETIME_SECS);
        if issued > now.saturating_add(CLOCK_SKEW_SECS) || now >= expires_at {
            return None;
        }
        Some(ValidProof {
            user_id,
            nonce,
            expires_at,
        })
    }

    fn mac(&self, fields: &[u8], name: &str) -> Hmac<Sha256> {
        // HMAC takes a key of any length, so this cannot fail.
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC accepts any key length");
        mac.update(DOMAIN);
        mac.update(fields);
        mac.update(name.as_bytes());
        mac
    }
}

/// Now, in Unix seconds.
pub(crate) fn unix_now() -> i64 {
    crate::store::now_micros() / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> ProofKey {
        ProofKey::new([b; 32])
    }

    #[test]
    fn a_proof_checks_for_its_account_only() {
        let k = key(1);
        let p = k.issue(UserId(7), "alice", 1000);
        let v = k.check(p.expose(), "alice", 1000).unwrap();
        assert_eq!(v.user_id, UserId(7));
        assert_eq!(v.expires_at, 1000 + PROOF_LIFETIME_SECS);
        assert_eq!(k.check(p.expose(), "bob", 1000), None);
        assert_eq!(key(2).check(p.expose(), "alice", 1000), None);
        assert_ne!(
            k.issue(UserId(7), "alice", 1000),
            p,
            "every proof has its own nonce"
        );
    }

    #[test]
    fn tampered_expired_and_garbage_proofs_are_refused() {
        let k = key(1);
        let p = k.issue(UserId(7), "alice", 1000);
        let mut raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(p.expose())
            .unwrap();
        for i in 0..raw.len() {
            raw[i] ^= 1;
            let t = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw);
            assert_eq!(k.check(&t, "alice", 1000), None, "byte {i} flipped");
            raw[i] ^= 1;
        }
        assert_eq!(
            k.check(p.expose(), "alice", 1000 + PROOF_LIFETIME_SECS),
            None
        );
        assert_eq!(
            k.check(p.expose(), "alice", 0),
            None,
            "issued in the future"
        );
        for garbage in ["", "x", "!!!!", &"A".repeat(10_000)] {
            assert_eq!(k.check(garbage, "alice", 1000), None);
        }
    }
}
