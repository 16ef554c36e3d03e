//! Fault kinds and the seeded schedule. The schedule is a pure function of
//! the seed and the scenario, so rerunning a seed replays the same faults
//! at the same offsets (the workload's timing still varies with the
//! machine).

use crate::cluster::{Cluster, SPARE_ZONE, ZONES};
use crate::proxy::Rule;
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// kill -9 of a zone's node (one node per zone: the whole zone), then
    /// a restart on its data when the fault ends.
    Kill,
    /// A zone cut off from the other zones, both directions.
    Partition,
    /// A zone that can hear the others but not reach them, or the reverse.
    PartitionOneWay,
    /// Added delay and jitter on every link between zones.
    Latency,
    /// SIGSTOP of a zone's node, SIGCONT when the fault ends (a gray
    /// failure: connections stay open, nothing answers).
    Pause,
    /// A zone's node's wall clock jumps ahead or behind (libfaketime;
    /// monotonic time is left alone, as NTP steps leave it).
    ClockSkew,
    /// A zone's node's disk fails every fsync and fdatasync with EIO (an
    /// `LD_PRELOAD` shim) until the fault ends.
    FsyncFailure,
    /// kill -9 of a zone's node with a write half on its disk: a torn
    /// record after the end of its WAL, as a power loss in the middle of a
    /// write leaves one; a restart on that data when the fault ends.
    TornWrite,
    /// kill -9 of az-a's control node for longer than the replace-after
    /// time (at least [`REPLACE_FAULT_MIN_MS`]): the control plane moves
    /// its replicas to az-a's spare node (the run adds one), under the
    /// workload and the splits; it restarts when the fault ends and gives
    /// up what it no longer holds.
    Replace,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::Kill,
        Kind::Partition,
        Kind::PartitionOneWay,
        Kind::Latency,
        Kind::Pause,
        Kind::ClockSkew,
        Kind::FsyncFailure,
        Kind::TornWrite,
        Kind::Replace,
    ];
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Fault {
    Kill {
        zone: usize,
    },
    Partition {
        zone: usize,
    },
    /// `outbound`: the zone's messages to the others are dropped (it still
    /// hears them); otherwise the reverse.
    PartitionOneWay {
        zone: usize,
        outbound: bool,
    },
    Latency {
        delay_ms: u64,
        jitter_ms: u64,
    },
    Pause {
        zone: usize,
    },
    ClockSkew {
        zone: usize,
        skew_s: i64,
    },
    FsyncFailure {
        zone: usize,
    },
    /// `bytes` of garbage (from `seed`) after the end of the WAL.
    TornWrite {
        zone: usize,
        bytes: usize,
        seed: u64,
    },
    /// Always az-a's control node (the spare is in az-a).
    Replace,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let z = |zone: &usize| ZONES.get(zone.wrapping_sub(1)).copied().unwrap_or("?");
        match self {
            Fault::Kill { zone } => write!(f, "kill -9 {}", z(zone)),
            Fault::Partition { zone } => write!(f, "partition {} from the others", z(zone)),
            Fault::PartitionOneWay { zone, outbound } => write!(
                f,
                "partition {} one way ({})",
                z(zone),
                if *outbound {
                    "it cannot send"
                } else {
                    "it cannot hear"
                }
            ),
            Fault::Latency {
                delay_ms,
                jitter_ms,
            } => write!(f, "latency {delay_ms} ms ± {jitter_ms} ms between zones"),
            Fault::Pause { zone } => write!(f, "SIGSTOP {}", z(zone)),
            Fault::ClockSkew { zone, skew_s } => write!(f, "clock of {} {skew_s:+} s", z(zone)),
            Fault::FsyncFailure { zone } => write!(f, "fsyncs of {} fail", z(zone)),
            Fault::TornWrite { zone, bytes, .. } => {
                write!(f, "kill -9 {} with a torn {bytes}-byte write", z(zone))
            }
            Fault::Replace => write!(
                f,
                "kill -9 {} past the replace-after time (its replicas move to the spare)",
                z(&SPARE_ZONE)
            ),
        }
    }
}

/// Added one-way delay between zones, in milliseconds: from a degraded
/// link to several times the single-digit milliseconds zones promise. The
/// worst round trip (twice delay plus jitter, 110 ms) stays under the
/// default heartbeat interval (150 ms), which bounds openraft's heartbeat
/// and append RPCs; longer round trips need longer Raft timings.
pub const LATENCY_MS: std::ops::RangeInclusive<u64> = 5..=40;
/// Jitter either way around the delay, in milliseconds.
pub const JITTER_MS: std::ops::RangeInclusive<u64> = 1..=15;

/// Size of a clock jump, in seconds (either way): from a few seconds to
/// well past the transaction recovery age.
pub const SKEW_S: std::ops::RangeInclusive<i64> = 2..=90;

/// Size of a torn write left after the end of a WAL, in bytes: from a
/// few bytes of a record's header to a few sectors.
pub const TORN_BYTES: std::ops::RangeInclusive<usize> = 1..=2_048;

