//! Encryption at rest: AES-256-GCM with a fresh random 96-bit nonce per object. An
//! object is `0x02 ‖ key id ‖ nonce ‖ ciphertext+tag` (format 1, written before keys
//! could be rotated, is `0x01 ‖ nonce ‖ ciphertext+tag`); the payload's SHA-256 (its
//! object key) is the associated data, so a ciphertext moved to another key fails to
//! open. The key id (the first 8 bytes of a SHA-256 over a fixed label and the key)
//! names the key an object was sealed with, so that after a rotation the previous keys
//! can still open what they sealed while every new object is sealed with the current
//! one.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use sha2::{Digest, Sha256};

const V1: u8 = 1;
const V2: u8 = 2;
const NONCE_LEN: usize = 12;
const KEY_ID_LEN: usize = 8;
const KEY_FORMAT: &str = "the archive key must be 64 hex digits (32 bytes)";

type KeyId = [u8; KEY_ID_LEN];

struct Key {
    id: KeyId,
    cipher: Aes256Gcm,
}

impl Key {
    fn from_hex(text: &str) -> Result<Key, String> {
        let bytes = hex::decode(text.trim()).map_err(|_| KEY_FORMAT.to_string())?;
        let cipher = Aes256Gcm::new_from_slice(&bytes).map_err(|_| KEY_FORMAT.to_string())?;
        let digest = Sha256::new()
            .chain_update(b"agentic-mesh archive key id\n")
            .chain_update(&bytes)
            .finalize();
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        Ok(Key { id, cipher })
    }

    fn open(&self, sha256: &str, nonce: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        let payload = Payload {
            msg: sealed,
            aad: sha256.as_bytes(),
        };
        self.cipher.decrypt(Nonce::from_slice(nonce), payload).ok()
    }
}

/// Seals with the current key; opens with it or any previous one.
pub struct Sealer {
    current: Key,
    previous: Vec<Key>,
}

impl Sealer {
    /// A sealer from 32 key bytes written as 64 hex digits (the secret's format).
    pub fn from_hex(text: &str) -> Result<Self, String> {
        Ok(Sealer {
            current: Key::from_hex(text)?,
            previous: Vec::new(),
        })
    }

    /// Also opens objects sealed with these keys (each 64 hex digits): keys rotated
    /// out, kept until the objects they sealed have expired.
    pub fn with_previous(mut self, keys: &[String]) -> Result<Self, String> {
        for (i, key) in keys.iter().enumerate() {
            let key = Key::from_hex(key).map_err(|e| format!("previous key {}: {e}", i + 1))?;
            self.previous.push(key);
        }
        Ok(self)
    }

    /// The current key's id, in hex (what `/readyz` shows; it reveals nothing of the key).
    pub fn key_id(&self) -> String {
        hex::encode(self.current.id)
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
        let payload = Payload {
            msg: plaintext,
            aad: sha256.as_bytes(),
        };
        let sealed = self
            .current
            .cipher
            .encrypt(Nonce::from_slice(&nonce), payload)
            .map_err(|_| "encryption failed".to_string())?;
        let mut out = Vec::with_capacity(1 + KEY_ID_LEN + NONCE_LEN + sealed.len());
        out.push(V2);
        out.extend_from_slice(&self.current.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    pub fn open(&self, sha256: &str, object: &[u8]) -> Result<Vec<u8>, String> {
        let keys = || std::iter::once(&self.current).chain(&self.previous);
        match object.split_first() {
            Some((&V2, rest)) if rest.len() >= KEY_ID_LEN + NONCE_LEN => {
                let (id, rest) = rest.split_at(KEY_ID_LEN);
                let (nonce, sealed) = rest.split_at(NONCE_LEN);
                let key = keys().find(|k| k.id == id).ok_or_else(|| {
                    format!(
                        "archive object sealed with key {}, which is neither the current key nor one of [archive] previous_keys",
                        hex::encode(id)
                    )
                })?;
                key.open(sha256, nonce, sealed).ok_or_else(altered)
            }
            // Format 1 names no key: each one is tried.
            Some((&V1, rest)) if rest.len() >= NONCE_LEN => {
                let (nonce, sealed) = rest.split_at(NONCE_LEN);
                keys()
                    .find_map(|k| k.open(sha256, nonce, sealed))
                    .ok_or_else(|| {
                        "archive object does not decrypt with the current or a previous key (altered, moved or another key)".into()
                    })
            }
            Some((&V1 | &V2, _)) => Err("archive object too short".into()),
            _ => Err("not an archive object of a known version".into()),
        }
    }
}

fn altered() -> String {
    "archive object does not decrypt with its key (altered or moved)".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> String {
        Sealer::generate_hex().unwrap()
    }

    #[test]
    fn seals_opens_and_refuses_tampering() {
        let sealer = Sealer::from_hex(&key()).unwrap();
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
        let other = Sealer::from_hex(&key()).unwrap();
        let err = other.open("k", &a).unwrap_err();
        assert!(err.contains(&sealer.key_id()), "{err}");
        assert!(Sealer::from_hex("abcd").is_err());
        assert!(sealer.open("k", &[V2, 1, 2]).is_err());
        assert!(sealer.open("k", &[9, 1, 2]).is_err());
    }

    #[test]
    fn a_rotated_key_still_opens_what_it_sealed() {
        let (old, new) = (key(), key());
        let before = Sealer::from_hex(&old).unwrap();
        let sealed_before = before.seal("k", b"old payload").unwrap();
        let after = Sealer::from_hex(&new)
            .unwrap()
            .with_previous(std::slice::from_ref(&old))
            .unwrap();
        assert_eq!(after.open("k", &sealed_before).unwrap(), b"old payload");
        let sealed_after = after.seal("k", b"new payload").unwrap();
        assert_eq!(&sealed_after[1..1 + KEY_ID_LEN], &after.current.id);
        assert!(
            before.open("k", &sealed_after).is_err(),
            "the old key alone cannot open what the new one sealed"
        );
        let retired = Sealer::from_hex(&new).unwrap();
        assert!(retired.open("k", &sealed_before).is_err());
        assert!(
            Sealer::from_hex(&new)
                .unwrap()
                .with_previous(&["zz".into()])
                .is_err()
        );
    }

    #[test]
    fn format_1_objects_open_with_any_configured_key() {
        let (old, new) = (key(), key());
        // A format-1 object as the first version wrote it: 0x01 ‖ nonce ‖ ct+tag.
        let k = Key::from_hex(&old).unwrap();
        let nonce = [7u8; NONCE_LEN];
        let ct = k
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: b"v1 payload",
                    aad: b"k",
                },
            )
            .unwrap();
        let object: Vec<u8> = [&[V1][..], &nonce, &ct].concat();
        assert_eq!(
            Sealer::from_hex(&old).unwrap().open("k", &object).unwrap(),
            b"v1 payload"
        );
        let rotated = Sealer::from_hex(&new)
            .unwrap()
            .with_previous(std::slice::from_ref(&old))
            .unwrap();
        assert_eq!(rotated.open("k", &object).unwrap(), b"v1 payload");
        assert!(Sealer::from_hex(&new).unwrap().open("k", &object).is_err());
    }
}
