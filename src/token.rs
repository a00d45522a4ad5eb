//! Directory keys: generation, hashing and constant-time comparison.
//!
//! A key is `scimd_` followed by 64 hex digits (256 random bits). The prefix makes a leaked key
//! recognisable to secret scanners. Only the SHA-256 of the key is stored; a slow password hash
//! would add nothing for a 256-bit random secret. The first hex digits (`lookup`) are stored in
//! the clear to find the row, and the hashes are then compared in constant time.

use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const PREFIX: &str = "scimd_";
const SECRET_BYTES: usize = 32;
/// Bytes of the secret shown in the clear (as hex) in key listings and used to find the row.
const LOOKUP_BYTES: usize = 6;

/// A freshly issued key: the secret is shown once and then dropped.
pub struct IssuedToken {
    pub secret: String,
    pub lookup: String,
    pub hash: String,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken").field("lookup", &self.lookup).finish_non_exhaustive()
    }
}

pub fn generate() -> IssuedToken {
    let mut bytes = [0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    let secret = format!("{PREFIX}{}", hex::encode(bytes));
    let lookup =
        format!("{PREFIX}{}", hex::encode(bytes.iter().take(LOOKUP_BYTES).copied().collect::<Vec<u8>>()));
    let hash = hash(&secret);
    IssuedToken { secret, lookup, hash }
}

/// The lookup part of a presented token, or None if it cannot be a scimd key.
pub fn lookup_of(presented: &str) -> Option<&str> {
    let hex_part = presented.strip_prefix(PREFIX)?;
    let well_formed = hex_part.len() == 2 * SECRET_BYTES && hex_part.bytes().all(|b| b.is_ascii_hexdigit());
    if well_formed {
        presented.get(..PREFIX.len() + 2 * LOOKUP_BYTES)
    } else {
        None
    }
}

pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Whether `presented` hashes to `stored_hash`, in time independent of where they differ.
pub fn verify(presented: &str, stored_hash: &str) -> bool {
    hash(presented).as_bytes().ct_eq(stored_hash.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_prefixed_random_and_verifiable() {
        let a = generate();
        let b = generate();
        assert!(a.secret.starts_with("scimd_"));
        assert_eq!(a.secret.len(), 70);
        assert_ne!(a.secret, b.secret);
        assert_eq!(lookup_of(&a.secret), Some(a.lookup.as_str()));
        assert!(verify(&a.secret, &a.hash));
        assert!(!verify(&b.secret, &a.hash));
        assert!(!a.hash.contains(&a.secret[6..]));
    }

    #[test]
    fn malformed_tokens_have_no_lookup() {
        assert_eq!(lookup_of("non-token"), None);
        assert_eq!(lookup_of("scimd_"), None);
        assert_eq!(lookup_of(&format!("scimd_{}", "g".repeat(64))), None);
        assert_eq!(lookup_of(&format!("scimd_{}é", "a".repeat(63))), None);
    }
}
