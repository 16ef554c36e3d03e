//! The DynamoDB Streams API (`DynamoDBStreams_20120810`): ListStreams,
//! DescribeStream, GetShardIterator, GetRecords, read from the partitions'
//! change logs (`storage::global`).
//!
//! A stream is one of a table's `StreamMeta`s, named by the table ARN and
//! its label. A shard is a partition's change log between two of its
//! splits: a split closes the partition's shard at the last sequence it
//! logged before (`PartitionMeta::shard_ends`), and two shards continue it,
//! the partition's next one and the child's first, each naming it as its
//! parent. A shard's sequence numbers are its partition's change sequence
//! numbers (a child's continue its parent's), and a stream holds the
//! records stamped while it was enabled. A shard iterator is the stream
//! ARN, the shard, the sequence to read after and when it was issued.

use super::table_defs::stream_label;
use crate::Api;
use crate::auth::{Access, Resource};
use crate::error::ApiError;
use crate::params::{Violations, bounded_limit, table_of_arn};
use crate::scope::display_name;
use dynaraft_cluster::Table;
use dynaraft_model::value::{item_size_bytes, item_to_json};
use dynaraft_model::wire::{Int, Obj, Str};
use dynaraft_storage::global::{ChangeRecord, Origin};
use dynaraft_storage::{PartitionMeta, StreamMeta};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// Most records one GetRecords returns (also its Limit's maximum).
pub const MAX_GET_RECORDS: i64 = 1_000;
/// Most record bytes one GetRecords returns (1 MB).
pub const MAX_GET_RECORDS_BYTES: usize = 1024 * 1024;
/// How long a shard iterator can be used, in milliseconds (15 minutes).
pub const SHARD_ITERATOR_LIFETIME_MS: u64 = 15 * 60 * 1000;
/// Most streams one ListStreams returns (its Limit's maximum).
pub const MAX_LIST_STREAMS: i64 = 100;
/// Most shards one DescribeStream returns (its Limit's maximum).
pub const MAX_DESCRIBE_SHARDS: i64 = 100;
/// Digits of a sequence number (DynamoDB's are 21 to 40 characters).
const SEQUENCE_DIGITS: usize = 21;

/// ListStreams' request.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ListStreamsInput {
    pub table_name: Option<Str>,
    pub limit: Option<Int>,
    pub exclusive_start_stream_arn: Option<Str>,
}

/// DescribeStream's request.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeStreamInput {
    pub stream_arn: Option<Str>,
    pub limit: Option<Int>,
    pub exclusive_start_shard_id: Option<Str>,
    pub shard_filter: Option<Obj<ShardFilterIn>>,
}

/// DescribeStream's ShardFilter: the children of one shard.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ShardFilterIn {
    #[serde(rename = "Type")]
    pub kind: Option<Str>,
    pub shard_id: Option<Str>,
}

/// GetShardIterator's request.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct GetShardIteratorInput {
    pub stream_arn: Option<Str>,
    pub shard_id: Option<Str>,
    pub shard_iterator_type: Option<Str>,
    pub sequence_number: Option<Str>,
}

/// GetRecords' request.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct GetRecordsInput {
    pub shard_iterator: Option<Str>,
    pub limit: Option<Int>,
}

/// A stream found from its ARN.
struct Stream {
    table: Arc<Table>,
    meta: StreamMeta,
    arn: String,
}

