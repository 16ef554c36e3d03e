//! The key-value engine under every state machine of a node, behind one
//! facade: point reads, ordered range and prefix scans (both directions),
//! atomic batches and a durable flush. Nothing else in the project names
//! an engine.
//!
//! Two engines (docs/decisions.md, "The state machine's next engine"):
//! - **sled 0.34**, the engine every data directory so far was written
//!   with (`<data>/sled`, tree `state`). Its flush is not an fsync on Linux
//!   (it uses `sync_file_range`), so [`Store::flush_durably`] fsyncs every
//!   file it owns afterwards.
//! - **fjall 3** (`<data>/fjall`, keyspace `state`), an LSM tree. Its journal
//!   is persisted only by [`Store::flush_durably`]: the Raft WAL is the
//!   record of truth, and a write fjall loses in a crash is replayed from
//!   it (the applied index travels in the same batch as the data). Values
//!   of `SEPARATED_VALUE_BYTES` and more are kept in its blob files, the
//!   rest in its tree.
//!
//! A data directory keeps the engine it was created with
//! ([`Engine::of_dir`]); the configured engine applies to new ones.
//!
//! The Raft log is purged only after [`Store::flush_durably`] ran.

use crate::StorageError;
use std::ops::{Bound, Deref, RangeBounds};
use std::path::{Path, PathBuf};

/// The sled tree / fjall keyspace every state machine's keys live in.
const STATE: &str = "state";
/// The engine of new data directories and in-memory stores unless
/// configured otherwise: fjall (the patched copy in `vendor/`) since
/// 2026-12-05. It holds a node to its memory budget and restarts in under a
/// second where sled's resident set and restart time grow with its data
/// (ten minutes of writes: fjall peak 231 MiB of a 256 MiB budget, restart
/// 0.63 s; sled 388 MiB and rising, 5.14 s), and it stores fewer bytes.
/// `--engine sled` keeps sled for a new data directory; a directory keeps
/// the engine it was created with. docs/decisions.md, "fjall is the
/// default".
pub const DEFAULT_ENGINE: Engine = Engine::Fjall;
/// What the store may hold in memory unless the node's budget says
/// otherwise.
pub const DEFAULT_MEMORY: StoreMemory = StoreMemory {
    // sled's own default is 1 GiB.
    cache_bytes: 256 * 1024 * 1024,
    // fjall's own default is 64 MiB.
    memtable_bytes: 32 * 1024 * 1024,
};
/// fjall's background threads: its worker #0 only flushes memtables, the
/// others compact. fjall's default, min(cores, 4), leaves a two-core
/// machine one compacting thread; on a 10 GiB table under load the
/// committer was seen halted in fjall's write stall while that one
/// compaction ran and a third of the CPU sat idle (docs/decisions.md,
/// "Three compacting threads").
pub const STORE_WORKER_THREADS: usize = 4;
/// The smallest memtable fjall is given, in bytes.
const MIN_MEMTABLE_BYTES: u64 = 1024 * 1024;
/// Values at least this long, in bytes (as stored: sealed when the node
/// encrypts), are kept in fjall's blob files with only a pointer in its
/// tree (key-value separation): compaction then rewrites pointers, not
/// items. Smaller values (index entries, counters, small items) stay in
/// the tree, where a read needs no second lookup. Keyspaces created before
/// 2026-12-06 keep every value in the tree: fjall stores a keyspace's
/// options when it creates it. docs/decisions.md, "Item values apart from
/// the tree".
const SEPARATED_VALUE_BYTES: u32 = 256;
/// The share of the stale blob files a compaction may rewrite (oldest
/// first; a file is stale from a quarter of its bytes overwritten or
/// deleted). fjall's default, 0.25, left 2.6-3.2 bytes on disk per live
/// byte under sustained overwrites; all of them, 2.0.
const BLOB_REWRITE_SHARE: f32 = 1.0;

/// How much memory the store may use for what it can bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreMemory {
    /// The cache of pages or blocks read (sled's page cache, fjall's block
    /// cache), in bytes.
    pub cache_bytes: u64,
    /// fjall's largest memtable before it is sealed and flushed, in bytes
    /// (sled has no memtable).
    pub memtable_bytes: u64,
}

/// Which engine a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sled,
    Fjall,
}

impl Engine {
    /// The subdirectory of a node's data directory this engine uses.
    pub const fn dir_name(self) -> &'static str {
        match self {
            Engine::Sled => "sled",
            Engine::Fjall => "fjall",
        }
    }

    /// The engine a data directory already holds, if any. Both at once is
    /// refused: which one holds the node's state would be a guess.
    pub fn of_dir(data_dir: &Path) -> Result<Option<Engine>, StorageError> {
        let has = |e: Engine| data_dir.join(e.dir_name()).exists();
        match (has(Engine::Sled), has(Engine::Fjall)) {
            (true, true) => Err(StorageError::Fatal(format!(
                "{} holds both a sled and a fjall store; move the one not in use away",
                data_dir.display()
            ))),
            (true, false) => Ok(Some(Engine::Sled)),
            (false, true) => Ok(Some(Engine::Fjall)),
            (false, false) => Ok(None),
        }
    }
}

