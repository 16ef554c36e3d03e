//! Encryption at rest: with `--encryption-key-file`, every value the node
//! writes to disk (the state machine's values through [`crate::kv::Store`],
//! the write-ahead log's commands through [`crate::wal`]) is sealed with
//! AES-256-GCM-SIV under the file's active key, so no item value can be
//! read from the data directory without the key. The data directory's
//! identity file records that it is encrypted and with which keys
//! ([`crate::identity`]): a node refuses to start on it without the key,
//! or with keys none of which sealed it.
//!
//! Sealed format: `[SEALED_MAGIC][key id: 4 bytes][nonce: 12 bytes]
//! [ciphertext and 16-byte tag]`; the key id is the first four bytes of
//! the key's SHA-256, so a value names the key that sealed it and old keys
//! keep opening what they sealed after a rotation.
//!
//! The key file holds one key per line as 64 hex digits (blank lines and
//! `#` comments ignored); the first is the active key (new values), the
//! others only open older values. Rotation: put a new key first and keep
//! the old ones after it; values sealed with an old key are rewritten as
//! the items are written again (nothing re-encrypts a cold item), so an old
//! key stays needed until every value it sealed is gone.
//!
//! Why GCM-SIV rather than GCM: nonces are a random 4-byte prefix drawn at
//! start-up and a counter starting at a random 64-bit value; with GCM a
//! repeated nonce would leak the key stream, with GCM-SIV it reveals only
//! that two values are equal.
//!
//! Not encrypted: keys of the state machine (they carry table ids, hashes
//! and the items' key attribute values, whose byte order the store's range
//! scans need), the Raft votes file, file names and sizes.

use crate::StorageError;
use aes_gcm_siv::aead::{Aead, KeyInit};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// First byte of every sealed value.
pub const SEALED_MAGIC: u8 = 0xE5;
/// Bytes of a key id.
pub const KEY_ID_BYTES: usize = 4;
/// Bytes of a nonce.
pub const NONCE_BYTES: usize = 12;
/// Bytes of an authentication tag.
pub const TAG_BYTES: usize = 16;
/// Bytes a sealed value adds to its plaintext.
pub const SEAL_OVERHEAD_BYTES: usize = 1 + KEY_ID_BYTES + NONCE_BYTES + TAG_BYTES;
/// Bytes of a key (AES-256).
pub const KEY_BYTES: usize = 32;

/// The keys values are sealed and opened with.
pub struct KeyRing {
    /// The active key first.
    keys: Vec<([u8; KEY_ID_BYTES], Aes256GcmSiv)>,
    nonce_prefix: [u8; 4],
    counter: AtomicU64,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        // Key ids only, never keys.
        let ids: Vec<String> = self.key_ids().collect();
        write!(f, "KeyRing {{ keys: {ids:?} }}")
    }
}

