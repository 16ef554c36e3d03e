//! Raft log storage on the node's shared write-ahead log.
//!
//! Every group's log lives in the one WAL of the node (group commit, one
//! fdatasync per batch across all groups). Records are typed by their first
//! payload byte: an entry, a truncation or a purge. Each group keeps the
//! unpurged tail of its log in memory for replication and apply; at startup
//! [`LogSet::recover`] rebuilds those tails by replaying the WAL in order.
//!
//! Purges free memory at once; their WAL records are written in the
//! background once sled is durable (see [`crate::purger`]).
//!
//! Votes are not WAL records: checkpoints delete old segments, and the
//! latest vote must outlive them. They live in a small file rewritten
//! atomically (write, fsync, rename, fsync the directory) on every vote,
//! which happens only at elections.

use crate::io_err;
pub use crate::purger::DurableFlush;
use crate::purger::{Purger, purge_record};
use crate::types::{LogEntry, LogId, TypeConfig, Vote};
use dynaraft_storage::wal::{Wal, WalRecord};
use openraft::LogState;
use openraft::storage::{IOFlushed, RaftLogReader, RaftLogStorage};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

const KIND_ENTRY: u8 = 1;
const KIND_TRUNCATE: u8 = 2;
pub(crate) const KIND_PURGE: u8 = 3;
/// The group left this node: recovery forgets everything logged before.
const KIND_REMOVE: u8 = 4;

/// Purged entries freed at a time by [`free_gradually`].
const FREE_CHUNK_ENTRIES: usize = 64;
/// Pause between two chunks, in milliseconds (tokio's timer resolution).
const FREE_CHUNK_INTERVAL_MS: u64 = 1;

/// Frees purged entries a chunk at a time, pausing in between. A purge
/// drops thousands of entries whose memory has gone cold. Freed at one go,
/// on any thread, they took a core for 10-20 ms after every snapshot (once
/// a second at 5k writes/s, when each entry was still dozens of small
/// allocations), and every request in the process queued behind it.
/// Paced, the cost is the same but spread out; 64 entries a millisecond
/// keeps ahead of any purge rate a group reaches.
async fn free_gradually(purged: BTreeMap<u64, LogEntry>) {
    let mut entries = purged.into_values();
    while entries.by_ref().take(FREE_CHUNK_ENTRIES).count() == FREE_CHUNK_ENTRIES {
        tokio::time::sleep(std::time::Duration::from_millis(FREE_CHUNK_INTERVAL_MS)).await;
    }
}

/// The unpurged tail of one group's log.
#[derive(Debug, Default)]
pub struct GroupLog {
    last_purged: Option<LogId>,
    entries: BTreeMap<u64, LogEntry>,
    /// Encoded size of each entry in `entries`, in bytes.
    sizes: BTreeMap<u64, u64>,
    /// Sum of `sizes`: what the tail holds in memory and in the WAL.
    bytes: u64,
}

impl GroupLog {
    fn insert(&mut self, entry: LogEntry, size_bytes: u64) {
        let index = entry.log_id.index;
        self.entries.insert(index, entry);
        if let Some(old) = self.sizes.insert(index, size_bytes) {
            self.bytes -= old;
        }
        self.bytes += size_bytes;
    }

    /// Drops the sizes from `index` on from the byte count.
    fn forget_sizes_from(&mut self, index: u64) {
        let gone = self.sizes.split_off(&index);
        self.bytes -= gone.values().sum::<u64>();
    }

    fn truncate_after(&mut self, last: Option<&LogId>) {
        let from = last.map_or(0, |l| l.index + 1);
        self.entries.split_off(&from);
        self.forget_sizes_from(from);
    }

    /// Forgets entries up to `upto`; returns them, for the caller to drop
    /// outside the lock (thousands of entries take milliseconds to free).
    fn purge(&mut self, upto: &LogId) -> BTreeMap<u64, LogEntry> {
        let kept = self.entries.split_off(&(upto.index + 1));
        let kept_sizes = self.sizes.split_off(&(upto.index + 1));
        self.bytes = kept_sizes.values().sum();
        self.sizes = kept_sizes;
        self.last_purged = Some(*upto);
        std::mem::replace(&mut self.entries, kept)
    }
}

