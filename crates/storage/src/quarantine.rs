//! Setting a corrupt data directory aside, so that a cluster node can be
//! rebuilt from the other zones.
//!
//! When a storage node finds damaged bytes at start-up (a WAL record that
//! fails its checksum before a later batch, a hole in the log, a store page
//! or block that fails its own checksum), its replicas cannot be trusted, but
//! the other zones hold every acknowledged write. Rather than needing an
//! operator to move the directory by hand, the node moves everything in it
//! into one subdirectory, `corrupt-<unix ms>`, and starts empty: the path a
//! node whose disk was replaced takes (each replica leaves its group's voters,
//! starts empty and is added back once caught up).
//!
//! Nothing is deleted: the damaged copy stays for inspection (or for a last
//! resort restore, should the other zones have lost their copies too), and
//! the move is a rename within the directory, so it also works when the
//! directory is a mount point (a Kubernetes volume). At most
//! [`MAX_QUARANTINED_COPIES`] copy is kept: a node that finds corruption
//! again while an earlier copy is still there refuses to start, so repeated
//! damage (a failing disk) cannot fill the volume with copies.

use crate::StorageError;
use std::path::{Path, PathBuf};

/// How a set-aside copy's directory name begins.
pub const QUARANTINE_PREFIX: &str = "corrupt-";
/// Most set-aside copies a data directory holds; one more corruption while
/// they are there is refused.
pub const MAX_QUARANTINED_COPIES: usize = 1;

/// The set-aside copies inside `dir`, oldest first.
pub fn quarantined(dir: &Path) -> Result<Vec<PathBuf>, StorageError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(QUARANTINE_PREFIX)
        {
            found.push(entry.path());
        }
    }
    found.sort();
    Ok(found)
}

/// Moves everything in `dir` but earlier copies into a new
/// `corrupt-<unix ms>` directory inside it, durably (both directories
/// fsynced); returns the new directory. Refused, changing nothing, when
/// `dir` already holds [`MAX_QUARANTINED_COPIES`] copies.
pub fn quarantine(dir: &Path) -> Result<PathBuf, StorageError> {
    let earlier = quarantined(dir)?;
    if earlier.len() >= MAX_QUARANTINED_COPIES {
        let names: Vec<String> = earlier.iter().map(|p| p.display().to_string()).collect();
        return Err(StorageError::Fatal(format!(
            "{} still holds the data set aside after earlier corruption ({}); this node keeps at \
             most {MAX_QUARANTINED_COPIES}, so it does not set aside another: check the disk, \
             delete the old copy once inspected, and restart",
            dir.display(),
            names.join(", ")
        )));
    }
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let aside = dir.join(format!("{QUARANTINE_PREFIX}{ms}"));
    std::fs::create_dir(&aside)?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if path == aside
            || entry
                .file_name()
                .to_string_lossy()
                .starts_with(QUARANTINE_PREFIX)
        {
            continue;
        }
        std::fs::rename(&path, aside.join(entry.file_name()))?;
    }
    sync_dir(&aside)?;
    sync_dir(dir)?;
    Ok(aside)
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_everything_aside_once_and_refuses_a_second_time() {
        let root = std::env::temp_dir().join(format!("dynaraft-quarantine-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let dir = root.as_path();
        std::fs::create_dir(dir.join("wal")).unwrap();
        std::fs::write(dir.join("wal").join("wal-000000000001.log"), b"log").unwrap();
        std::fs::write(dir.join("dynaraft.json"), b"{}").unwrap();

        let aside = quarantine(dir).unwrap();
        let left: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(left, vec![aside.clone()], "only the copy is left");
        let log = std::fs::read(aside.join("wal").join("wal-000000000001.log")).unwrap();
        assert_eq!(log, b"log");
        assert_eq!(quarantined(dir).unwrap(), vec![aside.clone()]);

        // A node started empty, then found corruption again.
        std::fs::create_dir(dir.join("wal")).unwrap();
        let refused = quarantine(dir).unwrap_err().to_string();
        assert!(refused.contains("earlier corruption"), "{refused}");
        assert!(dir.join("wal").exists(), "a refusal moves nothing");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
