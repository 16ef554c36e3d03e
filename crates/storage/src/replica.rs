//! Global tables, in a partition's state machine: the version of every
//! item (for last-writer-wins between regions), tombstones, and each peer
//! region's replication cursor.
//!
//! ```text
//! [space] 0x0F [storage key]   the item's version: ts u64 BE, deleted u8, region (UTF-8)
//! [group] 0x00 "rg_region"     this partition's writes are versioned and logged,
//!                              stamped with this region (StartReplication)
//! [group] 0x00 "rg_peers"      per peer region: change sequence shipped to it and
//!                              acknowledged, and whether the items written before
//!                              replication began were copied (JSON)
//! ```
//!
//! A version is `(ts, region)`, ordered by the timestamp and then by the
//! region's name, so two regions always agree on which of two writes is
//! the later one. A local write's timestamp is the proposing leader's
//! clock, raised to one past the item's current version when that is
//! ahead (a hybrid logical clock per item): a write made after seeing a
//! replicated one is always later than it. A replicated write carries the
//! version it got in its own region and is applied only when that version
//! is later than the item's (see `machine::apply_write`), so every region
//! converges on the write with the greatest version, whatever order the
//! writes arrive in.
//!
//! A delete keeps the item's version, marked deleted: a tombstone. A
//! replicated write older than the delete is then refused as it would be
//! for a live item, so a delayed write never brings a deleted item back.
//! Tombstones are kept for as long as the partition (their removal needs
//! every peer's acknowledgement of everything older, which is not built).
//!
//! The version family is keyed by space and hash, like items, so a split
//! moves no version. Change records of a replicating partition carry the
//! version (`global::ChangeRecord::version`); the change log keeps every
//! record a peer has not acknowledged (`global::trim` and `global::purge`
//! stop at the lowest cursor).

use crate::StorageError;
use crate::machine::{Overlay, meta_key};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The family of item versions (keyed by space and hash).
pub(crate) const VERSIONS: u8 = 0x0F;
/// Longest region name, in bytes (AWS names are under 20).
pub const MAX_REGION_BYTES: usize = 64;
const REGION_META: &str = "rg_region";
const PEERS_META: &str = "rg_peers";

/// When and where a write was made: what last-writer-wins compares.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Version {
    /// Unix milliseconds, from the writing region's leader (raised past the
    /// item's previous version).
    pub ts_ms: u64,
    /// The region the write was made in.
    pub region: String,
}

/// A write of a global table, as its command carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalWrite {
    /// The deployment's region, which a local write is stamped with.
    pub region: String,
    /// A write replicated from another region: the version it got there;
    /// it is applied only if later than the item's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Version>,
}

impl GlobalWrite {
    /// A local write of a table that is global in `region` (`None`: the
    /// table is not global).
    pub fn local(region: Option<String>) -> Option<Box<GlobalWrite>> {
        region.map(|region| {
            Box::new(GlobalWrite {
                region,
                version: None,
            })
        })
    }
}

/// A peer region's replication state in one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// Every change record up to this sequence was shipped and
    /// acknowledged.
    pub shipped: u64,
    /// The items written before replication to it began were copied.
    pub copied: bool,
}

fn version_key(space: u64, storage_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + storage_key.len());
    k.extend_from_slice(&space.to_be_bytes());
    k.push(VERSIONS);
    k.extend_from_slice(storage_key);
    k
}

fn encode(v: &Version, deleted: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + v.region.len());
    out.extend_from_slice(&v.ts_ms.to_be_bytes());
    out.push(deleted as u8);
    out.extend_from_slice(v.region.as_bytes());
    out
}

fn decode(b: &[u8]) -> Result<(Version, bool), StorageError> {
    let corrupt = || StorageError::Corrupt("item version".into());
    let (ts, rest) = b.split_first_chunk::<8>().ok_or_else(corrupt)?;
    let (deleted, region) = rest.split_first().ok_or_else(corrupt)?;
    let region = std::str::from_utf8(region).map_err(|_| corrupt())?;
    Ok((
        Version {
            ts_ms: u64::from_be_bytes(*ts),
            region: region.to_string(),
        },
        *deleted != 0,
    ))
}

