//! The sequential specification the history is checked against: one item
//! per key, and what each operation does to it when it runs alone. The
//! history is projected onto keys first (linearizability is compositional:
//! a history is linearizable iff each key's sub-history is), so a
//! transaction becomes one step on each of its keys; its atomicity across
//! keys is checked separately by the bank invariant.

use crate::history::{Call, Item, Op, Status};
use std::collections::BTreeMap;

/// The state of one key: its item, or nothing.
pub type State = Option<Item>;

/// One operation's effect on one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// A read that returned this state.
    Observe(State),
    Put {
        val: u64,
        cnt: i64,
    },
    Cas {
        expect: u64,
        val: u64,
    },
    /// A compare-and-set that failed its condition: the item was absent or
    /// at another version.
    CasFailed {
        expect: u64,
    },
    Add(i64),
    /// The source side of a transfer: only if the balance suffices.
    Debit(i64),
    Delete,
}

impl Step {
    /// The state after this step from `s`, or `None` if the step cannot
    /// happen in state `s` with the result the client saw.
    pub fn apply(self, s: State) -> Option<State> {
        match self {
            Step::Observe(seen) => (seen == s).then_some(s),
            Step::Put { val, cnt } => Some(Some(Item { val, ver: 0, cnt })),
            Step::Cas { expect, val } => match s {
                Some(it) if it.ver == expect => Some(Some(Item {
                    val,
                    ver: expect + 1,
                    cnt: it.cnt,
                })),
                _ => None,
            },
            Step::CasFailed { expect } => match s {
                Some(it) if it.ver == expect => None,
                _ => Some(s),
            },
            Step::Add(d) => Some(Some(match s {
                Some(it) => Item {
                    cnt: it.cnt + d,
                    ..it
                },
                None => Item {
                    val: 0,
                    ver: 0,
                    cnt: d,
                },
            })),
            Step::Debit(d) => match s {
                Some(it) if it.cnt >= d => Some(Some(Item {
                    cnt: it.cnt - d,
                    ..it
                })),
                _ => None,
            },
            Step::Delete => Some(None),
        }
    }
}

/// One operation's step on one key, with its real-time bounds.
#[derive(Clone, Debug)]
pub struct KeyOp {
    /// Index of the operation in the history.
    pub op: usize,
    pub step: Step,
    pub call_us: u64,
    /// `None`: unknown outcome, may take effect any time after the call
    /// (or never).
    pub ret_us: Option<u64>,
}

/// Splits a history into per-key sub-histories of steps. Operations that
/// provably did nothing and saw nothing are left out; unknown reads are
/// left out (they change nothing); unknown writes stay, as optional steps.
pub fn project(ops: &[Op]) -> BTreeMap<String, Vec<KeyOp>> {
    let mut keys: BTreeMap<String, Vec<KeyOp>> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        let mut push = |key: &str, step: Step| {
            keys.entry(key.to_string()).or_default().push(KeyOp {
                op: i,
                step,
                call_us: op.call_us,
                ret_us: op.effect_by_us(),
            });
        };
        match (&op.call, op.status) {
            (_, Status::Fail) => {
                if let Call::Cas { key, expect, .. } = &op.call
                    && op.error.as_deref() == Some(CONDITION_FAILED)
                {
                    push(key, Step::CasFailed { expect: *expect });
                }
            }
            (Call::Read { key }, Status::Ok) => {
                if let Some(seen) = op.read.first() {
                    push(key, Step::Observe(*seen));
                }
            }
            (Call::Snapshot { keys }, Status::Ok) => {
                for (key, seen) in keys.iter().zip(&op.read) {
                    push(key, Step::Observe(*seen));
                }
            }
            (Call::Read { .. } | Call::Snapshot { .. }, _) => {}
            (Call::Put { key, val, cnt }, _) => push(
                key,
                Step::Put {
                    val: *val,
                    cnt: *cnt,
                },
            ),
            (Call::Cas { key, expect, val }, _) => push(
                key,
                Step::Cas {
                    expect: *expect,
                    val: *val,
                },
            ),
            (Call::Add { key, delta }, _) => push(key, Step::Add(*delta)),
            (Call::Delete { key }, _) => push(key, Step::Delete),
            (Call::Transfer { from, to, amount }, _) => {
                push(from, Step::Debit(*amount));
                push(to, Step::Add(*amount));
            }
        }
    }
    keys
}

/// The error code of a condition that did not hold.
pub const CONDITION_FAILED: &str = "ConditionalCheckFailedException";

impl Step {
    /// Reads and failed conditions: steps that only look at the state.
    pub fn is_observation(&self) -> bool {
        matches!(self, Step::Observe(_) | Step::CasFailed { .. })
    }
}