/// Votes of every group on the node, persisted in one small file.
#[derive(Clone)]
pub struct VoteFile {
    path: Option<PathBuf>,
    votes: Arc<Mutex<BTreeMap<u64, Vote>>>,
    /// Held across a rewrite: one writer at a time, so two groups' votes
    /// never race on the temporary file and a newer file is never
    /// overwritten by an older one.
    writing: Arc<tokio::sync::Mutex<()>>,
}

impl VoteFile {
    /// Loads (or starts) the vote file; `None` keeps votes in memory only.
    pub fn open(path: Option<PathBuf>) -> io::Result<VoteFile> {
        let votes = match &path {
            Some(p) if p.exists() => {
                let bytes = std::fs::read(p)?;
                serde_json::from_slice(&bytes)
                    .map_err(|e| io_err(format!("corrupt vote file {}: {e}", p.display())))?
            }
            _ => BTreeMap::new(),
        };
        Ok(VoteFile {
            path,
            votes: Arc::new(Mutex::new(votes)),
            writing: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    fn get(&self, group: u64) -> Option<Vote> {
        self.votes.lock().ok().and_then(|v| v.get(&group).cloned())
    }

    async fn save(&self, group: u64, vote: Vote) -> io::Result<()> {
        self.rewrite(|votes| {
            votes.insert(group, vote);
        })
        .await
    }

    async fn remove(&self, group: u64) -> io::Result<()> {
        self.rewrite(|votes| {
            votes.remove(&group);
        })
        .await
    }

    /// Changes the votes in memory, then rewrites the file atomically.
    async fn rewrite(&self, change: impl FnOnce(&mut BTreeMap<u64, Vote>)) -> io::Result<()> {
        let _writing = self.writing.lock().await;
        let snapshot = {
            let mut votes = self
                .votes
                .lock()
                .map_err(|_| io_err("vote lock poisoned"))?;
            change(&mut votes);
            serde_json::to_vec(&*votes).map_err(io_err)?
        };
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, &snapshot)?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            if let Some(dir) = path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok::<(), io::Error>(())
        })
        .await
        .map_err(io_err)?
    }
}

/// What [`LogSet::relog_purges`] wrote, and so what a WAL checkpoint run
/// after it may delete.
#[derive(Debug)]
pub struct Relogged {
    /// Each group with a log here and the purge index re-logged for it
    /// (0: no durable purge yet, nothing of it may go).
    pub points: BTreeMap<u64, u64>,
    /// The newest segment closed before the records were queued; `None`:
    /// none was, and no segment may be deleted.
    pub through: Option<u64>,
}

/// Recovered logs of all groups, ready to hand out per-group stores.
pub struct LogSet {
    wal: Wal,
    votes: VoteFile,
    logs: HashMap<u64, Arc<Mutex<GroupLog>>>,
    purger: Arc<Purger>,
}

impl LogSet {
    /// Rebuilds every group's log from the WAL records, in order.
    pub fn recover(wal: Wal, votes: VoteFile, records: &[WalRecord]) -> io::Result<LogSet> {
        let mut logs: HashMap<u64, GroupLog> = HashMap::new();
        for r in records {
            let log = logs.entry(r.group).or_default();
            let (kind, body) = r
                .payload
                .split_first()
                .ok_or_else(|| io_err("empty raft WAL record"))?;
            match *kind {
                KIND_ENTRY => {
                    let e: LogEntry = serde_json::from_slice(body).map_err(io_err)?;
                    if log.last_purged.is_none_or(|p| e.log_id.index > p.index) {
                        log.insert(e, body.len() as u64);
                    }
                }
                KIND_TRUNCATE => {
                    let last: Option<LogId> = serde_json::from_slice(body).map_err(io_err)?;
                    log.truncate_after(last.as_ref());
                }
                KIND_PURGE => {
                    let upto: LogId = serde_json::from_slice(body).map_err(io_err)?;
                    drop(log.purge(&upto));
                }
                KIND_REMOVE => {
                    logs.remove(&r.group);
                }
                other => return Err(io_err(format!("unknown raft WAL record kind {other}"))),
            }
        }
        let durable = logs
            .iter()
            .filter_map(|(g, l)| Some((*g, l.last_purged?)))
            .collect();
        let logs = logs
            .into_iter()
            .map(|(g, l)| (g, Arc::new(Mutex::new(l))))
            .collect();
        let purger = Arc::new(Purger::new(wal.clone(), Arc::new(|| Ok(())), durable));
        Ok(LogSet {
            wal,
            votes,
            logs,
            purger,
        })
    }

