//! The node's write-ahead log: one log shared by every group on the node,
//! with group commit. It runs on its own OS thread so that `fdatasync` never
//! blocks the async runtime.
//!
//! Record format, little-endian: `[len u32][crc32 u32][group u64][index u64]
//! [command bytes]`, where `len` counts everything after the crc and the crc
//! covers the same bytes. The log is a sequence of segment files
//! `wal-<seq>.log`. Every batch written ends with a marker record (group
//! [`BATCH_END_GROUP`], index: the batch's number in its segment, from 1,
//! no payload). A batch is written only after the one before it was
//! fsynced, so a batch found on disk after damaged bytes proves that the
//! damaged batch was acknowledged. At startup a torn write at the end of the
//! newest segment (a crash mid-write) is cut off; a bad record anywhere else,
//! or in the newest segment with a later batch after it, is corruption, and
//! startup fails with an error naming the segment and the byte.
//!
//! One writer at a time: the writer thread holds an exclusive lock on the
//! directory's `LOCK` file for as long as it runs, so a log reopened in the
//! same process (after a storage failure, see `dynaraft_cluster::host`) or
//! by a second process waits for, or is refused by, the one still writing.
//!
//! A batch is acknowledged only after `write` + `fdatasync` of the segment.
//! Segments are deleted by [`Wal::checkpoint`] once the state machine has
//! durably flushed everything they hold, a few megabytes at a time (see
//! [`delete_gradually`]).

use crate::kv::OpenError;
use crate::{FirstFailure, StorageError};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// Pending append requests the WAL thread accepts before senders wait.
pub const WAL_QUEUE_CAPACITY: usize = 4096;
/// The histogram of the WAL's fdatasync times, in seconds.
pub const WAL_FSYNC_METRIC: &str = "dynaraft_wal_fsync_seconds";

