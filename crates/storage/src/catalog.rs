//! Table metadata, owned by the catalog group (group 0). In the cluster this
//! becomes the control plane's state; here it is the one-node case.

use dynaraft_model::{KeyAttr, KeySchema, ScalarType};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TableStatus {
    Creating,
    Active,
    Updating,
    Deleting,
}

impl TableStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TableStatus::Creating => "CREATING",
            TableStatus::Active => "ACTIVE",
            TableStatus::Updating => "UPDATING",
            TableStatus::Deleting => "DELETING",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableMeta {
    pub name: String,
    /// Raft group (partition) holding the table's items; 0 until created.
    pub group: u64,
    pub status: TableStatus,
    pub created_ms: u64,
    pub hash_key: (String, String),
    pub range_key: Option<(String, String)>,
    /// AttributeDefinitions: (name, type descriptor).
    pub attributes: Vec<(String, String)>,
    pub billing_mode: String,
    pub read_capacity: u64,
    pub write_capacity: u64,
    pub tags: BTreeMap<String, String>,
    pub deletion_protection: bool,
    pub last_increase_ms: u64,
    pub last_decrease_ms: u64,
    pub decreases_today: u64,
    /// Time to Live: the attribute holding the expiry (epoch seconds), when enabled.
    #[serde(default)]
    pub ttl_attribute: Option<String>,
}

impl TableMeta {
    pub fn key_schema(&self) -> KeySchema {
        let attr = |(n, t): &(String, String)| KeyAttr {
            name: n.clone(),
            ty: ScalarType::from_descriptor(t).unwrap_or(ScalarType::S),
        };
        KeySchema {
            hash: attr(&self.hash_key),
            range: self.range_key.as_ref().map(attr),
        }
    }

    /// A stable table id derived from the group and creation time.
    pub fn table_id(&self) -> String {
        let h = fnv1a(&format!("{}:{}:{}", self.name, self.group, self.created_ms));
        let h2 = fnv1a(&format!("{}:{}", h, self.name));
        let s = format!("{h:016x}{h2:016x}");
        format!(
            "{}-{}-{}-{}-{}",
            &s[0..8],
            &s[8..12],
            &s[12..16],
            &s[16..20],
            &s[20..32]
        )
    }
}

fn fnv1a(s: &str) -> u64 {
    // A stable, dependency-free FNV-1a; only used to derive display ids.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}
