//! Making sled durable. sled's own flush is not an fsync on Linux (it uses
//! `sync_file_range`), so after flushing, every file it owns is fsynced.
//! The Raft log is purged only after this has run.

use crate::StorageError;
use std::path::Path;

/// Makes everything sled has applied durable: sled's flush, then an fsync
/// of every file under `dir`.
pub fn flush_durably(db: &sled::Db, dir: &Path) -> Result<(), StorageError> {
    db.flush()?;
    fsync_tree(dir)
}

fn fsync_tree(dir: &Path) -> Result<(), StorageError> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            fsync_tree(&p)?;
        } else {
            std::fs::File::open(&p)?.sync_all()?;
        }
    }
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}