impl std::str::FromStr for Engine {
    type Err = String;
    fn from_str(s: &str) -> Result<Engine, String> {
        match s {
            "sled" => Ok(Engine::Sled),
            "fjall" => Ok(Engine::Fjall),
            other => Err(format!("unknown engine {other:?} (sled or fjall)")),
        }
    }
}

/// A value (or key) read from the store: cheap to clone, derefs to bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bytes {
    Sled(sled::IVec),
    Fjall(fjall::Slice),
    /// A value opened from its sealed form (encryption at rest).
    Opened(std::sync::Arc<[u8]>),
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Sled(b) => b,
            Bytes::Fjall(b) => b,
            Bytes::Opened(b) => b,
        }
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

/// Pairs yielded by scans.
pub type Pair = Result<(Bytes, Bytes), StorageError>;

/// A scan over either engine, in key order (`.rev()` for the other way).
pub type Scan = Box<dyn DoubleEndedIterator<Item = Pair> + Send>;

#[derive(Clone)]
enum Backend {
    Sled {
        db: sled::Db,
        tree: sled::Tree,
    },
    Fjall {
        db: fjall::Database,
        state: fjall::Keyspace,
        /// Reads see the keyspace as of this snapshot (see
        /// [`Store::snapshot`]); `None`: as it is now.
        frozen: Option<fjall::Snapshot>,
    },
}

impl Backend {
    /// Opens `engine`: sled as `sled_cfg` says, fjall in `dir` (removed on
    /// drop when `temporary`), each with its `state` tree or keyspace.
    fn open(
        engine: Engine,
        sled_cfg: sled::Config,
        dir: &Path,
        temporary: bool,
        memory: StoreMemory,
    ) -> Result<Backend, OpenError> {
        match engine {
            Engine::Sled => {
                let db = sled_cfg
                    .cache_capacity(memory.cache_bytes)
                    .open()
                    .map_err(|e| {
                        if sled_lock_held(&e) {
                            OpenError::Locked
                        } else {
                            OpenError::Other(e.into())
                        }
                    })?;
                let tree = db
                    .open_tree(STATE)
                    .map_err(|e| OpenError::Other(e.into()))?;
                Ok(Backend::Sled { db, tree })
            }
            Engine::Fjall => {
                let db = fjall::Database::builder(dir)
                    .temporary(temporary)
                    .manual_journal_persist(true)
                    .cache_size(memory.cache_bytes)
                    .worker_threads(STORE_WORKER_THREADS)
                    .open()
                    .map_err(|e| match e {
                        fjall::Error::Locked => OpenError::Locked,
                        other => OpenError::Other(fjall_err(other)),
                    })?;
                let memtable = memory.memtable_bytes.max(MIN_MEMTABLE_BYTES);
                let options = || {
                    fjall::KeyspaceCreateOptions::default()
                        .max_memtable_size(memtable)
                        .with_kv_separation(Some(
                            fjall::KvSeparationOptions::default()
                                .separation_threshold(SEPARATED_VALUE_BYTES)
                                .age_cutoff(BLOB_REWRITE_SHARE),
                        ))
                };
                let state = db
                    .keyspace(STATE, options)
                    .map_err(|e| OpenError::Other(fjall_err(e)))?;
                // fjall keeps the size a directory was created with; the
                // budget of this start wins (a vendored fjall patch).
                state.set_max_memtable_size(memtable);
                Ok(Backend::Fjall {
                    db,
                    state,
                    frozen: None,
                })
            }
        }
    }
}

/// The node's store. Cloning shares it.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    /// Where its files are (`None`: in memory, nothing to make durable).
    dir: Option<PathBuf>,
    /// Seals every value written and opens every value read, when the
    /// node encrypts at rest (`crate::cipher`).
    cipher: Option<std::sync::Arc<crate::cipher::KeyRing>>,
    /// Bytes of keys and values [`Store::apply`] has written since the store
    /// opened (shared by clones): what tells the node it is idle, and how
    /// much a compaction may reclaim ([`Store::compact_idle`]).
    written: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// Writes applied together by [`Store::apply`], all or none.
#[derive(Default)]
pub struct Batch(Vec<(Vec<u8>, Option<Vec<u8>>)>);

impl Batch {
    pub fn insert(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.0.push((key.into(), Some(value.into())));
    }