impl Stream {
    fn status(&self) -> &'static str {
        if self.meta.disabled_ms.is_some() {
            "DISABLED"
        } else {
            "ENABLED"
        }
    }

    /// Whether the record stamped `ts_ms` belongs to this stream.
    fn holds(&self, ts_ms: u64) -> bool {
        ts_ms >= self.meta.created_ms && self.meta.disabled_ms.is_none_or(|d| ts_ms < d)
    }

    /// The id of generation `generation` of partition `group`'s shard.
    fn shard_id(&self, group: u64, generation: u32) -> String {
        let id = format!("shardId-{:020}-{:08x}", self.meta.created_ms, group);
        match generation {
            0 => id,
            g => format!("{id}-{g}"),
        }
    }

    /// Every shard of the stream's table, each after its parent.
    fn shards(&self) -> Vec<Shard<'_>> {
        let parts = &self.table.meta.partitions;
        let mut shards = Vec::new();
        for p in parts {
            let base = lineage_depth(parts, p);
            let inherited = p.parent.zip(p.parent_shard).and_then(|(g, k)| {
                let parent = parts.iter().find(|q| q.group == g)?;
                Some((g, k, parent.shard_ends.get(k as usize).copied()))
            });
            for generation in 0..=p.shard_ends.len() {
                let g = u32::try_from(generation).unwrap_or(u32::MAX);
                let (parent, after) = match generation.checked_sub(1) {
                    Some(prev) => (
                        Some(self.shard_id(p.group, g - 1)),
                        p.shard_ends.get(prev).copied(),
                    ),
                    None => match inherited {
                        Some((pg, k, end)) => (Some(self.shard_id(pg, k)), end),
                        None => (None, None),
                    },
                };
                shards.push(Shard {
                    part: p,
                    id: self.shard_id(p.group, g),
                    parent,
                    after,
                    end: p.shard_ends.get(generation).copied(),
                    depth: base + generation,
                });
            }
        }
        // A child's records come after its parent's (its sequence numbers
        // continue the parent's), and a tie is broken by depth.
        shards.sort_by_key(|s| (s.after.unwrap_or(0), s.depth, s.part.group));
        shards
    }

    fn shard(&self, id: &str) -> Option<Shard<'_>> {
        self.shards().into_iter().find(|s| s.id == id)
    }
}

/// One shard: a partition's change records after `after` (from the log's
/// start if `None`) up to `end` (open if `None`).
struct Shard<'a> {
    part: &'a PartitionMeta,
    id: String,
    parent: Option<String>,
    after: Option<u64>,
    end: Option<u64>,
    /// Shards between it and its table's first partitions.
    depth: usize,
}

/// How many shards precede partition `p`'s first one in its lineage.
fn lineage_depth(parts: &[PartitionMeta], p: &PartitionMeta) -> usize {
    let mut depth = 0;
    let mut at = p;
    // Bounded by the partitions: splits never make a cycle, and a broken
    // catalog must not make this loop.
    for _ in 0..parts.len() {
        let Some((g, k)) = at.parent.zip(at.parent_shard) else {
            break;
        };
        let Some(parent) = parts.iter().find(|q| q.group == g) else {
            break;
        };
        depth += k as usize + 1;
        at = parent;
    }
    depth
}

/// Shortest and longest shard id DynamoDB accepts, in characters.
const SHARD_ID_CHARS: (usize, usize) = (28, 65);

/// A shard id's constraints (`shardId-...`, 28 to 65 characters).
fn check_shard_id(v: &mut Violations, id: &str, path: &str) {
    let n = id.chars().count();
    if n < SHARD_ID_CHARS.0 {
        v.add(
            Some(id),
            path,
            &format!(
                "Member must have length greater than or equal to {}",
                SHARD_ID_CHARS.0
            ),
        );
    }
    if n > SHARD_ID_CHARS.1 {
        v.add(
            Some(id),
            path,
            &format!(
                "Member must have length less than or equal to {}",
                SHARD_ID_CHARS.1
            ),
        );
    }
}

/// Whether `arn` has a stream ARN's shape.
fn is_stream_arn(arn: &str) -> bool {
    arn.starts_with("arn:") && arn.contains(":table/") && arn.contains("/stream/")
}

fn sequence(seq: u64) -> String {
    format!("{seq:0SEQUENCE_DIGITS$}")
}

fn not_found(arn: &str) -> ApiError {
    ApiError::ResourceNotFound(format!(
        "Requested resource not found: Stream: {arn} not found"
    ))
}

