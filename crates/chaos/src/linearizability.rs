//! Linearizability of one key's sub-history: the search of Wing and Gong
//! with Lowe's memoisation (as in Porcupine), over call and return events
//! kept in a doubly linked list.
//!
//! The search walks the events in time order. At a call it tries to
//! linearize that operation now: apply its step to the current state and,
//! if the step fits and the pair (set of linearized operations, state) has
//! not been explored before, take the operation (and its return event) out
//! of the list and start again from the head. At a return event, the
//! operation returned without being linearized: undo the last choice and
//! try the next candidate. Unknown operations have no return event, so
//! they may be linearized at any point after their call, or never. The
//! history is linearizable once every operation with a known outcome is.
//!
//! Caveat: the search is exponential in the worst case (many concurrent
//! operations with indistinguishable effects). Unique written values keep
//! the workload's histories close to linear; `MAX_EXPLORED_STATES` bounds
//! the memo, and a search that hits it reports "undecided", never "ok".

use crate::model::{KeyOp, State};
use std::collections::HashSet;

/// Most (linearized set, state) pairs one key's search may remember.
pub const MAX_EXPLORED_STATES: usize = 5_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    Violation,
    /// The search gave up at `MAX_EXPLORED_STATES`.
    Undecided,
}

const NONE: usize = usize::MAX;

#[derive(Clone, Copy)]
struct Event {
    op: usize,
    is_call: bool,
}

/// Checks one key's operations (in any order), starting from an absent
/// item.
pub fn check(ops: &[KeyOp]) -> Verdict {
    // Events sorted by time; at equal times calls come first (the
    // operations overlap, so either order must be allowed).
    let mut events: Vec<(u64, u8, Event)> = Vec::with_capacity(ops.len() * 2);
    for (i, op) in ops.iter().enumerate() {
        events.push((
            op.call_us,
            0,
            Event {
                op: i,
                is_call: true,
            },
        ));
        if let Some(ret) = op.ret_us {
            events.push((
                ret.max(op.call_us),
                1,
                Event {
                    op: i,
                    is_call: false,
                },
            ));
        }
    }
    events.sort_by_key(|(t, kind, e)| (*t, *kind, e.op));
    let n = events.len();
    // Node 0 is the head sentinel; event k is node k + 1.
    let mut next: Vec<usize> = (1..=n + 1).collect();
    let mut prev: Vec<usize> = (0..=n).map(|i| i.wrapping_sub(1)).collect();
    next[n] = NONE;
    prev[0] = NONE;
    let mut ret_node = vec![NONE; ops.len()];
    for (k, (_, _, e)) in events.iter().enumerate() {
        if !e.is_call {
            ret_node[e.op] = k + 1;
        }
    }
    let lift = |next: &mut Vec<usize>, prev: &mut Vec<usize>, node: usize| {
        let (p, q) = (prev[node], next[node]);
        next[p] = q;
        if q != NONE {
            prev[q] = p;
        }
    };
    let unlift = |next: &mut Vec<usize>, prev: &mut Vec<usize>, node: usize| {
        let (p, q) = (prev[node], next[node]);
        next[p] = node;
        if q != NONE {
            prev[q] = node;
        }
    };

    let mut known_left = ops.iter().filter(|o| o.ret_us.is_some()).count();
    let mut linearized = vec![0u64; ops.len().div_ceil(64)];
    let mut seen: HashSet<(Vec<u64>, State)> = HashSet::new();
    let mut stack: Vec<(usize, State, usize)> = Vec::new();
    let mut state: State = None;
    let mut cur = next[0];
    loop {
        if known_left == 0 {
            return Verdict::Linearizable;
        }
        if cur == NONE {
            // Only unknown calls were left to try and none fit: no known
            // operation remains unplaced only if known_left were 0.
            match stack.pop() {
                None => return Verdict::Violation,
                Some(top) => {
                    cur = undo(
                        top,
                        &mut state,
                        &mut linearized,
                        &mut known_left,
                        ops,
                        &ret_node,
                        &mut next,
                        &mut prev,
                        unlift,
                    );
                    continue;
                }
            }
        }
        let e = events[cur - 1].2;
        if e.is_call {
            let op = &ops[e.op];
            if let Some(after) = op.step.apply(state) {
                let mut bits = linearized.clone();
                bits[e.op / 64] |= 1 << (e.op % 64);
                if seen.len() >= MAX_EXPLORED_STATES {
                    return Verdict::Undecided;
                }
                if seen.insert((bits.clone(), after)) {
                    stack.push((e.op, state, cur));
                    state = after;
                    linearized = bits;
                    if op.ret_us.is_some() {
                        known_left -= 1;
                    }
                    lift(&mut next, &mut prev, cur);
                    if ret_node[e.op] != NONE {
                        lift(&mut next, &mut prev, ret_node[e.op]);
                    }
                    cur = next[0];
                    continue;
                }
            }
            cur = next[cur];
        } else {
            match stack.pop() {
                None => return Verdict::Violation,
                Some(top) => {
                    cur = undo(
                        top,
                        &mut state,
                        &mut linearized,
                        &mut known_left,
                        ops,
                        &ret_node,
                        &mut next,
                        &mut prev,
                        unlift,
                    );
                }
            }
        }
    }
}