/// Most requests folded into one write + fdatasync.
pub const WAL_MAX_BATCH_REQUESTS: usize = 1024;
/// Default size at which the current segment is closed and a new one
/// started, in bytes.
pub const WAL_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Largest single record, in bytes (a command carries at most one item of
/// 400 KB plus expressions; this leaves generous room).
pub const WAL_MAX_RECORD_BYTES: usize = 8 * 1024 * 1024;
const HEADER_BYTES: usize = 8;
/// The file whose lock the running writer holds.
const LOCK_FILE: &str = "LOCK";
/// Bytes a deleted segment is cut by at each step of [`delete_gradually`].
pub const WAL_DELETE_STEP_BYTES: u64 = 4 * 1024 * 1024;
/// Pause between two steps of [`delete_gradually`], in milliseconds.
pub const WAL_DELETE_STEP_PAUSE_MS: u64 = 5;

#[derive(Debug, Clone)]
pub struct WalRecord {
    pub group: u64,
    pub index: u64,
    pub payload: Vec<u8>,
}

struct AppendRequest {
    records: Vec<WalRecord>,
    /// Close the segment after this batch if it holds at least this many
    /// bytes ([`Wal::close_segment`]).
    close_from: Option<u64>,
    done: oneshot::Sender<Result<(), String>>,
}

/// Per closed segment: the highest index of each group it contains.
type SegmentIndex = BTreeMap<u64, BTreeMap<u64, u64>>;

/// Handle to the log. Cloning shares the same writer thread.
#[derive(Clone)]
pub struct Wal {
    tx: Option<mpsc::Sender<AppendRequest>>,
    /// Seals every record's payload before it is queued, when the node
    /// encrypts at rest (`crate::cipher`).
    cipher: Option<Arc<crate::cipher::KeyRing>>,
    dir: Option<PathBuf>,
    closed: Arc<Mutex<SegmentIndex>>,
    failure: FirstFailure,
}

impl Wal {
    /// A log that persists nothing (the `--in-memory` mode).
    pub fn disabled() -> Wal {
        Wal {
            tx: None,
            cipher: None,
            dir: None,
            closed: Arc::new(Mutex::new(BTreeMap::new())),
            failure: FirstFailure::default(),
        }
    }

    /// Opens the log in `dir` with segments of [`WAL_SEGMENT_BYTES`],
    /// returning it with every intact record, in order, for replay.
    pub fn open(dir: &Path) -> Result<(Wal, Vec<WalRecord>), OpenError> {
        Wal::open_with(dir, WAL_SEGMENT_BYTES)
    }

    /// [`Wal::open`] with segments closed at `segment_bytes` (small ones
    /// make tests reach segment deletion quickly). [`OpenError::Locked`]
    /// while another writer still runs on `dir`.
    pub fn open_with(dir: &Path, segment_bytes: u64) -> Result<(Wal, Vec<WalRecord>), OpenError> {
        Wal::open_sealed(dir, segment_bytes, None)
    }

    /// [`Wal::open_with`], sealing every payload written and opening every
    /// payload read with `cipher` (encryption at rest).
    pub fn open_sealed(
        dir: &Path,
        segment_bytes: u64,
        cipher: Option<Arc<crate::cipher::KeyRing>>,
    ) -> Result<(Wal, Vec<WalRecord>), OpenError> {
        std::fs::create_dir_all(dir).map_err(StorageError::from)?;
        let lock = lock_dir(dir)?;
        let (mut wal, mut records) = Wal::open_locked(dir, segment_bytes, lock)?;
        if let Some(ring) = &cipher {
            for r in &mut records {
                r.payload = ring.open(&r.payload).map_err(|e| {
                    StorageError::Corrupt(format!(
                        "WAL record {} of group {} in {}: {e}",
                        r.index,
                        r.group,
                        dir.display()
                    ))
                })?;
            }
        }
        wal.cipher = cipher;
        Ok((wal, records))
    }

    /// [`Wal::open_with`], waiting up to `wait` for a writer that is ending
    /// (its last handle was just dropped) to release the log. Blocks the
    /// calling thread; for tests and tools that reopen a log at once.
    pub fn open_blocking(
        dir: &Path,
        segment_bytes: u64,
        wait: std::time::Duration,
    ) -> Result<(Wal, Vec<WalRecord>), OpenError> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            match Wal::open_with(dir, segment_bytes) {
                Err(OpenError::Locked) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                other => return other,
            }
        }
    }

    fn open_locked(
        dir: &Path,
        segment_bytes: u64,
        lock: File,
    ) -> Result<(Wal, Vec<WalRecord>), StorageError> {
        let mut segs = list_segments(dir)?;
        check_contiguous(dir, &segs)?;
        let mut records = Vec::new();
        let mut closed: SegmentIndex = BTreeMap::new();
        let last = segs.last().copied();
        for &seq in &segs {
            let path = segment_path(dir, seq);
            let Segment {
                records: recs,
                good_len,
                later_batch_at: later_batch,
            } = read_segment(&path)?;
            let file_len = std::fs::metadata(&path)?.len();
            if good_len < file_len {
                if Some(seq) != last {
                    return Err(StorageError::Corrupt(format!(
                        "bad record at byte {good_len} of {}",
                        path.display()
                    )));
                }
                if let Some(at) = later_batch {
                    return Err(StorageError::Corrupt(format!(
                        "bad record at byte {good_len} of {}, followed by a written batch at byte {at}: \
                         acknowledged entries are damaged, not a torn last write; restore the data \
                         directory from a backup, or in a cluster move it aside and restart the node \
                         empty (its replicas rejoin from the other zones)",
                        path.display()
                    )));
                }
                tracing::warn!(segment = %path.display(), good_len, file_len, "cutting torn WAL tail");
                let f = OpenOptions::new().write(true).open(&path)?;
                f.set_len(good_len)?;
                f.sync_all()?;
            }
            let mut max = BTreeMap::new();
            for r in &recs {
                let e = max.entry(r.group).or_insert(0);
                *e = (*e).max(r.index);
            }
            closed.insert(seq, max);
            records.extend(recs);
        }
        // Always start writing into a fresh segment; everything read is closed.
        let next = segs.last().map_or(1, |s| s + 1);
        segs.push(next);
        let file = create_segment(dir, next)?;
        let closed = Arc::new(Mutex::new(closed));
        let failure = FirstFailure::default();
        let (tx, rx) = mpsc::channel(WAL_QUEUE_CAPACITY);
        let writer = Writer {
            _lock: lock,
            failure: failure.clone(),
            dir: dir.to_path_buf(),
            seq: next,
            file,
            written: 0,
            segment_bytes: segment_bytes.max(1),
            current: BTreeMap::new(),
            closed: closed.clone(),
            batches: 0,
        };
        std::thread::Builder::new()
            .name("dynaraft-wal".into())
            .spawn(move || writer.run(rx))?;
        Ok((
            Wal {
                tx: Some(tx),
                cipher: None,
                dir: Some(dir.to_path_buf()),
                closed,
                failure,
            },
            records,
        ))
    }

    /// Appends records and resolves once they are durable on disk.
    pub async fn append(&self, records: Vec<WalRecord>) -> Result<(), StorageError> {
        self.enqueue(records).await?.wait().await
    }

    /// Queues records behind everything queued before (order is kept) and
    /// returns a handle that resolves once they are durable. Lets a caller
    /// go on while the fsync happens (Raft's `IOFlushed` callback).
    pub async fn enqueue(&self, mut records: Vec<WalRecord>) -> Result<WalAck, StorageError> {
        if self.tx.is_none() {
            return Ok(WalAck(None));
        }
        if let Some(ring) = &self.cipher {
            for r in &mut records {
                r.payload = ring.seal(&r.payload)?;
            }
        }
        self.queue(records, None).await
    }

    /// Sends one request to the writer thread behind everything queued
    /// before; `send` waits only while the bounded queue is full
    /// (back-pressure).
    async fn queue(
        &self,
        records: Vec<WalRecord>,
        close_from: Option<u64>,
    ) -> Result<WalAck, StorageError> {
        let Some(tx) = &self.tx else {
            return Ok(WalAck(None));
        };
        let (done, wait) = oneshot::channel();
        tx.send(AppendRequest {
            records,
            close_from,
            done,
        })
        .await
        .map_err(|_| StorageError::Fatal("WAL writer has stopped".into()))?;
        Ok(WalAck(Some(wait)))
    }

    /// Closes the open segment, if it holds at least `min_bytes`, behind
    /// everything queued before; resolves once it is closed (records
    /// enqueued afterwards go to the next segment). A segment is otherwise
    /// closed only once it reaches its full size, and only closed segments
    /// are ever deleted ([`Wal::checkpoint`]): an idle node kept up to a
    /// segment of records its state machine had long made durable.
    pub async fn close_segment(&self, min_bytes: u64) -> Result<(), StorageError> {
        self.queue(Vec::new(), Some(min_bytes))
            .await?
            .wait()
            .await?;
        match self.failure() {
            Some(why) => Err(StorageError::Fatal(why)),
            None => Ok(()),
        }
    }

    /// Why the log stopped taking writes, if it has: a write, fdatasync or
    /// segment rotation failed. Nothing is appended after that (a failed
    /// fsync is never retried as if the data were safe); the node needs a
    /// restart, which recovers from what is on disk.
    pub fn failure(&self) -> Option<String> {
        self.failure.get()
    }

    /// Groups that appear in closed segments.
    pub fn closed_groups(&self) -> Vec<u64> {
        let Ok(closed) = self.closed.lock() else {
            return Vec::new();
        };
        let mut gs: Vec<u64> = closed.values().flat_map(|m| m.keys().copied()).collect();
        gs.sort_unstable();
        gs.dedup();
        gs
    }

    /// The groups holding back the oldest closed segment: those with
    /// records in it above their flushed (purged) index. An idle group whose
    /// log never grows to a snapshot would otherwise keep every later
    /// segment on disk; the caller compacts these groups' logs.
    pub fn pinning_groups(&self, flushed: &BTreeMap<u64, u64>) -> Vec<u64> {
        let Ok(closed) = self.closed.lock() else {
            return Vec::new();
        };
        let Some((_, oldest)) = closed.iter().next() else {
            return Vec::new();
        };
        oldest
            .iter()
            .filter(|(g, i)| flushed.get(g).is_none_or(|f| f < i))
            .map(|(g, _)| *g)
            .collect()
    }

    /// The newest closed segment, if any: whatever is enqueued from now on
    /// lands in a later one. A caller that logs records a checkpoint must
    /// keep takes this first and passes it to [`Wal::checkpoint`].
    pub fn newest_closed(&self) -> Option<u64> {
        self.closed.lock().ok()?.keys().next_back().copied()
    }

    /// Deletes the oldest closed segments, up to segment `through`, whose
    /// every record is at or below the durably flushed applied index of its
    /// group. `through` keeps the records written after it was read (the
    /// re-logged purge points that say where each log now begins) even if
    /// their segment closed meanwhile.
    pub fn checkpoint(
        &self,
        flushed: &BTreeMap<u64, u64>,
        through: u64,
    ) -> Result<usize, StorageError> {
        let Some(dir) = &self.dir else { return Ok(0) };
        let closed = || {
            self.closed
                .lock()
                .map_err(|_| StorageError::Fatal("WAL lock poisoned".into()))
        };
        // Oldest first, stopping at the first segment still needed: a later
        // record (a truncation) must never outlive the entries before it.
        let removable: Vec<u64> = closed()?
            .iter()
            .take_while(|(s, max)| {
                **s <= through
                    && max
                        .iter()
                        .all(|(g, i)| flushed.get(g).is_some_and(|f| f >= i))
            })
            .map(|(s, _)| *s)
            .collect();
        // Without the lock: the WAL thread takes it to close a segment.
        for s in &removable {
            delete_gradually(dir, *s)?;
            closed()?.remove(s);
        }
        Ok(removable.len())
    }
}