/// The stream an ARN names (`arn:...:table/NAME/stream/LABEL`).
fn stream(api: &Api, arn: Option<&Str>, path: &str) -> Result<Stream, ApiError> {
    let Some(arn) = arn.map(|a| a.0.as_str()) else {
        let mut v = Violations::default();
        v.null(path);
        v.check()?;
        return Err(ApiError::validation("Invalid StreamArn"));
    };
    let Some((table_arn, label)) = arn.split_once("/stream/") else {
        return Err(ApiError::validation(format!("Invalid StreamArn: {arn}")));
    };
    if !table_arn.starts_with("arn:") {
        return Err(ApiError::validation(format!("Invalid StreamArn: {arn}")));
    }
    let table = api
        .table(table_of_arn(table_arn))
        .ok_or_else(|| not_found(arn))?;
    let meta = table
        .meta
        .streams
        .iter()
        .find(|s| stream_label(s.created_ms) == label)
        .cloned()
        .ok_or_else(|| not_found(arn))?;
    let arn = super::stream_arn(api, &table.meta.name, meta.created_ms);
    Ok(Stream { table, meta, arn })
}

pub fn list_streams(api: &Api, input: ListStreamsInput) -> Result<Value, ApiError> {
    let mut v = Violations::default();
    let limit = bounded_limit(&mut v, input.limit.as_ref(), MAX_LIST_STREAMS, "limit");
    v.check()?;
    api.authorize(|| Access::new("ListStreams", Resource::Any))?;
    let mut all = Vec::new();
    for t in api.tables() {
        let name = display_name(&t.meta.name);
        if input.table_name.as_deref().is_some_and(|n| n != name) {
            continue;
        }
        for s in &t.meta.streams {
            all.push(json!({
                "StreamArn": super::stream_arn(api, &t.meta.name, s.created_ms),
                "TableName": name,
                "StreamLabel": stream_label(s.created_ms),
            }));
        }
    }
    // In ARN order, so a page resumes after its last stream even when
    // that stream's table was deleted since.
    all.sort_by(|a, b| a["StreamArn"].as_str().cmp(&b["StreamArn"].as_str()));
    let start = match input.exclusive_start_stream_arn.as_deref() {
        Some(arn) if !is_stream_arn(arn) => {
            return Err(ApiError::validation(format!("Invalid StreamArn: {arn}")));
        }
        Some(arn) => all
            .iter()
            .take_while(|s| s["StreamArn"].as_str().is_some_and(|a| a <= arn))
            .count(),
        None => 0,
    };
    let page: Vec<Value> = all.iter().skip(start).take(limit).cloned().collect();
    let mut out = json!({ "Streams": page });
    if start + limit < all.len()
        && let Some(last) = out["Streams"].as_array().and_then(|p| p.last())
    {
        out["LastEvaluatedStreamArn"] = last["StreamArn"].clone();
    }
    Ok(out)
}

