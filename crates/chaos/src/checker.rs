//! What a run must satisfy, checked from its history alone:
//!
//! 1. Linearizability of every key's sub-history (`linearizability`).
//! 2. No acknowledged write lost: where one acknowledged write is
//!    provably the last write of a register key (every other write that
//!    could have taken effect finished before it began), the final
//!    strongly consistent read returns exactly what it wrote.
//! 3. Counters (keys only ever incremented with ADD): the final value is at
//!    least the sum of acknowledged increments and at most that plus the
//!    increments whose outcome is unknown.
//! 4. Bank: every TransactGetItems of all accounts, and the final reads,
//!    sum to the total the accounts started with (transfers move balance,
//!    never create or destroy it).
//!
//! Keys are told apart by prefix: `r` registers, `c` counters, `a`
//! accounts.

use crate::history::{Call, Op, Status};
use crate::linearizability::{self, Verdict};
use crate::model::{self, KeyOp, Step};
use serde::Serialize;

pub const REGISTER_PREFIX: &str = "r";
pub const COUNTER_PREFIX: &str = "c";
pub const ACCOUNT_PREFIX: &str = "a";

#[derive(Serialize, Debug, Default)]
pub struct Report {
    pub operations: usize,
    pub ok: usize,
    pub failed: usize,
    pub unknown: usize,
    pub keys_checked: usize,
    /// Keys whose history is not linearizable, each with a short violating
    /// sub-history (history indexes and steps).
    pub nonlinearizable: Vec<KeyViolation>,
    /// Keys whose search hit its state limit.
    pub undecided: Vec<String>,
    pub lost_writes: Vec<String>,
    pub counter_violations: Vec<String>,
    pub bank_violations: Vec<String>,
}

#[derive(Serialize, Debug)]
pub struct KeyViolation {
    pub key: String,
    pub sub_history: Vec<String>,
}

impl Report {
    pub fn violations(&self) -> usize {
        self.nonlinearizable.len()
            + self.lost_writes.len()
            + self.counter_violations.len()
            + self.bank_violations.len()
    }
}

/// Checks a whole history. The last operation on each key is expected to
/// be the final read of the verification phase.
pub fn check(ops: &[Op]) -> Report {
    let mut report = Report {
        operations: ops.len(),
        ok: ops.iter().filter(|o| o.status == Status::Ok).count(),
        failed: ops.iter().filter(|o| o.status == Status::Fail).count(),
        unknown: ops.iter().filter(|o| o.status == Status::Unknown).count(),
        ..Report::default()
    };
    let per_key = model::project(ops);
    report.keys_checked = per_key.len();
    for (key, kops) in &per_key {
        match linearizability::check(kops) {
            Verdict::Linearizable => {}
            Verdict::Undecided => report.undecided.push(key.clone()),
            Verdict::Violation => report.nonlinearizable.push(KeyViolation {
                key: key.clone(),
                sub_history: linearizability::shrink(kops)
                    .iter()
                    .map(|k| describe(&ops[k.op], k))
                    .collect(),
            }),
        }
        if key.starts_with(REGISTER_PREFIX)
            && let Some(lost) = lost_write(key, kops, ops)
        {
            report.lost_writes.push(lost);
        }
        if key.starts_with(COUNTER_PREFIX)
            && let Some(v) = counter_violation(key, kops)
        {
            report.counter_violations.push(v);
        }
    }
    report.bank_violations = bank_violations(ops);
    report
}

fn describe(op: &Op, k: &KeyOp) -> String {
    let ret = match k.ret_us {
        Some(r) => format!("{:.3}s", r as f64 / 1e6),
        None => "?".into(),
    };
    format!(
        "#{} client {} [{:.3}s, {ret}] {:?} {:?}{}",
        op.id,
        op.client,
        op.call_us as f64 / 1e6,
        op.status,
        k.step,
        op.error
            .as_deref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default()
    )
}

/// The key's last read (by invocation), if it succeeded.
fn final_read(kops: &[KeyOp]) -> Option<&KeyOp> {
    kops.iter()
        .filter(|k| matches!(k.step, Step::Observe(_)))
        .max_by_key(|k| k.call_us)
}

fn lost_write(key: &str, kops: &[KeyOp], ops: &[Op]) -> Option<String> {
    let last_read = final_read(kops)?;
    let Step::Observe(seen) = last_read.step else {
        return None;
    };
    let writes: Vec<&KeyOp> = kops
        .iter()
        .filter(|k| !k.step.is_observation() && k.call_us < last_read.call_us)
        .collect();
    let last = writes
        .iter()
        .filter(|k| k.ret_us.is_some() && ops[k.op].status == Status::Ok)
        .max_by_key(|k| k.call_us)?;
    let provably_last = writes
        .iter()
        .all(|w| w.op == last.op || w.ret_us.is_some_and(|r| r < last.call_us));
    if !provably_last || last.ret_us.is_none_or(|r| r >= last_read.call_us) {
        return None;
    }
    let expected = match last.step {
        Step::Put { val, .. } | Step::Cas { val, .. } => seen.is_some_and(|it| it.val == val),
        Step::Delete => seen.is_none(),
        _ => return None,
    };
    (!expected).then(|| {
        format!(
            "{key}: acknowledged write #{} ({:?}) is the last one, but the final read saw {seen:?}",
            ops[last.op].id, last.step
        )
    })
}

