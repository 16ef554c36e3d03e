//! The Raft state machine of one group: the deterministic
//! `dynaraft_storage::machine::apply` over sled, plus the Raft bookkeeping
//! (last applied log id, membership) written in the same sled batch as the
//! data, so sled never disagrees with itself about what it has applied.
//!
//! Snapshots. sled already is the durable state, so a periodic snapshot only
//! records its metadata (applied log id, membership): cheap, and enough for
//! openraft to purge the log it covers. The data (every key of the group) is
//! materialised only when a snapshot is actually read, in
//! `get_current_snapshot`, which openraft runs on the state-machine worker
//! between applies; the returned meta is the applied state at that moment,
//! so data and meta always agree.

use crate::io_err;
use crate::types::{LogId, Snapshot, SnapshotBytes, SnapshotMeta, StoredMembership, TypeConfig};
use dynaraft_storage::StorageError;
use dynaraft_storage::committer::Committer;
use dynaraft_storage::machine::{self, Outcome, Overlay};
use dynaraft_storage::{Command, Span};
use futures_util::StreamExt;
use openraft::entry::EntryPayload;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use std::io;
use std::sync::{Arc, Mutex};

const APPLIED_LOG_ID: &str = "raft_applied";
const MEMBERSHIP: &str = "raft_membership";

#[derive(Clone)]
pub struct GroupStateMachine {
    group: u64,
    tree: dynaraft_storage::kv::Store,
    /// The node's shared committer; without one, each apply writes its own
    /// sled batch.
    committer: Option<Committer>,
    /// Meta of the last snapshot built or installed since start.
    current: Arc<Mutex<Option<SnapshotMeta>>>,
    /// The last applied log index, published after every applied batch.
    applied: Arc<tokio::sync::watch::Sender<u64>>,
}

impl GroupStateMachine {
    /// The group's state machine over `tree`; fails if its applied index
    /// cannot be read (never assumed to be 0).
    pub fn new(
        group: u64,
        tree: dynaraft_storage::kv::Store,
    ) -> Result<GroupStateMachine, StorageError> {
        let applied = machine::applied_index(&tree, group)?;
        Ok(GroupStateMachine {
            group,
            tree,
            committer: None,
            current: Arc::new(Mutex::new(None)),
            applied: Arc::new(tokio::sync::watch::channel(applied).0),
        })
    }

    /// Applies commit through `committer`, sharing sled batches with the
    /// node's other groups.
    pub fn with_committer(mut self, committer: Committer) -> GroupStateMachine {
        self.committer = Some(committer);
        self
    }

    /// Watches the applied log index (it changes after each applied batch).
    pub fn applied(&self) -> tokio::sync::watch::Receiver<u64> {
        self.applied.subscribe()
    }

    fn read_state(&self) -> io::Result<(Option<LogId>, StoredMembership)> {
        let ov = Overlay::new(&self.tree);
        let applied: Option<LogId> =
            match ov.get_meta(self.group, APPLIED_LOG_ID).map_err(io_err)? {
                Some(b) => serde_json::from_slice::<Option<LogId>>(&b).map_err(io_err)?,
                None => None,
            };
        let membership: StoredMembership =
            match ov.get_meta(self.group, MEMBERSHIP).map_err(io_err)? {
                Some(b) => serde_json::from_slice::<StoredMembership>(&b).map_err(io_err)?,
                None => StoredMembership::default(),
            };
        Ok((applied, membership))
    }

    /// Every key the group owns (its span), as
    /// `[len u32 LE][key][len u32 LE][value]`*, followed by a CRC-32 (LE) of
    /// everything before it.
    fn dump(&self) -> io::Result<SnapshotBytes> {
        let mut out = Vec::new();
        let span = Span::load(&self.tree, self.group).map_err(io_err)?;
        for kv in dynaraft_storage::span::scan(&self.tree, &span) {
            let (k, v) = kv.map_err(io_err)?;
            for part in [k.as_ref(), v.as_ref()] {
                out.extend_from_slice(&(part.len() as u32).to_le_bytes());
                out.extend_from_slice(part);
            }
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }
}

/// The key/value bytes of a snapshot payload, once its CRC-32 trailer
/// matches them; the transport checks this before a snapshot reaches Raft.
pub fn verify_snapshot(b: &[u8]) -> Result<&[u8], String> {
    let (data, crc) = b
        .split_last_chunk::<4>()
        .ok_or("snapshot shorter than its checksum")?;
    if crc32fast::hash(data) != u32::from_le_bytes(*crc) {
        return Err("snapshot checksum mismatch".into());
    }
    Ok(data)
}

/// Splits a snapshot payload back into key/value pairs, checking its
/// checksum and bounds.
fn parse_dump(b: &[u8]) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut b = verify_snapshot(b).map_err(io_err)?;
    let mut out = Vec::new();
    while !b.is_empty() {
        let (k, rest) = crate::split_len_prefixed(b).ok_or_else(|| io_err("truncated snapshot"))?;
        let (v, rest) =
            crate::split_len_prefixed(rest).ok_or_else(|| io_err("truncated snapshot"))?;
        out.push((k.to_vec(), v.to_vec()));
        b = rest;
    }
    Ok(out)
}