    /// Sets what makes the state machine durable. A purge record is written
    /// only after it ran, so recovery never drops an entry whose effect sled
    /// had not yet made durable. Without it (in-memory nodes) purges are not
    /// preceded by any flush. Call it before handing out stores.
    pub fn with_durable_flush(mut self, f: DurableFlush) -> LogSet {
        self.purger = Arc::new(Purger::new(self.wal.clone(), f, self.purger.durable()));
        self
    }

    /// Index of each recovered or opened group's last durably recorded
    /// purge: what a WAL checkpoint may delete up to (the record was written
    /// after sled was made durable). Groups with no log here have nothing
    /// left to keep.
    pub fn purged(&self) -> BTreeMap<u64, u64> {
        self.points(&self.purger.durable())
    }

    /// `durable`'s purge index of every group with a log here (0: none yet).
    fn points(&self, durable: &BTreeMap<u64, LogId>) -> BTreeMap<u64, u64> {
        self.logs
            .keys()
            .map(|g| (*g, durable.get(g).map_or(0, |p| p.index)))
            .collect()
    }

    /// Bytes of each group's unpurged log tail (held in memory, and in the
    /// WAL until a checkpoint deletes the segments below its purge point).
    pub fn tail_bytes(&self) -> BTreeMap<u64, u64> {
        self.logs
            .iter()
            .filter_map(|(g, l)| Some((*g, l.lock().ok()?.bytes)))
            .collect()
    }

    /// Runs the purger's next round now instead of after its pause.
    pub fn hurry_purges(&self) {
        self.purger.hurry();
    }

    /// Whether purge records are still on their way (for tests).
    pub fn purges_pending(&self) -> bool {
        self.purger.busy()
    }

    /// Logs every group's current purge point again, so that a checkpoint
    /// deleting older segments never loses the record that tells recovery
    /// where a group's log begins. Run before `Wal::checkpoint`, and let it
    /// delete no more than the [`Relogged`] this returns: only segments
    /// closed before these records were queued (the records' own segment
    /// may close at once, and deleting it would leave recovery the entries
    /// after a purge point and no record of the point), and only up to the
    /// points re-logged here (a purge round may record a higher point
    /// meanwhile, and its record may sit in a segment before these).
    pub async fn relog_purges(&self) -> io::Result<Relogged> {
        let through = self.wal.newest_closed();
        let durable = self.purger.durable();
        let mut records = Vec::new();
        for (g, upto) in &durable {
            if !self.logs.contains_key(g) {
                continue;
            }
            let body = serde_json::to_vec(upto).map_err(io_err)?;
            records.push(purge_record(*g, upto, body));
        }
        if !records.is_empty() {
            self.wal.append(records).await.map_err(io_err)?;
        }
        Ok(Relogged {
            points: self.points(&durable),
            through,
        })
    }

    /// Forgets `group` on this node: a durable record tells recovery to drop
    /// its log, and its vote is removed.
    pub async fn remove(&mut self, group: u64) -> io::Result<()> {
        self.logs.remove(&group);
        self.purger.forget(group).await;
        let record = typed_record(group, KIND_REMOVE, u64::MAX, Vec::new());
        self.wal.append(vec![record]).await.map_err(io_err)?;
        self.votes.remove(group).await
    }

