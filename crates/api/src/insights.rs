//! Contributor Insights' data: for each table and global index with
//! Contributor Insights enabled (`TableMeta::insights`), the partition keys
//! most accessed and most throttled, counted over windows of
//! [`WINDOW_MS`] by the API server that served the requests. `/metrics`
//! shows the [`TOP_KEYS`] of the last completed window of each rule
//! (`dynaraft_contributor_insights_key_requests`), as CloudWatch's
//! DynamoDBContributorInsights-PKC and -PKT rules report them.
//!
//! Each window keeps at most [`MAX_TRACKED_KEYS`] keys per rule, with the
//! Space-Saving method (a new key past that replaces the least counted one
//! and inherits its count), so a key's count is exact or over by at most
//! the count it inherited, and the top keys are found whatever the number
//! of distinct keys.

use dynaraft_cluster::Table;
use dynaraft_model::{AttributeValue, Item};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Length of one counting window, in milliseconds (CloudWatch's rules
/// report per minute).
pub const WINDOW_MS: u64 = 60_000;
/// Keys counted per rule and window (Space-Saving's counters).
pub const MAX_TRACKED_KEYS: usize = 1_000;
/// Keys shown per rule: the most requested of the last window.
pub const TOP_KEYS: usize = 10;
/// Most rules counted at once (two per table or index enabled).
pub const MAX_RULES: usize = 4_096;

/// Which rule a request counts for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rule {
    /// Most accessed partition keys (PKC).
    Accessed,
    /// Most throttled partition keys (PKT).
    Throttled,
}

