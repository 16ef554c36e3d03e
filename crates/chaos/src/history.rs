//! The history of a run: one record per client operation, written as JSON
//! lines. A record holds what was asked (`Call`), when (microseconds since
//! the run started, at invocation and when the client stopped waiting),
//! and what came back: `Ok` with any values read, `Fail` for an answer that
//! proves the operation had no effect (a failed condition, a cancelled
//! transaction), or `Unknown` for everything else (timeouts, 5xx, lost
//! connections), which may or may not have taken effect.

use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
use std::path::Path;

/// The attributes every item of the workload carries: `val` (the unique id
/// of the put or compare-and-set that wrote it), `ver` (its version, for
/// compare-and-set), `cnt` (a counter, or an account's balance).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Item {
    pub val: u64,
    pub ver: u64,
    pub cnt: i64,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Fail,
    Unknown,
}

/// One operation as the client issued it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum Call {
    /// GetItem with ConsistentRead.
    Read { key: String },
    /// PutItem of a whole item: `{val, ver: 0, cnt}`.
    Put { key: String, val: u64, cnt: i64 },
    /// UpdateItem `SET val = :val, ver = :expect + 1` on condition
    /// `ver = :expect`.
    Cas { key: String, expect: u64, val: u64 },
    /// UpdateItem `ADD cnt :delta` (creating `val` and `ver` as 0).
    Add { key: String, delta: i64 },
    /// DeleteItem.
    Delete { key: String },
    /// TransactWriteItems moving `amount` of `cnt` from one account to
    /// another, on condition that the source holds at least `amount`.
    Transfer {
        from: String,
        to: String,
        amount: i64,
    },
    /// TransactGetItems of several keys.
    Snapshot { keys: Vec<String> },
}

impl Call {
    /// Whether the operation can change the database.
    pub fn writes(&self) -> bool {
        !matches!(self, Call::Read { .. } | Call::Snapshot { .. })
    }

    /// The keys the operation touches.
    pub fn keys(&self) -> Vec<&str> {
        match self {
            Call::Read { key }
            | Call::Put { key, .. }
            | Call::Cas { key, .. }
            | Call::Add { key, .. }
            | Call::Delete { key } => vec![key.as_str()],
            Call::Transfer { from, to, .. } => vec![from.as_str(), to.as_str()],
            Call::Snapshot { keys } => keys.iter().map(String::as_str).collect(),
        }
    }
}

/// One completed (or abandoned) operation.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Op {
    pub id: u64,
    pub client: u32,
    pub call: Call,
    pub status: Status,
    /// What a read returned, one entry per key (`None`: no such item).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read: Vec<Option<Item>>,
    /// The DynamoDB error code (or the client's note) of a failed or
    /// unknown operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Invocation, in microseconds since the run started.
    pub call_us: u64,
    /// When the client got its answer or stopped waiting, same clock. For
    /// an `Unknown` operation this is not a bound on when it took effect.
    pub ret_us: u64,
}

impl Op {
    /// The latest time the operation can have taken effect (`None`: any
    /// time after its invocation).
    pub fn effect_by_us(&self) -> Option<u64> {
        (self.status != Status::Unknown).then_some(self.ret_us)
    }
}

pub fn write_history(path: &Path, ops: &[Op]) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for op in ops {
        serde_json::to_writer(&mut out, op)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

pub fn read_history(path: &Path) -> anyhow::Result<Vec<Op>> {
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut ops = Vec::new();
    for (n, line) in file.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let op = serde_json::from_str(&line)
            .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), n + 1))?;
        ops.push(op);
    }
    Ok(ops)
}
