//! Whose data directory this is: `dynaraft.json` names the on-disk format
//! and the node that owns the directory, so a node is never started on
//! another node's data (two nodes' replicas would then claim one identity
//! in the Raft groups) nor on a directory a newer release wrote in a format
//! this one cannot read. Both are refused at start-up with a message that
//! names the file and what to do, before anything else is opened.
//!
//! A directory without the file is claimed: either it is new, or it was
//! written before the file existed (format 1, which this release reads).

use crate::StorageError;
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
}

/// Checks that `dir` belongs to node `node_id` in a format this release
/// reads, writing the identity file (durably) if there is none yet.
pub fn claim(dir: &Path, node_id: u64) -> Result<(), StorageError> {
    let path = dir.join(IDENTITY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let found: Identity = serde_json::from_slice(&bytes).map_err(|e| {
                StorageError::Corrupt(format!(
                    "{} cannot be read ({e}); it names the node that owns this data \
                     directory: restore it, or remove it if this directory is this node's",
                    path.display()
                ))
            })?;
            check(&path, &found, node_id)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let identity = Identity {
                format: DATA_FORMAT,
                node_id,
            };
            write_durably(dir, &path, &identity)
        }
        Err(e) => Err(e.into()),
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
        claim(&dir, 2).unwrap();
        claim(&dir, 2).unwrap();
        let other = claim(&dir, 3).unwrap_err().to_string();
        assert!(other.contains("belongs to node 2, not node 3"), "{other}");
        assert!(other.contains(IDENTITY_FILE), "{other}");
        std::fs::write(dir.join(IDENTITY_FILE), br#"{"format":9,"node_id":2}"#).unwrap();
        let newer = claim(&dir, 2).unwrap_err().to_string();
        assert!(newer.contains("newer dynaraft"), "{newer}");
        std::fs::write(dir.join(IDENTITY_FILE), b"{\"form").unwrap();
        let torn = claim(&dir, 2).unwrap_err().to_string();
        assert!(torn.contains("cannot be read"), "{torn}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