impl RaftStateMachine<TypeConfig> for GroupStateMachine {
    type SnapshotData = SnapshotBytes;
    type SnapshotBuilder = CapturedSnapshot;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        self.read_state()
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures_util::Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>>
            + Unpin
            + Send,
    {
        let mut ov = Overlay::new(&self.tree);
        let mut span = Span::load(&self.tree, self.group).map_err(io_err)?;
        let mut replies = Vec::new();
        let mut last: Option<LogId> = None;
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let outcome = match entry.payload {
                EntryPayload::Blank => Outcome::Done,
                EntryPayload::Normal(cmd) => {
                    let outcome = machine::apply(&mut ov, span, &cmd).map_err(io_err)?;
                    if matches!(cmd.cmd, Command::Split { .. }) {
                        // Later entries of the batch see the narrowed range.
                        span = Span::load_staged(&ov, self.group).map_err(io_err)?;
                        // A replica joining from nothing must start from a
                        // snapshot past this entry (`split::snapshot_floor`).
                        if matches!(outcome, Outcome::Sequence(_)) {
                            ov.put_meta(
                                self.group,
                                dynaraft_storage::split::SPLIT_INDEX_META,
                                entry.log_id.index.to_be_bytes().to_vec(),
                            );
                        }
                    }
                    outcome
                }
                EntryPayload::Membership(m) => {
                    let stored = StoredMembership::new(Some(entry.log_id), m);
                    ov.put_meta(
                        self.group,
                        MEMBERSHIP,
                        serde_json::to_vec(&stored).map_err(io_err)?,
                    );
                    Outcome::Done
                }
            };
            last = Some(entry.log_id);
            replies.push((responder, outcome));
        }
        if let Some(last) = last {
            ov.put_meta(
                self.group,
                APPLIED_LOG_ID,
                serde_json::to_vec(&Some(last)).map_err(io_err)?,
            );
            match &self.committer {
                Some(c) => c
                    .commit(ov.into_writes(self.group, last.index))
                    .await
                    .map_err(io_err)?,
                None => ov.commit(self.group, last.index).map_err(io_err)?,
            }
            self.applied.send_replace(last.index);
        }
        for (responder, outcome) in replies {
            if let Some(r) = responder {
                r.send(outcome);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // Runs on the state-machine worker, between applies.
        let captured = self.read_state().map(|(applied, membership)| SnapshotMeta {
            last_log_id: applied,
            last_membership: membership,
        });
        CapturedSnapshot {
            captured: Some(captured),
            current: self.current.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotBytes,
    ) -> Result<(), io::Error> {
        let pairs = parse_dump(&snapshot)?;
        // What this replica holds goes (only that: a replica that held
        // nothing yet must not clear its whole space, where a split child
        // hosted here keeps its keys), and the snapshot's span is replaced
        // by the snapshot's keys.
        use dynaraft_storage::span;
        let incoming = Span::of_pairs(self.group, &pairs)
            .map_err(io_err)?
            .key_ranges();
        let held = span::held_ranges(&self.tree, self.group).map_err(io_err)?;
        let mut ov = Overlay::new(&self.tree);
        span::clear(&mut ov, held).map_err(io_err)?;
        span::clear(&mut ov, incoming.clone()).map_err(io_err)?;
        for (k, v) in pairs {
            if !span::in_ranges(&incoming, &k) {
                return Err(io_err("snapshot holds a key outside its group's span"));
            }
            ov.put_raw(k, v);
        }
        ov.put_meta(
            self.group,
            APPLIED_LOG_ID,
            serde_json::to_vec(&meta.last_log_id).map_err(io_err)?,
        );
        ov.put_meta(
            self.group,
            MEMBERSHIP,
            serde_json::to_vec(&meta.last_membership).map_err(io_err)?,
        );
        let index = meta.last_log_id.map_or(0, |l| l.index);
        ov.commit(self.group, index).map_err(io_err)?;
        self.applied.send_replace(index);
        *self
            .current
            .lock()
            .map_err(|_| io_err("snapshot lock poisoned"))? = Some(meta.clone());
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        if self
            .current
            .lock()
            .map_err(|_| io_err("snapshot lock poisoned"))?
            .is_none()
        {
            return Ok(None);
        }
        // Materialise now: data and meta from the same moment.
        let (applied, membership) = self.read_state()?;
        let meta = SnapshotMeta {
            last_log_id: applied,
            last_membership: membership,
        };
        Ok(Some(Snapshot {
            meta,
            snapshot: self.dump()?,
        }))
    }
}

/// The snapshot metadata captured when the builder was created.
pub struct CapturedSnapshot {
    captured: Option<io::Result<SnapshotMeta>>,
    current: Arc<Mutex<Option<SnapshotMeta>>>,
}

impl RaftSnapshotBuilder<TypeConfig> for CapturedSnapshot {
    type SnapshotData = SnapshotBytes;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let meta = self
            .captured
            .take()
            .ok_or_else(|| io_err("snapshot builder used twice"))??;
        *self
            .current
            .lock()
            .map_err(|_| io_err("snapshot lock poisoned"))? = Some(meta.clone());
        // Only the meta is kept: the data is sled, read when a snapshot is sent.
        Ok(Snapshot {
            meta,
            snapshot: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, v) in pairs {
            for part in [k, v] {
                out.extend_from_slice(&(part.len() as u32).to_le_bytes());
                out.extend_from_slice(part);
            }
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Any flipped byte, or a cut, is reported; an intact payload parses.
    #[test]
    fn corrupt_or_truncated_snapshots_are_reported_not_parsed() {
        let good = payload(&[(b"k1", b"v1"), (b"k2", b"value two")]);
        assert_eq!(parse_dump(&good).unwrap().len(), 2);
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            assert!(parse_dump(&bad).is_err(), "flip at byte {i} went unnoticed");
        }
        for len in 0..good.len() {
            assert!(
                parse_dump(&good[..len]).is_err(),
                "cut at {len} went unnoticed"
            );
        }
    }
}