/// Deletes segment `seq` by cutting it [`WAL_DELETE_STEP_BYTES`] at a time,
/// with a pause between steps, then unlinking what is left. Unlinking a
/// 64 MB segment at once took ext4 16-43 ms here, and the WAL's fdatasyncs
/// waited on the same journal meanwhile: every write in the process
/// stalled. Cut in steps, each frees a few megabytes of blocks.
///
/// The segment is first renamed out of the log (and the rename made
/// durable), so a crash part-way never leaves a shortened segment for
/// recovery to read as corruption: [`Wal::open`] removes what is left.
fn delete_gradually(dir: &Path, seq: u64) -> Result<(), StorageError> {
    let doomed = deleting_path(dir, seq);
    std::fs::rename(segment_path(dir, seq), &doomed)?;
    File::open(dir)?.sync_all()?;
    let file = OpenOptions::new().write(true).open(&doomed)?;
    let mut len = file.metadata()?.len();
    while len > WAL_DELETE_STEP_BYTES {
        len -= WAL_DELETE_STEP_BYTES;
        file.set_len(len)?;
        std::thread::sleep(std::time::Duration::from_millis(WAL_DELETE_STEP_PAUSE_MS));
    }
    drop(file);
    std::fs::remove_file(&doomed)?;
    Ok(())
}

