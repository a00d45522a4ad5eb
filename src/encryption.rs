//! Secrets at rest: importer credentials are sealed with AES-256-GCM under the server's secret
//! key (`SCIMD_SECRET_KEY` or `secret_key_file`), which is never stored in the database.
//!
//! Each value gets a fresh random 96-bit nonce. The associated data binds a ciphertext to the
//! row it belongs to, so a sealed value copied into another row does not open there.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::Rng;

use crate::error::{Error, Result};

const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 12;

/// The server's secret key. Its Debug output never shows it.
#[derive(Clone)]
pub struct SecretKey(Aes256Gcm);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// A sealed value as stored: hex nonce and hex ciphertext (with its tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub nonce: String,
    pub ciphertext: String,
}

impl SecretKey {
    /// Parses 64 hex digits (32 bytes), surrounding whitespace ignored.
    pub fn from_hex(text: &str) -> Result<SecretKey> {
        let bytes = hex::decode(text.trim()).ok().filter(|b| b.len() == KEY_BYTES).ok_or_else(|| {
            Error::Config(
                "the secret key must be 64 hex digits (32 bytes); make one with 'scimd secret-key generate'"
                    .into(),
            )
        })?;
        let cipher = Aes256Gcm::new_from_slice(&bytes)
            .map_err(|_| Error::Config("the secret key must be 32 bytes".into()))?;
        Ok(SecretKey(cipher))
    }

    /// A new random key, as 64 hex digits.
    pub fn generate_hex() -> String {
        let mut bytes = [0u8; KEY_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        hex::encode(bytes)
    }

    pub fn seal(&self, plaintext: &[u8], context: &str) -> Result<Sealed> {
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .0
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad: context.as_bytes() })
            .map_err(|_| Error::Internal("sealing a secret failed".into()))?;
        Ok(Sealed { nonce: hex::encode(nonce), ciphertext: hex::encode(ciphertext) })
    }

    /// Opens a sealed value; fails when the key is not the one it was sealed with, or the value
    /// or its context were altered.
    pub fn open(&self, sealed: &Sealed, context: &str) -> Result<Vec<u8>> {
        let wrong = || {
            Error::Config(
                "a stored secret does not open with the configured secret key: it was sealed with another key, \
                 or altered"
                    .into(),
            )
        };
        let nonce = hex::decode(&sealed.nonce).ok().filter(|n| n.len() == NONCE_BYTES).ok_or_else(wrong)?;
        let ciphertext = hex::decode(&sealed.ciphertext).map_err(|_| wrong())?;
        self.0
            .decrypt(Nonce::from_slice(&nonce), Payload { msg: &ciphertext, aad: context.as_bytes() })
            .map_err(|_| wrong())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_context() {
        let key = SecretKey::from_hex(&SecretKey::generate_hex()).unwrap();
        let other = SecretKey::from_hex(&SecretKey::generate_hex()).unwrap();
        let sealed = key.seal(b"SSWS 00abc", "conn-1/api_token").unwrap();
        assert!(!sealed.ciphertext.contains(&hex::encode(b"SSWS 00abc")));
        assert_eq!(key.open(&sealed, "conn-1/api_token").unwrap(), b"SSWS 00abc");
        assert!(other.open(&sealed, "conn-1/api_token").is_err());
        assert!(key.open(&sealed, "conn-2/api_token").is_err(), "bound to its row");
        let mut altered = sealed.clone();
        altered.ciphertext.replace_range(0..2, if &sealed.ciphertext[0..2] == "00" { "01" } else { "00" });
        assert!(key.open(&altered, "conn-1/api_token").is_err());
        assert_ne!(key.seal(b"x", "c").unwrap().nonce, key.seal(b"x", "c").unwrap().nonce);
    }

    #[test]
    fn keys_must_be_64_hex_digits() {
        assert!(SecretKey::from_hex(&"ab".repeat(32)).is_ok());
        assert!(SecretKey::from_hex(&format!(" {}\n", "ab".repeat(32))).is_ok());
        for bad in ["", "abc", &"ab".repeat(31), &"zz".repeat(32)] {
            let detail = SecretKey::from_hex(bad).unwrap_err().to_string();
            assert!(detail.contains("64 hex digits"), "{detail}");
        }
        assert_eq!(format!("{:?}", SecretKey::from_hex(&"ab".repeat(32)).unwrap()), "SecretKey(..)");
    }
}
