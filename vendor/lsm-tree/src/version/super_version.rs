// Copyright (c) 2024-present, fjall-rs
// This source code is licensed under both the Apache 2.0 and MIT License
// (found in the LICENSE-* files in the repository)

use crate::{
    memtable::Memtable,
    tree::sealed::SealedMemtables,
    version::{persist_version, Version},
    SeqNo, SequenceNumberCounter,
};
use std::{
    collections::VecDeque,
    path::Path,
    sync::{
        mpsc::{sync_channel, SyncSender},
        Arc, OnceLock, RwLock,
    },
};

/// A super version is a point-in-time snapshot of memtables and a [`Version`] (list of disk files)
#[derive(Clone)]
pub struct SuperVersion {
    /// Active memtable that is being written to
    #[doc(hidden)]
    pub active_memtable: Arc<Memtable>,

    /// Frozen memtables that are being flushed
    pub(crate) sealed_memtables: Arc<SealedMemtables>,

    /// Current tree version
    pub(crate) version: Version,

    pub(crate) seqno: SeqNo,
}

/// The history of super versions, oldest first, and (dynaraft patch) a
/// copy of the newest one that readers and writers of the active memtable
/// take without the history's lock (see `latest_handle`).
pub struct SuperVersions(VecDeque<SuperVersion>, Arc<RwLock<SuperVersion>>);

/// Batches of retired versions the dropping thread may hold before
/// `retire` drops them in place again (dynaraft patch). Each may hold a
/// flushed memtable, so this bounds the memory waiting to be freed.
const RETIRED_QUEUE_BATCHES: usize = 4;

/// The thread that drops retired versions, started by the first tree
/// opened (dynaraft patch). A thread inherits its creator's CPU priority,
/// and fjall's workers, which retire most versions, run at nice 19: started
/// from one of them, the dropping thread fell behind a busy node and the
/// memtables waiting for it grew the resident set past its budget. So
/// `SuperVersions::new`, which runs on the thread opening a tree, starts it.
fn retirer() -> Option<&'static SyncSender<Vec<SuperVersion>>> {
    static RETIRER: OnceLock<Option<SyncSender<Vec<SuperVersion>>>> = OnceLock::new();

    RETIRER
        .get_or_init(|| {
            let (tx, rx) = sync_channel::<Vec<SuperVersion>>(RETIRED_QUEUE_BATCHES);
            std::thread::Builder::new()
                .name("lsm-retire".into())
                .spawn(move || {
                    for batch in rx {
                        drop(batch);
                    }
                })
                .ok()
                .map(|_| tx)
        })
        .as_ref()
}

/// Drops versions removed from the history on a thread of its own
/// (dynaraft patch).
///
/// The last reference to a flushed memtable is usually an old super
/// version, so dropping one frees the memtable's skiplist: tens of
/// megabytes of small allocations, measured at 14-84 ms. `maintenance`
/// runs under the tree's version-history write lock, which every read
/// took, so that drop stalled every reader of the tree for as long.
/// Dropping elsewhere keeps the lock's hold to the bookkeeping. Should the
/// thread fall behind (or fail to start), the versions are dropped here as
/// before.
fn retire(versions: Vec<SuperVersion>) {
    if versions.is_empty() {
        return;
    }

    let Some(tx) = retirer() else {
        return drop(versions);
    };

    // Full or gone: drop in place, as the unpatched crate does.
    if let Err(e) = tx.try_send(versions) {
        drop(e);
    }
}

impl SuperVersions {
    pub fn new(version: Version) -> Self {
        // dynaraft patch: start the dropping thread from the opener's thread
        // (`retirer`).
        let _ = retirer();

        let first = SuperVersion {
            active_memtable: Arc::new(Memtable::new(0)),
            sealed_memtables: Arc::default(),
            version,
            seqno: 0,
        };
        let latest = Arc::new(RwLock::new(first.clone()));
        Self(vec![first].into(), latest)
    }

    #[cfg(test)]
    fn from_history(history: VecDeque<SuperVersion>) -> Self {
        #[expect(clippy::expect_used, reason = "tests build non-empty histories")]
        let latest = history.back().cloned().expect("history is not empty");
        Self(history, Arc::new(RwLock::new(latest)))
    }

    /// The newest super version, kept apart from the history (dynaraft
    /// patch).
    ///
    /// Every point read and every write to the active memtable used to
    /// take the history's read lock, and a flush or compaction holds its
    /// write lock while it persists the new version (three fsyncs: 26-40
    /// ms measured under load); one such install stalled every reader and,
    /// through the journal lock a write batch holds while it inserts, every
    /// writer. This copy is replaced whenever the history's newest entry
    /// changes, under the history's write lock, before the new version's
    /// sequence number becomes visible, so a reader whose snapshot is newer
    /// than the copy's sequence number may use it: it is what
    /// `get_version_for_snapshot` would return. Older snapshots still
    /// search the history.
    pub(crate) fn latest_handle(&self) -> Arc<RwLock<SuperVersion>> {
        self.1.clone()
    }