/// The version of the item at `storage_key` in `space` and whether it is a
/// tombstone; `None` for an item never versioned (written before its table
/// replicated, or never written).
pub(crate) fn version(
    ov: &Overlay,
    space: u64,
    storage_key: &[u8],
) -> Result<Option<(Version, bool)>, StorageError> {
    ov.get(&version_key(space, storage_key))?
        .map(|b| decode(&b))
        .transpose()
}

/// [`version`], read outside an apply (the replicator's copy).
pub fn read_version(
    tree: &crate::kv::Store,
    space: u64,
    storage_key: &[u8],
) -> Result<Option<(Version, bool)>, StorageError> {
    version(&Overlay::new(tree), space, storage_key)
}

/// Whether a replicated write of `incoming` to the item at `storage_key`
/// loses to the version stored (an equal version is the same write,
/// arriving again).
pub(crate) fn superseded(
    ov: &Overlay,
    space: u64,
    storage_key: &[u8],
    incoming: &Version,
) -> Result<bool, StorageError> {
    Ok(version(ov, space, storage_key)?.is_some_and(|(v, _)| v >= *incoming))
}

/// The region `group` stamps its writes with, when it replicates.
pub(crate) fn local_region(ov: &Overlay, group: u64) -> Result<Option<String>, StorageError> {
    ov.get_setting(&meta_key(group, REGION_META))?
        .map(|b| String::from_utf8(b).map_err(|_| StorageError::Corrupt("region name".into())))
        .transpose()
}

/// Stages the version of a write to `storage_key` and returns it: the
/// replicated write's own (`incoming`), or for a local write in `region`
/// the leader's `ts_ms` raised past the item's current version.
pub(crate) fn stamp(
    ov: &mut Overlay,
    space: u64,
    storage_key: &[u8],
    incoming: Option<&Version>,
    region: &str,
    ts_ms: u64,
    deleted: bool,
) -> Result<Version, StorageError> {
    let v = match incoming {
        Some(v) => v.clone(),
        None => {
            let floor = version(ov, space, storage_key)?.map_or(0, |(v, _)| v.ts_ms + 1);
            Version {
                ts_ms: ts_ms.max(floor),
                region: region.to_string(),
            }
        }
    };
    ov.put(version_key(space, storage_key), encode(&v, deleted));
    Ok(v)
}

/// The peer regions `group` replicates to.
pub fn peers_of(ov: &Overlay, group: u64) -> Result<BTreeMap<String, Peer>, StorageError> {
    match ov.get(&meta_key(group, PEERS_META))? {
        Some(b) => serde_json::from_slice(&b)
            .map_err(|e| StorageError::Corrupt(format!("replication peers: {e}"))),
        None => Ok(BTreeMap::new()),
    }
}

/// [`peers_of`], read outside an apply.
pub fn peers(tree: &crate::kv::Store, group: u64) -> Result<BTreeMap<String, Peer>, StorageError> {
    peers_of(&Overlay::new(tree), group)
}

fn store_peers(
    ov: &mut Overlay,
    group: u64,
    peers: &BTreeMap<String, Peer>,
) -> Result<(), StorageError> {
    let bytes = serde_json::to_vec(peers).map_err(|e| StorageError::Fatal(e.to_string()))?;
    ov.put(meta_key(group, PEERS_META), bytes);
    Ok(())
}

/// Begins replicating `group`'s writes, stamped with `region`, to `peer`:
/// from now on every write is versioned and logged. Returns the peer's
/// cursor: the last sequence logged before (the items written up to it
/// are copied, the records after it shipped). Applying it again returns
/// the peer's cursor unchanged.
pub(crate) fn start(
    ov: &mut Overlay,
    group: u64,
    region: &str,
    peer: &str,
) -> Result<u64, StorageError> {
    if local_region(ov, group)?.is_none() {
        ov.put(meta_key(group, REGION_META), region.as_bytes().to_vec());
    }
    let mut peers = peers_of(ov, group)?;
    if let Some(p) = peers.get(peer) {
        return Ok(p.shipped);
    }
    let seq = ov.get_u64(&meta_key(group, "cl_seq"))?;
    peers.insert(
        peer.to_string(),
        Peer {
            shipped: seq,
            copied: false,
        },
    );
    store_peers(ov, group, &peers)?;
    Ok(seq)
}

