//! The benchmark: a load generator for any DynamoDB endpoint (`dynaraft
//! bench`), and the side-by-side suite behind `make bench`
//! (`dynaraft-bench-suite`).
//!
//! The load generator runs YCSB-style workloads ([`workload`]) over records
//! whose payloads are a function of their version ([`keys`]), so that every
//! answer is checked ([`ops`]): a non-200, a timeout or a wrong answer is an
//! error and never throughput. Workers hold one HTTP/1.1 connection each
//! ([`client`]) and run closed-loop or on a fixed-rate schedule
//! ([`runner`]); latencies go into HDR histograms ([`stats`]). [`floors`]
//! measures what the machine itself allows: fsync latency and an empty HTTP
//! round trip with the same client.
//!
//! Depends on no dynaraft crate: it measures dynaraft, dynalite and etcd
//! through their wire protocols only, and must stay that way so that the
//! comparison is fair.

pub mod backup;
pub mod client;
pub mod floors;
pub mod keys;
pub mod ops;
pub mod replica;
pub mod runner;
pub mod stats;
pub mod workload;

pub use runner::{BenchArgs, BenchError, Report, run};