pub async fn describe_stream(api: &Api, input: DescribeStreamInput) -> Result<Value, ApiError> {
    let mut v = Violations::default();
    let limit = bounded_limit(&mut v, input.limit.as_ref(), MAX_DESCRIBE_SHARDS, "limit");
    if let Some(f) = input.shard_filter.as_deref() {
        match f.kind.as_deref() {
            None => v.null("shardFilter.type"),
            Some("CHILD_SHARDS") => {}
            Some(k) => v.add(
                Some(k),
                "shardFilter.type",
                "Member must satisfy enum value set: [CHILD_SHARDS]",
            ),
        }
        match f.shard_id.as_deref() {
            None => v.null("shardFilter.shardId"),
            Some(id) => check_shard_id(&mut v, id, "shardFilter.shardId"),
        }
    }
    v.check()?;
    authorize_stream(api, "DescribeStream", input.stream_arn.as_deref())?;
    let s = stream(api, input.stream_arn.as_ref(), "streamArn")?;
    let mut all = s.shards();
    if let Some(f) = input.shard_filter.as_deref() {
        let of = f.shard_id.as_deref();
        all.retain(|shard| shard.parent.as_deref() == of);
    }
    // Shards whose records were all trimmed are gone: a closed shard stays
    // listed for as long as any of its records is kept, an empty one (split
    // again before it logged anything) until a later record is trimmed.
    let mut logs = std::collections::HashMap::new();
    for shard in &all {
        if let std::collections::hash_map::Entry::Vacant(e) = logs.entry(shard.part.group) {
            let log = api
                .router
                .read_changes(&s.table, shard.part.hash_lo, 0, (0, 0))
                .await?;
            e.insert((log.floor, log.last));
        }
    }
    let floor_of = |shard: &Shard| logs.get(&shard.part.group).copied().unwrap_or_default();
    all.retain(|shard| {
        shard.end.is_none_or(|end| {
            let floor = floor_of(shard).0;
            end > floor || (end == floor && shard.after.unwrap_or(0) == end)
        })
    });
    let start = match input.exclusive_start_shard_id.as_deref() {
        Some(id) => all
            .iter()
            .position(|shard| shard.id == id)
            .map_or(all.len(), |i| i + 1),
        None => 0,
    };
    let mut shards = Vec::new();
    for shard in all.iter().skip(start).take(limit) {
        let (floor, last) = floor_of(shard);
        let first = floor.max(shard.after.unwrap_or(0)) + 1;
        let mut range = json!({ "StartingSequenceNumber": sequence(first) });
        match shard.end {
            Some(end) => range["EndingSequenceNumber"] = json!(sequence(end)),
            None if s.meta.disabled_ms.is_some() => {
                range["EndingSequenceNumber"] = json!(sequence(last));
            }
            None => {}
        }
        let mut d = json!({ "ShardId": shard.id, "SequenceNumberRange": range });
        if let Some(parent) = &shard.parent {
            d["ParentShardId"] = json!(parent);
        }
        shards.push(d);
    }
    let key_schema = super::key_schema_json(&s.table.schema);
    let mut d = json!({
        "StreamArn": s.arn,
        "StreamLabel": stream_label(s.meta.created_ms),
        "StreamStatus": s.status(),
        "StreamViewType": s.meta.view_type,
        "CreationRequestDateTime": s.meta.created_ms as f64 / 1000.0,
        "TableName": display_name(&s.table.meta.name),
        "KeySchema": key_schema,
        "Shards": shards,
    });
    if start + limit < all.len()
        && let Some(last) = all.get(start + limit - 1)
    {
        d["LastEvaluatedShardId"] = json!(last.id);
    }
    Ok(json!({ "StreamDescription": d }))
}

/// Whether the principal may perform `action` on the stream `arn`.
fn authorize_stream(api: &Api, action: &'static str, arn: Option<&str>) -> Result<(), ApiError> {
    api.authorize(|| Access::new(action, Resource::Arn(arn.unwrap_or_default().to_string())))
}

/// The parts of a shard iterator.
struct Iterator {
    stream_arn: String,
    shard_id: String,
    after: u64,
    issued_ms: u64,
}

impl Iterator {
    fn encode(&self) -> String {
        format!(
            "{}|{}|{}|{}",
            self.stream_arn, self.shard_id, self.after, self.issued_ms
        )
    }

    fn decode(s: &str) -> Option<Iterator> {
        let mut parts = s.rsplitn(4, '|');
        let issued_ms = parts.next()?.parse().ok()?;
        let after = parts.next()?.parse().ok()?;
        let shard_id = parts.next()?.to_string();
        let stream_arn = parts.next()?.to_string();
        Some(Iterator {
            stream_arn,
            shard_id,
            after,
            issued_ms,
        })
    }
}

fn parse_sequence(s: &str) -> Option<u64> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