/// `peer` acknowledged the records up to `upto` (and, when `copied`, the
/// copy of the older items). A cursor never moves back.
pub(crate) fn shipped(
    ov: &mut Overlay,
    group: u64,
    peer: &str,
    upto: u64,
    copied: bool,
) -> Result<(), StorageError> {
    let mut peers = peers_of(ov, group)?;
    let Some(p) = peers.get_mut(peer) else {
        return Ok(());
    };
    p.shipped = p.shipped.max(upto);
    p.copied |= copied;
    store_peers(ov, group, &peers)
}

/// Stops replicating to `peer`: its records are no longer kept for it.
pub(crate) fn stop(ov: &mut Overlay, group: u64, peer: &str) -> Result<(), StorageError> {
    let mut peers = peers_of(ov, group)?;
    if peers.remove(peer).is_some() {
        store_peers(ov, group, &peers)?;
    }
    Ok(())
}

/// The highest change sequence every peer acknowledged: the change log
/// keeps the records after it (`None`: no peer, nothing kept for one).
pub(crate) fn kept_after(ov: &Overlay, group: u64) -> Result<Option<u64>, StorageError> {
    Ok(peers_of(ov, group)?.values().map(|p| p.shipped).min())
}

/// A split's child replicates as its parent did: same region, same peers,
/// copies done where the parent's were, and cursors at the start of its
/// own log (numbered after the parent's, whose older records the parent
/// still ships).
pub(crate) fn split(ov: &mut Overlay, parent: u64, child: u64) -> Result<(), StorageError> {
    let Some(region) = local_region(ov, parent)? else {
        return Ok(());
    };
    ov.put(meta_key(child, REGION_META), region.into_bytes());
    let start = ov.get_u64(&meta_key(parent, "cl_seq"))?;
    let peers = peers_of(ov, parent)?
        .into_iter()
        .map(|(name, p)| {
            let peer = Peer {
                shipped: start,
                copied: p.copied,
            };
            (name, peer)
        })
        .collect();
    store_peers(ov, child, &peers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Entry, WriteCommand, WriteKind};
    use crate::global::{Origin, read_changes};
    use crate::kv::Store;
    use crate::machine::{Outcome, apply, read_item};
    use crate::span::Span;
    use crate::txn::tests::put;

    const GROUP: u64 = 40;

    fn run(tree: &Store, ts_ms: u64, cmd: Command) -> Outcome {
        let mut ov = Overlay::new(tree);
        let outcome = apply(&mut ov, Span::whole(GROUP), &Entry { ts_ms, cmd }).unwrap();
        ov.commit(GROUP, 1).unwrap();
        outcome
    }

    fn local(key: &str, n: i64) -> Command {
        Command::Write(WriteCommand {
            replicated: GlobalWrite::local(Some("us-east-1".into())),
            ..put(key, n, None)
        })
    }

    fn remote(key: &str, n: Option<i64>, ts_ms: u64, region: &str) -> Command {
        let mut w = put(key, n.unwrap_or(0), None);
        if n.is_none() {
            w.kind = WriteKind::Delete;
            w.item = None;
        }
        w.origin = Origin::Replica;
        w.replicated = Some(Box::new(GlobalWrite {
            region: "us-east-1".into(),
            version: Some(Version {
                ts_ms,
                region: region.into(),
            }),
        }));
        Command::Write(w)
    }

    fn n_of(tree: &Store, key: &str) -> Option<String> {
        read_item(tree, Span::whole(GROUP), key.as_bytes())
            .unwrap()
            .and_then(|i| i.get("n").cloned())
            .map(|v| format!("{v:?}"))
    }

    #[test]
    fn the_later_write_wins_in_any_order_and_a_tombstone_stops_older_writes() {
        let t = Store::temporary().unwrap();
        // A local write at 100, then an older replicated one: refused.
        run(&t, 100, local("a", 1));
        assert!(matches!(
            run(&t, 101, remote("a", Some(2), 99, "eu-west-1")),
            Outcome::Superseded
        ));
        assert!(n_of(&t, "a").unwrap().contains('1'));
        // Same millisecond: the region name decides (eu < us).
        assert!(matches!(
            run(&t, 102, remote("a", Some(3), 100, "eu-west-1")),
            Outcome::Superseded
        ));
        // A later one wins; a local write after it is later still, even
        // with the leader's clock behind.
        run(&t, 103, remote("a", Some(4), 500, "eu-west-1"));
        assert!(n_of(&t, "a").unwrap().contains('4'));
        run(&t, 104, local("a", 5));
        let (v, deleted) = read_version(&t, GROUP, b"a").unwrap().unwrap();
        assert_eq!(
            (v.ts_ms, v.region.as_str(), deleted),
            (501, "us-east-1", false)
        );
        // A replicated delete leaves a tombstone; an older put stays dead,
        // the same delete again changes nothing.
        run(&t, 105, remote("a", None, 600, "eu-west-1"));
        assert_eq!(n_of(&t, "a"), None);
        assert!(matches!(
            run(&t, 106, remote("a", Some(6), 550, "eu-west-1")),
            Outcome::Superseded
        ));
        assert!(matches!(
            run(&t, 107, remote("a", None, 600, "eu-west-1")),
            Outcome::Superseded
        ));
        assert_eq!(n_of(&t, "a"), None, "nothing resurrected");
        assert!(read_version(&t, GROUP, b"a").unwrap().unwrap().1);
        // A delete of an item never seen here still leaves its tombstone.
        run(&t, 108, remote("b", None, 700, "eu-west-1"));
        assert!(matches!(
            run(&t, 109, remote("b", Some(1), 650, "eu-west-1")),
            Outcome::Superseded
        ));
        assert_eq!(n_of(&t, "b"), None);
        // Every change is logged with its version and origin.
        let log = read_changes(&t, GROUP, 0, (100, usize::MAX)).unwrap();
        let seen: Vec<(u64, Origin)> = log
            .iter()
            .map(|(_, r)| (r.version.as_ref().unwrap().ts_ms, r.origin))
            .collect();
        assert_eq!(
            seen,
            [
                (100, Origin::Client),
                (500, Origin::Replica),
                (501, Origin::Client),
                (600, Origin::Replica),
            ]
        );
    }

    #[test]
    fn the_change_log_keeps_what_a_peer_has_not_acknowledged() {
        let t = Store::temporary().unwrap();
        run(&t, 1, local("a", 1));
        let start = Command::StartReplication {
            region: "us-east-1".into(),
            peer: "eu-west-1".into(),
        };
        assert!(matches!(run(&t, 2, start.clone()), Outcome::Sequence(1)));
        for n in 2..=5 {
            run(&t, 3, local("a", n));
        }
        // Started again: the cursor is unchanged.
        assert!(matches!(run(&t, 4, start), Outcome::Sequence(1)));
        let trim = Command::TrimChangeLog {
            upto: 5,
            retain: false,
        };
        run(&t, 5, trim.clone());
        let left = |t: &Store| read_changes(t, GROUP, 0, (100, usize::MAX)).unwrap().len();
        assert_eq!(left(&t), 4, "records 2..=5 wait for the peer");
        let shipped = Command::ReplicationShipped {
            peer: "eu-west-1".into(),
            upto: 3,
            copied: true,
        };
        run(&t, 6, shipped);
        run(&t, 7, trim.clone());
        assert_eq!(left(&t), 2);
        let p = peers(&t, GROUP).unwrap();
        assert_eq!(
            p["eu-west-1"],
            Peer {
                shipped: 3,
                copied: true
            }
        );
        run(
            &t,
            8,
            Command::StopReplication {
                peer: "eu-west-1".into(),
            },
        );
        run(&t, 9, trim);
        assert_eq!(left(&t), 0, "no peer: nothing kept for one");
        // The group still versions its writes (it keeps its region).
        run(&t, 10, Command::Write(put("c", 1, None)));
        assert!(read_version(&t, GROUP, b"c").unwrap().is_some());
    }

    #[test]
    fn versions_order_by_time_then_region_and_round_trip() {
        let a = Version {
            ts_ms: 5,
            region: "eu-west-1".into(),
        };
        let b = Version {
            ts_ms: 5,
            region: "us-east-1".into(),
        };
        let c = Version {
            ts_ms: 6,
            region: "af-south-1".into(),
        };
        assert!(a < b && b < c);
        assert_eq!(decode(&encode(&b, true)).unwrap(), (b.clone(), true));
        assert!(decode(&[1, 2, 3]).is_err(), "short bytes are corrupt");
    }
}
