//! What one group's state machine owns in the node's shared store.
//!
//! Two kinds of key family live side by side:
//!
//! - **Keyed by space and hash**: items, local (and, in an index's
//!   partitions, global) index entries, item collection sizes, transaction
//!   intents and item stamps. Each such key is `[space u64 BE][family][...]` where what
//!   follows the family byte (after a local index's id byte) starts with the
//!   64-bit partition-key hash. A group owns the keys of its space whose
//!   hash lies in its range `[lo, hi)`.
//! - **Keyed by group**: the group's metadata (applied index, counters, the
//!   span itself), its change log, transaction records, tokens and time
//!   indexes, and in an index's partitions the per-source marks and the
//!   versions of base items, which are keyed by the base item and so by
//!   the base table's hash, not the index's: `[group u64 BE][family][...]`.
//!
//! A group created with its table owns its whole space, and its space is
//! its own id ([`Span::whole`]); that is every group of a data directory
//! written before spans existed, which therefore needs no migration. A
//! split (issue 21) narrows the parent's range and gives the child the rest
//! of the same space, so it changes which group owns which hash range and
//! moves no bytes. Spans are stored only once they differ from the whole
//! one.

use crate::StorageError;
use crate::kv::Store;
use crate::machine::{Overlay, meta_key};

/// The families keyed by space and hash (see the module docs); every other
/// family byte is keyed by group.
pub const SPACE_FAMILIES: [u8; 6] = [
    crate::machine::ITEMS,
    crate::index::LOCAL_INDEX,
    crate::index::COLLECTION,
    crate::txn::INTENTS,
    crate::txn::STAMPS,
    crate::replica::VERSIONS,
];
/// How many of [`Span::key_ranges`] (the last ones) are hash ranges of
/// the space: one per space family, 256 for the one with index ids.
const SPACE_KEY_RANGES: usize = SPACE_FAMILIES.len() - 1 + 256;
/// The family whose keys carry a one-byte index id before the hash.
const WITH_ID: u8 = crate::index::LOCAL_INDEX;
/// The group-metadata name of a stored span.
const SPAN_META: &str = "span";
/// Bytes of a stored span: space, lo, hi (u64 BE each), then 1 if hi is
/// bounded, else 0.
const SPAN_BYTES: usize = 25;

/// A half-open byte range of store keys; `None` above: unbounded.
pub type KeyRange = (Vec<u8>, Option<Vec<u8>>);

/// What one group owns: its own group-keyed families, and the hash range
/// `[lo, hi)` of the space its items live in (`hi` `None`: up to and
/// including `u64::MAX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub group: u64,
    pub space: u64,
    pub lo: u64,
    pub hi: Option<u64>,
}

impl Span {
    /// A group that owns its whole space, named after itself.
    pub const fn whole(group: u64) -> Span {
        Span {
            group,
            space: group,
            lo: 0,
            hi: None,
        }
    }

    /// Whether the hash range holds `hash`.
    pub fn owns_hash(&self, hash: u64) -> bool {
        self.lo <= hash && self.hi.is_none_or(|hi| hash < hi)
    }

    /// Whether the group owns the item (or entry) at `storage_key`, whose
    /// first eight bytes are its hash.
    pub fn owns(&self, storage_key: &[u8]) -> bool {
        self.owns_hash(crate::catalog::key_hash(storage_key))
    }

    /// The span stored for `group`, or the whole one when none is.
    pub fn load(tree: &Store, group: u64) -> Result<Span, StorageError> {
        Span::decode(group, tree.get(meta_key(group, SPAN_META))?.as_deref())
    }

    /// The span stored for `group`, `None` when none is. A split child's
    /// span is stored by its parent's replica applying the split, in the
    /// same apply that narrows the parent, so on this node it says that
    /// the child's state as of the split is here.
    pub fn stored(tree: &Store, group: u64) -> Result<Option<Span>, StorageError> {
        match tree.get(meta_key(group, SPAN_META))? {
            Some(b) => Span::decode(group, Some(&b)).map(Some),
            None => Ok(None),
        }
    }

