//! Numbered writes for failure tests: key `k<i>` of table `orders` holds
//! `n = i`, so every acknowledged write can be checked afterwards.

use crate::av::{n, s};
use aws_sdk_dynamodb::Client;

/// PutItem of `k<i>`; whether it was acknowledged (failures are printed).
pub async fn put(c: &Client, i: usize) -> bool {
    c.put_item()
        .table_name("orders")
        .item("pk", s(&format!("k{i}")))
        .item("n", n(&i.to_string()))
        .send()
        .await
        .map_err(|e| eprintln!("put k{i}: {:?}", crate::err_of(&e)))
        .is_ok()
}

/// Reads every key of `acked` with ConsistentRead and checks its value.
pub async fn assert_readable(c: &Client, acked: &[usize]) {
    for i in acked {
        let r = c
            .get_item()
            .table_name("orders")
            .key("pk", s(&format!("k{i}")))
            .consistent_read(true)
            .send()
            .await
            .unwrap_or_else(|e| panic!("read of k{i} failed: {e:?}"));
        assert_eq!(
            r.item().and_then(|it| it.get("n")),
            Some(&n(&i.to_string())),
            "acknowledged write k{i} lost"
        );
    }
}