pub async fn get_shard_iterator(
    api: &Api,
    input: GetShardIteratorInput,
) -> Result<Value, ApiError> {
    let mut v = Violations::default();
    if input.stream_arn.is_none() {
        v.null("streamArn");
    }
    if input.shard_id.is_none() {
        v.null("shardId");
    }
    let kinds = [
        "TRIM_HORIZON",
        "LATEST",
        "AT_SEQUENCE_NUMBER",
        "AFTER_SEQUENCE_NUMBER",
    ];
    match input.shard_iterator_type.as_deref() {
        None => v.null("shardIteratorType"),
        Some(k) if !kinds.contains(&k) => v.add(
            Some(k),
            "shardIteratorType",
            "Member must satisfy enum value set: [AFTER_SEQUENCE_NUMBER, LATEST, AT_SEQUENCE_NUMBER, TRIM_HORIZON]",
        ),
        Some(_) => {}
    }
    v.check()?;
    authorize_stream(api, "GetShardIterator", input.stream_arn.as_deref())?;
    let s = stream(api, input.stream_arn.as_ref(), "streamArn")?;
    let shard_id = input.shard_id.as_deref().unwrap_or_default();
    let shard = s.shard(shard_id).ok_or_else(|| {
        ApiError::ResourceNotFound(format!(
            "Requested resource not found: Shard does not exist: {shard_id}"
        ))
    })?;
    let log = api
        .router
        .read_changes(&s.table, shard.part.hash_lo, 0, (0, 0))
        .await?;
    let kind = input.shard_iterator_type.as_deref().unwrap_or_default();
    let seq = input.sequence_number.as_deref();
    // A closed shard's last is its end; an open one's next sequence number
    // is valid too: it names the record the shard will log next (its
    // StartingSequenceNumber while it is empty).
    let first = shard.after.unwrap_or(0) + 1;
    let upper = shard.end.unwrap_or(log.last.saturating_add(1));
    let after = match (kind, seq) {
        ("TRIM_HORIZON", None) => log.floor.max(first - 1),
        ("LATEST", None) => shard.end.unwrap_or(log.last),
        ("AT_SEQUENCE_NUMBER" | "AFTER_SEQUENCE_NUMBER", Some(n)) => {
            let n = parse_sequence(n)
                .ok_or_else(|| ApiError::validation(format!("Invalid SequenceNumber: {n}")))?;
            let at = kind == "AT_SEQUENCE_NUMBER";
            // A shard that continues another starts after its parent's end
            // (a number at or before it is the parent's).
            if n > upper || shard.after.is_some_and(|a| n <= a) {
                return Err(ApiError::validation(format!(
                    "Invalid SequenceNumber {}: the shard holds {} to {}",
                    sequence(n),
                    sequence(first),
                    sequence(shard.end.unwrap_or(log.last))
                )));
            }
            let after = if at { n.saturating_sub(1) } else { n };
            if after < log.floor {
                return Err(ApiError::TrimmedDataAccess(format!(
                    "Requested sequence number {} is beyond the trim horizon of the shard",
                    sequence(n)
                )));
            }
            after
        }
        (_, Some(_)) => {
            return Err(ApiError::validation(format!(
                "SequenceNumber is not expected for ShardIteratorType {kind}"
            )));
        }
        (_, None) => {
            return Err(ApiError::validation(format!(
                "SequenceNumber is required for ShardIteratorType {kind}"
            )));
        }
    };
    let it = Iterator {
        stream_arn: s.arn.clone(),
        shard_id: shard_id.to_string(),
        after,
        issued_ms: dynaraft_storage::wall_clock_ms(),
    };
    Ok(json!({ "ShardIterator": it.encode() }))
}