/// Resolves when the records it was returned for are durable.
pub struct WalAck(Option<oneshot::Receiver<Result<(), String>>>);

impl WalAck {
    pub async fn wait(self) -> Result<(), StorageError> {
        match self.0 {
            None => Ok(()),
            Some(rx) => rx
                .await
                .map_err(|_| StorageError::Fatal("WAL writer has stopped".into()))?
                .map_err(StorageError::Fatal),
        }
    }
}

struct Writer {
    /// Held while the writer runs (see [`LOCK_FILE`]).
    _lock: File,
    failure: FirstFailure,
    dir: PathBuf,
    seq: u64,
    file: File,
    written: u64,
    segment_bytes: u64,
    current: BTreeMap<u64, u64>,
    closed: Arc<Mutex<SegmentIndex>>,
    /// Batches written to the current segment (numbers their markers).
    batches: u64,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<AppendRequest>) {
        let mut buf = Vec::with_capacity(1 << 20);
        while let Some(batch) = crate::next_blocking_batch(&mut rx, WAL_MAX_BATCH_REQUESTS) {
            buf.clear();
            for req in &batch {
                for r in &req.records {
                    encode_record(r, &mut buf);
                    let e = self.current.entry(r.group).or_insert(0);
                    *e = (*e).max(r.index);
                }
            }
            self.batches += 1;
            let end = WalRecord {
                group: BATCH_END_GROUP,
                index: self.batches,
                payload: Vec::new(),
            };
            encode_record(&end, &mut buf);
            let result = self.write_durably(&buf).map_err(|e| e.to_string());
            if let Err(e) = &result {
                tracing::error!(error = %e, "WAL write failed; the node stops accepting writes");
                self.failure.record(|| format!("WAL write failed: {e}"));
            }
            let asked = batch
                .iter()
                .filter_map(|r| r.close_from)
                .min()
                .is_some_and(|least| self.written >= least);
            // Closed before anyone is answered: whoever asked for the close
            // finds it done ([`Wal::newest_closed`]).
            let rotated = match &result {
                Ok(()) if asked || self.written >= self.segment_bytes => {
                    self.rotate().map_err(|e| {
                        tracing::error!(error = %e, "WAL rotation failed; the node stops accepting writes");
                        format!("WAL rotation failed: {e}")
                    })
                }
                _ => Ok(()),
            };
            if let Err(why) = &rotated {
                self.failure.record(|| why.clone());
            }
            for req in batch {
                let _ = req.done.send(result.clone());
            }
            if let Err(e) = result {
                return refuse_the_rest(rx, &e);
            }
            if let Err(why) = rotated {
                return refuse_the_rest(rx, &why);
            }
        }
    }

    fn write_durably(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.file.write_all(buf)?;
        let started = std::time::Instant::now();
        self.file.sync_data()?;
        metrics::histogram!(WAL_FSYNC_METRIC).record(started.elapsed().as_secs_f64());
        self.written += buf.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), StorageError> {
        let next = self.seq + 1;
        let file = create_segment(&self.dir, next)?;
        let done = std::mem::take(&mut self.current);
        self.closed
            .lock()
            .map_err(|_| StorageError::Fatal("WAL lock poisoned".into()))?
            .insert(self.seq, done);
        self.seq = next;
        self.file = file;
        self.written = 0;
        self.batches = 0;
        Ok(())
    }
}

