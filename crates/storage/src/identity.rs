//! Whose data directory this is: `dynaraft.json` names the on-disk format
//! and the node that owns the directory, so a node is never started on
//! another node's data (two nodes' replicas would then claim one identity
//! in the Raft groups) nor on a directory a newer release wrote in a format
//! this one cannot read. Both are refused at start-up with a message that
//! names the file and what to do, before anything else is opened.
//!
//! A directory without the file is claimed: either it is new, or it was
//! written before the file existed (format 1, which this release reads).
//!
//! The file also records whether the directory is encrypted at rest, and
//! the ids of the keys that sealed its values (`crate::cipher`): a node
//! refuses an encrypted directory without a key file holding one of them,
//! and a key file on a directory created without encryption (its values
//! are plaintext; encryption is chosen when a directory is created).

use crate::StorageError;
use crate::cipher::KeyRing;
use std::io::Write;
use std::path::Path;

/// The identity file inside a data directory.
pub const IDENTITY_FILE: &str = "dynaraft.json";
/// The on-disk format this release writes and reads.
pub const DATA_FORMAT: u32 = 1;

#[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
struct Identity {
    /// On-disk format of everything in the directory.
    format: u32,
    /// The node the directory belongs to.
    node_id: u64,
    /// Ids of the keys that sealed values in the directory (empty: not
    /// encrypted), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    encryption_keys: Vec<String>,
}

/// Checks that `dir` belongs to node `node_id` in a format this release
/// reads, and that it is encrypted exactly when `keys` is given (with a
/// key of `keys` among those that sealed it); writes the identity file
/// (durably) if there is none yet, and records a new active key.
pub fn claim(dir: &Path, node_id: u64, keys: Option<&KeyRing>) -> Result<(), StorageError> {
    let path = dir.join(IDENTITY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let mut found: Identity = serde_json::from_slice(&bytes).map_err(|e| {
                StorageError::Corrupt(format!(
                    "{} cannot be read ({e}); it names the node that owns this data \
                     directory: restore it, or remove it if this directory is this node's",
                    path.display()
                ))
            })?;
            check(&path, &found, node_id)?;
            if check_encryption(&path, &found, keys)? {
                let active = keys.and_then(|k| k.key_ids().next());
                found.encryption_keys.extend(active);
                write_durably(dir, &path, &found)?;
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let identity = Identity {
                format: DATA_FORMAT,
                node_id,
                encryption_keys: keys.and_then(|k| k.key_ids().next()).into_iter().collect(),
            };
            write_durably(dir, &path, &identity)
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether `keys` may open the directory `found` describes; `Ok(true)` if
/// its active key is new to the directory (to be recorded).
fn check_encryption(
    path: &Path,
    found: &Identity,
    keys: Option<&KeyRing>,
) -> Result<bool, StorageError> {
    let sealed_with = &found.encryption_keys;
    match keys {
        None if sealed_with.is_empty() => Ok(false),
        None => Err(StorageError::Fatal(format!(
            "{} says this data directory is encrypted (keys {}): start with \
             --encryption-key-file naming a file that holds its key",
            path.display(),
            sealed_with.join(", ")
        ))),
        Some(_) if sealed_with.is_empty() => Err(StorageError::Fatal(format!(
            "{} says this data directory was created without encryption: its values are \
             plaintext, and encryption is chosen when a directory is created; start without \
             --encryption-key-file, or on a new directory",
            path.display()
        ))),
        Some(k) if !sealed_with.iter().any(|id| k.has(id)) => Err(StorageError::Fatal(format!(
            "{} says this data directory was encrypted with keys {}, and the key file \
                 holds none of them (it holds {})",
            path.display(),
            sealed_with.join(", "),
            k.key_ids().collect::<Vec<_>>().join(", ")
        ))),
        Some(k) => Ok(k
            .key_ids()
            .next()
            .is_some_and(|a| !sealed_with.contains(&a))),
    }
}

fn check(path: &Path, found: &Identity, node_id: u64) -> Result<(), StorageError> {
    if found.format > DATA_FORMAT {
        return Err(StorageError::Fatal(format!(
            "{} says the data is in format {}, written by a newer dynaraft; this release \
             reads format {DATA_FORMAT}: run the newer release",
            path.display(),
            found.format
        )));
    }
    if found.node_id != node_id {
        return Err(StorageError::Fatal(format!(
            "{} says this data directory belongs to node {}, not node {node_id}: give \
             each node its own --data-dir (or start node {} on it)",
            path.display(),
            found.node_id,
            found.node_id
        )));
    }
    Ok(())
}

/// Writes the identity to a temporary file, fsyncs it, renames it into
/// place and fsyncs the directory, so a crash leaves either no file or a
/// whole one.
fn write_durably(dir: &Path, path: &Path, identity: &Identity) -> Result<(), StorageError> {
    let bytes = serde_json::to_vec(identity).map_err(|e| StorageError::Fatal(e.to_string()))?;
    let tmp = dir.join(format!("{IDENTITY_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_claimed_once_and_refused_to_others_and_to_newer_formats() {
        let dir = std::env::temp_dir().join(format!("dynaraft-identity-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        claim(&dir, 2, None).unwrap();
        claim(&dir, 2, None).unwrap();
        let other = claim(&dir, 3, None).unwrap_err().to_string();
        assert!(other.contains("belongs to node 2, not node 3"), "{other}");
        assert!(other.contains(IDENTITY_FILE), "{other}");
        std::fs::write(dir.join(IDENTITY_FILE), br#"{"format":9,"node_id":2}"#).unwrap();
        let newer = claim(&dir, 2, None).unwrap_err().to_string();
        assert!(newer.contains("newer dynaraft"), "{newer}");
        std::fs::write(dir.join(IDENTITY_FILE), b"{\"form").unwrap();
        let torn = claim(&dir, 2, None).unwrap_err().to_string();
        assert!(torn.contains("cannot be read"), "{torn}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// An encrypted directory is refused without its key and with keys
    /// that never sealed it; a plaintext one is refused with a key; a
    /// rotated key is recorded once.
    #[test]
    fn encryption_is_chosen_when_a_directory_is_created_and_checked_after() {
        const K1: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
        const K2: &str = "ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
        let ring = |t: &str| KeyRing::parse(t).unwrap();
        let dir =
            std::env::temp_dir().join(format!("dynaraft-identity-enc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        claim(&dir, 1, Some(&ring(K1))).unwrap();
        let no_key = claim(&dir, 1, None).unwrap_err().to_string();
        assert!(
            no_key.contains("is encrypted") && no_key.contains("--encryption-key-file"),
            "{no_key}"
        );
        let wrong = claim(&dir, 1, Some(&ring(K2))).unwrap_err().to_string();
        assert!(wrong.contains("holds none of them"), "{wrong}");
        let rotated = ring(&format!("{K2}\n{K1}"));
        claim(&dir, 1, Some(&rotated)).unwrap();
        claim(&dir, 1, Some(&rotated)).unwrap();
        let text = std::fs::read_to_string(dir.join(IDENTITY_FILE)).unwrap();
        let found: Identity = serde_json::from_str(&text).unwrap();
        assert_eq!(found.encryption_keys.len(), 2, "{text}");
        claim(&dir, 1, Some(&ring(K2))).unwrap();
        let plain = dir.join("plain");
        std::fs::create_dir_all(&plain).unwrap();
        claim(&plain, 1, None).unwrap();
        let keyed = claim(&plain, 1, Some(&ring(K1))).unwrap_err().to_string();
        assert!(keyed.contains("created without encryption"), "{keyed}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
