//! The key-value engine under every state machine of a node, behind one
//! facade: point reads, ordered range and prefix scans (both directions),
//! atomic batches and a durable flush. Nothing else in the project names
//! the engine, so replacing it (docs/decisions.md: fjall is proposed for
//! issue 27) changes this file, not the state machines.
//!
//! Today the engine is sled 0.34: one tree holds every group's keys, each
//! key starting with its group. sled's own flush is not an fsync on Linux
//! (it uses `sync_file_range`), so [`Store::flush_durably`] fsyncs every
//! file sled owns afterwards; the Raft log is purged only after that ran.

use crate::StorageError;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};

/// A value (or key) read from the store: cheap to clone, derefs to bytes.
pub type Bytes = sled::IVec;

/// The sled tree every state machine's keys live in (data directories from
/// before the facade used the same one).
const STATE_TREE: &str = "state";

/// Pairs yielded by scans.
pub type Pair = Result<(Bytes, Bytes), StorageError>;

/// The node's store. Cloning shares it.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    tree: sled::Tree,
    /// Where its files are (`None`: in memory, nothing to make durable).
    dir: Option<PathBuf>,
}

/// Writes applied together by [`Store::apply`], all or none.
#[derive(Default)]
pub struct Batch(sled::Batch);

impl Batch {
    pub fn insert(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.0.insert(key.as_ref(), value.as_ref());
    }

    pub fn remove(&mut self, key: impl AsRef<[u8]>) {
        self.0.remove(key.as_ref());
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`. A failure because a previous
    /// instance is still closing is the caller's to retry (see
    /// [`Store::is_lock_error`]).
    pub fn open(dir: &Path) -> Result<Store, sled::Error> {
        let db = sled::Config::new().path(dir).open()?;
        let tree = db.open_tree(STATE_TREE)?;
        Ok(Store {
            db,
            tree,
            dir: Some(dir.to_path_buf()),
        })
    }

    /// A store that lives in memory (and a temporary directory sled
    /// removes when the last clone is dropped).
    pub fn temporary() -> Result<Store, StorageError> {
        let db = sled::Config::new().temporary(true).open()?;
        let tree = db.open_tree(STATE_TREE)?;
        Ok(Store {
            db,
            tree,
            dir: None,
        })
    }

    /// Whether opening failed only because another instance (in this
    /// process, shutting down) still holds the store's lock.
    pub fn is_lock_error(e: &sled::Error) -> bool {
        matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
    }

    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>, StorageError> {
        Ok(self.tree.get(key)?)
    }

    /// The pairs with keys in `range`, in key order (`.rev()` for the
    /// other way).
    pub fn range<K, R>(&self, range: R) -> impl DoubleEndedIterator<Item = Pair> + use<K, R>
    where
        K: AsRef<[u8]>,
        R: RangeBounds<K>,
    {
        self.tree.range(range).map(|kv| Ok(kv?))
    }

    /// The pairs whose keys start with `prefix`, in key order.
    pub fn scan_prefix<P: AsRef<[u8]>>(
        &self,
        prefix: P,
    ) -> impl DoubleEndedIterator<Item = Pair> + use<P> {
        self.tree.scan_prefix(prefix).map(|kv| Ok(kv?))
    }

    /// Applies `batch` atomically.
    pub fn apply(&self, batch: Batch) -> Result<(), StorageError> {
        Ok(self.tree.apply_batch(batch.0)?)
    }

    /// Makes everything applied so far durable: the engine's flush, then an
    /// fsync of every file under the store's directory.
    pub fn flush_durably(&self) -> Result<(), StorageError> {
        self.db.flush()?;
        match &self.dir {
            Some(dir) => fsync_tree(dir),
            None => Ok(()),
        }
    }

    /// Writes what is buffered, without waiting for the disk (shutdown).
    pub async fn flush_soon(&self) {
        let _ = self.db.flush_async().await;
    }
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