    fn publish_latest(&self) {
        if let Some(latest) = self.0.back() {
            #[expect(clippy::expect_used, reason = "lock is expected to not be poisoned")]
            let mut copy = self.1.write().expect("lock is poisoned");
            *copy = latest.clone();
        }
    }

    pub fn memtable_size_sum(&self) -> u64 {
        let mut set = crate::HashMap::default();

        for super_version in &self.0 {
            set.entry(super_version.active_memtable.id)
                .and_modify(|bytes| *bytes += super_version.active_memtable.size())
                .or_insert_with(|| super_version.active_memtable.size());

            for sealed in super_version.sealed_memtables.iter() {
                set.entry(sealed.id)
                    .and_modify(|bytes| *bytes += sealed.size())
                    .or_insert_with(|| sealed.size());
            }
        }

        set.into_values().sum()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn free_list_len(&self) -> usize {
        self.len().saturating_sub(1)
    }

    pub fn maintenance(&mut self, folder: &Path, gc_watermark: SeqNo) -> crate::Result<()> {
        if gc_watermark == 0 {
            return Ok(());
        }

        if self.free_list_len() < 1 {
            return Ok(());
        }

        log::trace!("Running manifest GC with watermark={gc_watermark}");

        // dynaraft patch: the versions removed here are dropped by `retire`
        // on a thread of its own, not here under the caller's version lock.
        let mut retired = Vec::new();

        if let Some(hi_idx) = self.0.iter().rposition(|x| x.seqno < gc_watermark) {
            for _ in 0..hi_idx {
                let Some(head) = self.0.front() else {
                    break;
                };

                log::trace!(
                    "Removing version #{} (seqno={})",
                    head.version.id(),
                    head.seqno,
                );

                let path = folder.join(format!("v{}", head.version.id()));
                if path.try_exists()? {
                    crate::file::retry_transient_io(|| std::fs::remove_file(&path))?;
                }

                retired.extend(self.0.pop_front());
            }
        }

        retire(retired);

        log::trace!("Manifest GC done, version length now {}", self.0.len());

        Ok(())
    }

    /// Modifies the level manifest atomically.
    ///
    /// The function accepts a transition function that receives the current version
    /// and returns a new version.
    ///
    /// The function takes care of persisting the version changes on disk.
    pub(crate) fn upgrade_version<F: FnOnce(&SuperVersion) -> crate::Result<SuperVersion>>(
        &mut self,
        tree_path: &Path,
        f: F,
        seqno: &SequenceNumberCounter,
        visible_seqno: &SequenceNumberCounter,
    ) -> crate::Result<()> {
        self.upgrade_version_with_seqno(tree_path, f, seqno.next(), visible_seqno)
    }

    /// Like `upgrade_version`, but takes an already-allocated sequence number.
    ///
    /// This is useful when the seqno must be coordinated with other operations
    /// (e.g., bulk ingestion where tables are recovered with the same seqno).
    pub(crate) fn upgrade_version_with_seqno<
        F: FnOnce(&SuperVersion) -> crate::Result<SuperVersion>,
    >(
        &mut self,
        tree_path: &Path,
        f: F,
        seqno: SeqNo,
        visible_seqno: &SequenceNumberCounter,
    ) -> crate::Result<()> {
        let mut next_version = f(&self.latest_version())?;
        next_version.seqno = seqno;
        log::trace!("Next version seqno={}", next_version.seqno);

        persist_version(tree_path, &next_version.version)?;
        self.append_version(next_version);

        visible_seqno.fetch_max(seqno + 1);

        Ok(())
    }

    pub fn append_version(&mut self, version: SuperVersion) {
        self.0.push_back(version);
        self.publish_latest();
    }

    pub fn replace_latest_version(&mut self, version: SuperVersion) {
        if self.0.pop_back().is_some() {
            self.0.push_back(version);
            self.publish_latest();
        }
    }

    pub fn latest_version(&self) -> SuperVersion {
        #[expect(clippy::expect_used, reason = "SuperVersion is expected to exist")]
        self.0
            .iter()
            .last()
            .cloned()
            .expect("should always have a SuperVersion")
    }

    pub fn get_version_for_snapshot(&self, seqno: SeqNo) -> SuperVersion {
        if seqno == 0 {
            #[expect(clippy::expect_used, reason = "SuperVersion is expected to exist")]
            return self
                .0
                .front()
                .cloned()
                .expect("should always find a SuperVersion");
        }

        let version = self
            .0
            .iter()
            .rev()
            .find(|version| version.seqno < seqno)
            .cloned();

        if version.is_none() {
            log::error!("Failed to find a SuperVersion for snapshot with seqno={seqno}");
            log::error!("SuperVersions:");

            for version in self.0.iter().rev() {
                log::error!("-> {}, seqno={}", version.version.id(), version.seqno);
            }
        }

        #[expect(clippy::expect_used, reason = "SuperVersion is expected to exist")]
        version.expect("should always find a SuperVersion")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_log::test;

    #[test]
    fn super_version_gc_above_watermark() -> crate::Result<()> {
        let mut history = SuperVersions::from_history(
            vec![
                SuperVersion {
                    active_memtable: Arc::new(Memtable::new(0)),
                    sealed_memtables: Arc::default(),
                    version: Version::new(0, crate::TreeType::Standard),
                    seqno: 0,
                },
                SuperVersion {
                    active_memtable: Arc::new(Memtable::new(0)),
                    sealed_memtables: Arc::default(),
                    version: Version::new(0, crate::TreeType::Standard),
                    seqno: 1,
                },
                SuperVersion {
                    active_memtable: Arc::new(Memtable::new(0)),
                    sealed_memtables: Arc::default(),
                    version: Version::new(0, crate::TreeType::Standard),
                    seqno: 2,
                },
            ]
            .into(),
        );

        history.maintenance(Path::new("."), 0)?;

        assert_eq!(history.free_list_len(), 2);

        Ok(())
    }

    #[test]
    fn super_version_gc_below_watermark_simple() -> crate::Result<()> {
        let mut history = SuperVersions::from_history(
            vec![
                SuperVersion {
                    active_memtable: Arc::new(Memtable::new(0)),
                    sealed_memtables: Arc::default(),
                    version: Version::new(0, crate::TreeType::Standard),
                    seqno: 0,
                },
                SuperVersion {
                    active_memtable: Arc::new(Memtable::new(0)),
                    sealed_memtables: Arc::default(),
                    version: Version::new(0, crate::TreeType::Standard),
                    seqno: 1,
                },
                SuperVersion {
                    active_memtable: Arc::new(Memtable::new(0)),
                    sealed_memtables: Arc::default(),
                    version: Version::new(0, crate::TreeType::Standard),
                    seqno: 2,
                },
            ]
            .into(),
        );

        history.maintenance(Path::new("."), 3)?;

        assert_eq!(history.len(), 1);

        Ok(())
    }

    #[test]
    fn super_version_gc_below_watermark_simple_2() -> crate::Result<()> {
        let mut history = SuperVersions::from_history(
            vec![
                SuperVersion {
                    active_memtable: Arc::new(Memtable::new(0)),
                    sealed_memtables: Arc::default(),
                    version: Version::new(0, crate::TreeType::Standard),
                    seqno: 0,
                },
                SuperVersion {
                    active_memtable: Arc::new(Memtable::new(0)),
                    sealed_memtables: Arc::default(),
                    version: Version::new(0, crate::TreeType::Standard),
                    seqno: 1,
                },
                SuperVersion {
                    active_memtable: Arc::new(Memtable::new(0)),
                    sealed_memtables: Arc::default(),
                    version: Version::new(0, crate::TreeType::Standard),
                    seqno: 2,
                },
                SuperVersion {
                    active_memtable: Arc::new(Memtable::new(0)),
                    sealed_memtables: Arc::default(),
                    version: Version::new(0, crate::TreeType::Standard),
                    seqno: 8,
                },
            ]
            .into(),
        );

        history.maintenance(Path::new("."), 3)?;

        assert_eq!(history.len(), 2);

        Ok(())
    }

    #[test]
    fn super_version_gc_below_watermark_keep() -> crate::Result<()> {
        let mut history = SuperVersions::from_history(
            vec![
                SuperVersion {
                    active_memtable: Arc::new(Memtable::new(0)),
                    sealed_memtables: Arc::default(),
                    version: Version::new(0, crate::TreeType::Standard),
                    seqno: 0,
                },
                SuperVersion {
                    active_memtable: Arc::new(Memtable::new(0)),
                    sealed_memtables: Arc::default(),
                    version: Version::new(0, crate::TreeType::Standard),
                    seqno: 8,
                },
            ]
            .into(),
        );

        history.maintenance(Path::new("."), 3)?;

        assert_eq!(history.len(), 2);

        Ok(())
    }

    #[test]
    fn super_version_gc_below_watermark_shadowed() -> crate::Result<()> {
        let mut history = SuperVersions::from_history(
            vec![
                SuperVersion {
                    active_memtable: Arc::new(Memtable::new(0)),
                    sealed_memtables: Arc::default(),
                    version: Version::new(0, crate::TreeType::Standard),
                    seqno: 0,
                },
                SuperVersion {
                    active_memtable: Arc::new(Memtable::new(0)),
                    sealed_memtables: Arc::default(),
                    version: Version::new(0, crate::TreeType::Standard),
                    seqno: 2,
                },
            ]
            .into(),
        );

        history.maintenance(Path::new("."), 3)?;

        assert_eq!(history.len(), 1);

        Ok(())
    }
}
