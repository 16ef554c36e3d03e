//! Read and write capacity, enforced as DynamoDB enforces it, and counted
//! per table for `/metrics`.
//!
//! A provisioned table, and each of its provisioned global indexes, has a
//! token bucket per direction refilled at its read or write capacity units
//! per second and holding up to [`BURST_SECONDS`] of unused capacity (burst
//! capacity); a new bucket starts full. Every partition of a provisioned
//! table also has a bucket of its own, at DynamoDB's per-partition ceilings
//! ([`PARTITION_READ_UNITS_PER_S`], [`PARTITION_WRITE_UNITS_PER_S`]): a hot
//! partition may use as much of the table's capacity as it has unused
//! (DynamoDB's adaptive capacity, instantly), but never more than a
//! partition serves. An on-demand table is limited only by its
//! OnDemandThroughput maximums, if set ([`ON_DEMAND_MAX_BURST_SECONDS`]).
//!
//! A request reserves the least it can consume before it runs (refused,
//! with nothing done, when a bucket cannot give it) and settles what it
//! consumed once it ran; a large read or write may take a bucket below
//! zero, and the requests after it wait until it refills, as in DynamoDB.
//!
//! The buckets are this process's: each router of a cluster enforces a
//! table's capacity for the requests it serves (there is no cluster-wide
//! admission control yet; see docs/compatibility.md).

use dynaraft_cluster::Table;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Unused capacity a provisioned table or index keeps for bursts, in
/// seconds of its provisioned rate (DynamoDB: five minutes).
pub const BURST_SECONDS: f64 = 300.0;
/// Most read capacity units one partition serves a second (DynamoDB's).
pub const PARTITION_READ_UNITS_PER_S: f64 = 3_000.0;
/// Most write capacity units one partition serves a second (DynamoDB's).
pub const PARTITION_WRITE_UNITS_PER_S: f64 = 1_000.0;
/// Burst a partition's own bucket holds, in seconds of its ceiling.
pub const PARTITION_BURST_SECONDS: f64 = 1.0;
/// Burst an on-demand table's maximum (OnDemandThroughput) allows, in
/// seconds of its maximum.
pub const ON_DEMAND_MAX_BURST_SECONDS: f64 = 1.0;
/// Most buckets kept at once; past it, full buckets (the same as absent
/// ones: a new bucket starts full) are dropped.
pub const MAX_BUCKETS: usize = 65_536;
/// Most tables whose consumption is counted at once; past it, tables no
/// longer in the catalog are forgotten first (and their series go).
pub const MAX_COUNTED_TABLES: usize = 65_536;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dir {
    Read,
    Write,
}

impl Dir {
    fn word(self) -> &'static str {
        match self {
            Dir::Read => "Read",
            Dir::Write => "Write",
        }
    }
}

/// Which limit refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// The table's or index's provisioned capacity, burst included.
    Provisioned,
    /// The ceiling of the partition holding the key.
    KeyRange,
    /// An on-demand table's OnDemandThroughput maximum.
    MaxOnDemand,
}

impl Limit {
    fn word(self) -> &'static str {
        match self {
            Limit::Provisioned => "ProvisionedThroughputExceeded",
            Limit::KeyRange => "KeyRangeThroughputExceeded",
            Limit::MaxOnDemand => "MaxOnDemandThroughputExceeded",
        }
    }
}

/// A request refused for capacity: what ran out.
#[derive(Clone, Debug, PartialEq)]
pub struct Throttle {
    pub limit: Limit,
    pub dir: Dir,
    /// The table's catalog name.
    pub table: String,
    /// The global index whose capacity ran out; `None` for the table's.
    pub index: Option<String>,
}