/// The replace-after time the nodes get when a run has a spare node, in
/// milliseconds: longer than a restart, so that only a node meant to stay
/// down (or a long kill) has its replicas moved.
pub const REPLACE_AFTER_MS: u64 = 5_000;
/// Shortest `replace` fault, in milliseconds: the replace-after time, the
/// repair's notice and the moves (new replicas catching up by snapshot)
/// fit in it.
pub const REPLACE_FAULT_MIN_MS: u64 = 15_000;

/// One fault, from `start_ms` (since the run started) for `duration_ms`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Episode {
    pub start_ms: u64,
    pub duration_ms: u64,
    pub fault: Fault,
}

/// How a run spaces its faults, in milliseconds.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub run_ms: u64,
    /// Fault-free time at the start.
    pub warmup_ms: u64,
    pub fault_min_ms: u64,
    pub fault_max_ms: u64,
    pub quiet_min_ms: u64,
    pub quiet_max_ms: u64,
}

/// The seeded schedule: faults of the given kinds, one at a time, each
/// followed by a quiet period, none running past the end of the run.
pub fn schedule(seed: u64, kinds: &[Kind], t: Timing) -> Vec<Episode> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut out = Vec::new();
    let mut at = t.warmup_ms;
    if kinds.is_empty() {
        return out;
    }
    loop {
        let mut duration_ms = rng.u64(t.fault_min_ms..=t.fault_max_ms.max(t.fault_min_ms));
        let zone = rng.usize(1..=ZONES.len());
        let kind = kinds[rng.usize(..kinds.len())];
        if kind == Kind::Replace {
            duration_ms = duration_ms.max(REPLACE_FAULT_MIN_MS);
        }
        if at + duration_ms >= t.run_ms {
            return out;
        }
        let fault = match kind {
            Kind::Kill => Fault::Kill { zone },
            Kind::Partition => Fault::Partition { zone },
            Kind::PartitionOneWay => Fault::PartitionOneWay {
                zone,
                outbound: rng.bool(),
            },
            Kind::Latency => Fault::Latency {
                delay_ms: rng.u64(LATENCY_MS),
                jitter_ms: rng.u64(JITTER_MS),
            },
            Kind::Pause => Fault::Pause { zone },
            Kind::ClockSkew => {
                let size = rng.i64(SKEW_S);
                Fault::ClockSkew {
                    zone,
                    skew_s: if rng.bool() { size } else { -size },
                }
            }
            Kind::FsyncFailure => Fault::FsyncFailure { zone },
            Kind::TornWrite => Fault::TornWrite {
                zone,
                bytes: rng.usize(TORN_BYTES),
                seed: rng.u64(..),
            },
            Kind::Replace => Fault::Replace,
        };
        out.push(Episode {
            start_ms: at,
            duration_ms,
            fault,
        });
        at += duration_ms + rng.u64(t.quiet_min_ms..=t.quiet_max_ms.max(t.quiet_min_ms));
    }
}

/// Injects `fault` into the running cluster.
pub async fn inject(cluster: &mut Cluster, fault: Fault) -> anyhow::Result<()> {
    let zones = 1..=ZONES.len();
    match fault {
        Fault::Kill { zone } => cluster.kill_node(zone - 1).await,
        Fault::Replace => cluster.kill_node(SPARE_ZONE - 1).await,
        Fault::Pause { zone } => cluster.pause_node(zone - 1, true),
        Fault::ClockSkew { zone, skew_s } => cluster.skew_clock(zone - 1, skew_s)?,
        Fault::FsyncFailure { zone } => cluster.fail_fsyncs(zone - 1, true)?,
        Fault::TornWrite { zone, bytes, seed } => {
            let mut rng = fastrand::Rng::with_seed(seed);
            let torn: Vec<u8> = std::iter::repeat_with(|| rng.u8(..)).take(bytes).collect();
            cluster.tear_wal_tail(zone - 1, &torn).await?;
        }
        Fault::Partition { zone } => {
            let cut = Rule {
                blocked: true,
                ..Rule::default()
            };
            for other in zones.filter(|o| *o != zone) {
                cluster.net.set(zone, other, cut);
                cluster.net.set(other, zone, cut);
            }
        }
        Fault::PartitionOneWay { zone, outbound } => {
            let cut = Rule {
                blocked: true,
                ..Rule::default()
            };
            for other in zones.filter(|o| *o != zone) {
                if outbound {
                    cluster.net.set(zone, other, cut);
                } else {
                    cluster.net.set(other, zone, cut);
                }
            }
        }
        Fault::Latency {
            delay_ms,
            jitter_ms,
        } => {
            let slow = Rule {
                blocked: false,
                delay_ms,
                jitter_ms,
            };
            for a in zones.clone() {
                for b in zones.clone().filter(|b| *b != a) {
                    cluster.net.set(a, b, slow);
                }
            }
        }
    }
    Ok(())
}