    /// What `group` holds in this store, to remove or replace it: its
    /// stored span; the whole space when it has none but has applied
    /// something (a group that never split); `None` when it has no state
    /// here at all (a replica just started, waiting for its first log or
    /// snapshot). The last matters: a split child's keys live in its
    /// parent's space, so treating a parent replica that never held
    /// anything here as owning its whole space would wipe a child hosted
    /// on the same node.
    pub fn held(tree: &Store, group: u64) -> Result<Option<Span>, StorageError> {
        if let Some(span) = Span::stored(tree, group)? {
            return Ok(Some(span));
        }
        let applied = crate::machine::applied_index(tree, group)?;
        Ok((applied > 0).then(|| Span::whole(group)))
    }

    /// The key ranges of `group`'s own group-keyed families (metadata,
    /// change log, records), without any hash range of a space.
    pub fn group_key_ranges(group: u64) -> Vec<KeyRange> {
        let mut out = Span::whole(group).key_ranges();
        out.truncate(out.len() - SPACE_KEY_RANGES);
        out
    }

    /// [`Span::load`], seeing writes staged in `ov`.
    pub fn load_staged(ov: &Overlay, group: u64) -> Result<Span, StorageError> {
        Span::decode(group, ov.get(&meta_key(group, SPAN_META))?.as_deref())
    }

    /// The span a snapshot of `group` carries among its key/value pairs
    /// (the whole one when it carries none).
    pub fn of_pairs(group: u64, pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<Span, StorageError> {
        let key = meta_key(group, SPAN_META);
        Span::decode(
            group,
            pairs
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.as_slice()),
        )
    }

    /// Stages this span as the group's (written with the next commit).
    pub fn store(&self, ov: &mut Overlay) {
        let mut v = Vec::with_capacity(SPAN_BYTES);
        v.extend_from_slice(&self.space.to_be_bytes());
        v.extend_from_slice(&self.lo.to_be_bytes());
        v.extend_from_slice(&self.hi.unwrap_or(0).to_be_bytes());
        v.push(self.hi.is_some() as u8);
        ov.put(meta_key(self.group, SPAN_META), v);
    }