impl Throttle {
    /// The ThrottlingReason's `reason`: resource type, operation type and
    /// limit type, as DynamoDB spells them.
    pub fn reason(&self) -> String {
        let resource = if self.index.is_some() {
            "Index"
        } else {
            "Table"
        };
        format!("{resource}{}{}", self.dir.word(), self.limit.word())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct BucketKey {
    table: String,
    created_ms: u64,
    index: Option<String>,
    dir: Dir,
    /// The partition's group, for a partition's own bucket.
    partition: Option<u64>,
}

impl BucketKey {
    fn of(table: &Table, index: Option<String>, dir: Dir, partition: Option<u64>) -> BucketKey {
        BucketKey {
            table: table.meta.name.clone(),
            created_ms: table.meta.created_ms,
            index,
            dir,
            partition,
        }
    }
}

#[derive(Debug)]
struct Bucket {
    rate: f64,
    /// Most tokens it holds (its burst).
    cap: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// The tokens it would hold at `now`, refilled at its rate.
    fn tokens_at(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * self.rate).min(self.cap)
    }

    /// Brings the bucket to `now` at its old rate, then takes the current
    /// rate and size (an UpdateTable changes them).
    fn refill(&mut self, rate: f64, cap: f64, now: Instant) {
        self.tokens = self.tokens_at(now).min(cap);
        self.rate = rate;
        self.cap = cap;
        self.at = now;
    }
}

/// One bucket a request draws on.
#[derive(Clone, Debug)]
struct Draw {
    key: BucketKey,
    rate: f64,
    cap: f64,
    limit: Limit,
    reserved: f64,
}

/// What a request reserved; [`Capacity::settle`] charges what it consumed.
#[derive(Debug, Default)]
pub struct Ticket {
    draws: Vec<Draw>,
}

/// Consumption counted for one table (CloudWatch's per-table metrics).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Counted {
    pub consumed_read: f64,
    pub consumed_write: f64,
    pub read_throttle_events: u64,
    pub write_throttle_events: u64,
    pub throttled_requests: u64,
    /// Items Query and Scan pages returned.
    pub returned_items: u64,
}

/// One API server's buckets and per-table counts.
#[derive(Debug)]
pub struct Capacity {
    /// Off: nothing is refused (consumption is still counted).
    enforce: bool,
    buckets: Mutex<HashMap<BucketKey, Bucket>>,
    /// Contributor Insights' counts of the same requests.
    pub insights: crate::insights::Insights,
    /// By catalog name: the table's creation time (a table made again
    /// under the name starts from zero) and its counts.
    counted: Mutex<HashMap<String, (u64, Counted)>>,
}

impl Default for Capacity {
    fn default() -> Self {
        Capacity::new(true)
    }
}

impl Capacity {
    pub fn new(enforce: bool) -> Capacity {
        Capacity {
            enforce,
            buckets: Mutex::new(HashMap::new()),
            insights: Default::default(),
            counted: Mutex::new(HashMap::new()),
        }
    }

    /// The same, counting Contributor Insights in windows of `ms`
    /// milliseconds (tests; [`crate::insights::WINDOW_MS`] otherwise).
    pub fn with_insights_window_ms(mut self, ms: u64) -> Capacity {
        self.insights = crate::insights::Insights::with_window_ms(ms);
        self
    }

    /// Reserves a read of `table` (of its global index `index`, whose own
    /// capacity it draws on) in the partition holding `hash`, if known:
    /// `reserve` units, the least the read can consume.
    pub fn read(
        &self,
        table: &Table,
        index: Option<&str>,
        hash: Option<u64>,
        reserve: f64,
    ) -> Result<Ticket, Throttle> {
        if !self.enforce || table.meta.pay_per_request() {
            // An on-demand maximum is the table's (an index's is not kept).
            let max = index.is_none().then_some(table.meta.on_demand_max.read);
            return self.on_demand(table, Dir::Read, max.flatten(), reserve);
        }
        let mut draws = Vec::with_capacity(2);
        let units = match index {
            Some(ix) => table
                .meta
                .global_indexes
                .iter()
                .find(|g| g.index.name == ix)
                .map(|g| g.read_capacity),
            None => Some(table.meta.read_capacity),
        };
        if let Some(units) = units {
            draws.push(provisioned_draw(table, index, Dir::Read, units, reserve));
        }
        if index.is_none()
            && let Some(group) = hash.and_then(|h| partition_of(table, h))
        {
            draws.push(partition_draw(table, group, Dir::Read, reserve));
        }
        self.admit(table, Dir::Read, draws)
    }

