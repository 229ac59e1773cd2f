//! Encryption at rest: AES-256-GCM with a fresh random 96-bit nonce per object. An
//! object is `0x01 ‖ nonce ‖ ciphertext+tag`; the payload's SHA-256 (its object key) is
//! the associated data, so a ciphertext moved to another key fails to open.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};

const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;

pub struct Sealer(Aes256Gcm);

impl Sealer {
    /// A sealer from 32 key bytes written as 64 hex digits (the secret's format).
    pub fn from_hex(text: &str) -> Result<Self, String> {
        let bytes = hex::decode(text.trim())
            .map_err(|_| "the archive key must be 64 hex digits (32 bytes)".to_string())?;
        Aes256Gcm::new_from_slice(&bytes)
            .map(Sealer)
            .map_err(|_| "the archive key must be 64 hex digits (32 bytes)".to_string())
    }

    /// A new random key, as 64 hex digits.
    pub fn generate_hex() -> Result<String, String> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| format!("no randomness for a key: {e}"))?;
        Ok(hex::encode(key))
    }

    pub fn seal(&self, sha256: &str, plaintext: &[u8]) -> Result<Vec<u8>, String> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| format!("no randomness for a nonce: {e}"))?;
        let sealed = self
            .0
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: sha256.as_bytes(),
                },
            )
            .map_err(|_| "encryption failed".to_string())?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    pub fn open(&self, sha256: &str, object: &[u8]) -> Result<Vec<u8>, String> {
        let (Some(&VERSION), Some(rest)) = (object.first(), object.get(1..)) else {
            return Err("not an archive object of a known version".into());
        };
        if rest.len() < NONCE_LEN {
            return Err("archive object too short".into());
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        self.0
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: sha256.as_bytes(),
                },
            )
            .map_err(|_| {
                "archive object does not decrypt with this key (altered, moved or another key)"
                    .into()
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_opens_and_refuses_tampering() {
        let sealer = Sealer::from_hex(&Sealer::generate_hex().unwrap()).unwrap();
        let a = sealer.seal("k", b"hello").unwrap();
        let b = sealer.seal("k", b"hello").unwrap();
        assert_ne!(a, b, "every seal takes a fresh nonce");
        assert!(!a.windows(5).any(|w| w == b"hello"));
        assert_eq!(sealer.open("k", &a).unwrap(), b"hello");
        assert!(sealer.open("other", &a).is_err(), "bound to its key");
        let mut bad = a.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(sealer.open("k", &bad).is_err());
        let other = Sealer::from_hex(&Sealer::generate_hex().unwrap()).unwrap();
        assert!(other.open("k", &a).is_err());
        assert!(Sealer::from_hex("abcd").is_err());
    }
}
