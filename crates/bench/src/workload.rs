//! The YCSB-style workloads: which operations, in what mix, on which
//! table layout and key distribution.
//!
//! | workload | mix | keys |
//! |---|---|---|
//! | A | 50% GetItem, 50% PutItem (update) | zipfian |
//! | B | 95% GetItem, 5% PutItem | zipfian |
//! | C | 100% GetItem | zipfian |
//! | D | 95% GetItem, 5% PutItem of a new record | latest |
//! | E | 95% Query of 1..=100 items, 5% PutItem of a new record | zipfian |
//! | F | 50% GetItem, 50% read-modify-write (GetItem, then a PutItem conditional on the version read) | zipfian |
//! | put | 100% PutItem (update) | zipfian |
//! | insert | 100% PutItem of a new record | - |
//!
//! YCSB's "update" writes one field; here it replaces the item with a new
//! version (a PutItem, DynamoDB's basic write), which is what the
//! durability targets are about. `--distribution` overrides the keys.

use crate::keys::Distribution;

/// A workload, as named on the command line.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    A,
    B,
    C,
    D,
    E,
    F,
    Put,
    Insert,
}

/// One kind of operation, with its own latency histogram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum OpKind {
    /// GetItem of an existing record.
    Read,
    /// PutItem replacing an existing record with a new version.
    Update,
    /// PutItem of a record that did not exist.
    Insert,
    /// Query of a short sort-key range (workload E).
    Scan,
    /// GetItem, then PutItem conditional on the version read.
    ReadModifyWrite,
}

/// Every kind, in report order.
pub const OP_KINDS: [OpKind; 5] = [
    OpKind::Read,
    OpKind::Update,
    OpKind::Insert,
    OpKind::Scan,
    OpKind::ReadModifyWrite,
];

impl OpKind {
    /// Index into per-kind arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Read => "read (GetItem)",
            Self::Update => "update (PutItem)",
            Self::Insert => "insert (PutItem)",
            Self::Scan => "scan (Query)",
            Self::ReadModifyWrite => "read-modify-write",
        }
    }
}

/// How a workload's table is keyed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Partition key `pk` only.
    Hash,
    /// Partition key `pk` and numeric sort key `sk` (workload E).
    Range,
}

impl Workload {
    /// The operation mix, as (kind, weight in percent).
    pub fn mix(self) -> &'static [(OpKind, u32)] {
        use OpKind::*;
        match self {
            Self::A => &[(Read, 50), (Update, 50)],
            Self::B => &[(Read, 95), (Update, 5)],
            Self::C => &[(Read, 100)],
            Self::D => &[(Read, 95), (Insert, 5)],
            Self::E => &[(Scan, 95), (Insert, 5)],
            Self::F => &[(Read, 50), (ReadModifyWrite, 50)],
            Self::Put => &[(Update, 100)],
            Self::Insert => &[(Insert, 100)],
        }
    }

    /// The key distribution YCSB uses for it.
    pub fn default_distribution(self) -> Distribution {
        match self {
            Self::D => Distribution::Latest,
            _ => Distribution::Zipfian,
        }
    }

    pub fn layout(self) -> Layout {
        match self {
            Self::E => Layout::Range,
            _ => Layout::Hash,
        }
    }

    /// The kind for a roll in `0..100`.
    pub fn kind_for(self, roll: u32) -> OpKind {
        let mut acc = 0;
        for &(kind, weight) in self.mix() {
            acc += weight;
            if roll < acc {
                return kind;
            }
        }
        self.mix().last().map_or(OpKind::Read, |&(k, _)| k)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::A => "A",
            Self::B => "B",
            Self::C => "C",
            Self::D => "D",
            Self::E => "E",
            Self::F => "F",
            Self::Put => "put",
            Self::Insert => "insert",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_add_up_to_one_hundred() {
        for w in [
            Workload::A,
            Workload::B,
            Workload::C,
            Workload::D,
            Workload::E,
            Workload::F,
            Workload::Put,
            Workload::Insert,
        ] {
            assert_eq!(w.mix().iter().map(|&(_, p)| p).sum::<u32>(), 100, "{w:?}");
            assert_eq!(w.kind_for(0), w.mix()[0].0);
            assert_eq!(w.kind_for(99), w.mix()[w.mix().len() - 1].0);
        }
    }
}
