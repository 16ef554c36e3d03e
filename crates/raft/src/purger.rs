//! Durable purge records, written off the Raft core's path.
//!
//! When openraft purges a group's log (after each snapshot), the entries go
//! from memory at once. The WAL record that lets recovery forget them must
//! wait until their effect is durable in sled: a flush and an fsync of
//! every sled file, which takes tens of milliseconds under load. openraft
//! awaits `purge` inside its core, so doing that flush there stalled every
//! write of the group for as long.
//!
//! So a purge only records its point here, and one background round at a
//! time makes sled durable and then logs every point recorded before the
//! flush began (points that arrive meanwhile wait for the next round, so
//! rounds coalesce). Rounds are at least [`PURGE_ROUND_INTERVAL_MS`] apart:
//! the flush also slows the writes that run beside it (their own sled
//! writes wait on the fsync), and WAL segments are only deleted at
//! checkpoints anyway. Until its record is written a purge point is not
//! durable: recovery replays the entries after the last durable one, which
//! is only slower, and WAL checkpoints delete segments only below durable
//! points ([`Purger::durable`]).

use crate::types::LogId;
use dynaraft_storage::wal::{Wal, WalRecord};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::{Arc, Mutex, Weak};

/// Least time between two rounds of durable flush and purge records, in
/// milliseconds (a group snapshots every few thousand entries, several
/// times a second under load).
pub const PURGE_ROUND_INTERVAL_MS: u64 = 5000;

/// Makes the state machine durable (sled flush + fsync); runs before a
/// purge record is written.
pub type DurableFlush = Arc<dyn Fn() -> io::Result<()> + Send + Sync>;

/// Purge points on their way to the WAL.
pub struct Purger {
    wal: Wal,
    flush: DurableFlush,
    state: Mutex<State>,
    /// Held while a round takes its batch and writes it, so that a group's
    /// removal record can never be followed by one of its purge records.
    writing: tokio::sync::Mutex<()>,
    /// Cuts the pause before the next round short (see [`Purger::hurry`]).
    hurry: Arc<tokio::sync::Notify>,
}

#[derive(Default)]
struct State {
    /// Purged in memory, not yet recorded.
    pending: BTreeMap<u64, LogId>,
    /// Recorded after a durable flush.
    durable: BTreeMap<u64, LogId>,
    /// Groups that left this node: never recorded again.
    removed: BTreeSet<u64>,
    /// A task runs rounds (or waits between them).
    running: bool,
    /// A round is flushing and writing right now.
    recording: bool,
}

