//! Bearer tokens: generation, hashing and constant-time comparison.
//!
//! A directory key is `scimd_` followed by 64 hex digits (256 random bits); an admin token is
//! `scimd_admin_` followed by the same. The prefix makes a leaked token recognisable to secret
//! scanners, and tells a token of the wrong kind apart without touching the database. Only the SHA-256 of the key is stored; a slow password hash
//! would add nothing for a 256-bit random secret. The first hex digits (`lookup`) are stored in
//! the clear to find the row, and the hashes are then compared in constant time.

use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const PREFIX: &str = "scimd_";
pub const ADMIN_PREFIX: &str = "scimd_admin_";
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

/// The two kinds of bearer token scimd issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Selects one directory; for `/scim/v2`.
    Directory,
    /// For `/admin/v1`; acts on every directory.
    Admin,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Directory => PREFIX,
            Kind::Admin => ADMIN_PREFIX,
        }
    }

    /// The kind a presented token claims by its prefix, whether or not it is valid.
    pub fn claimed_by(presented: &str) -> Option<Kind> {
        if presented.starts_with(ADMIN_PREFIX) {
            Some(Kind::Admin)
        } else if presented.starts_with(PREFIX) {
            Some(Kind::Directory)
        } else {
            None
        }
    }
}

/// A new directory key.
pub fn generate() -> IssuedToken {
    generate_kind(Kind::Directory)
}

pub fn generate_kind(kind: Kind) -> IssuedToken {
    let prefix = kind.prefix();
    let mut bytes = [0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    let secret = format!("{prefix}{}", hex::encode(bytes));
    let lookup =
        format!("{prefix}{}", hex::encode(bytes.iter().take(LOOKUP_BYTES).copied().collect::<Vec<u8>>()));
    let hash = hash(&secret);
    IssuedToken { secret, lookup, hash }
}

/// The lookup part of a presented directory key, or None if it cannot be one.
pub fn lookup_of(presented: &str) -> Option<&str> {
    lookup_of_kind(Kind::Directory, presented)
}

/// The lookup part of a presented token of `kind`, or None if it cannot be one.
pub fn lookup_of_kind(kind: Kind, presented: &str) -> Option<&str> {
    let prefix = kind.prefix();
    let hex_part = presented.strip_prefix(prefix)?;
    let well_formed = hex_part.len() == 2 * SECRET_BYTES && hex_part.bytes().all(|b| b.is_ascii_hexdigit());
    if well_formed {
        presented.get(..prefix.len() + 2 * LOOKUP_BYTES)
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
    fn admin_tokens_are_told_apart_from_directory_keys_by_prefix() {
        let admin = generate_kind(Kind::Admin);
        let key = generate();
        assert!(admin.secret.starts_with("scimd_admin_"));
        assert_eq!(Kind::claimed_by(&admin.secret), Some(Kind::Admin));
        assert_eq!(Kind::claimed_by(&key.secret), Some(Kind::Directory));
        assert_eq!(Kind::claimed_by("Bearer x"), None);
        assert_eq!(lookup_of(&admin.secret), None, "an admin token is no directory key");
        assert_eq!(lookup_of_kind(Kind::Admin, &admin.secret), Some(admin.lookup.as_str()));
        assert_eq!(lookup_of_kind(Kind::Admin, &key.secret), None);
    }

    #[test]
    fn malformed_tokens_have_no_lookup() {
        assert_eq!(lookup_of("non-token"), None);
        assert_eq!(lookup_of("scimd_"), None);
        assert_eq!(lookup_of(&format!("scimd_{}", "g".repeat(64))), None);
        assert_eq!(lookup_of(&format!("scimd_{}é", "a".repeat(63))), None);
    }
}
