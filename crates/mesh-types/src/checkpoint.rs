//! Signed checkpoints of the provenance Merkle tree, in the C2SP `tlog-checkpoint`
//! format inside a C2SP `signed-note`, signed with Ed25519.
//!
//! A checkpoint body is three lines: the log's origin, the tree size in decimal, the
//! root hash in standard base64. The note is the body, a blank line, and one line per
//! signature: `— <key name> <base64(key id || signature)>`, where the key id is the
//! first four bytes of `SHA-256(name || 0x0A || 0x01 || public key)` and the signature
//! covers the body including its final newline. The verifier key, the text a verifier
//! is handed, is `<name>+<hex key id>+<base64(0x01 || public key)>`. Using the standard
//! formats means any C2SP tool (Go's `sumdb/note`, `litetlog`) can check our notes.

use crate::merkle::Hash;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};
use std::fmt;

/// The signature type byte of Ed25519 in signed notes.
const ALG_ED25519: u8 = 0x01;
/// `— ` (U+2014 and a space) opens each signature line.
const SIG_PREFIX: &str = "\u{2014} ";
/// The DER prefix of an Ed25519 PKCS#8 v1 private key (RFC 8410): what
/// `openssl genpkey -algorithm ed25519` writes, followed by the 32-byte seed.
const PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Why a key, note or checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteError(pub String);

impl fmt::Display for NoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NoteError {}

fn err<T>(msg: impl Into<String>) -> Result<T, NoteError> {
    Err(NoteError(msg.into()))
}

/// A tree head: which log, how many leaves, their Merkle root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

impl Checkpoint {
    /// The note body the signature covers.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        )
    }

    /// Parses a body; extension lines after the root are allowed and ignored.
    pub fn parse_body(body: &str) -> Result<Self, NoteError> {
        let mut lines = body.split('\n');
        let origin = lines.next().unwrap_or_default();
        if origin.is_empty() {
            return err("the checkpoint has no origin line");
        }
        let size = lines
            .next()
            .and_then(|s| {
                // Decimal without leading zeros, as the format requires.
                (!s.is_empty() && (s == "0" || !s.starts_with('0')))
                    .then(|| s.parse::<u64>().ok())
                    .flatten()
            })
            .ok_or_else(|| NoteError("the checkpoint's tree size is not a number".into()))?;
        let root = lines
            .next()
            .and_then(|s| B64.decode(s).ok())
            .and_then(|b| <Hash>::try_from(b).ok())
            .ok_or_else(|| {
                NoteError("the checkpoint's root hash is not 32 bytes of base64".into())
            })?;
        Ok(Self {
            origin: origin.to_string(),
            size,
            root,
        })
    }
}

fn key_id(name: &str, public: &VerifyingKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ALG_ED25519]);
    h.update(public.as_bytes());
    let digest = h.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('+') && !name.chars().any(char::is_whitespace)
}

/// The log's signing key, named by the log's origin.
pub struct NoteSigner {
    name: String,
    key: SigningKey,
}