impl Rule {
    pub fn code(self) -> &'static str {
        match self {
            Rule::Accessed => "PKC",
            Rule::Throttled => "PKT",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct RuleKey {
    table: String,
    created_ms: u64,
    index: Option<String>,
    rule: Rule,
}

#[derive(Debug)]
struct Counter {
    started: Instant,
    counts: HashMap<String, u64>,
    /// The top keys of the last completed window.
    last: Vec<(String, u64)>,
}

impl Counter {
    /// Closes the window if it ended: its top keys become `last` (an
    /// empty list when a whole window passed without requests).
    fn roll(&mut self, now: Instant, window: Duration) {
        let elapsed = now.saturating_duration_since(self.started);
        if elapsed < window {
            return;
        }
        self.last = if elapsed < window * 2 {
            top(&self.counts)
        } else {
            Vec::new()
        };
        self.counts.clear();
        self.started = now;
    }

    fn add(&mut self, key: String) {
        if let Some(c) = self.counts.get_mut(&key) {
            *c += 1;
            return;
        }
        let mut inherited = 0;
        if self.counts.len() >= MAX_TRACKED_KEYS {
            let least = self
                .counts
                .iter()
                .min_by_key(|(_, c)| **c)
                .map(|(k, c)| (k.clone(), *c));
            if let Some((k, c)) = least {
                self.counts.remove(&k);
                inherited = c;
            }
        }
        self.counts.insert(key, inherited + 1);
    }
}

/// The [`TOP_KEYS`] most counted, most first (ties by key).
fn top(counts: &HashMap<String, u64>) -> Vec<(String, u64)> {
    let mut all: Vec<(String, u64)> = counts.iter().map(|(k, c)| (k.clone(), *c)).collect();
    all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    all.truncate(TOP_KEYS);
    all
}

/// One API server's Contributor Insights counts.
#[derive(Debug)]
pub struct Insights {
    rules: Mutex<HashMap<RuleKey, Counter>>,
    /// The counting window ([`WINDOW_MS`] unless a test shortens it).
    window: Duration,
}

impl Default for Insights {
    fn default() -> Self {
        Insights::with_window_ms(WINDOW_MS)
    }
}

/// A rule's top keys for `/metrics`.
pub struct TopKeys {
    pub table: String,
    pub index: Option<String>,
    pub rule: Rule,
    pub keys: Vec<(String, u64)>,
}

impl Insights {
    /// Counts in windows of `ms` milliseconds.
    pub fn with_window_ms(ms: u64) -> Insights {
        Insights {
            rules: Mutex::new(HashMap::new()),
            window: Duration::from_millis(ms.max(1)),
        }
    }

    /// Counts a request for the partition key (attributes `hash`) of
    /// `key`, a key or item of `table` (of its global index `index`), under
    /// `rule`, if Contributor Insights is enabled for it in a mode that has
    /// the rule. Nothing is built when it is not.
    pub fn record(
        &self,
        table: &Table,
        index: Option<&str>,
        rule: Rule,
        hash: &[dynaraft_model::KeyAttr],
        key: &Item,
    ) {
        if !counts(&table.meta, index, rule) {
            return;
        }
        let rk = RuleKey {
            table: table.meta.name.clone(),
            created_ms: table.meta.created_ms,
            index: index.map(str::to_string),
            rule,
        };
        let now = Instant::now();
        let mut rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        if rules.len() >= MAX_RULES && !rules.contains_key(&rk) {
            return;
        }
        let counter = rules.entry(rk).or_insert_with(|| Counter {
            started: now,
            counts: HashMap::new(),
            last: Vec::new(),
        });
        counter.roll(now, self.window);
        counter.add(key_text(hash, key));
    }

    /// The top keys of every rule still enabled in `tables` (rules of
    /// tables dropped, or no longer enabled, are forgotten).
    pub fn top_keys(&self, tables: &[Arc<Table>]) -> Vec<TopKeys> {
        let now = Instant::now();
        let mut rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        rules.retain(|k, _| {
            tables.iter().any(|t| {
                t.meta.name == k.table
                    && t.meta.created_ms == k.created_ms
                    && counts(&t.meta, k.index.as_deref(), k.rule)
            })
        });
        let mut out: Vec<TopKeys> = rules
            .iter_mut()
            .map(|(k, c)| {
                c.roll(now, self.window);
                TopKeys {
                    table: k.table.clone(),
                    index: k.index.clone(),
                    rule: k.rule,
                    keys: c.last.clone(),
                }
            })
            .collect();
        out.sort_by(|a, b| {
            (&a.table, &a.index, a.rule.code()).cmp(&(&b.table, &b.index, b.rule.code()))
        });
        out
    }
}

/// Whether Contributor Insights is enabled for the table (`index` None)
/// or one of its global indexes in a mode that has `rule`.
fn counts(meta: &dynaraft_storage::TableMeta, index: Option<&str>, rule: Rule) -> bool {
    meta.insights_of(index)
        .is_some_and(|i| i.enabled && (rule == Rule::Throttled || !i.throttled_only))
}

/// A partition key as a contributor: the values of `key`'s partition-key
/// attributes (`hash`) in the key's order, `|`-separated (strings as they
/// are, numbers as sent, others as DynamoDB JSON).
pub fn key_text(hash: &[dynaraft_model::KeyAttr], key: &Item) -> String {
    let parts: Vec<String> = hash
        .iter()
        .filter_map(|a| key.get(&a.name))
        .map(|v| match v {
            AttributeValue::S(s) => s.clone(),
            AttributeValue::N(n) => n.to_string(),
            other => other.to_json().to_string(),
        })
        .collect();
    parts.join("|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn space_saving_keeps_the_heavy_keys_among_many() {
        let mut c = Counter {
            started: Instant::now(),
            counts: HashMap::new(),
            last: Vec::new(),
        };
        for i in 0..(MAX_TRACKED_KEYS * 5) {
            c.add(format!("cold{i}"));
            if i % 4 == 0 {
                c.add("hot".into());
            }
        }
        assert!(c.counts.len() <= MAX_TRACKED_KEYS);
        let t = top(&c.counts);
        assert_eq!(t[0].0, "hot");
        // Exact or over by what it inherited: never under.
        assert!(t[0].1 >= (MAX_TRACKED_KEYS * 5 / 4) as u64);
    }
}