    /// Reserves `reserve` units of an on-demand table's maximum `max`, if
    /// it has one (and capacity is enforced): nothing to draw on otherwise.
    fn on_demand(
        &self,
        table: &Table,
        dir: Dir,
        max: Option<u64>,
        reserve: f64,
    ) -> Result<Ticket, Throttle> {
        match max.filter(|_| self.enforce) {
            Some(max) => self.admit(table, dir, vec![on_demand_draw(table, dir, max, reserve)]),
            None => Ok(Ticket::default()),
        }
    }

    /// Reserves a write of one item to `table` in the partition holding
    /// `hash`: one unit of the table and of its partition; each global
    /// index's capacity must not be spent (its units are charged when the
    /// write's index entries are known).
    pub fn write(&self, table: &Table, hash: u64) -> Result<Ticket, Throttle> {
        self.write_units(table, Some(hash), 1.0)
    }

    /// Reserves `units` of writes to `table` (in the partition holding
    /// `hash`, if one).
    pub fn write_units(
        &self,
        table: &Table,
        hash: Option<u64>,
        units: f64,
    ) -> Result<Ticket, Throttle> {
        if !self.enforce || table.meta.pay_per_request() {
            return self.on_demand(table, Dir::Write, table.meta.on_demand_max.write, units);
        }
        let meta = &table.meta;
        let mut draws = Vec::with_capacity(2 + meta.global_indexes.len());
        draws.push(provisioned_draw(
            table,
            None,
            Dir::Write,
            meta.write_capacity,
            units,
        ));
        if let Some(group) = hash.and_then(|h| partition_of(table, h)) {
            draws.push(partition_draw(table, group, Dir::Write, units));
        }
        for g in &meta.global_indexes {
            draws.push(provisioned_draw(
                table,
                Some(&g.index.name),
                Dir::Write,
                g.write_capacity,
                0.0,
            ));
        }
        self.admit(table, Dir::Write, draws)
    }

    /// Reserves `units` of `dir` capacity in each of `tables` (a
    /// transaction's): all of them, or none when one is refused.
    pub fn reserve_tables(
        &self,
        dir: Dir,
        tables: Vec<(Arc<Table>, f64)>,
    ) -> Result<Vec<(Arc<Table>, Ticket)>, Throttle> {
        let mut tickets = Vec::with_capacity(tables.len());
        for (table, units) in tables {
            let reserved = match dir {
                Dir::Read => self.read(&table, None, None, units),
                Dir::Write => self.write_units(&table, None, units),
            };
            match reserved {
                Ok(ticket) => tickets.push((table, ticket)),
                Err(e) => {
                    self.settle_tables(dir, tickets, |_| 0.0);
                    return Err(e);
                }
            }
        }
        Ok(tickets)
    }

    /// Charges each table of a [`reserve_tables`](Self::reserve_tables)
    /// what `units` says it consumed.
    pub fn settle_tables(
        &self,
        dir: Dir,
        tickets: Vec<(Arc<Table>, Ticket)>,
        units: impl Fn(&Table) -> f64,
    ) {
        for (table, ticket) in tickets {
            let used = units(&table);
            self.settle(&table, dir, ticket, used, |_| 0.0);
        }
    }