    fn decode(group: u64, stored: Option<&[u8]>) -> Result<Span, StorageError> {
        let Some(b) = stored else {
            return Ok(Span::whole(group));
        };
        let corrupt = || {
            StorageError::Corrupt(format!(
                "span of group {group} holds {} bytes, not {SPAN_BYTES}",
                b.len()
            ))
        };
        let b: &[u8; SPAN_BYTES] = b.try_into().map_err(|_| corrupt())?;
        let word = |at: usize| {
            b.get(at..at + 8)
                .and_then(|w| <[u8; 8]>::try_from(w).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(corrupt)
        };
        let span = Span {
            group,
            space: word(0)?,
            lo: word(8)?,
            hi: match b[SPAN_BYTES - 1] {
                0 => None,
                1 => Some(word(16)?),
                other => {
                    return Err(StorageError::Corrupt(format!(
                        "span of group {group} ends in {other}, not 0 or 1"
                    )));
                }
            },
        };
        if span.hi.is_some_and(|hi| hi <= span.lo) {
            return Err(StorageError::Corrupt(format!(
                "span of group {group} is empty: {span:?}"
            )));
        }
        Ok(span)
    }

    /// Every store key range the group owns, in key order within each
    /// kind: its group-keyed families, then its hash range in each
    /// space-keyed family (per index id where the family has one).
    pub fn key_ranges(&self) -> Vec<KeyRange> {
        let mut out = Vec::new();
        // Group-keyed: the runs of family bytes not in SPACE_FAMILIES.
        let mut run: Option<u8> = None;
        for f in 0..=u8::MAX {
            let spaced = SPACE_FAMILIES.contains(&f);
            match (run, spaced) {
                (None, false) => run = Some(f),
                (Some(start), true) => {
                    out.push((prefix(self.group, &[start]), Some(prefix(self.group, &[f]))));
                    run = None;
                }
                _ => {}
            }
        }
        if let Some(start) = run {
            out.push((
                prefix(self.group, &[start]),
                self.group.checked_add(1).map(|g| g.to_be_bytes().to_vec()),
            ));
        }
        for f in SPACE_FAMILIES {
            if f == WITH_ID {
                for id in 0..=u8::MAX {
                    out.push(self.hash_range(&[f, id]));
                }
            } else {
                out.push(self.hash_range(&[f]));
            }
        }
        out
    }

    /// `[space][head][lo]` up to `[space][head][hi]` (or to the end of
    /// `[space][head]`): the group's keys of one space-keyed family (with
    /// its index id, for local index entries).
    pub(crate) fn hash_range(&self, head: &[u8]) -> KeyRange {
        let mut lo = prefix(self.space, head);
        lo.extend_from_slice(&self.lo.to_be_bytes());
        let hi = match self.hi {
            Some(hi) => {
                let mut k = prefix(self.space, head);
                k.extend_from_slice(&hi.to_be_bytes());
                Some(k)
            }
            None => successor(prefix(self.space, head)),
        };
        (lo, hi)
    }

    /// Whether `key` lies in one of [`Span::key_ranges`].
    pub fn holds_key(&self, key: &[u8]) -> bool {
        in_ranges(&self.key_ranges(), key)
    }
}

/// Whether `key` lies in one of `ranges` (build them once for many keys:
/// [`Span::key_ranges`] is a few hundred ranges).
pub fn in_ranges(ranges: &[KeyRange], key: &[u8]) -> bool {
    ranges
        .iter()
        .any(|(lo, hi)| in_range(key, lo, hi.as_deref()))
}

fn in_range(key: &[u8], lo: &[u8], hi: Option<&[u8]>) -> bool {
    key >= lo && hi.is_none_or(|hi| key < hi)
}

fn prefix(id: u64, head: &[u8]) -> Vec<u8> {
    let mut k = id.to_be_bytes().to_vec();
    k.extend_from_slice(head);
    k
}

/// The smallest key above every key starting with `b` (`None`: none is,
/// `b` being all `0xFF`).
pub(crate) fn successor(mut b: Vec<u8>) -> Option<Vec<u8>> {
    while let Some(last) = b.pop() {
        if last < 0xFF {
            b.push(last + 1);
            return Some(b);
        }
    }
    None
}

/// Every key and value of `span`, in the order of its key ranges.
pub fn scan(
    tree: &Store,
    span: &Span,
) -> impl Iterator<Item = Result<(crate::kv::Bytes, crate::kv::Bytes), StorageError>> {
    scan_ranges(tree, span.key_ranges())
}

/// Every key and value in `ranges`, in order.
pub fn scan_ranges(
    tree: &Store,
    ranges: Vec<KeyRange>,
) -> impl Iterator<Item = Result<(crate::kv::Bytes, crate::kv::Bytes), StorageError>> {
    ranges.into_iter().flat_map(move |(lo, hi)| {
        let range: (std::ops::Bound<Vec<u8>>, std::ops::Bound<Vec<u8>>) = (
            std::ops::Bound::Included(lo),
            hi.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded),
        );
        tree.range(range)
    })
}

/// `ranges` in key order, cut to the keys after `after` if given: where a
/// scan that went through them in that order up to `after` resumes.
pub fn ranges_after(mut ranges: Vec<KeyRange>, after: Option<&[u8]>) -> Vec<KeyRange> {
    ranges.sort();
    let Some(after) = after else {
        return ranges;
    };
    // The least key greater than `after`.
    let mut next = after.to_vec();
    next.push(0);
    ranges
        .into_iter()
        .filter(|(_, hi)| hi.as_ref().is_none_or(|hi| *hi > next))
        .map(|(lo, hi)| (lo.max(next.clone()), hi))
        .collect()
}

/// The key ranges `group` holds here (see [`Span::held`]): its span's, or
/// only its group-keyed ones when it holds nothing of a space.
pub fn held_ranges(tree: &Store, group: u64) -> Result<Vec<KeyRange>, StorageError> {
    Ok(match Span::held(tree, group)? {
        Some(span) => span.key_ranges(),
        None => Span::group_key_ranges(group),
    })
}