impl NoteSigner {
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<Self, NoteError> {
        if !valid_name(name) {
            return err(format!(
                "`{name}` cannot name a key: it must be non-empty, without spaces or `+`"
            ));
        }
        Ok(Self {
            name: name.to_string(),
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// Reads a key as stored in the secrets directory: an Ed25519 PKCS#8 PEM (`openssl
    /// genpkey -algorithm ed25519`) or the 32-byte seed in base64.
    pub fn from_secret(name: &str, text: &str) -> Result<Self, NoteError> {
        Self::from_seed(name, parse_seed(text)?)
    }

    /// The key as PKCS#8 PEM, the form written when a key is generated.
    pub fn to_pem(&self) -> String {
        let mut der = PKCS8_PREFIX.to_vec();
        der.extend_from_slice(self.key.as_bytes());
        format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            B64.encode(der)
        )
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The verifier key string: `<name>+<hex key id>+<base64(0x01 || public key)>`.
    pub fn verifier_key(&self) -> String {
        let public = self.key.verifying_key();
        let mut typed = vec![ALG_ED25519];
        typed.extend_from_slice(public.as_bytes());
        format!(
            "{}+{}+{}",
            self.name,
            hex::encode(key_id(&self.name, &public)),
            B64.encode(typed)
        )
    }

    /// The signed note of `checkpoint`.
    pub fn sign(&self, checkpoint: &Checkpoint) -> String {
        let body = checkpoint.body();
        let signature = self.key.sign(body.as_bytes());
        let mut blob = key_id(&self.name, &self.key.verifying_key()).to_vec();
        blob.extend_from_slice(&signature.to_bytes());
        format!("{body}\n{SIG_PREFIX}{} {}\n", self.name, B64.encode(blob))
    }
}

fn parse_seed(text: &str) -> Result<[u8; 32], NoteError> {
    let text = text.trim();
    let b64: String = if text.starts_with("-----BEGIN PRIVATE KEY-----") {
        text.lines().filter(|l| !l.starts_with("-----")).collect()
    } else {
        text.to_string()
    };
    let bytes = B64
        .decode(b64.trim())
        .map_err(|_| NoteError("the signing key is neither PKCS#8 PEM nor base64".into()))?;
    let seed = match bytes.len() {
        32 => bytes.as_slice(),
        48 if bytes[..16] == PKCS8_PREFIX => &bytes[16..],
        _ => {
            return err(
                "the signing key must be an Ed25519 PKCS#8 key or a 32-byte seed in base64",
            );
        }
    };
    <[u8; 32]>::try_from(seed).or_else(|_| err("the signing key seed is not 32 bytes"))
}

/// A public key that checks notes, parsed from its verifier key string.
#[derive(Debug, Clone)]
pub struct NoteVerifier {
    name: String,
    id: [u8; 4],
    key: VerifyingKey,
}

impl NoteVerifier {
    pub fn parse(vkey: &str) -> Result<Self, NoteError> {
        let vkey = vkey.trim();
        // The base64 key may itself hold `+`: only the first two separate fields.
        let mut parts = vkey.splitn(3, '+');
        let (Some(name), Some(id_hex), Some(typed)) = (parts.next(), parts.next(), parts.next())
        else {
            return err("a verifier key is `<name>+<hex key id>+<base64 key>`");
        };
        if !valid_name(name) {
            return err(format!("`{name}` is not a key name"));
        }
        let typed = B64
            .decode(typed)
            .map_err(|_| NoteError("the verifier key's key is not base64".into()))?;
        let Some((&ALG_ED25519, raw)) = typed.split_first() else {
            return err("the verifier key is not an Ed25519 key (type 0x01)");
        };
        let Ok(raw) = <[u8; 32]>::try_from(raw) else {
            return err("the verifier key is not an Ed25519 key (type 0x01 and 32 bytes)");
        };
        let key = VerifyingKey::from_bytes(&raw)
            .map_err(|_| NoteError("the verifier key is not a valid Ed25519 point".into()))?;
        let id = key_id(name, &key);
        if hex::encode(id) != id_hex.to_ascii_lowercase() {
            return err("the verifier key's key id does not match its name and key");
        }
        Ok(Self {
            name: name.to_string(),
            id,
            key,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Checks the note's signature by this key and returns its checkpoint, whose origin
    /// must be this key's name (the log the key signs for).
    pub fn open(&self, note: &str) -> Result<Checkpoint, NoteError> {
        let Some(split) = note.rfind("\n\n") else {
            return err("the checkpoint is not a signed note (no blank line before signatures)");
        };
        let (body, sigs) = (&note[..=split], &note[split + 2..]);
        let mut found = false;
        for line in sigs.lines() {
            let Some(rest) = line.strip_prefix(SIG_PREFIX) else {
                return err(format!("`{line}` is not a signature line"));
            };
            let Some((name, blob)) = rest.split_once(' ') else {
                return err(format!("`{line}` is not a signature line"));
            };
            let blob = B64
                .decode(blob)
                .map_err(|_| NoteError("a signature is not base64".into()))?;
            if name != self.name || blob.len() != 68 || blob[..4] != self.id {
                continue; // another key's signature: not ours to judge
            }
            found = true;
            let sig = Signature::from_slice(&blob[4..])
                .map_err(|_| NoteError("the signature is malformed".into()))?;
            if self.key.verify(body.as_bytes(), &sig).is_err() {
                return err(format!(
                    "the checkpoint's signature by {} does not verify: the note was altered or signed by another key",
                    self.name
                ));
            }
        }
        if !found {
            return err(format!(
                "the checkpoint is not signed by the key {} given (it is for another log or key)",
                self.name
            ));
        }
        let checkpoint = Checkpoint::parse_body(body)?;
        if checkpoint.origin != self.name {
            return err(format!(
                "the checkpoint is for the log `{}`, not `{}`",
                checkpoint.origin, self.name
            ));
        }
        Ok(checkpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_keys_with_plus_in_their_base64_parse() {
        let with_plus = (0u8..=255)
            .map(|b| NoteSigner::from_seed("k", [b; 32]).unwrap())
            .find(|s| s.verifier_key().matches('+').count() > 2)
            .unwrap();
        assert!(NoteVerifier::parse(&with_plus.verifier_key()).is_ok());
    }

    fn signer(name: &str) -> NoteSigner {
        NoteSigner::from_seed(name, [7u8; 32]).unwrap()
    }

    fn checkpoint(origin: &str, size: u64) -> Checkpoint {
        Checkpoint {
            origin: origin.into(),
            size,
            root: crate::merkle::leaf_hash(b"root"),
        }
    }

    #[test]
    fn signed_note_round_trips_in_the_c2sp_shape() {
        let s = signer("mesh.example/log");
        let note = s.sign(&checkpoint("mesh.example/log", 42));
        let mut lines = note.lines();
        assert_eq!(lines.next(), Some("mesh.example/log"));
        assert_eq!(lines.next(), Some("42"));
        assert!(lines.next().is_some());
        assert_eq!(lines.next(), Some(""));
        assert!(
            lines
                .next()
                .unwrap()
                .starts_with("\u{2014} mesh.example/log ")
        );
        let v = NoteVerifier::parse(&s.verifier_key()).unwrap();
        assert_eq!(v.open(&note).unwrap(), checkpoint("mesh.example/log", 42));
    }

    #[test]
    fn altered_foreign_or_misnamed_notes_are_refused() {
        let s = signer("log-a");
        let v = NoteVerifier::parse(&s.verifier_key()).unwrap();
        let note = s.sign(&checkpoint("log-a", 42));
        let altered = note.replacen("\n42\n", "\n43\n", 1);
        assert!(v.open(&altered).unwrap_err().0.contains("does not verify"));
        let other = NoteSigner::from_seed("log-a", [8u8; 32]).unwrap();
        let foreign = other.sign(&checkpoint("log-a", 42));
        assert!(v.open(&foreign).unwrap_err().0.contains("not signed by"));
        let misnamed = s.sign(&checkpoint("log-b", 42));
        assert!(v.open(&misnamed).unwrap_err().0.contains("log `log-b`"));
        assert!(v.open("no note here").is_err());
    }

    #[test]
    fn keys_parse_from_pem_and_seed_and_bad_ones_are_named() {
        let s = signer("k");
        let again = NoteSigner::from_secret("k", &s.to_pem()).unwrap();
        assert_eq!(again.verifier_key(), s.verifier_key());
        let seed = NoteSigner::from_secret("k", &B64.encode([7u8; 32])).unwrap();
        assert_eq!(seed.verifier_key(), s.verifier_key());
        assert!(NoteSigner::from_secret("k", "nonsense!").is_err());
        assert!(NoteSigner::from_secret("k", &B64.encode([1u8; 31])).is_err());
        assert!(NoteSigner::from_seed("has space", [0; 32]).is_err());
        let vkey = s.verifier_key();
        let tampered = vkey.replacen('+', "x+", 1);
        assert!(NoteVerifier::parse(&tampered).is_err());
        assert!(NoteVerifier::parse("just-a-name").is_err());
    }
}