    pub fn remove(&mut self, key: impl Into<Vec<u8>>) {
        self.0.push((key.into(), None));
    }
}

/// Whether sled refused to open because another instance holds its lock.
fn sled_lock_held(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

/// fjall's error as ours: damaged bytes (a checksum, a block or journal
/// that does not decode, files it cannot recover) are corruption, the rest
/// (I/O, a poisoned or locked database) a failure of the node.
fn fjall_err(e: fjall::Error) -> StorageError {
    use fjall::Error as F;
    use fjall::LsmError as L;
    match &e {
        F::Storage(
            L::ChecksumMismatch { .. }
            | L::Decompress(_)
            | L::InvalidTag(_)
            | L::InvalidTrailer
            | L::InvalidHeader(_)
            | L::Unrecoverable,
        )
        | F::JournalRecovery(_)
        | F::Decompress(_)
        | F::InvalidTrailer
        | F::InvalidTag(_)
        | F::Unrecoverable => StorageError::Corrupt(format!("fjall: {e}")),
        _ => StorageError::Fatal(format!("fjall: {e}")),
    }
}

impl Store {
    /// Opens (or creates) the store of a node whose data directory is
    /// `data_dir`: the engine the directory already holds, else `engine`,
    /// holding at most `memory` in its cache and memtables.
    pub fn open_in(
        data_dir: &Path,
        engine: Engine,
        memory: StoreMemory,
    ) -> Result<Store, OpenError> {
        let engine = Engine::of_dir(data_dir)
            .map_err(OpenError::Other)?
            .unwrap_or(engine);
        let dir = data_dir.join(engine.dir_name());
        if engine == Engine::Sled {
            discard_torn_sled_snapshots(&dir)?;
        }
        let sled_cfg = sled::Config::new().path(&dir);
        let backend = Backend::open(engine, sled_cfg, &dir, false, memory)?;
        Ok(Store {
            backend,
            dir: Some(dir),
            cipher: None,
            written: Default::default(),
        })
    }

    /// A store whose contents do not outlive it (the `--in-memory` mode and
    /// tests): the default engine in a temporary directory (on `/dev/shm`,
    /// memory, where it exists), removed when the last clone is dropped.
    pub fn temporary() -> Result<Store, StorageError> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Memory-backed where the system has it (as sled's temporary mode
        // is), so `--in-memory` writes no disk.
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        if n == 0 && DEFAULT_ENGINE == Engine::Fjall {
            remove_orphans(&base);
        }
        let dir = base.join(format!("dynaraft-mem-{}-{n}", std::process::id()));
        let sled_cfg = sled::Config::new().temporary(true);
        let backend = Backend::open(DEFAULT_ENGINE, sled_cfg, &dir, true, DEFAULT_MEMORY)?;
        Ok(Store {
            backend,
            dir: None,
            cipher: None,
            written: Default::default(),
        })
    }

    /// This store, sealing every value it writes and opening every value it
    /// reads with `ring` (set before anything is read or written).
    pub fn sealed_with(self, ring: Option<std::sync::Arc<crate::cipher::KeyRing>>) -> Store {
        Store {
            cipher: ring,
            ..self
        }
    }

    /// A value as read from the engine, opened if the store is sealed.
    fn opened(&self, v: Bytes) -> Result<Bytes, StorageError> {
        match &self.cipher {
            None => Ok(v),
            Some(ring) => Ok(Bytes::Opened(ring.open(&v)?.into())),
        }
    }

    /// `scan` with its values opened, if the store is sealed.
    fn opened_scan(&self, scan: Scan) -> Scan {
        match self.cipher.clone() {
            None => scan,
            Some(ring) => Box::new(scan.map(move |p| {
                let (k, v) = p?;
                Ok((k, Bytes::Opened(ring.open(&v)?.into())))
            })),
        }
    }

    /// The engine this store runs on.
    pub fn engine(&self) -> Engine {
        match self.backend {
            Backend::Sled { .. } => Engine::Sled,
            Backend::Fjall { .. } => Engine::Fjall,
        }
    }

    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>, StorageError> {
        let raw = match &self.backend {
            Backend::Sled { tree, .. } => tree.get(key)?.map(Bytes::Sled),
            Backend::Fjall { state, frozen, .. } => match frozen {
                None => state.get(key),
                Some(snap) => fjall::Readable::get(snap, state, key),
            }
            .map_err(fjall_err)?
            .map(Bytes::Fjall),
        };
        raw.map(|v| self.opened(v)).transpose()
    }

    /// The pairs with keys in `range`, in key order.
    pub fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Scan {
        let owned = |b: Bound<&K>| match b {
            Bound::Included(k) => Bound::Included(k.as_ref().to_vec()),
            Bound::Excluded(k) => Bound::Excluded(k.as_ref().to_vec()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let bounds = (owned(range.start_bound()), owned(range.end_bound()));
        let scan: Scan = match &self.backend {
            Backend::Sled { tree, .. } => Box::new(tree.range(bounds).map(sled_pair)),
            Backend::Fjall { state, frozen, .. } => match frozen {
                None => Box::new(state.range(bounds).map(fjall_pair)),
                Some(snap) => Box::new(fjall::Readable::range(snap, state, bounds).map(fjall_pair)),
            },
        };
        self.opened_scan(scan)
    }

    /// The pairs whose keys start with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> Scan {
        let scan: Scan = match &self.backend {
            Backend::Sled { tree, .. } => Box::new(tree.scan_prefix(prefix).map(sled_pair)),
            Backend::Fjall { state, frozen, .. } => match frozen {
                None => Box::new(state.prefix(prefix).map(fjall_pair)),
                Some(snap) => {
                    Box::new(fjall::Readable::prefix(snap, state, prefix).map(fjall_pair))
                }
            },
        };
        self.opened_scan(scan)
    }

    /// A read-only view of the store as it is now, which later writes do
    /// not change: every batch [`Store::apply`] committed before, none
    /// after, and no part of one. `None` where the engine has no
    /// snapshots (sled 0.34). Hold it only as long as a scan needs: the
    /// engine keeps the versions it sees until it is dropped.
    pub fn snapshot(&self) -> Option<Store> {
        match &self.backend {
            Backend::Sled { .. } => None,
            Backend::Fjall { db, state, .. } => Some(Store {
                backend: Backend::Fjall {
                    db: db.clone(),
                    state: state.clone(),
                    frozen: Some(db.snapshot()),
                },
                dir: None,
                cipher: self.cipher.clone(),
                written: Default::default(),
            }),
        }
    }

    /// Applies `batch` atomically.
    pub fn apply(&self, mut batch: Batch) -> Result<(), StorageError> {
        let bytes: usize = batch
            .0
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
            .sum();
        self.written
            .fetch_add(bytes as u64, std::sync::atomic::Ordering::Relaxed);
        if let Some(ring) = &self.cipher {
            for (_, v) in &mut batch.0 {
                if let Some(plain) = v {
                    *plain = ring.seal(plain)?;
                }
            }
        }
        match &self.backend {
            Backend::Sled { tree, .. } => {
                let mut b = sled::Batch::default();
                for (k, v) in batch.0 {
                    match v {
                        Some(v) => b.insert(k, v),
                        None => b.remove(k),
                    }
                }
                Ok(tree.apply_batch(b)?)
            }
            Backend::Fjall {
                frozen: Some(_), ..
            } => Err(StorageError::Fatal(
                "a write to a store snapshot, which is read-only".into(),
            )),
            Backend::Fjall { db, state, .. } => {
                let mut b = db.batch();
                for (k, v) in batch.0 {
                    match v {
                        Some(v) => b.insert(state, k, v),
                        None => b.remove(state, k),
                    }
                }
                b.commit().map_err(fjall_err)
            }
        }
    }

    /// Makes everything applied so far durable.
    pub fn flush_durably(&self) -> Result<(), StorageError> {
        match &self.backend {
            Backend::Sled { db, .. } => {
                db.flush()?;
                match &self.dir {
                    Some(dir) => fsync_tree(dir),
                    None => Ok(()),
                }
            }
            Backend::Fjall { db, .. } => db.persist(fjall::PersistMode::SyncAll).map_err(fjall_err),
        }
    }

    /// Bytes of keys and values [`Store::apply`] has written since the store
    /// opened.
    pub fn written_bytes(&self) -> u64 {
        self.written.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Bytes the engine's tables hold on disk, as it counts them (fjall:
    /// the tables and blob files of the state keyspace, not its journals,
    /// whose length counts space reserved and not written; sled: its files).
    pub fn table_bytes(&self) -> Result<u64, StorageError> {
        match &self.backend {
            Backend::Sled { db, .. } => Ok(db.size_on_disk()?),
            Backend::Fjall { state, .. } => Ok(state.disk_space()),
        }
    }

    /// What an idle node does to give disk back (blocking: call it off the
    /// async runtime). fjall seals its journal and flushes its memtable, so
    /// that journals whose writes are all in tables are deleted (otherwise
    /// an idle store kept up to two of about 64 MB each); with `merge` it
    /// then compacts the whole tree into its last level, which drops the
    /// versions that overwrites and deletes left behind and rewrites the
    /// blob files in which such versions are a quarter or more of the bytes.
    /// Writes go on meanwhile. sled has neither journal nor levels: nothing
    /// to do.
    pub fn compact_idle(&self, merge: bool) -> Result<(), StorageError> {
        let Backend::Fjall {
            db,
            state,
            frozen: None,
        } = &self.backend
        else {
            return Ok(());
        };
        db.seal_journal().map_err(fjall_err)?;
        state.rotate_memtable_and_wait().map_err(fjall_err)?;
        if merge {
            state.compact_fully().map_err(fjall_err)?;
        }
        Ok(())
    }

    /// Writes what is buffered, without waiting for the disk (shutdown).
    pub async fn flush_soon(&self) {
        match &self.backend {
            Backend::Sled { db, .. } => {
                let _ = db.flush_async().await;
            }
            Backend::Fjall { db, .. } => {
                let _ = db.persist(fjall::PersistMode::Buffer);
            }
        }
    }
}

/// Why a store (or the WAL) did not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another instance (another process, or one in this process still
    /// shutting down) holds it.
    #[error("the data directory is in use by another process (or an instance still closing)")]
    Locked,
    #[error(transparent)]
    Other(#[from] StorageError),
}

impl From<OpenError> for StorageError {
    fn from(e: OpenError) -> StorageError {
        match e {
            OpenError::Locked => StorageError::Fatal(e.to_string()),
            OpenError::Other(e) => e,
        }
    }
}

/// Removes the snapshot files sled began and never finished in `dir`.
///
/// sled 0.34 writes a snapshot to `snap.<lsn>.generating`, fsyncs it and
/// renames it to `snap.<lsn>`, but at start-up it reads the newest file
/// named `snap.*`, `.generating` ones included, and refuses to open when
/// that one is short or fails its checksum. A snapshot cut short (a crash,
/// or a full disk: a start attempted on a full disk left a 0-byte one)
/// would so keep the store from ever opening, although the snapshot is
/// only a cache of sled's log: without it sled uses the previous one or
/// scans the log. A `.generating` file that sled would refuse (its last 12
/// bytes are the length and the CRC-32 of what precedes them) is removed;
/// a complete one is kept, as sled would use it.
fn discard_torn_sled_snapshots(dir: &Path) -> Result<(), StorageError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(()); // a new store
    };
    for e in entries {
        let path = e?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("snap.")
            && name.ends_with(".generating")
            && !sled_snapshot_is_whole(&std::fs::read(&path)?)
        {
            tracing::warn!(file = %path.display(), "removing a snapshot sled did not finish writing");
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// Whether `bytes` end with their length (8 bytes) and the CRC-32 (4 bytes,
/// little-endian) of the bytes before those 12, as sled checks a snapshot.
fn sled_snapshot_is_whole(bytes: &[u8]) -> bool {
    const TRAILER_BYTES: usize = 12;
    let Some(body_len) = bytes.len().checked_sub(TRAILER_BYTES).filter(|n| *n > 0) else {
        return false;
    };
    let (body, trailer) = bytes.split_at(body_len);
    let crc = trailer
        .get(8..12)
        .and_then(|c| <[u8; 4]>::try_from(c).ok())
        .map(u32::from_le_bytes);
    crc == Some(crc32fast::hash(body))
}

/// Removes the temporary stores of processes that no longer run (killed
/// before they could drop them): on `/dev/shm` they would hold memory.
fn remove_orphans(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.strip_prefix("dynaraft-mem-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = pid
            && pid != std::process::id()
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn sled_pair(kv: sled::Result<(sled::IVec, sled::IVec)>) -> Pair {
    let (k, v) = kv?;
    Ok((Bytes::Sled(k), Bytes::Sled(v)))
}

fn fjall_pair(guard: fjall::Guard) -> Pair {
    let (k, v) = guard.into_inner().map_err(fjall_err)?;
    Ok((Bytes::Fjall(k), Bytes::Fjall(v)))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot reads the store as of when it was taken, sees none of
    /// a later batch, and refuses writes.
    #[test]
    fn a_snapshot_does_not_see_later_batches() {
        let store = Store::temporary().unwrap();
        let mut b = Batch::default();
        b.insert(b"a".to_vec(), b"1".to_vec());
        store.apply(b).unwrap();
        let snap = store.snapshot().expect("fjall has snapshots");
        let mut b = Batch::default();
        b.insert(b"a".to_vec(), b"2".to_vec());
        b.insert(b"b".to_vec(), b"2".to_vec());
        store.apply(b).unwrap();
        assert_eq!(snap.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(snap.get(b"b").unwrap().as_deref(), None);
        assert_eq!(snap.range::<Vec<u8>, _>(..).count(), 1);
        assert_eq!(snap.scan_prefix(b"").count(), 1);
        assert_eq!(store.range::<Vec<u8>, _>(..).count(), 2);
        assert!(snap.apply(Batch::default()).is_err());
    }

    /// Values from [`SEPARATED_VALUE_BYTES`] on go to blob files when the
    /// memtable is flushed, smaller ones stay in the tree, and every read
    /// (point, range, snapshot) returns each whole, before and after a
    /// reopen.
    #[test]
    fn long_values_are_kept_apart_and_read_back_whole() {
        let dir = std::env::temp_dir().join(format!("dynaraft-kv-blobs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let threshold = SEPARATED_VALUE_BYTES as usize;
        let sizes = [1, threshold - 1, threshold, 4096, 100_000];
        let value =
            |i: usize, n: usize| -> Vec<u8> { (0..n).map(|j| (i * 31 + j * 7) as u8).collect() };
        let check = |store: &Store| {
            for (i, n) in sizes.iter().enumerate() {
                let got = store.get(format!("k{i}").as_bytes()).unwrap().unwrap();
                assert_eq!(&*got, &value(i, *n)[..], "k{i} of {n} bytes");
            }
            let all: Vec<usize> = store
                .range::<Vec<u8>, _>(..)
                .map(|p| p.unwrap().1.len())
                .collect();
            assert_eq!(all, sizes);
            let snap = store.snapshot().expect("fjall has snapshots");
            let back: Vec<usize> = snap
                .scan_prefix(b"k")
                .rev()
                .map(|p| p.unwrap().1.len())
                .collect();
            assert_eq!(back, sizes.iter().rev().copied().collect::<Vec<_>>());
        };
        let blob_files = || {
            std::fs::read_dir(dir.join("fjall/keyspaces"))
                .unwrap()
                .filter_map(|k| std::fs::read_dir(k.unwrap().path().join("blobs")).ok())
                .flatten()
                .count()
        };
        {
            let store = Store::open_in(&dir, Engine::Fjall, DEFAULT_MEMORY).unwrap();
            let mut b = Batch::default();
            for (i, n) in sizes.iter().enumerate() {
                b.insert(format!("k{i}"), value(i, *n));
            }
            store.apply(b).unwrap();
            check(&store);
            let Backend::Fjall { state, .. } = &store.backend else {
                panic!("not fjall")
            };
            state.rotate_memtable_and_wait().unwrap();
            store.flush_durably().unwrap();
            check(&store);
        }
        assert!(blob_files() > 0, "no blob file after a flush");
        let store = Store::open_in(&dir, Engine::Fjall, DEFAULT_MEMORY).unwrap();
        check(&store);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The memtable size follows the memory budget each start is given, not
    /// the one the directory was created with.
    #[test]
    fn each_start_sets_the_memtable_size() {
        let dir = std::env::temp_dir().join(format!("dynaraft-kv-memtable-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let memtable_of = |memtable_bytes: u64| {
            let memory = StoreMemory {
                memtable_bytes,
                ..DEFAULT_MEMORY
            };
            let store = Store::open_in(&dir, Engine::Fjall, memory).unwrap();
            let Backend::Fjall { state, .. } = &store.backend else {
                panic!("not fjall")
            };
            state.max_memtable_size()
        };
        assert_eq!(memtable_of(64 << 20), 64 << 20);
        assert_eq!(memtable_of(8 << 20), 8 << 20);
        assert_eq!(memtable_of(32 << 20), 32 << 20);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A folder in fjall's keyspaces folder whose name is no keyspace id
    /// (left there by hand) is passed over at start-up; the published fjall
    /// panicked on it.
    #[test]
    fn a_stray_folder_among_the_keyspaces_is_passed_over() {
        let dir = std::env::temp_dir().join(format!("dynaraft-kv-stray-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let store = Store::open_in(&dir, Engine::Fjall, DEFAULT_MEMORY).unwrap();
            let mut b = Batch::default();
            b.insert(b"a".to_vec(), b"1".to_vec());
            store.apply(b).unwrap();
            store.flush_durably().unwrap();
        }
        std::fs::create_dir_all(dir.join("fjall/keyspaces/not-a-keyspace")).unwrap();
        let store = Store::open_in(&dir, Engine::Fjall, DEFAULT_MEMORY).unwrap();
        assert_eq!(store.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A sealed store reads back what was written, through every read, and
    /// what the engine holds is sealed (an unsealed view sees no value).
    #[test]
    fn a_sealed_store_seals_values_and_opens_them_on_every_read() {
        let ring = std::sync::Arc::new(
            crate::cipher::KeyRing::parse(&"42".repeat(crate::cipher::KEY_BYTES)).unwrap(),
        );
        let raw = Store::temporary().unwrap();
        let sealed = raw.clone().sealed_with(Some(ring));
        let mut b = Batch::default();
        b.insert(b"a".to_vec(), b"value one".to_vec());
        b.insert(b"b".to_vec(), b"value two".to_vec());
        sealed.apply(b).unwrap();
        assert_eq!(&*sealed.get(b"a").unwrap().unwrap(), b"value one");
        let all: Vec<Vec<u8>> = sealed
            .range::<&[u8], _>(..)
            .map(|p| p.unwrap().1.to_vec())
            .collect();
        assert_eq!(all, vec![b"value one".to_vec(), b"value two".to_vec()]);
        let back: Vec<Vec<u8>> = sealed
            .scan_prefix(b"b")
            .rev()
            .map(|p| p.unwrap().1.to_vec())
            .collect();
        assert_eq!(back, vec![b"value two".to_vec()]);
        let stored = raw.get(b"a").unwrap().unwrap();
        assert_eq!(stored[0], crate::cipher::SEALED_MAGIC);
        assert!(!stored.windows(5).any(|w| w == b"value"));
        // A plaintext value under a sealed store is corruption, not data.
        let mut plain = Batch::default();
        plain.insert(b"c".to_vec(), b"plain".to_vec());
        raw.apply(plain).unwrap();
        assert!(matches!(sealed.get(b"c"), Err(StorageError::Corrupt(_))));
    }

    /// Both engines answer the facade alike: batches, point reads, ranges
    /// both ways, prefixes, deletes, and reopening after a durable flush.
    #[test]
    fn both_engines_behave_alike() {
        for engine in [Engine::Sled, Engine::Fjall] {
            let dir = std::env::temp_dir().join(format!(
                "dynaraft-kv-{}-{}",
                engine.dir_name(),
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            {
                let store = Store::open_in(&dir, engine, DEFAULT_MEMORY).expect("open");
                assert_eq!(store.engine(), engine);
                let mut b = Batch::default();
                for k in [b"a1", b"a2", b"a3", b"b1"] {
                    b.insert(k.to_vec(), k.to_vec());
                }
                store.apply(b).unwrap();
                let mut b = Batch::default();
                b.remove(b"a2".to_vec());
                store.apply(b).unwrap();
                assert_eq!(store.get(b"a1").unwrap().as_deref(), Some(&b"a1"[..]));
                assert_eq!(store.get(b"a2").unwrap(), None);
                let keys = |s: Scan| -> Vec<Vec<u8>> { s.map(|p| p.unwrap().0.to_vec()).collect() };
                assert_eq!(
                    keys(store.scan_prefix(b"a")),
                    [b"a1".to_vec(), b"a3".to_vec()]
                );
                assert_eq!(
                    keys(store.range(b"a2".to_vec()..=b"b1".to_vec())),
                    [b"a3".to_vec(), b"b1".to_vec()]
                );
                let rev: Vec<Vec<u8>> = store
                    .range::<Vec<u8>, _>(..)
                    .rev()
                    .map(|p| p.unwrap().0.to_vec())
                    .collect();
                assert_eq!(rev, [b"b1".to_vec(), b"a3".to_vec(), b"a1".to_vec()]);
                store.flush_durably().unwrap();
            }
            // The directory keeps its engine whatever is asked for next.
            let other = if engine == Engine::Sled {
                Engine::Fjall
            } else {
                Engine::Sled
            };
            let store = open_when_unlocked(&dir, other);
            assert_eq!(store.engine(), engine);
            assert_eq!(store.get(b"a3").unwrap().as_deref(), Some(&b"a3"[..]));
            drop(store);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    /// Bytes of the files under `dir` whose name passes `keep`, and how
    /// many there are. fjall deletes files on threads of its own, so one
    /// listed may be gone when it is looked at: it counts as gone.
    fn files_under(dir: &Path, keep: &dyn Fn(&Path) -> bool) -> (u64, usize) {
        let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
        let mut total = (0, 0);
        let entries = match std::fs::read_dir(dir) {
            Err(e) if gone(&e) => return total,
            listed => listed.unwrap(),
        };
        for e in entries {
            let p = e.unwrap().path();
            let meta = match p.metadata() {
                Err(e) if gone(&e) => continue,
                found => found.unwrap(),
            };
            if meta.is_dir() {
                let (b, n) = files_under(&p, keep);
                total = (total.0 + b, total.1 + n);
            } else if keep(&p) {
                total = (total.0 + meta.len(), total.1 + 1);
            }
        }
        total
    }

    /// After overwrites, an idle compaction leaves one journal (the new,
    /// empty one) and about one copy of each live value: the sealed
    /// journals, the versions overwritten and the blob files holding them
    /// are gone, and every key reads its last value.
    #[test]
    fn an_idle_compaction_gives_the_disk_back() {
        let dir = std::env::temp_dir().join(format!("dynaraft-kv-idle-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        const KEYS: usize = 200;
        const ROUNDS: usize = 5;
        const VALUE_BYTES: usize = 2048;
        // Bytes that do not compress, so what is on disk is what was written.
        let value = |k: usize, round: usize| -> Vec<u8> {
            let mut x = ((k * ROUNDS + round + 1) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            (0..VALUE_BYTES)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect()
        };
        let store = Store::open_in(&dir, Engine::Fjall, DEFAULT_MEMORY).unwrap();
        let Backend::Fjall { state, .. } = &store.backend else {
            panic!("not fjall")
        };
        for round in 0..ROUNDS {
            let mut b = Batch::default();
            for k in 0..KEYS {
                b.insert(format!("k{k:04}"), value(k, round));
            }
            store.apply(b).unwrap();
            state.rotate_memtable_and_wait().unwrap();
        }
        let live = (KEYS * VALUE_BYTES) as u64;
        let journal = |p: &Path| p.extension().is_some_and(|e| e == "jnl");
        let fjall = dir.join("fjall");
        let (before, _) = files_under(&fjall, &|p| !journal(p));
        assert!(
            before >= live * 4,
            "{before} bytes before: the overwrites are on disk"
        );
        assert!(store.written_bytes() >= live * ROUNDS as u64);

        store.compact_idle(true).unwrap();
        // Files only older versions used go once those are dropped, on a
        // thread of their own.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let after = loop {
            let (after, _) = files_under(&fjall, &|p| !journal(p));
            if after < live * 2 || std::time::Instant::now() > deadline {
                break after;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert!(after < live * 2, "{after} bytes for {live} live");
        let (_, journals) = files_under(&fjall, &journal);
        assert_eq!(journals, 1, "only the active journal is left");
        for k in 0..KEYS {
            let got = store.get(format!("k{k:04}")).unwrap().unwrap();
            assert_eq!(&*got, &value(k, ROUNDS - 1)[..], "k{k}");
        }
        drop(store);
        let store = Store::open_in(&dir, Engine::Fjall, DEFAULT_MEMORY).unwrap();
        assert_eq!(store.range::<Vec<u8>, _>(..).count(), KEYS);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// `attempt`'s first outcome that is not `locked`, trying again (for up to
/// 2 s) while the threads of a store just dropped still hold its lock.
#[cfg(test)]
fn when_unlocked<T, E>(
    mut attempt: impl FnMut() -> Result<T, E>,
    locked: impl Fn(&E) -> bool,
) -> Result<T, E> {
    for _ in 0..100 {
        match attempt() {
            Err(e) if locked(&e) => std::thread::sleep(std::time::Duration::from_millis(20)),
            outcome => return outcome,
        }
    }
    attempt()
}

/// Opens the store in `dir` once a store just dropped has let go of it.
#[cfg(test)]
fn open_when_unlocked(dir: &Path, engine: Engine) -> Store {
    match when_unlocked(
        || Store::open_in(dir, engine, DEFAULT_MEMORY),
        |e| matches!(e, OpenError::Locked),
    ) {
        Ok(s) => s,
        Err(e) => panic!("{} did not open: {e}", dir.display()),
    }
}

#[cfg(test)]
mod torn_snapshot_tests {
    use super::*;

    /// A snapshot sled began and never finished (here 0 bytes, as a start
    /// on a full disk left one) no longer keeps the store from opening; a
    /// finished `.generating` one (crash between fsync and rename) is kept.
    #[test]
    fn a_torn_sled_snapshot_is_discarded_and_a_whole_one_kept() {
        let dir = std::env::temp_dir().join(format!("dynaraft-kv-snap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let store = Store::open_in(&dir, Engine::Sled, DEFAULT_MEMORY).expect("open");
            let mut b = Batch::default();
            b.insert(b"k".to_vec(), b"v".to_vec());
            store.apply(b).unwrap();
            store.flush_durably().unwrap();
        }
        let torn = dir.join("sled").join("snap.FFFFFFFFFFFFFFFF.generating");
        std::fs::write(&torn, b"").unwrap();
        // What sled alone does with it: refuses to open, for the snapshot
        // (not for the lock the dropped store's threads may still hold).
        let refused = when_unlocked(
            || sled::Config::new().path(dir.join("sled")).open(),
            sled_lock_held,
        );
        assert!(
            refused.as_ref().is_err_and(|e| !sled_lock_held(e)),
            "sled 0.34 refuses a torn .generating snapshot"
        );
        drop(refused);
        let store = open_when_unlocked(&dir, Engine::Sled);
        assert_eq!(store.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
        assert!(!torn.exists());
        drop(store);

        let mut whole = b"snapshot body".to_vec();
        let crc = crc32fast::hash(&whole);
        whole.extend_from_slice(&13u64.to_le_bytes());
        whole.extend_from_slice(&crc.to_le_bytes());
        assert!(sled_snapshot_is_whole(&whole));
        whole[0] ^= 1;
        assert!(!sled_snapshot_is_whole(&whole));
        assert!(!sled_snapshot_is_whole(&whole[..12]));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
