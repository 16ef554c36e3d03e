//! `dynaraft-chaos`: the fault harness. It starts a real three-zone
//! cluster of `dynaraft` processes on this machine (`cluster`), routes
//! every link between them through a fault-injecting TCP proxy (`proxy`),
//! injects faults on a seeded schedule (`faults`: kill -9 and restart,
//! partitions both ways and one way, latency and jitter, SIGSTOP), runs a
//! concurrent workload through the router with the Rust SDK while
//! recording every operation (`workload`, `history`), and checks the
//! history afterwards (`checker`: per-key linearizability by a
//! Wing–Gong–Lowe search in `linearizability`, no acknowledged write lost,
//! counter and bank invariants).
//!
//! It depends on the `dynaraft` binary only through its command line and
//! the DynamoDB API, so it runs against any build; it must never link the
//! database's crates (the point is to test what users run).
//!
//! Caveats: one node per zone, so killing a node is losing its zone; the
//! router stands for the regional endpoint and is never faulted (a
//! partition cuts links between zones, so the router can still reach a
//! stale leader, the case where a wrong answer could come from); clock
//! skew is not injected yet.

pub mod checker;
pub mod cluster;
pub mod faults;
pub mod global;
pub mod history;
pub mod linearizability;
pub mod model;
pub mod proxy;
pub mod report;
pub mod run;
pub mod splits;
pub mod workload;