impl Purger {
    /// `durable` holds the purge points recovery found in the WAL.
    pub fn new(wal: Wal, flush: DurableFlush, durable: BTreeMap<u64, LogId>) -> Purger {
        Purger {
            wal,
            flush,
            state: Mutex::new(State {
                durable,
                ..State::default()
            }),
            writing: tokio::sync::Mutex::new(()),
            hurry: Arc::new(tokio::sync::Notify::new()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock means a panic mid-update of plain maps; the maps
        // are still valid, and losing purge bookkeeping is never unsafe.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `group`'s log is purged in memory up to `upto`: record it durably in
    /// the background.
    pub fn request(self: &Arc<Self>, group: u64, upto: LogId) {
        let mut st = self.state();
        if st.removed.contains(&group) {
            return;
        }
        raise(&mut st.pending, group, upto);
        if !st.running {
            st.running = true;
            tokio::spawn(Self::run(Arc::downgrade(self)));
        }
    }

    /// Rounds until nothing is pending. Between rounds it holds only a weak
    /// reference: a node shutting down drops its purger (and the sled handle
    /// inside the flush) without waiting for the interval.
    async fn run(purger: Weak<Self>) {
        let mut first = true;
        loop {
            if !first {
                let Some(me) = purger.upgrade() else {
                    return;
                };
                // Only a weak reference across the pause (see above).
                let hurry = me.hurry.clone();
                drop(me);
                let hurried = hurry.notified();
                let pause = std::time::Duration::from_millis(PURGE_ROUND_INTERVAL_MS);
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = hurried => {}
                }
            }
            first = false;
            let Some(me) = purger.upgrade() else {
                return;
            };
            if !me.round().await {
                return;
            }
        }
    }

    /// One round: flush, record what was pending. False when there was
    /// nothing to do or the round failed (the task then ends).
    async fn round(&self) -> bool {
        let _writing = self.writing.lock().await;
        let batch = {
            let mut st = self.state();
            if st.pending.is_empty() {
                st.running = false;
                return false;
            }
            st.recording = true;
            std::mem::take(&mut st.pending)
        };
        let recorded = self.record(&batch).await;
        self.state().recording = false;
        if let Err(e) = recorded {
            // The points stay unrecorded (recovery replays more); the next
            // purge of each group tries again.
            tracing::error!(error = %e, "could not record log purges");
            self.state().running = false;
            return false;
        }
        let mut st = self.state();
        for (g, upto) in batch {
            raise(&mut st.durable, g, upto);
        }
        true
    }

    /// Records `group`'s purge to `upto` now: the state machine is made
    /// durable, then the record is written, before this returns. For a
    /// purge past the end of the log (a snapshot installed on a lagging
    /// replica): the entries appended next start after `upto`, and if the
    /// record were still on its way when the node crashed, recovery would
    /// find the older purge point and then a hole before those entries, and
    /// the group could not start.
    pub async fn record_now(&self, group: u64, upto: LogId) -> io::Result<()> {
        let _writing = self.writing.lock().await;
        if self.state().removed.contains(&group) {
            return Ok(());
        }
        self.record(&BTreeMap::from([(group, upto)])).await?;
        let mut st = self.state();
        if st
            .pending
            .get(&group)
            .is_some_and(|p| p.index <= upto.index)
        {
            st.pending.remove(&group);
        }
        raise(&mut st.durable, group, upto);
        Ok(())
    }

    /// Makes sled durable, then writes the purge records.
    async fn record(&self, batch: &BTreeMap<u64, LogId>) -> io::Result<()> {
        let flush = self.flush.clone();
        tokio::task::spawn_blocking(move || flush())
            .await
            .map_err(io::Error::other)??;
        let records = batch
            .iter()
            .map(|(g, upto)| Ok(purge_record(*g, upto, serde_json::to_vec(upto)?)))
            .collect::<io::Result<Vec<_>>>()?;
        self.wal.append(records).await.map_err(io::Error::other)
    }

    /// Runs the next round without waiting out its pause: a checkpoint
    /// found log tails over their byte bound, and their purges should
    /// become durable (so their WAL segments can go) soon.
    pub fn hurry(&self) {
        self.hurry.notify_one();
    }

    /// The durable purge point of each group: what a WAL checkpoint may
    /// delete up to.
    pub fn durable(&self) -> BTreeMap<u64, LogId> {
        self.state().durable.clone()
    }

    /// `group` is leaving this node: forget its points. Returns once no
    /// purge record of it can be written any more (call it before writing
    /// the removal record).
    pub async fn forget(&self, group: u64) {
        let _writing = self.writing.lock().await;
        let mut st = self.state();
        st.pending.remove(&group);
        st.durable.remove(&group);
        st.removed.insert(group);
    }

    /// `group` (new, or back after a removal) keeps its log here.
    pub fn adopt(&self, group: u64) {
        self.state().removed.remove(&group);
    }

    /// Whether points wait for a round or a round is writing (for tests).
    pub fn busy(&self) -> bool {
        let st = self.state();
        st.recording || !st.pending.is_empty()
    }
}

/// Sets `group`'s point in `points` to `upto` unless it is already further.
fn raise(points: &mut BTreeMap<u64, LogId>, group: u64, upto: LogId) {
    let slot = points.entry(group).or_insert(upto);
    if upto.index > slot.index {
        *slot = upto;
    }
}

/// The WAL record of a purge.
pub(crate) fn purge_record(group: u64, upto: &LogId, body: Vec<u8>) -> WalRecord {
    crate::log_store::typed_record(group, crate::log_store::KIND_PURGE, upto.index, body)
}