impl KeyRing {
    /// Reads a key file (see the module doc); a malformed one is refused
    /// with the line at fault.
    pub fn load(path: &Path) -> Result<KeyRing, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("encryption key file {}: {e}", path.display()))?;
        KeyRing::parse(&text).map_err(|e| format!("encryption key file {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<KeyRing, String> {
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key = decode_hex(line)
                .filter(|k| k.len() == KEY_BYTES)
                .ok_or_else(|| {
                    format!(
                        "line {}: a key is {} hex digits ({KEY_BYTES} bytes)",
                        n + 1,
                        2 * KEY_BYTES
                    )
                })?;
            let cipher = Aes256GcmSiv::new_from_slice(&key)
                .map_err(|_| format!("line {}: not an AES-256 key", n + 1))?;
            keys.push((key_id(&key), cipher));
        }
        if keys.is_empty() {
            return Err("no key in it".into());
        }
        let mut seed = [0u8; 12];
        getrandom::fill(&mut seed).map_err(|e| format!("no random source: {e}"))?;
        let [p0, p1, p2, p3, c @ ..] = seed;
        Ok(KeyRing {
            keys,
            nonce_prefix: [p0, p1, p2, p3],
            counter: AtomicU64::new(u64::from_le_bytes(c)),
        })
    }

    /// The ids of the keys, active first, as hex.
    pub fn key_ids(&self) -> impl Iterator<Item = String> + '_ {
        self.keys.iter().map(|(id, _)| hex(id))
    }

    /// `plain` sealed with the active key. Failing is a bug (a ring
    /// without keys, which `parse` refuses; a value past AES-GCM-SIV's
    /// 64 GiB): fatal, never an empty value written in its place.
    pub fn seal(&self, plain: &[u8]) -> Result<Vec<u8>, StorageError> {
        let mut nonce = [0u8; NONCE_BYTES];
        let (prefix, count) = nonce.split_at_mut(4);
        prefix.copy_from_slice(&self.nonce_prefix);
        count.copy_from_slice(&self.counter.fetch_add(1, Ordering::Relaxed).to_le_bytes());
        let (id, cipher) = self
            .keys
            .first()
            .ok_or_else(|| StorageError::Fatal("the key ring holds no key".into()))?;
        let sealed = cipher
            .encrypt(Nonce::from_slice(&nonce), plain)
            .map_err(|_| {
                StorageError::Fatal(format!(
                    "a value of {} bytes could not be sealed",
                    plain.len()
                ))
            })?;
        let mut out = Vec::with_capacity(SEAL_OVERHEAD_BYTES + plain.len());
        out.push(SEALED_MAGIC);
        out.extend_from_slice(id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The plaintext of a sealed value; a value that is not sealed, sealed
    /// with a key not in the ring, or altered is corruption.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, StorageError> {
        let corrupt = |why: &str| StorageError::Corrupt(format!("an encrypted value {why}"));
        let (&magic, rest) = sealed.split_first().ok_or_else(|| corrupt("is empty"))?;
        if magic != SEALED_MAGIC || rest.len() < KEY_ID_BYTES + NONCE_BYTES + TAG_BYTES {
            return Err(corrupt("is not sealed (written without encryption?)"));
        }
        let (id, rest) = rest.split_at(KEY_ID_BYTES);
        let (nonce, body) = rest.split_at(NONCE_BYTES);
        let (_, cipher) = self
            .keys
            .iter()
            .find(|(k, _)| k.as_slice() == id)
            .ok_or_else(|| corrupt(&format!("names key {}, not in the key file", hex(id))))?;
        cipher
            .decrypt(Nonce::from_slice(nonce), body)
            .map_err(|_| corrupt("does not authenticate (altered, or a wrong key)"))
    }

    /// Whether the ring holds the key with id `id` (hex).
    pub fn has(&self, id: &str) -> bool {
        self.key_ids().any(|k| k == id)
    }
}

fn key_id(key: &[u8]) -> [u8; KEY_ID_BYTES] {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key);
    let mut id = [0u8; KEY_ID_BYTES];
    id.copy_from_slice(&digest[..KEY_ID_BYTES]);
    id
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            // Two hex digits: `from_str_radix` alone would also take `+f`.
            s.get(i..i + 2)
                .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const K2: &str = "ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn sealed_values_open_with_the_key_that_sealed_them_and_nothing_else() {
        let ring = KeyRing::parse(K1).unwrap();
        let sealed = ring.seal(b"the unique value").unwrap();
        assert_eq!(sealed.len(), 16 + SEAL_OVERHEAD_BYTES);
        assert!(!sealed.windows(6).any(|w| w == b"unique"));
        assert_eq!(ring.open(&sealed).unwrap(), b"the unique value");
        // Two seals of one value differ (fresh nonces).
        assert_ne!(ring.seal(b"x").unwrap(), ring.seal(b"x").unwrap());
        // Rotated: the new key seals, the old still opens.
        let rotated = KeyRing::parse(&format!("# new first\n{K2}\n\n{K1}\n")).unwrap();
        assert_eq!(rotated.open(&sealed).unwrap(), b"the unique value");
        let fresh = rotated.seal(b"y").unwrap();
        assert_eq!(&fresh[1..5], &key_id(&decode_hex(K2).unwrap()));
        // Without the key, altered, or not sealed: corruption.
        let other = KeyRing::parse(K2).unwrap();
        assert!(
            matches!(other.open(&sealed), Err(StorageError::Corrupt(m)) if m.contains("not in the key file"))
        );
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(ring.open(&altered).is_err());
        assert!(ring.open(b"plain").is_err());
        assert!(ring.open(&[]).is_err());
    }

    #[test]
    fn malformed_key_files_are_refused_with_the_line() {
        assert!(KeyRing::parse("").unwrap_err().contains("no key"));
        let e = KeyRing::parse(&format!("{K1}\nabc\n")).unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        assert!(KeyRing::parse(&K1.replace('0', "g")).is_err());
        // A sign is not a digit, though `u8::from_str_radix` takes one.
        assert!(KeyRing::parse(&K1.replacen("00", "+0", 1)).is_err());
    }
}