fn counter_violation(key: &str, kops: &[KeyOp]) -> Option<String> {
    let last_read = final_read(kops)?;
    let Step::Observe(seen) = last_read.step else {
        return None;
    };
    let (mut acked, mut maybe) = (0i64, 0i64);
    for k in kops {
        if let Step::Add(d) = k.step {
            match k.ret_us {
                Some(_) => acked += d,
                None => maybe += d,
            }
        }
    }
    let value = seen.map_or(0, |it| it.cnt);
    (value < acked || value > acked + maybe).then(|| {
        format!("{key}: final value {value}, but acknowledged increments sum to {acked} and unknown ones to {maybe}")
    })
}

fn bank_violations(ops: &[Op]) -> Vec<String> {
    let accounts: Vec<&str> = {
        let mut a: Vec<&str> = ops
            .iter()
            .flat_map(|o| o.call.keys())
            .filter(|k| k.starts_with(ACCOUNT_PREFIX))
            .collect();
        a.sort_unstable();
        a.dedup();
        a
    };
    if accounts.is_empty() {
        return Vec::new();
    }
    // The accounts' opening balances: their first acknowledged puts.
    let mut total = 0i64;
    for a in &accounts {
        let opening = ops.iter().find(|o| {
            o.status == Status::Ok && matches!(&o.call, Call::Put { key, .. } if key == a)
        });
        match opening {
            Some(Op {
                call: Call::Put { cnt, .. },
                ..
            }) => total += cnt,
            _ => return vec![format!("account {a} was never opened")],
        }
    }
    let mut out = Vec::new();
    for op in ops {
        let Call::Snapshot { keys } = &op.call else {
            continue;
        };
        if op.status != Status::Ok || keys.len() != accounts.len() {
            continue;
        }
        let sum: i64 = op.read.iter().map(|it| it.map_or(0, |i| i.cnt)).sum();
        if sum != total {
            out.push(format!(
                "TransactGetItems #{} at {:.3}s saw a total of {sum}, not {total}",
                op.id,
                op.call_us as f64 / 1e6
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Item;

    fn op(id: u64, call: Call, status: Status, read: Vec<Option<Item>>, t: (u64, u64)) -> Op {
        Op {
            id,
            client: 1,
            call,
            status,
            read,
            error: None,
            call_us: t.0,
            ret_us: t.1,
        }
    }

    fn item(val: u64, cnt: i64) -> Option<Item> {
        Some(Item { val, ver: 0, cnt })
    }

    #[test]
    fn a_lost_acknowledged_put_is_reported() {
        let k = "r0".to_string();
        let h = [
            op(
                1,
                Call::Put {
                    key: k.clone(),
                    val: 1,
                    cnt: 0,
                },
                Status::Ok,
                vec![],
                (0, 1),
            ),
            op(
                2,
                Call::Put {
                    key: k.clone(),
                    val: 2,
                    cnt: 0,
                },
                Status::Ok,
                vec![],
                (2, 3),
            ),
            op(
                3,
                Call::Read { key: k.clone() },
                Status::Ok,
                vec![item(1, 0)],
                (10, 11),
            ),
        ];
        let r = check(&h);
        assert_eq!(r.lost_writes.len(), 1, "{r:?}");
        assert_eq!(r.nonlinearizable.len(), 1);
        // With the second put's outcome unknown, the same final read is fine.
        let mut h = h;
        h[1].status = Status::Unknown;
        assert_eq!(check(&h).violations(), 0);
    }

    #[test]
    fn counters_must_hold_every_acknowledged_increment() {
        let k = "c0".to_string();
        let add = |id, status, t| {
            op(
                id,
                Call::Add {
                    key: k.clone(),
                    delta: 3,
                },
                status,
                vec![],
                t,
            )
        };
        let read = |cnt| {
            op(
                9,
                Call::Read { key: k.clone() },
                Status::Ok,
                vec![item(0, cnt)],
                (20, 21),
            )
        };
        let ok = [
            add(1, Status::Ok, (0, 1)),
            add(2, Status::Unknown, (2, 3)),
            read(6),
        ];
        assert_eq!(check(&ok).violations(), 0);
        let short = [
            add(1, Status::Ok, (0, 1)),
            add(2, Status::Ok, (2, 3)),
            read(3),
        ];
        assert_eq!(check(&short).counter_violations.len(), 1);
    }

    #[test]
    fn snapshots_must_preserve_the_bank_total() {
        let open = |id, k: &str| {
            op(
                id,
                Call::Put {
                    key: k.into(),
                    val: id,
                    cnt: 100,
                },
                Status::Ok,
                vec![],
                (0, 1),
            )
        };
        let snap = |a, b| {
            op(
                5,
                Call::Snapshot {
                    keys: vec!["a0".into(), "a1".into()],
                },
                Status::Ok,
                vec![item(1, a), item(2, b)],
                (10, 11),
            )
        };
        let transfer = op(
            3,
            Call::Transfer {
                from: "a0".into(),
                to: "a1".into(),
                amount: 30,
            },
            Status::Ok,
            vec![],
            (2, 3),
        );
        let good = [
            open(1, "a0"),
            open(2, "a1"),
            transfer.clone(),
            snap(70, 130),
        ];
        assert_eq!(check(&good).violations(), 0);
        let torn = [open(1, "a0"), open(2, "a1"), transfer, snap(70, 100)];
        let r = check(&torn);
        assert_eq!(r.bank_violations.len(), 1, "{r:?}");
    }
}