/// Stages the removal of every key in `ranges`.
pub fn clear(ov: &mut Overlay, ranges: Vec<KeyRange>) -> Result<(), StorageError> {
    let tree = ov.tree();
    let mut keys = Vec::new();
    for kv in scan_ranges(tree, ranges) {
        keys.push(kv?.0.to_vec());
    }
    for k in keys {
        ov.del(k);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(space: u64, family: u8, hash: u64) -> Vec<u8> {
        let mut k = prefix(space, &[family]);
        if family == WITH_ID {
            k.push(3);
        }
        k.extend_from_slice(&hash.to_be_bytes());
        k.extend_from_slice(b"pk");
        k
    }

    /// A narrowed span holds exactly its hash range of each space family
    /// and its own group's families, never a sibling's or another
    /// group's keys.
    #[test]
    fn a_span_holds_its_range_of_its_space_and_its_own_group_keys() {
        let parent = Span {
            group: 7,
            space: 7,
            lo: 0,
            hi: Some(1 << 63),
        };
        let child = Span {
            group: 9,
            space: 7,
            lo: 1 << 63,
            hi: None,
        };
        for f in SPACE_FAMILIES {
            assert!(parent.holds_key(&key(7, f, 5)), "family {f}");
            assert!(!parent.holds_key(&key(7, f, u64::MAX)), "family {f}");
            assert!(child.holds_key(&key(7, f, u64::MAX)), "family {f}");
            assert!(child.holds_key(&key(7, f, 1 << 63)), "family {f}");
            assert!(!child.holds_key(&key(7, f, (1 << 63) - 1)), "family {f}");
            assert!(!child.holds_key(&key(9, f, u64::MAX)), "family {f}");
        }
        for (g, span) in [(7, parent), (9, child)] {
            assert!(span.holds_key(&meta_key(g, "applied")));
            assert!(span.holds_key(&prefix(g, &[0x07, 0, 1])));
            assert!(span.holds_key(&prefix(g, &[0xFF])));
            assert!(!span.holds_key(&meta_key(g + 1, "applied")));
        }
        assert!(!parent.holds_key(&meta_key(9, "applied")));
        assert!(!child.holds_key(&meta_key(7, "applied")));
        let last = Span::whole(u64::MAX);
        assert!(last.holds_key(&prefix(u64::MAX, &[0xFF, 1])));
        assert!(last.holds_key(&key(u64::MAX, crate::machine::ITEMS, u64::MAX)));
    }

    #[test]
    fn spans_round_trip_and_bad_bytes_are_corruption() {
        let store = Store::temporary().unwrap();
        assert_eq!(Span::load(&store, 4).unwrap(), Span::whole(4));
        for span in [
            Span {
                group: 4,
                space: 2,
                lo: 10,
                hi: Some(20),
            },
            Span {
                group: 4,
                space: 2,
                lo: 10,
                hi: None,
            },
        ] {
            let mut ov = Overlay::new(&store);
            span.store(&mut ov);
            ov.commit(4, 1).unwrap();
            assert_eq!(Span::load(&store, 4).unwrap(), span);
        }
        for bad in [
            vec![0u8; 3],
            {
                let mut v = vec![0u8; SPAN_BYTES];
                v[SPAN_BYTES - 1] = 2;
                v
            },
            {
                // hi <= lo
                let mut v = vec![0u8; SPAN_BYTES];
                v[SPAN_BYTES - 1] = 1;
                v
            },
        ] {
            assert!(matches!(
                Span::decode(4, Some(&bad)),
                Err(StorageError::Corrupt(_))
            ));
        }
    }

    #[test]
    fn a_scan_resumes_after_the_key_it_stopped_at_across_ranges() {
        let r = |lo: &[u8], hi: Option<&[u8]>| (lo.to_vec(), hi.map(|h| h.to_vec()));
        // Out of order, as a span may list them; the cut is in key order.
        let ranges = vec![r(b"m", None), r(b"a", Some(b"c")), r(b"d", Some(b"f"))];
        assert_eq!(
            ranges_after(ranges.clone(), None),
            vec![r(b"a", Some(b"c")), r(b"d", Some(b"f")), r(b"m", None)]
        );
        assert_eq!(
            ranges_after(ranges.clone(), Some(&b"b"[..])),
            vec![r(b"b\0", Some(b"c")), r(b"d", Some(b"f")), r(b"m", None)]
        );
        assert_eq!(
            ranges_after(ranges.clone(), Some(&b"e"[..])),
            vec![r(b"e\0", Some(b"f")), r(b"m", None)]
        );
        // A range that ends right after the key is done.
        assert_eq!(
            ranges_after(vec![r(b"a", Some(b"b\0"))], Some(&b"b"[..])),
            Vec::<KeyRange>::new()
        );
        assert_eq!(ranges_after(ranges, Some(&b"z"[..])), vec![r(b"z\0", None)]);
    }

    /// A large group is dropped in batches of DROP_BATCH_KEYS, its
    /// metadata last: midway, its span and applied index are still there
    /// (a node stopped then removes the rest next time).
    #[test]
    fn a_group_is_dropped_in_batches_with_its_metadata_last() {
        let store = Store::temporary().unwrap();
        let keys = crate::machine::DROP_BATCH_KEYS * 2 + 10;
        let mut ov = Overlay::new(&store);
        for h in 0..keys as u64 {
            ov.put(key(7, crate::machine::ITEMS, h), b"item".to_vec());
        }
        ov.commit(7, 1).unwrap();
        let items = |s: &Store| {
            (0..keys as u64)
                .filter(|h| s.get(key(7, crate::machine::ITEMS, *h)).unwrap().is_some())
                .count()
        };
        let last = crate::machine::drop_group_step(&store, 7, None).unwrap();
        assert!(last.is_some());
        assert_eq!(items(&store), keys - crate::machine::DROP_BATCH_KEYS);
        // The next step starts after the key the first one ended at.
        assert!(
            crate::machine::drop_group_step(&store, 7, last.as_deref())
                .unwrap()
                .is_some()
        );
        assert_eq!(items(&store), keys - 2 * crate::machine::DROP_BATCH_KEYS);
        assert_eq!(crate::machine::applied_index(&store, 7).unwrap(), 1);
        assert_eq!(Span::held(&store, 7).unwrap(), Some(Span::whole(7)));
        crate::machine::drop_group(&store, 7).unwrap();
        assert_eq!(items(&store), 0);
        assert_eq!(crate::machine::applied_index(&store, 7).unwrap(), 0);
        assert_eq!(Span::held(&store, 7).unwrap(), None);
    }

    /// Removing a replica that holds nothing here (started, never fed)
    /// removes only its own group keys: a split child of it hosted on the
    /// same node keeps every key of its range, which lives in the parent's
    /// space. A replica that applied something and never split holds its
    /// whole space.
    #[test]
    fn a_replica_that_holds_nothing_never_clears_its_space() {
        let store = Store::temporary().unwrap();
        let child = Span {
            group: 9,
            space: 7,
            lo: 1 << 63,
            hi: None,
        };
        let mut ov = Overlay::new(&store);
        child.store(&mut ov);
        ov.put(key(7, crate::machine::ITEMS, u64::MAX), b"item".to_vec());
        ov.commit(9, 3).unwrap();
        assert_eq!(Span::held(&store, 7).unwrap(), None);
        crate::machine::drop_group(&store, 7).unwrap();
        assert!(
            store
                .get(key(7, crate::machine::ITEMS, u64::MAX))
                .unwrap()
                .is_some()
        );
        assert_eq!(Span::held(&store, 9).unwrap(), Some(child));
        // Group 7 applied something without ever splitting: whole space.
        let mut ov = Overlay::new(&store);
        ov.put(key(7, crate::machine::ITEMS, 5), b"mine".to_vec());
        ov.commit(7, 1).unwrap();
        assert_eq!(Span::held(&store, 7).unwrap(), Some(Span::whole(7)));
        assert_eq!(
            Span::group_key_ranges(7).len() + SPACE_KEY_RANGES,
            Span::whole(7).key_ranges().len()
        );
        crate::machine::drop_group(&store, 9).unwrap();
        assert!(
            store
                .get(key(7, crate::machine::ITEMS, 5))
                .unwrap()
                .is_some()
        );
        assert!(
            store
                .get(key(7, crate::machine::ITEMS, u64::MAX))
                .unwrap()
                .is_none()
        );
    }
}
