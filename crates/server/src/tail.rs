//! `dynaraft streams tail`: follows every shard of a table's latest stream
//! through the DynamoDB Streams API of any endpoint and prints each record
//! as one JSON line, like `kubectl logs -f`. A shard is read only once its
//! parent (closed by a partition split) is read to its end, so each item's
//! records print in order; a shard found after the first listing is read
//! from its start, since all of its records are new.

use anyhow::{Context, anyhow, bail};
use dynaraft_bench::client::Conn;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// How long to wait before asking a caught-up shard again, in milliseconds.
const POLL_IDLE_MS: u64 = 500;
/// Records asked for per GetRecords (the API's maximum).
const RECORDS_PER_CALL: u64 = 1_000;
/// How many idle polls pass between looks for new shards.
const SHARD_REFRESH_POLLS: u32 = 10;

#[derive(clap::Args)]
pub struct TailArgs {
    /// The table whose latest stream is followed.
    #[arg(long)]
    table: String,
    #[command(flatten)]
    client: crate::jobs_cli::ClientArgs,
    /// Start from the oldest record kept instead of new ones only.
    #[arg(long)]
    from_start: bool,
    /// Stop once every shard is caught up instead of following.
    #[arg(long)]
    once: bool,
}

/// One Streams call; its JSON answer, or the error DynamoDB sent.
async fn call(conn: &mut Conn, op: &str, body: Value) -> anyhow::Result<Value> {
    let r = conn.streams(op, body.to_string().into_bytes()).await?;
    let v: Value = serde_json::from_slice(&r.body).context("a Streams answer that is not JSON")?;
    if r.status != 200 {
        bail!("{op}: {} {}", r.status, v);
    }
    Ok(v)
}

/// The shards of `arn` (every page of DescribeStream), each with its
/// parent's id.
async fn shards(conn: &mut Conn, arn: &str) -> anyhow::Result<Vec<(String, Option<String>)>> {
    let mut out = Vec::new();
    let mut start: Option<String> = None;
    loop {
        let mut req = json!({ "StreamArn": arn });
        if let Some(s) = &start {
            req["ExclusiveStartShardId"] = json!(s);
        }
        let d = call(conn, "DescribeStream", req).await?;
        let desc = &d["StreamDescription"];
        for s in desc["Shards"].as_array().into_iter().flatten() {
            if let Some(id) = s["ShardId"].as_str() {
                let parent = s["ParentShardId"].as_str().map(str::to_string);
                out.push((id.to_string(), parent));
            }
        }
        match desc["LastEvaluatedShardId"].as_str() {
            Some(last) => start = Some(last.to_string()),
            None => return Ok(out),
        }
    }
}

pub async fn run(args: TailArgs) -> anyhow::Result<()> {
    let mut conn = args.client.connect()?;
    let listed = call(&mut conn, "ListStreams", json!({ "TableName": args.table })).await?;
    let arn = listed["Streams"]
        .as_array()
        .and_then(|s| s.last())
        .and_then(|s| s["StreamArn"].as_str())
        .ok_or_else(|| anyhow!("table {} has no stream", args.table))?
        .to_string();
    let kind = if args.from_start {
        "TRIM_HORIZON"
    } else {
        "LATEST"
    };
    // Shard id -> its next iterator (`None`: the shard is closed).
    let mut open: BTreeMap<String, Option<String>> = BTreeMap::new();
    // Shard id -> its parent's, for shards with one.
    let mut parents: BTreeMap<String, String> = BTreeMap::new();
    // Polls since the shard list was last read (it is read first thing).
    let mut since_refresh = SHARD_REFRESH_POLLS;
    let mut first_listing = true;
    loop {
        if since_refresh >= SHARD_REFRESH_POLLS {
            since_refresh = 0;
            for (shard, parent) in shards(&mut conn, &arn).await? {
                if open.contains_key(&shard) {
                    continue;
                }
                let kind = if first_listing { kind } else { "TRIM_HORIZON" };
                let it = call(
                    &mut conn,
                    "GetShardIterator",
                    json!({ "StreamArn": arn, "ShardId": shard, "ShardIteratorType": kind }),
                )
                .await?;
                if let Some(parent) = parent {
                    parents.insert(shard.clone(), parent);
                }
                open.insert(shard, it["ShardIterator"].as_str().map(str::to_string));
            }
            first_listing = false;
        }
        // Shards whose parent is still being read wait for it.
        let waiting: Vec<String> = parents
            .iter()
            .filter(|(_, p)| open.get(*p).is_some_and(Option::is_some))
            .map(|(s, _)| s.clone())
            .collect();
        let mut any = false;
        for (shard, next) in open.iter_mut() {
            if waiting.contains(shard) {
                continue;
            }
            let Some(it) = next.clone() else { continue };
            let page = call(
                &mut conn,
                "GetRecords",
                json!({ "ShardIterator": it, "Limit": RECORDS_PER_CALL }),
            )
            .await?;
            for r in page["Records"].as_array().into_iter().flatten() {
                println!("{r}");
                any = true;
            }
            *next = page["NextShardIterator"].as_str().map(str::to_string);
        }
        if open.values().all(Option::is_none) {
            return Ok(());
        }
        if !any {
            if args.once {
                return Ok(());
            }
            since_refresh += 1;
            tokio::time::sleep(Duration::from_millis(POLL_IDLE_MS)).await;
        }
    }
}
