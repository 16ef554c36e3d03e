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
    let mut s = Search::new(ops);
    let mut seen: HashSet<(Vec<u64>, State)> = HashSet::new();
    let mut cur = s.next[0];
    loop {
        if s.known_left == 0 {
            return Verdict::Linearizable;
        }
        let call = (cur != NONE)
            .then(|| s.events[cur - 1])
            .filter(|e| e.is_call);
        if let Some(e) = call {
            if let Some(after) = ops[e.op].step.apply(s.state) {
                let mut bits = s.linearized.clone();
                bits[e.op / 64] |= 1 << (e.op % 64);
                if seen.len() >= MAX_EXPLORED_STATES {
                    return Verdict::Undecided;
                }
                if seen.insert((bits.clone(), after)) {
                    s.take(e.op, cur, after, bits);
                    cur = s.next[0];
                    continue;
                }
            }
            cur = s.next[cur];
            continue;
        }
        // A return event (or the end of the list): the operation it ends
        // was not linearized in time, so the last choice was wrong.
        let Some(top) = s.stack.pop() else {
            return Verdict::Violation;
        };
        cur = s.undo(top);
    }
}

/// The search's state: the event list (node 0 is the head sentinel, event
/// k is node k + 1) and the choices made so far.
struct Search<'a> {
    ops: &'a [KeyOp],
    events: Vec<Event>,
    next: Vec<usize>,
    prev: Vec<usize>,
    ret_node: Vec<usize>,
    linearized: Vec<u64>,
    known_left: usize,
    state: State,
    /// (operation, state before it, its call node).
    stack: Vec<(usize, State, usize)>,
}

impl<'a> Search<'a> {
    fn new(ops: &'a [KeyOp]) -> Search<'a> {
        // Events sorted by time; at equal times calls come first (the
        // operations overlap, so either order must be allowed).
        let mut timed: Vec<(u64, u8, Event)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            timed.push((
                op.call_us,
                0,
                Event {
                    op: i,
                    is_call: true,
                },
            ));
            if let Some(ret) = op.ret_us {
                let e = Event {
                    op: i,
                    is_call: false,
                };
                timed.push((ret.max(op.call_us), 1, e));
            }
        }
        timed.sort_by_key(|(t, kind, e)| (*t, *kind, e.op));
        let n = timed.len();
        let mut next: Vec<usize> = (1..=n + 1).collect();
        let mut prev: Vec<usize> = (0..=n).map(|i| i.wrapping_sub(1)).collect();
        next[n] = NONE;
        prev[0] = NONE;
        let mut ret_node = vec![NONE; ops.len()];
        for (k, (_, _, e)) in timed.iter().enumerate() {
            if !e.is_call {
                ret_node[e.op] = k + 1;
            }
        }
        Search {
            ops,
            events: timed.into_iter().map(|(_, _, e)| e).collect(),
            next,
            prev,
            ret_node,
            linearized: vec![0u64; ops.len().div_ceil(64)],
            known_left: ops.iter().filter(|o| o.ret_us.is_some()).count(),
            state: None,
            stack: Vec::new(),
        }
    }

    fn lift(&mut self, node: usize) {
        let (p, q) = (self.prev[node], self.next[node]);
        self.next[p] = q;
        if q != NONE {
            self.prev[q] = p;
        }
    }

    fn unlift(&mut self, node: usize) {
        let (p, q) = (self.prev[node], self.next[node]);
        self.next[p] = node;
        if q != NONE {
            self.prev[q] = node;
        }
    }

    /// Linearizes `op` now: takes its events out of the list.
    fn take(&mut self, op: usize, node: usize, after: State, bits: Vec<u64>) {
        self.stack.push((op, self.state, node));
        self.state = after;
        self.linearized = bits;
        if self.ops[op].ret_us.is_some() {
            self.known_left -= 1;
        }
        self.lift(node);
        if self.ret_node[op] != NONE {
            self.lift(self.ret_node[op]);
        }
    }

    /// Takes back the last linearized operation; returns the node to try
    /// next (the one after its call).
    fn undo(&mut self, (op, before, node): (usize, State, usize)) -> usize {
        self.state = before;
        self.linearized[op / 64] &= !(1 << (op % 64));
        if self.ops[op].ret_us.is_some() {
            self.known_left += 1;
        }
        if self.ret_node[op] != NONE {
            self.unlift(self.ret_node[op]);
        }
        self.unlift(node);
        self.next[node]
    }
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