/// Answers every request still queued, or being sent, with the writer's
/// failure once it stops. Only dropping the receiver left a request whose
/// sender had a slot while the receiver was being dropped in the channel,
/// unanswered until the `Wal` itself was dropped: its append waited
/// forever (seen once in `a_stopped_writer_reports_its_failure`).
/// `close` refuses new sends and lets those in flight land, so the loop
/// ends once every request is answered.
fn refuse_the_rest(mut rx: mpsc::Receiver<AppendRequest>, why: &str) {
    rx.close();
    while let Some(req) = rx.blocking_recv() {
        let _ = req.done.send(Err(why.to_string()));
    }
}

/// The group of the record that ends every written batch (no real group
/// has it: ids are allocated upwards from 0).
pub const BATCH_END_GROUP: u64 = u64::MAX;

fn encode_record(r: &WalRecord, out: &mut Vec<u8>) {
    let len = 16 + r.payload.len();
    let start = out.len();
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&r.group.to_le_bytes());
    out.extend_from_slice(&r.index.to_le_bytes());
    out.extend_from_slice(&r.payload);
    let crc = crc32fast::hash(&out[start + HEADER_BYTES..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The record at `pos` of `bytes` if it is intact: (group, index, payload,
/// its length in bytes).
fn record_at(bytes: &[u8], pos: usize) -> Option<(u64, u64, &[u8], usize)> {
    let header = bytes.get(pos..pos + HEADER_BYTES)?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if !(16..=WAL_MAX_RECORD_BYTES).contains(&len) {
        return None;
    }
    let body = bytes.get(pos + HEADER_BYTES..pos + HEADER_BYTES + len)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    let (g, rest) = body.split_at(8);
    let (i, payload) = rest.split_at(8);
    let group = u64::from_le_bytes(g.try_into().ok()?);
    let index = u64::from_le_bytes(i.try_into().ok()?);
    Some((group, index, payload, HEADER_BYTES + len))
}

/// What a segment holds: its intact records (batch markers left out), the
/// length of its intact prefix, and, when damaged bytes follow that prefix,
/// whether a batch written after the damaged one is on disk beyond them.
struct Segment {
    records: Vec<WalRecord>,
    good_len: u64,
    later_batch_at: Option<u64>,
}

fn read_segment(path: &Path) -> Result<Segment, StorageError> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let mut records = Vec::new();
    let mut pos = 0usize;
    // The number of the last batch whose marker is intact.
    let mut last_batch = 0;
    while let Some((group, index, payload, len)) = record_at(&bytes, pos) {
        if group == BATCH_END_GROUP {
            last_batch = index;
        } else {
            records.push(WalRecord {
                group,
                index,
                payload: payload.to_vec(),
            });
        }
        pos += len;
    }
    // Intact batch markers beyond the damage: the damaged bytes belong to
    // batch last_batch + 1; a marker of any batch after that one proves it
    // was fsynced before (its own marker may be torn with it).
    let later_batch_at = (pos + 1..bytes.len())
        .find(|&at| {
            record_at(&bytes, at).is_some_and(|(g, i, p, _)| {
                g == BATCH_END_GROUP && p.is_empty() && i > last_batch + 1
            })
        })
        .map(|at| at as u64);
    Ok(Segment {
        records,
        good_len: pos as u64,
        later_batch_at,
    })
}

/// Segments are deleted oldest first, so those left are numbered without
/// a gap; a missing one is a hole in the log that recovery must not paper
/// over.
fn check_contiguous(dir: &Path, segs: &[u64]) -> Result<(), StorageError> {
    match segs.windows(2).find(|w| w[1] != w[0] + 1) {
        Some(w) => Err(StorageError::Corrupt(format!(
            "{} is missing (the log holds {} and then {}): the log has a hole; restore the \
             data directory from a backup, or in a cluster remove it and let the node's \
             replicas be re-created from the other zones",
            segment_path(dir, w[0] + 1).display(),
            segment_path(dir, w[0]).display(),
            segment_path(dir, w[1]).display(),
        ))),
        None => Ok(()),
    }
}

/// Takes the exclusive lock on `dir`'s [`LOCK_FILE`], without waiting.
fn lock_dir(dir: &Path) -> Result<File, OpenError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_FILE))
        .map_err(StorageError::from)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(OpenError::Locked),
        Err(std::fs::TryLockError::Error(e)) => Err(StorageError::from(e).into()),
    }
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("wal-{seq:012}.log"))
}