    /// Whether this node holds no Raft state at all: no group's log and no
    /// vote (a new data directory, or a lost one).
    pub fn is_empty(&self) -> bool {
        self.logs.is_empty() && self.votes.votes.lock().is_ok_and(|v| v.is_empty())
    }

    /// Whether this node holds anything of `group`'s Raft state: a log or
    /// a vote (a replica that never had either is new here).
    pub fn holds(&self, group: u64) -> bool {
        self.logs.contains_key(&group) || self.votes.get(group).is_some()
    }

    /// The log store of `group` (empty for a new group).
    pub fn store(&mut self, group: u64) -> LogStore {
        let log = self.logs.entry(group).or_default().clone();
        self.purger.adopt(group);
        LogStore {
            group,
            wal: self.wal.clone(),
            votes: self.votes.clone(),
            log,
            purger: self.purger.clone(),
        }
    }
}

pub(crate) fn typed_record(group: u64, kind: u8, index: u64, body: Vec<u8>) -> WalRecord {
    let mut payload = Vec::with_capacity(body.len() + 1);
    payload.push(kind);
    payload.extend_from_slice(&body);
    WalRecord {
        group,
        index,
        payload,
    }
}

/// One group's Raft log: in-memory tail, durable in the shared WAL.
#[derive(Clone)]
pub struct LogStore {
    group: u64,
    wal: Wal,
    votes: VoteFile,
    log: Arc<Mutex<GroupLog>>,
    purger: Arc<Purger>,
}

