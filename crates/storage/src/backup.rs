//! Change-log pins: what an on-demand backup holds in a partition's change
//! log while it copies the partition.
//!
//! ```text
//! [group] 0x00 "pins"   JSON {holder: [seq, ms]}: each holder's first
//!                       sequence is after `seq`; pinned at `ms`
//! ```
//!
//! A backup of a table at a moment T copies each partition's items while
//! the table takes writes, so the copy is of no single moment; it then
//! undoes, newest first, every change logged after T (each record carries
//! the item's old image), which leaves the copy at T exactly
//! (`dynaraft_cluster::backup`). For that, the changes after T must be in
//! the log: while a partition has a pin, every write that changes an item
//! is logged (`machine::stage`), and no record after the lowest pin is
//! removed (`global::remove_through`). A pin is taken before T is chosen
//! and released once the copy is done.

use crate::StorageError;
use crate::kv::Store;
use crate::machine::{Outcome, Overlay, meta_key};
use std::collections::BTreeMap;

const PINS: &str = "pins";

/// Pins by holder: the change sequence each holder's records follow, and
/// when it pinned (the proposing leader's clock, Unix milliseconds).
pub type Pins = BTreeMap<String, (u64, u64)>;

fn decode(bytes: Option<Vec<u8>>) -> Result<Pins, StorageError> {
    match bytes {
        None => Ok(Pins::new()),
        Some(b) => serde_json::from_slice(&b)
            .map_err(|e| StorageError::Corrupt(format!("change-log pins: {e}"))),
    }
}

/// The pins of `group`.
pub fn pins(tree: &Store, group: u64) -> Result<Pins, StorageError> {
    decode(tree.get(meta_key(group, PINS))?.map(|v| v.to_vec()))
}

fn staged(ov: &Overlay, group: u64) -> Result<Pins, StorageError> {
    decode(ov.get(&meta_key(group, PINS))?)
}

fn store(ov: &mut Overlay, group: u64, pins: &Pins) {
    if pins.is_empty() {
        ov.del(meta_key(group, PINS));
    } else {
        ov.put(
            meta_key(group, PINS),
            serde_json::to_vec(pins).unwrap_or_default(),
        );
    }
}

/// Whether `group` holds a pin: every change is logged.
pub(crate) fn pinned(ov: &Overlay, group: u64) -> Result<bool, StorageError> {
    Ok(ov.get_setting(&meta_key(group, PINS))?.is_some())
}

/// The lowest pin of `group`: no record after it may be removed.
pub(crate) fn lowest(ov: &Overlay, group: u64) -> Result<Option<u64>, StorageError> {
    Ok(staged(ov, group)?.into_values().map(|(seq, _)| seq).min())
}

/// Pins `group`'s log for `holder` after its last record, at `ts_ms`; a
/// holder that already has a pin keeps it. The pin's sequence is the
/// outcome.
pub(crate) fn pin(
    ov: &mut Overlay,
    group: u64,
    holder: &str,
    ts_ms: u64,
) -> Result<Outcome, StorageError> {
    let mut pins = staged(ov, group)?;
    if let Some((seq, _)) = pins.get(holder) {
        return Ok(Outcome::Sequence(*seq));
    }
    let seq = ov.get_u64(&meta_key(group, "cl_seq"))?;
    pins.insert(holder.to_string(), (seq, ts_ms));
    store(ov, group, &pins);
    Ok(Outcome::Sequence(seq))
}

/// Moves `holder`'s pin of `group` up to `upto` (never back, never past
/// the log's last record): records up to it may then be removed.
pub(crate) fn advance(
    ov: &mut Overlay,
    group: u64,
    holder: &str,
    upto: u64,
) -> Result<Outcome, StorageError> {
    let mut pins = staged(ov, group)?;
    let last = ov.get_u64(&meta_key(group, "cl_seq"))?;
    if let Some((seq, _)) = pins.get_mut(holder) {
        *seq = (*seq).max(upto.min(last));
        store(ov, group, &pins);
    }
    Ok(Outcome::Done)
}

/// Releases `holder`'s pin of `group`, if it has one.
pub(crate) fn unpin(ov: &mut Overlay, group: u64, holder: &str) -> Result<Outcome, StorageError> {
    let mut pins = staged(ov, group)?;
    if pins.remove(holder).is_some() {
        store(ov, group, &pins);
    }
    Ok(Outcome::Done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::Store;

    #[test]
    fn a_pin_is_kept_until_released_and_the_lowest_wins() {
        let tree = Store::temporary().unwrap();
        let mut ov = Overlay::new(&tree);
        ov.put(meta_key(7, "cl_seq"), 5u64.to_be_bytes().to_vec());
        assert!(!pinned(&ov, 7).unwrap());
        assert!(matches!(
            pin(&mut ov, 7, "a", 1).unwrap(),
            Outcome::Sequence(5)
        ));
        ov.put(meta_key(7, "cl_seq"), 9u64.to_be_bytes().to_vec());
        // Pinning again keeps the first sequence.
        assert!(matches!(
            pin(&mut ov, 7, "a", 1).unwrap(),
            Outcome::Sequence(5)
        ));
        assert!(matches!(
            pin(&mut ov, 7, "b", 2).unwrap(),
            Outcome::Sequence(9)
        ));
        assert!(pinned(&ov, 7).unwrap());
        assert_eq!(lowest(&ov, 7).unwrap(), Some(5));
        advance(&mut ov, 7, "a", 7).unwrap();
        assert_eq!(lowest(&ov, 7).unwrap(), Some(7));
        // Never past the last record, never back.
        advance(&mut ov, 7, "a", 99).unwrap();
        advance(&mut ov, 7, "a", 2).unwrap();
        assert_eq!(lowest(&ov, 7).unwrap(), Some(9));
        unpin(&mut ov, 7, "a").unwrap();
        assert_eq!(lowest(&ov, 7).unwrap(), Some(9));
        unpin(&mut ov, 7, "b").unwrap();
        assert!(!pinned(&ov, 7).unwrap());
        assert_eq!(lowest(&ov, 7).unwrap(), None);
    }
}