/// Where segment `seq` is while [`delete_gradually`] cuts it.
fn deleting_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("wal-{seq:012}.deleting"))
}

fn create_segment(dir: &Path, seq: u64) -> Result<File, StorageError> {
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(segment_path(dir, seq))?;
    File::open(dir)?.sync_all()?;
    Ok(f)
}

/// The segments in `dir`, oldest first. What a deletion interrupted by a
/// crash left behind is removed.
fn list_segments(dir: &Path) -> Result<Vec<u64>, StorageError> {
    let mut segs = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        let Some(rest) = name.strip_prefix("wal-") else {
            continue;
        };
        if let Some(n) = rest.strip_suffix(".log")
            && let Ok(n) = n.parse()
        {
            segs.push(n);
        } else if rest.ends_with(".deleting") {
            std::fs::remove_file(e.path())?;
        }
    }
    segs.sort_unstable();
    Ok(segs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appends one 100-byte record of group 7 per index, one batch each.
    async fn append_each(wal: &Wal, indexes: std::ops::RangeInclusive<u64>) {
        for index in indexes {
            let payload = vec![index as u8; 100];
            let record = WalRecord {
                group: 7,
                index,
                payload,
            };
            wal.append(vec![record]).await.unwrap();
        }
    }

    /// Opens `dir` again once the writer of a just-dropped handle is gone.
    fn reopen(dir: &Path) -> Result<(Wal, Vec<WalRecord>), OpenError> {
        Wal::open_blocking(dir, WAL_SEGMENT_BYTES, std::time::Duration::from_secs(5))
    }

    #[test]
    fn torn_tail_is_cut_and_corruption_in_the_middle_is_reported() {
        let dir = std::env::temp_dir().join(format!("dynaraft-wal-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut buf = Vec::new();
        for i in 1..=3 {
            encode_record(
                &WalRecord {
                    group: 7,
                    index: i,
                    payload: vec![i as u8; 10],
                },
                &mut buf,
            );
        }
        let full = buf.len();
        buf.extend_from_slice(&[1, 2, 3]); // torn tail
        std::fs::write(segment_path(&dir, 1), &buf).unwrap();
        let seg = read_segment(&segment_path(&dir, 1)).unwrap();
        assert_eq!(seg.records.len(), 3);
        assert_eq!(seg.good_len as usize, full);
        assert_eq!(seg.later_batch_at, None);
        // flip a payload byte of record 2: only record 1 survives
        let mut bad = buf.clone();
        bad[full / 3 + 20] ^= 0xFF;
        std::fs::write(segment_path(&dir, 1), &bad).unwrap();
        std::fs::write(segment_path(&dir, 2), b"").unwrap();
        let err = Wal::open(&dir).err().expect("corruption must be reported");
        assert!(err.to_string().contains("bad record"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// In the newest segment, a damaged record followed by a written batch
    /// is corruption (that batch was acknowledged after it), refused with
    /// the byte; a damaged last batch is a torn write, cut; the batch
    /// markers never reach the caller.
    #[tokio::test]
    async fn damage_before_a_later_batch_is_corruption_not_a_torn_tail() {
        let dir = std::env::temp_dir().join(format!("dynaraft-wal-mid-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (wal, _) = Wal::open_with(&dir, WAL_SEGMENT_BYTES).unwrap();
        append_each(&wal, 1..=6).await;
        drop(wal);
        let (_, records) = reopen(&dir).unwrap();
        assert_eq!(records.len(), 6, "markers are not records");
        assert!(records.iter().all(|r| r.group != BATCH_END_GROUP));
        let segs = list_segments(&dir).unwrap();
        // The segment the six batches went to (reopening started a new one).
        let path = segment_path(&dir, segs[segs.len() - 2]);
        let bytes = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(segment_path(&dir, segs[segs.len() - 1]));
        // A byte of the last batch: torn, cut, five records left.
        let mut torn = bytes.clone();
        let at = torn.len() - 30;
        torn[at] ^= 0xFF;
        std::fs::write(&path, &torn).unwrap();
        let (_, records) = reopen(&dir).expect("a torn last batch is cut");
        assert_eq!(records.len(), 5);
        // A byte of the second batch: later batches were written after it.
        let segs = list_segments(&dir).unwrap();
        let _ = std::fs::remove_file(segment_path(&dir, segs[segs.len() - 1]));
        // A byte of the second batch, then of the marker that ends the
        // fifth: later batches were written after each.
        let batch = bytes.len() / 6;
        for at in [batch + 40, 5 * batch - 10] {
            let segs = list_segments(&dir).unwrap();
            if segs.len() > 1 {
                let _ = std::fs::remove_file(segment_path(&dir, segs[segs.len() - 1]));
            }
            let mut bad = bytes.clone();
            bad[at] ^= 0xFF;
            std::fs::write(&path, &bad).unwrap();
            let Err(err) = reopen(&dir) else {
                panic!("damaged acknowledged entries (byte {at}) were cut as a torn tail");
            };
            let err = err.to_string();
            assert!(err.contains("followed by a written batch"), "{err}");
            assert!(err.contains(&path.display().to_string()), "{err}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A writer that cannot go on (here: its directory vanished, so the next
    /// segment cannot be created) says why, and refuses later appends.
    #[tokio::test]
    async fn a_stopped_writer_reports_its_failure() {
        let dir = std::env::temp_dir().join(format!("dynaraft-wal-fail-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (wal, _) = Wal::open_with(&dir, 1).unwrap();
        assert_eq!(wal.failure(), None);
        std::fs::remove_dir_all(&dir).unwrap();
        let record = |index| WalRecord {
            group: 7,
            index,
            payload: vec![1; 10],
        };
        // Written to the open segment; the rotation after it fails.
        wal.append(vec![record(1)]).await.unwrap();
        assert!(wal.append(vec![record(2)]).await.is_err());
        let failure = wal.failure().expect("the failure is reported");
        assert!(failure.contains("rotation"), "{failure}");
    }

    /// A segment missing from the middle of the log is refused with a
    /// message naming it, never skipped.
    #[tokio::test]
    async fn a_missing_segment_is_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("dynaraft-wal-gap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (wal, _) = Wal::open_with(&dir, 64).unwrap();
        append_each(&wal, 1..=10).await;
        drop(wal);
        let segs = list_segments(&dir).unwrap();
        assert!(segs.len() > 3, "{segs:?}");
        std::fs::remove_file(segment_path(&dir, segs[2])).unwrap();
        let Err(err) = reopen(&dir) else {
            panic!("a log with a hole opened");
        };
        let missing = segment_path(&dir, segs[2]).display().to_string();
        assert!(err.to_string().contains(&missing), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// One writer at a time: a second open waits for the first writer to
    /// end, then reads everything it wrote.
    #[tokio::test]
    async fn a_log_in_use_is_locked_until_its_writer_ends() {
        let dir = std::env::temp_dir().join(format!("dynaraft-wal-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (wal, _) = Wal::open(&dir).unwrap();
        let record = WalRecord {
            group: 7,
            index: 1,
            payload: vec![1; 10],
        };
        wal.append(vec![record]).await.unwrap();
        assert!(matches!(Wal::open(&dir), Err(OpenError::Locked)));
        drop(wal);
        let (_, records) = reopen(&dir).unwrap();
        assert_eq!(records.len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A checkpoint deletes the segments it may, keeps the rest readable,
    /// and a deletion cut short by a crash (a shortened segment already
    /// renamed out of the log) is cleaned up, not read as corruption.
    #[tokio::test]
    async fn checkpoints_delete_segments_and_interrupted_deletions_are_cleaned_up() {
        let dir = std::env::temp_dir().join(format!("dynaraft-wal-ckpt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (wal, _) = Wal::open_with(&dir, 1024).unwrap();
        append_each(&wal, 1..=40).await;
        let before = list_segments(&dir).unwrap();
        assert!(before.len() > 3, "{before:?}");
        let deleted = wal
            .checkpoint(&BTreeMap::from([(7, 20)]), u64::MAX)
            .unwrap();
        assert!(deleted > 0);
        assert_eq!(list_segments(&dir).unwrap(), before[deleted..]);
        drop(wal);

        std::fs::write(deleting_path(&dir, before[0]), [1, 2, 3]).unwrap();
        let (_, records) = reopen(&dir).unwrap();
        let indexes: Vec<u64> = records.iter().map(|r| r.index).collect();
        assert!(indexes.iter().all(|i| *i > 1), "deleted records came back");
        assert_eq!(indexes.last(), Some(&40));
        assert!((21..=40).all(|i| indexes.contains(&i)), "{indexes:?}");
        assert!(!deleting_path(&dir, before[0]).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// An open segment is closed on request only from `min_bytes` on, and
    /// once closed the checkpoint deletes it; what is appended afterwards
    /// lands in the next segment and is read back after a reopen.
    #[tokio::test]
    async fn an_open_segment_closes_on_request_and_is_then_deleted() {
        let dir = std::env::temp_dir().join(format!("dynaraft-wal-close-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (wal, _) = Wal::open_with(&dir, WAL_SEGMENT_BYTES).unwrap();
        append_each(&wal, 1..=10).await;
        let open = list_segments(&dir).unwrap();
        assert_eq!(open.len(), 1);
        wal.close_segment(WAL_SEGMENT_BYTES).await.unwrap();
        assert_eq!(wal.newest_closed(), None, "closed under its minimum");
        wal.close_segment(1).await.unwrap();
        assert_eq!(wal.newest_closed(), Some(open[0]));
        append_each(&wal, 11..=12).await;
        let deleted = wal.checkpoint(&BTreeMap::from([(7, 10)]), open[0]).unwrap();
        assert_eq!(deleted, 1);
        let left = list_segments(&dir).unwrap();
        assert_eq!(left, vec![open[0] + 1]);
        drop(wal);
        let (_, records) = reopen(&dir).unwrap();
        let indexes: Vec<u64> = records.iter().map(|r| r.index).collect();
        assert_eq!(indexes, vec![11, 12]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