/// Takes back the last linearized operation; returns the node to try next.
#[allow(clippy::too_many_arguments)]
fn undo(
    (op, before, node): (usize, State, usize),
    state: &mut State,
    linearized: &mut [u64],
    known_left: &mut usize,
    ops: &[KeyOp],
    ret_node: &[usize],
    next: &mut Vec<usize>,
    prev: &mut Vec<usize>,
    unlift: impl Fn(&mut Vec<usize>, &mut Vec<usize>, usize),
) -> usize {
    *state = before;
    linearized[op / 64] &= !(1 << (op % 64));
    if ops[op].ret_us.is_some() {
        *known_left += 1;
    }
    if ret_node[op] != NONE {
        unlift(next, prev, ret_node[op]);
    }
    unlift(next, prev, node);
    next[node]
}

/// A short sub-history that is still not linearizable: the history cut at
/// the earliest point where it stops being linearizable (operations still
/// running there become unknown), then without every read whose removal
/// keeps it violating. Writes are kept: dropping one would change what
/// later reads should see and could invent a violation.
pub fn shrink(ops: &[KeyOp]) -> Vec<KeyOp> {
    let mut times: Vec<u64> = ops.iter().filter_map(|o| o.ret_us).collect();
    times.sort_unstable();
    times.dedup();
    let cut = |t: u64| -> Vec<KeyOp> {
        ops.iter()
            .filter(|o| o.call_us <= t)
            .filter_map(|o| match o.ret_us {
                Some(r) if r <= t => Some(o.clone()),
                _ if o.step.is_observation() => None,
                _ => Some(KeyOp {
                    ret_us: None,
                    ..o.clone()
                }),
            })
            .collect()
    };
    let (mut lo, mut hi) = (0, times.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if check(&cut(times[mid])) == Verdict::Violation {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let mut sub = match times.get(lo) {
        Some(t) => cut(*t),
        None => ops.to_vec(),
    };
    let mut i = 0;
    while i < sub.len() {
        if sub[i].step.is_observation() {
            let mut without = sub.clone();
            without.remove(i);
            if check(&without) == Verdict::Violation {
                sub = without;
                continue;
            }
        }
        i += 1;
    }
    sub.sort_by_key(|o| o.call_us);
    sub
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Item;
    use crate::model::Step;

    fn op(step: Step, call: u64, ret: Option<u64>) -> KeyOp {
        KeyOp {
            op: 0,
            step,
            call_us: call,
            ret_us: ret,
        }
    }

    fn put(val: u64, call: u64, ret: Option<u64>) -> KeyOp {
        op(Step::Put { val, cnt: 0 }, call, ret)
    }

    fn seen(val: Option<u64>, call: u64, ret: u64) -> KeyOp {
        let s = val.map(|val| Item {
            val,
            ver: 0,
            cnt: 0,
        });
        op(Step::Observe(s), call, Some(ret))
    }

    #[test]
    fn sequential_writes_and_reads_are_linearizable() {
        let h = [
            seen(None, 0, 1),
            put(1, 2, Some(3)),
            seen(Some(1), 4, 5),
            put(2, 6, Some(7)),
            seen(Some(2), 8, 9),
        ];
        assert_eq!(check(&h), Verdict::Linearizable);
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_a_violation() {
        let h = [put(1, 0, Some(1)), put(2, 2, Some(3)), seen(Some(1), 4, 5)];
        assert_eq!(check(&h), Verdict::Violation);
    }

    #[test]
    fn a_read_concurrent_with_a_write_may_see_either_value() {
        for v in [Some(1), Some(2)] {
            let h = [put(1, 0, Some(1)), put(2, 2, Some(6)), seen(v, 3, 5)];
            assert_eq!(check(&h), Verdict::Linearizable, "saw {v:?}");
        }
    }

    #[test]
    fn reads_cannot_go_back_in_time() {
        // Both reads overlap the write, but the second starts after the
        // first ended: once the new value was seen, the old one cannot be.
        let h = [
            put(1, 0, Some(1)),
            put(2, 2, Some(10)),
            seen(Some(2), 3, 4),
            seen(Some(1), 5, 6),
        ];
        assert_eq!(check(&h), Verdict::Violation);
    }

    #[test]
    fn an_unknown_write_may_or_may_not_take_effect() {
        let took = [
            put(1, 0, Some(1)),
            put(2, 2, None),
            seen(Some(1), 3, 4),
            seen(Some(2), 5, 6),
        ];
        assert_eq!(check(&took), Verdict::Linearizable);
        let never = [put(1, 0, Some(1)), put(2, 2, None), seen(Some(1), 30, 40)];
        assert_eq!(check(&never), Verdict::Linearizable);
        // ...but not before it was invoked.
        let early = [put(1, 0, Some(1)), seen(Some(2), 2, 3), put(2, 5, None)];
        assert_eq!(check(&early), Verdict::Violation);
    }

    #[test]
    fn a_read_of_a_value_nobody_wrote_is_a_violation() {
        let h = [put(1, 0, Some(1)), seen(Some(7), 2, 3)];
        assert_eq!(check(&h), Verdict::Violation);
    }

    #[test]
    fn two_compare_and_sets_from_the_same_version_cannot_both_win() {
        let cas = |val, call, ret| op(Step::Cas { expect: 0, val }, call, Some(ret));
        let h = [put(1, 0, Some(1)), cas(2, 2, 5), cas(3, 3, 6)];
        assert_eq!(check(&h), Verdict::Violation);
        let failed = op(Step::CasFailed { expect: 0 }, 3, Some(6));
        let h = [put(1, 0, Some(1)), cas(2, 2, 5), failed];
        assert_eq!(check(&h), Verdict::Linearizable);
    }

    #[test]
    fn acknowledged_increments_must_all_count() {
        let add = |call, ret| op(Step::Add(2), call, ret);
        let cnt = |cnt, call, ret| {
            op(
                Step::Observe(Some(Item {
                    val: 0,
                    ver: 0,
                    cnt,
                })),
                call,
                Some(ret),
            )
        };
        let h = [add(0, Some(1)), add(0, Some(2)), add(3, None), cnt(4, 5, 6)];
        assert_eq!(check(&h), Verdict::Linearizable);
        let lost = [add(0, Some(1)), add(0, Some(2)), cnt(2, 5, 6)];
        assert_eq!(check(&lost), Verdict::Violation);
    }

    #[test]
    fn shrink_keeps_a_violation_and_drops_what_it_does_not_need() {
        let mut h = vec![put(1, 0, Some(1))];
        for t in 0..20 {
            h.push(seen(Some(1), 2 + t * 2, 3 + t * 2));
        }
        h.push(put(2, 50, Some(51)));
        h.push(seen(Some(1), 52, 53)); // stale
        h.push(seen(Some(2), 54, 55));
        assert_eq!(check(&h), Verdict::Violation);
        let sub = shrink(&h);
        assert_eq!(check(&sub), Verdict::Violation);
        assert_eq!(sub.len(), 3, "{sub:?}");
    }
}