pub async fn get_records(api: &Api, input: GetRecordsInput) -> Result<Value, ApiError> {
    let mut v = Violations::default();
    if input.shard_iterator.is_none() {
        v.null("shardIterator");
    }
    let limit = bounded_limit(&mut v, input.limit.as_ref(), MAX_GET_RECORDS, "limit");
    v.check()?;
    let text = input.shard_iterator.as_deref().unwrap_or_default();
    let it = Iterator::decode(text).ok_or_else(|| ApiError::validation("Invalid ShardIterator"))?;
    authorize_stream(api, "GetRecords", Some(&it.stream_arn))?;
    let now = dynaraft_storage::wall_clock_ms();
    if now > it.issued_ms.saturating_add(SHARD_ITERATOR_LIFETIME_MS) {
        return Err(ApiError::ExpiredIterator(
            "Iterator expired. The iterator was created more than 15 minutes ago".into(),
        ));
    }
    let arn = Str(it.stream_arn.clone());
    let s = stream(api, Some(&arn), "shardIterator")?;
    let shard = s
        .shard(&it.shard_id)
        .ok_or_else(|| ApiError::validation("Invalid ShardIterator"))?;
    let log = api
        .router
        .read_changes(
            &s.table,
            shard.part.hash_lo,
            it.after,
            (limit, MAX_GET_RECORDS_BYTES),
        )
        .await?;
    if it.after < log.floor {
        return Err(ApiError::TrimmedDataAccess(
            "Attempted to access data that has been trimmed from the stream".into(),
        ));
    }
    let mut records = Vec::new();
    let mut last = it.after;
    let mut closed = false;
    for (seq, bytes) in &log.records {
        // A split closed the shard: what follows is its children's.
        if shard.end.is_some_and(|end| *seq > end) {
            break;
        }
        let r = ChangeRecord::decode(bytes)?;
        if s.meta.disabled_ms.is_some_and(|d| r.ts_ms >= d) {
            closed = true;
            break;
        }
        last = *seq;
        // A global table's write that changed nothing here is logged for
        // its replicas only: DynamoDB writes no stream record for it.
        if s.holds(r.ts_ms) && r.origin != Origin::Unchanged {
            records.push(record(api, &s, *seq, &r));
        }
    }
    // A shard closed by a split, or of a disabled stream, ends once its
    // records are read.
    let drained = match shard.end {
        Some(end) => last >= end,
        None => s.meta.disabled_ms.is_some() && last >= log.last,
    };
    let mut out = json!({ "Records": records });
    if !(closed || drained) {
        let next = Iterator {
            after: last,
            issued_ms: now,
            ..it
        };
        out["NextShardIterator"] = json!(next.encode());
    }
    Ok(out)
}

/// One stream record as DynamoDB Streams shows it.
fn record(api: &Api, s: &Stream, seq: u64, r: &ChangeRecord) -> Value {
    let event = match (&r.old, &r.new) {
        (None, Some(_)) => "INSERT",
        (Some(_), Some(_)) => "MODIFY",
        _ => "REMOVE",
    };
    let keys = r
        .new
        .as_ref()
        .or(r.old.as_ref())
        .map(|i| s.table.schema.key_of(i))
        .unwrap_or_default();
    let view = s.meta.view_type.as_str();
    let mut size = item_size_bytes(&keys);
    let mut d = json!({
        "ApproximateCreationDateTime": (r.ts_ms / 1000) as f64,
        "Keys": item_to_json(&keys),
        "SequenceNumber": sequence(seq),
        "StreamViewType": view,
    });
    if matches!(view, "NEW_IMAGE" | "NEW_AND_OLD_IMAGES")
        && let Some(n) = &r.new
    {
        size += item_size_bytes(n);
        d["NewImage"] = item_to_json(n);
    }
    if matches!(view, "OLD_IMAGE" | "NEW_AND_OLD_IMAGES")
        && let Some(o) = &r.old
    {
        size += item_size_bytes(o);
        d["OldImage"] = item_to_json(o);
    }
    d["SizeBytes"] = json!(size);
    let mut out = json!({
        "eventID": format!("{:016x}{:016x}", s.meta.created_ms, seq),
        "eventName": event,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": api.region(),
        "dynamodb": d,
    });
    if r.origin == Origin::Ttl {
        out["userIdentity"] = json!({
            "Type": "Service",
            "PrincipalId": "dynamodb.amazonaws.com",
        });
    }
    out
}