impl LogStore {
    fn lock(&self) -> io::Result<std::sync::MutexGuard<'_, GroupLog>> {
        self.log.lock().map_err(|_| io_err("log lock poisoned"))
    }

    fn record(&self, kind: u8, index: u64, body: Vec<u8>) -> WalRecord {
        typed_record(self.group, kind, index, body)
    }

    async fn write_durably(&self, records: Vec<WalRecord>) -> io::Result<()> {
        self.wal.append(records).await.map_err(io_err)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<LogEntry>, io::Error> {
        let log = self.lock()?;
        Ok(log.entries.range(range).map(|(_, e)| e.clone()).collect())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.votes.get(self.group))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let log = self.lock()?;
        let last = log
            .entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(log.last_purged);
        Ok(LogState {
            last_purged_log_id: log.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.votes.save(self.group, *vote).await
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = LogEntry> + Send,
    {
        let mut records = Vec::new();
        {
            let mut log = self.lock()?;
            for e in entries {
                let body = serde_json::to_vec(&e).map_err(io_err)?;
                let size = body.len() as u64;
                records.push(self.record(KIND_ENTRY, e.log_id.index, body));
                log.insert(e, size);
            }
        }
        // Queue now (keeps the order of appends), report durability later.
        let ack = self.wal.enqueue(records).await.map_err(io_err)?;
        tokio::spawn(async move {
            callback.io_completed(ack.wait().await.map_err(io_err));
        });
        Ok(())
    }

    async fn truncate_after(&mut self, last: Option<LogId>) -> Result<(), io::Error> {
        self.lock()?.truncate_after(last.as_ref());
        let body = serde_json::to_vec(&last).map_err(io_err)?;
        let index = last.map_or(0, |l| l.index);
        self.write_durably(vec![self.record(KIND_TRUNCATE, index, body)])
            .await
    }

    async fn purge(&mut self, upto: LogId) -> Result<(), io::Error> {
        // openraft purges only applied entries (a snapshot at `upto` is in
        // the state machine). Memory is freed now; the record that lets
        // recovery forget them follows once sled is durable, off the Raft
        // core's path, unless the purge goes past the log's last entry.
        let (purged, past_the_end) = {
            let mut log = self.lock()?;
            let reached = log
                .entries
                .keys()
                .next_back()
                .copied()
                .max(log.last_purged.map(|p| p.index));
            let past_the_end = reached.is_none_or(|r| r < upto.index);
            (log.purge(&upto), past_the_end)
        };
        tokio::spawn(free_gradually(purged));
        if past_the_end {
            // The next entries start after `upto`: see `Purger::record_now`.
            // Rare (a lagging replica catching up by snapshot), so the
            // flush may stall this group's core for its duration.
            return self.purger.record_now(self.group, upto).await;
        }
        self.purger.request(self.group, upto);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::storage::RaftLogStorage;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn log_id(index: u64) -> LogId {
        openraft::LogId::new(
            openraft::impls::leader_id_adv::LeaderId {
                term: 1,
                node_id: 1,
            },
            index,
        )
    }

    fn blank(index: u64) -> LogEntry {
        LogEntry {
            log_id: log_id(index),
            payload: openraft::EntryPayload::Blank,
        }
    }

    async fn append(store: &mut LogStore, indexes: std::ops::RangeInclusive<u64>) {
        let entries: Vec<LogEntry> = indexes.map(blank).collect();
        store
            .append(entries, IOFlushed::noop())
            .await
            .expect("append");
    }

    /// The tail's byte count follows appends, overwrites, truncations and
    /// purges (checkpoints compact groups by it).
    #[test]
    fn the_tail_counts_its_bytes() {
        let mut log = GroupLog::default();
        for i in 1..=10 {
            log.insert(blank(i), 100);
        }
        assert_eq!(log.bytes, 1000);
        log.insert(blank(10), 40); // rewritten by a new leader
        assert_eq!(log.bytes, 940);
        log.truncate_after(Some(&log_id(8)));
        assert_eq!(log.bytes, 800);
        drop(log.purge(&log_id(5)));
        assert_eq!(log.bytes, 300);
        log.truncate_after(None);
        assert_eq!((log.bytes, log.entries.len()), (0, 0));
    }

    /// A purge frees memory at once, but becomes durable (a WAL checkpoint
    /// may delete below it) only after the state machine's durable flush
    /// ran; a failing flush leaves it not durable.
    #[tokio::test]
    async fn purges_are_durable_only_after_the_flush() {
        let flushes = Arc::new(AtomicUsize::new(0));
        let seen = flushes.clone();
        let flush: DurableFlush = Arc::new(move || {
            seen.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
        let votes = VoteFile::open(None).unwrap();
        let mut set = LogSet::recover(Wal::disabled(), votes, &[])
            .unwrap()
            .with_durable_flush(flush);
        let mut store = set.store(3);
        append(&mut store, 1..=8).await;
        store.purge(log_id(5)).await.unwrap();
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(5));
        while set.purges_pending() {
            tokio::task::yield_now().await;
        }
        assert_eq!(flushes.load(Ordering::SeqCst), 1);
        assert_eq!(set.purged().get(&3), Some(&5));

        let failing: DurableFlush = Arc::new(|| Err(io::Error::other("disk full")));
        let mut set = LogSet::recover(Wal::disabled(), VoteFile::open(None).unwrap(), &[])
            .unwrap()
            .with_durable_flush(failing);
        let mut store = set.store(3);
        append(&mut store, 1..=8).await;
        store.purge(log_id(5)).await.unwrap();
        while set.purges_pending() {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            set.purged().get(&3),
            Some(&0),
            "nothing durable to delete below"
        );
        // Past the log's end the purge is recorded before it returns, so a
        // failing flush fails the purge instead of leaving it unrecorded.
        assert!(store.purge(log_id(20)).await.is_err());
    }

    /// A replica that caught up by snapshot purges past the end of its log,
    /// then appends the entries after the snapshot. If the node dies before
    /// a background round recorded that purge, recovery used to find the old
    /// purge point, then a hole, then the new entries: openraft refused to
    /// start the group ("log entry not found"). Now that purge is durable
    /// before it returns, and recovery sees a contiguous log.
    #[tokio::test]
    async fn a_purge_past_the_end_of_the_log_survives_a_crash_right_after_it() {
        let dir = std::env::temp_dir().join(format!("dynaraft-purge-gap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let flush: DurableFlush = Arc::new(|| Ok(()));
        {
            let (wal, records) = Wal::open(&dir).unwrap();
            let votes = VoteFile::open(None).unwrap();
            let mut set = LogSet::recover(wal, votes, &records)
                .unwrap()
                .with_durable_flush(flush.clone());
            let mut store = set.store(3);
            append(&mut store, 1..=19).await;
            store.purge(log_id(10)).await.unwrap();
            while set.purges_pending() {
                tokio::task::yield_now().await;
            }
            // A snapshot at 50 installed; the log resumes after it. The
            // background round for anything later never runs (the crash).
            store.purge(log_id(50)).await.unwrap();
            append(&mut store, 51..=53).await;
            store.wal.append(Vec::new()).await.unwrap(); // the appends are durable
        }
        let wait = std::time::Duration::from_secs(5);
        let segment = dynaraft_storage::wal::WAL_SEGMENT_BYTES;
        let (wal, records) = Wal::open_blocking(&dir, segment, wait).unwrap();
        let mut set = LogSet::recover(wal, VoteFile::open(None).unwrap(), &records)
            .unwrap()
            .with_durable_flush(flush);
        let mut store = set.store(3);
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(50));
        assert_eq!(state.last_log_id.map(|l| l.index), Some(53));
        let entries = store.try_get_log_entries(51..=53).await.unwrap();
        assert_eq!(entries.len(), 3, "the log after the purge point is whole");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A checkpoint re-logs each group's purge point, then deletes the
    /// segments below it. When the re-logged records' own segment closed
    /// at once (they filled it), deleting that segment too left recovery
    /// the entries after the purge point and no record of the point: a
    /// hole before the first entry, and the group could not start ("log
    /// entry not found"). The checkpoint now keeps every segment closed
    /// after the re-logged points were queued.
    #[tokio::test]
    async fn a_checkpoint_keeps_the_purge_points_it_relogged_when_their_segment_closes_at_once() {
        let dir = std::env::temp_dir().join(format!("dynaraft-relog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let flush: DurableFlush = Arc::new(|| Ok(()));
        // One byte per segment: every batch closes its segment.
        let (wal, records) = Wal::open_with(&dir, 1).unwrap();
        let mut set = LogSet::recover(wal, VoteFile::open(None).unwrap(), &records)
            .unwrap()
            .with_durable_flush(flush.clone());
        let mut store = set.store(3);
        append(&mut store, 1..=10).await;
        store.purge(log_id(10)).await.unwrap();
        set.hurry_purges();
        while set.purges_pending() {
            tokio::task::yield_now().await;
        }
        // The WAL acknowledges a batch before it closes the segment the
        // batch filled: wait for a closed segment, as a node's checkpoint
        // (long after its first writes) always has one.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while set.wal.newest_closed().is_none() && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        let relogged = set.relog_purges().await.unwrap();
        assert_eq!(relogged.points.get(&3), Some(&10));
        append(&mut store, 11..=13).await;
        set.wal.append(Vec::new()).await.unwrap(); // the appends are durable
        let through = relogged.through.expect("earlier segments are closed");
        let deleted = set.wal.checkpoint(&relogged.points, through).unwrap();
        assert!(deleted > 0, "the segments below the purge point go");
        drop((store, set));

        let wait = std::time::Duration::from_secs(5);
        let (wal, records) = Wal::open_blocking(&dir, 1, wait).unwrap();
        let mut set = LogSet::recover(wal, VoteFile::open(None).unwrap(), &records)
            .unwrap()
            .with_durable_flush(flush);
        let mut store = set.store(3);
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(10));
        assert_eq!(state.last_log_id.map(|l| l.index), Some(13));
        let entries = store.try_get_log_entries(11..=13).await.unwrap();
        assert_eq!(entries.len(), 3, "the log after the purge point is whole");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