    fn admit(&self, table: &Table, dir: Dir, draws: Vec<Draw>) -> Result<Ticket, Throttle> {
        let now = Instant::now();
        let refused = {
            let mut buckets = lock(&self.buckets);
            if buckets.len() >= MAX_BUCKETS {
                prune_full(&mut buckets, now);
            }
            let mut refused = None;
            for d in &draws {
                let b = buckets.entry(d.key.clone()).or_insert(Bucket {
                    rate: d.rate,
                    cap: d.cap,
                    tokens: d.cap,
                    at: now,
                });
                b.refill(d.rate, d.cap, now);
                // A bucket with tokens left admits a request that reserves
                // nothing; one in debt admits none.
                if b.tokens <= 0.0 || b.tokens < d.reserved {
                    refused = Some(d);
                    break;
                }
            }
            if refused.is_none() {
                for d in &draws {
                    if let Some(b) = buckets.get_mut(&d.key) {
                        b.tokens -= d.reserved;
                    }
                }
            }
            refused.cloned()
        };
        match refused {
            None => Ok(Ticket { draws }),
            Some(d) => {
                self.count(table, |c| {
                    match dir {
                        Dir::Read => c.read_throttle_events += 1,
                        Dir::Write => c.write_throttle_events += 1,
                    }
                    c.throttled_requests += 1;
                });
                Err(Throttle {
                    limit: d.limit,
                    dir,
                    table: table.meta.name.clone(),
                    index: d.key.index,
                })
            }
        }
    }

    /// Charges what a request consumed, beyond what it reserved: `table`
    /// units to the table (and its partition), `index(name)` units to each
    /// global index drawn on.
    pub fn settle(
        &self,
        table: &Table,
        dir: Dir,
        ticket: Ticket,
        units: f64,
        index: impl Fn(&str) -> f64,
    ) {
        if !ticket.draws.is_empty() {
            let now = Instant::now();
            let mut buckets = lock(&self.buckets);
            for d in &ticket.draws {
                let used = match &d.key.index {
                    Some(ix) if dir == Dir::Write => index(ix),
                    _ => units,
                };
                if let Some(b) = buckets.get_mut(&d.key) {
                    b.refill(d.rate, d.cap, now);
                    b.tokens -= used - d.reserved;
                }
            }
        }
        self.count(table, |c| match dir {
            Dir::Read => c.consumed_read += units,
            Dir::Write => c.consumed_write += units,
        });
    }

    /// Counts items a Query or Scan page returned.
    pub fn returned(&self, table: &Table, items: u64) {
        self.count(table, |c| c.returned_items += items);
    }

    fn count(&self, table: &Table, f: impl FnOnce(&mut Counted)) {
        let (name, created) = (&table.meta.name, table.meta.created_ms);
        let mut counted = lock(&self.counted);
        // The common case: the table is counted already (no allocation).
        if let Some((at, c)) = counted.get_mut(name.as_str()) {
            if *at != created {
                *at = created;
                *c = Counted::default();
            }
            f(c);
            return;
        }
        if counted.len() >= MAX_COUNTED_TABLES {
            // Forget the oldest-created table's counts first.
            if let Some(oldest) = counted
                .iter()
                .min_by_key(|(_, v)| v.0)
                .map(|(k, _)| k.clone())
            {
                counted.remove(&oldest);
            }
        }
        let mut c = Counted::default();
        f(&mut c);
        counted.insert(name.clone(), (created, c));
    }

