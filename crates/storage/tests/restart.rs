//! Acknowledged writes survive a restart: the WAL replays past sled's
//! applied index, and a checkpoint lets covered segments go.

use dynaraft_model::value::item_from_json;
use dynaraft_storage::*;
use serde_json::json;
use std::collections::BTreeMap;

fn meta(name: &str) -> TableMeta {
    TableMeta {
        name: name.into(),
        group: 0,
        status: TableStatus::Active,
        created_ms: 0,
        hash_key: ("pk".into(), "S".into()),
        range_key: None,
        attributes: vec![("pk".into(), "S".into())],
        billing_mode: "PAY_PER_REQUEST".into(),
        read_capacity: 0,
        write_capacity: 0,
        tags: BTreeMap::new(),
        deletion_protection: false,
        last_increase_ms: 0,
        last_decrease_ms: 0,
        decreases_today: 0,
        ttl_attribute: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_restart() {
    let dir = std::env::temp_dir().join(format!("dynaraft-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = NodeConfig::new(Some(dir.clone()));
    {
        let node = Node::open(cfg.clone()).await.unwrap();
        node.catalog(Command::CreateTable(meta("t"))).await.unwrap();
        let t = node.table("t").expect("table visible after create");
        for i in 0..100 {
            let key = json!({"pk": {"S": format!("k{i}")}});
            let k = item_from_json(&key).unwrap();
            let w = WriteCommand {
                kind: WriteKind::Put,
                storage_key: t.schema.storage_key(&k).unwrap(),
                key: key.clone(),
                item: Some(json!({"pk": {"S": format!("k{i}")}, "n": {"N": i.to_string()}})),
                condition: None,
                update: None,
                names: BTreeMap::new(),
                values: json!({}),
            };
            let o = t.partition.propose(Command::Write(w)).await.unwrap();
            assert!(matches!(o, Outcome::Written { .. }));
        }
        assert_eq!(node.stats(t.meta.group).0, 100);
        node.shutdown().await;
    }
    // The WAL must bring back whatever sled had not made durable.
    {
        let node = Node::open(cfg.clone()).await.unwrap();
        let t = node.table("t").expect("table after restart");
        assert_eq!(node.stats(t.meta.group).0, 100);
        let k = item_from_json(&json!({"pk": {"S": "k42"}})).unwrap();
        let got = machine::read_item(
            node.tree(),
            t.meta.group,
            &t.schema.storage_key(&k).unwrap(),
        )
        .unwrap();
        assert_eq!(
            got.unwrap().get("n"),
            item_from_json(&json!({"n": {"N": "42"}})).unwrap().get("n")
        );
        // The segments written before the restart are closed; a checkpoint
        // flushes sled durably and deletes them.
        let removed = node.checkpoint().await.unwrap();
        assert!(removed >= 1, "checkpoint removed {removed} segments");
        node.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}
