//! Helpers shared by the Raft integration tests.
#![allow(dead_code)]

use dynaraft_model::value::item_from_json;
use dynaraft_model::{KeyAttr, KeySchema, ScalarType};
use dynaraft_raft::Timing;
use dynaraft_storage::command::{Command, JsonDoc, WriteCommand, WriteKind};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub const GROUP: u64 = 7;

pub fn timing() -> Timing {
    // Aggressive retention so tests exercise purging and snapshot installs.
    Timing {
        heartbeat_interval_ms: 50,
        election_timeout_min_ms: 300,
        election_timeout_max_ms: 600,
        snapshot_after_entries: 10,
        keep_entries_after_snapshot: 0,
    }
}

pub fn schema() -> KeySchema {
    KeySchema::simple(
        KeyAttr {
            name: "pk".into(),
            ty: ScalarType::S,
        },
        None,
    )
}

/// A put of key `k{i}` with `n = i`.
pub fn put(i: usize) -> Command {
    put_attr(i, "n", json!({"N": i.to_string()}))
}

/// A put of key `k{i}` with one more attribute, `name = value`.
pub fn put_attr(i: usize, name: &str, value: serde_json::Value) -> Command {
    let key = json!({"pk": {"S": format!("k{i}")}});
    let k = item_from_json(&key).unwrap();
    Command::Write(WriteCommand {
        kind: WriteKind::Put,
        storage_key: schema().storage_key(&k).unwrap(),
        key: JsonDoc::new(&key),
        item: Some(JsonDoc::new(
            &json!({"pk": {"S": format!("k{i}")}, name: value}),
        )),
        condition: None,
        update: None,
        names: BTreeMap::new(),
        values: JsonDoc::new(&json!({})),
        local: None,
        global: Vec::new(),
        legacy_update: false,
        stream: false,
        origin: Default::default(),
        replicated: None,
    })
}

pub async fn wait_until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Ends a test's store without sled's closing flush. With several stores
/// open in one process, the flush in sled's `Drop` can wait forever for a
/// write its I/O threads never make (1 run in 18 of `grpc_snapshot` under
/// load hung in `Tree::drop` -> `iobuf::flush` after every assertion had
/// passed; spacejam/sled#1412 reports the same kind of hang). The test has
/// checked what it reads, and its directory is removed.
pub fn abandon(db: dynaraft_storage::kv::Store) {
    std::mem::forget(db);
}

pub fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dynaraft-raft-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Opens a node's storage under `dir` (sled, WAL, votes) and starts group
/// [`GROUP`] on it over `network`, purges preceded by a durable sled flush.
pub async fn open_group<N: dynaraft_raft::GroupNetwork>(
    id: u64,
    dir: &std::path::Path,
    network: N,
) -> (dynaraft_storage::kv::Store, dynaraft_raft::RaftGroup) {
    open_group_with(id, dir, network, &timing()).await
}

/// [`open_group`] with the group's Raft `timing`.
pub async fn open_group_with<N: dynaraft_raft::GroupNetwork>(
    id: u64,
    dir: &std::path::Path,
    network: N,
    timing: &Timing,
) -> (dynaraft_storage::kv::Store, dynaraft_raft::RaftGroup) {
    std::fs::create_dir_all(dir).unwrap();
    let db = dynaraft_storage::kv::Store::open_in(
        dir,
        dynaraft_storage::kv::Engine::Sled,
        dynaraft_storage::kv::DEFAULT_MEMORY,
    )
    .unwrap();
    let (wal, records) = dynaraft_storage::wal::Wal::open_blocking(
        &dir.join("wal"),
        dynaraft_storage::wal::WAL_SEGMENT_BYTES,
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    let votes = dynaraft_raft::log_store::VoteFile::open(Some(dir.join("votes.json"))).unwrap();
    let durable = db.clone();
    let flush: dynaraft_raft::log_store::DurableFlush =
        std::sync::Arc::new(move || durable.flush_durably().map_err(std::io::Error::other));
    let mut logs = dynaraft_raft::log_store::LogSet::recover(wal, votes, &records)
        .unwrap()
        .with_durable_flush(flush);
    let sm = dynaraft_raft::state_machine::GroupStateMachine::new(GROUP, db.clone()).unwrap();
    let group = dynaraft_raft::RaftGroup::start(id, GROUP, timing, logs.store(GROUP), sm, network)
        .await
        .unwrap();
    (db, group)
}