    /// The counts of the tables in `tables` (any other's are forgotten: a
    /// dropped table's series disappear).
    pub fn counts(&self, tables: &[Arc<Table>]) -> Vec<(String, Counted)> {
        let mut counted = lock(&self.counted);
        let live: std::collections::HashSet<(&str, u64)> = tables
            .iter()
            .map(|t| (t.meta.name.as_str(), t.meta.created_ms))
            .collect();
        counted.retain(|k, v| live.contains(&(k.as_str(), v.0)));
        let mut out: Vec<(String, Counted)> = counted
            .iter()
            .map(|(k, (_, c))| (k.clone(), c.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// A bucket lock; a poisoned one still holds valid numbers.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Drops the buckets that have refilled to their burst: a new bucket
/// starts full, so they are the same as absent ones.
fn prune_full(buckets: &mut HashMap<BucketKey, Bucket>, now: Instant) {
    buckets.retain(|_, b| b.tokens_at(now) < b.cap);
}

fn provisioned_draw(
    table: &Table,
    index: Option<&str>,
    dir: Dir,
    units_per_s: u64,
    reserve: f64,
) -> Draw {
    let rate = units_per_s as f64;
    Draw {
        key: BucketKey::of(table, index.map(str::to_string), dir, None),
        rate,
        cap: rate * BURST_SECONDS,
        limit: Limit::Provisioned,
        reserved: reserve,
    }
}

fn on_demand_draw(table: &Table, dir: Dir, max_per_s: u64, reserve: f64) -> Draw {
    let rate = max_per_s as f64;
    Draw {
        key: BucketKey::of(table, None, dir, None),
        rate,
        cap: rate * ON_DEMAND_MAX_BURST_SECONDS,
        limit: Limit::MaxOnDemand,
        reserved: reserve,
    }
}

fn partition_draw(table: &Table, group: u64, dir: Dir, reserve: f64) -> Draw {
    let rate = match dir {
        Dir::Read => PARTITION_READ_UNITS_PER_S,
        Dir::Write => PARTITION_WRITE_UNITS_PER_S,
    };
    Draw {
        key: BucketKey::of(table, None, dir, Some(group)),
        rate,
        cap: rate * PARTITION_BURST_SECONDS,
        limit: Limit::KeyRange,
        reserved: reserve,
    }
}

/// The group of the table's partition whose hash range holds `hash`.
fn partition_of(table: &Table, hash: u64) -> Option<u64> {
    let parts = &table.meta.partitions;
    dynaraft_storage::catalog::partition_index(parts, hash)
        .and_then(|i| parts.get(i))
        .map(|p| p.group)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(billing: &str, rcu: u64, wcu: u64) -> Table {
        let mut meta = dynaraft_storage::TableMeta {
            name: "t".into(),
            billing_mode: billing.into(),
            read_capacity: rcu,
            write_capacity: wcu,
            ..Default::default()
        };
        meta.partitions.push(dynaraft_storage::PartitionMeta {
            group: 9,
            ..Default::default()
        });
        let schema = dynaraft_model::KeySchema {
            hash: vec![dynaraft_model::key::KeyAttr {
                name: "pk".into(),
                ty: dynaraft_model::key::ScalarType::S,
            }],
            range: vec![],
        };
        Table { meta, schema }
    }

    #[test]
    fn a_provisioned_table_bursts_then_is_refused_until_it_refills() {
        let cap = Capacity::default();
        let t = table("PROVISIONED", 1, 2);
        let burst = (2.0 * BURST_SECONDS) as usize;
        for _ in 0..burst {
            let ticket = cap.write(&t, 0).expect("within the burst");
            cap.settle(&t, Dir::Write, ticket, 1.0, |_| 0.0);
        }
        let refused = cap.write(&t, 0).expect_err("burst spent");
        assert_eq!(refused.reason(), "TableWriteProvisionedThroughputExceeded");
        assert_eq!(refused.index, None);
        let counts = cap.counts(&[Arc::new(t)]);
        assert_eq!(counts.len(), 1);
        assert_eq!(counts[0].1.consumed_write, burst as f64);
        assert_eq!(counts[0].1.write_throttle_events, 1);
    }

    #[test]
    fn refilled_buckets_are_pruned_and_spent_ones_kept() {
        let cap = Capacity::default();
        let t = table("PROVISIONED", 1, 1);
        let ticket = cap.write(&t, 0).expect("admitted");
        cap.settle(&t, Dir::Write, ticket, 1.0, |_| 0.0);
        let mut buckets = lock(&cap.buckets);
        assert_eq!(buckets.len(), 2, "the table's and its partition's");
        let now = Instant::now();
        prune_full(&mut buckets, now);
        assert_eq!(buckets.len(), 2, "both spent a unit");
        // Half a second later the partition's (1,000 a second, 1 s of
        // burst) is full again; the table's (1 a second, 300 s) is not.
        prune_full(&mut buckets, now + std::time::Duration::from_millis(500));
        assert_eq!(buckets.len(), 1);
        assert!(buckets.keys().all(|k| k.partition.is_none()));
    }

    #[test]
    fn a_large_read_takes_the_bucket_into_debt() {
        let cap = Capacity::default();
        let t = table("PROVISIONED", 1, 1);
        let ticket = cap.read(&t, None, None, 0.5).expect("a full bucket");
        cap.settle(&t, Dir::Read, ticket, BURST_SECONDS + 10.0, |_| 0.0);
        let refused = cap.read(&t, None, None, 0.5).expect_err("in debt");
        assert_eq!(refused.reason(), "TableReadProvisionedThroughputExceeded");
    }

    #[test]
    fn on_demand_tables_and_disabled_enforcement_refuse_nothing() {
        let t = table("PAY_PER_REQUEST", 0, 0);
        let cap = Capacity::default();
        for _ in 0..10_000 {
            let ticket = cap.write(&t, 0).expect("on-demand");
            cap.settle(&t, Dir::Write, ticket, 1.0, |_| 0.0);
        }
        let off = Capacity::new(false);
        let p = table("PROVISIONED", 1, 1);
        for _ in 0..10_000 {
            let ticket = off.write(&p, 0).expect("enforcement off");
            off.settle(&p, Dir::Write, ticket, 1.0, |_| 0.0);
        }
        assert_eq!(off.counts(&[Arc::new(p)])[0].1.consumed_write, 10_000.0);
    }

    #[test]
    fn an_on_demand_maximum_limits_its_table() {
        let cap = Capacity::default();
        let mut t = table("PAY_PER_REQUEST", 0, 0);
        t.meta.on_demand_max.write = Some(5);
        for _ in 0..5 {
            let ticket = cap.write(&t, 0).expect("within the maximum");
            cap.settle(&t, Dir::Write, ticket, 1.0, |_| 0.0);
        }
        let refused = cap.write(&t, 0).expect_err("past the maximum");
        assert_eq!(refused.reason(), "TableWriteMaxOnDemandThroughputExceeded");
        // Reads have no maximum here.
        let ticket = cap.read(&t, None, None, 1.0).expect("no read maximum");
        cap.settle(&t, Dir::Read, ticket, 1.0, |_| 0.0);
    }

    #[test]
    fn a_partition_serves_at_most_its_ceiling() {
        let cap = Capacity::default();
        let t = table("PROVISIONED", 40_000, 40_000);
        let ceiling = (PARTITION_WRITE_UNITS_PER_S * PARTITION_BURST_SECONDS) as usize;
        let mut admitted = 0;
        let refused = loop {
            match cap.write(&t, 7) {
                Ok(ticket) => {
                    admitted += 1;
                    cap.settle(&t, Dir::Write, ticket, 1.0, |_| 0.0);
                }
                Err(e) => break e,
            }
            assert!(admitted <= ceiling + 10, "no partition ceiling");
        };
        assert!(admitted >= ceiling, "refused early: {admitted}");
        assert_eq!(refused.reason(), "TableWriteKeyRangeThroughputExceeded");
    }

    #[test]
    fn counts_of_dropped_tables_are_forgotten() {
        let cap = Capacity::default();
        let t = table("PAY_PER_REQUEST", 0, 0);
        cap.settle(&t, Dir::Read, Ticket::default(), 0.5, |_| 0.0);
        let t = Arc::new(t);
        assert_eq!(cap.counts(std::slice::from_ref(&t))[0].1.consumed_read, 0.5);
        assert_eq!(cap.counts(&[]).len(), 0, "the table was dropped");
        assert_eq!(cap.counts(&[t]).len(), 0, "its counts were forgotten");
    }
}
