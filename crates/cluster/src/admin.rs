//! `dynaraft admin`: the cluster as a table, read from the control plane
//! (nodes, zones, partitions, replicas) and from every node (which replica
//! leads, how far each follower's applied index trails the leader's log).

use crate::ClusterError;
use crate::node::ControlMember;
use crate::remote::Remote;
pub use crate::survey::{PartitionRow, ReplicationRow};
use crate::survey::{Survey, hex};
use crate::wire::{CatalogDoc, Reply, Request};
use dynaraft_storage::Outcome;
use dynaraft_storage::catalog::NodeRecord;
use futures_util::stream::FuturesUnordered;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

/// How long an admin read waits for the other control members once one
/// has answered, in milliseconds: a member that is stalled or cut off is
/// left out rather than holding every admin command for a call's timeout.
pub const CATALOG_READ_GRACE_MS: u64 = 500;

/// The newest catalog among the control members that answer. A follower
/// may not have applied what the leader just acknowledged, so asking the
/// first member that answers could miss an admin command's own write
/// (`put-user` then `users`); the leader applies an entry before it
/// replies, so the highest version read from all of them includes it.
/// Members that have not answered [`CATALOG_READ_GRACE_MS`] after the
/// first are not waited for.
async fn catalog(remote: &Remote, control: &[ControlMember]) -> Result<CatalogDoc, ClusterError> {
    use futures_util::StreamExt;
    let mut asks: FuturesUnordered<_> = control
        .iter()
        .map(|m| async move {
            match remote
                .call(&m.addr, 0, 0, &Request::Catalog { since: 0 })
                .await
            {
                Ok(Reply::Catalog(doc)) => Ok(doc),
                Ok(_) => Err(ClusterError::Unavailable("unexpected reply".into())),
                Err(e) => Err(e),
            }
        })
        .collect();
    let mut newest: Option<CatalogDoc> = None;
    let mut last = ClusterError::Unavailable("no control members given".into());
    let mut grace_ends = None;
    loop {
        let next = match grace_ends {
            None => asks.next().await,
            Some(at) => match tokio::time::timeout_at(at, asks.next()).await {
                Ok(next) => next,
                Err(_) => break,
            },
        };
        match next {
            None => break,
            Some(Ok(doc)) => {
                grace_ends.get_or_insert_with(|| {
                    tokio::time::Instant::now() + Duration::from_millis(CATALOG_READ_GRACE_MS)
                });
                if newest.as_ref().is_none_or(|n| doc.version > n.version) {
                    newest = Some(doc);
                }
            }
            Some(Err(e)) => last = e,
        }
    }
    newest.ok_or(last)
}

/// The cluster from the control plane's catalog and every node's answers
/// (with every partition's stats when `with_stats`).
pub async fn survey(
    remote: &Remote,
    control: &[ControlMember],
    with_stats: bool,
) -> Result<Survey, ClusterError> {
    let doc = catalog(remote, control).await?;
    let status_of = |n: NodeRecord| async move {
        match remote.call(&n.addr, 0, 0, &Request::Status).await {
            Ok(Reply::Status(groups)) => Some(groups),
            _ => None,
        }
    };
    let stats_of = |n: NodeRecord, group: u64| async move {
        let call = Request::Stats { local_indexes: 0 };
        match remote.call(&n.addr, group, 0, &call).await {
            Ok(Reply::Stats(s)) => Some(s),
            _ => None,
        }
    };
    let (version, tables, nodes) = (doc.version, doc.tables, doc.nodes);
    Ok(Survey::gather(version, tables, nodes, status_of, stats_of, with_stats).await)
}

/// Renders nodes and partitions as two plain-text tables.
pub async fn report(remote: &Remote, control: &[ControlMember]) -> Result<String, ClusterError> {
    let survey = survey(remote, control, false).await?;
    let mut out = String::new();
    let _ = writeln!(out, "catalog version {}\n", survey.version);
    let _ = writeln!(
        out,
        "NODE   AZ       ADDRESS                UP     REPLICAS"
    );
    for n in survey.node_rows() {
        let up = match (n.up, n.draining) {
            (true, true) => "drain",
            (true, false) => "yes",
            (false, _) => "no",
        };
        let count = n.replicas.map_or("-".to_string(), |c| c.to_string());
        let _ = writeln!(
            out,
            "{:<6} {:<8} {:<22} {:<6} {}",
            n.id, n.az, n.addr, up, count
        );
    }
    let _ = writeln!(
        out,
        "\nTABLE                GROUP  HASH FROM          REPLICAS     LEADER  LAG (entries behind the leader's log)"
    );
    for p in survey.partition_rows().iter().filter(|p| p.index.is_none()) {
        let lag: Vec<String> = p
            .lag
            .iter()
            .map(|l| match l.entries {
                Some(e) => format!("{}:{e}", l.node),
                None => format!("{}:?", l.node),
            })
            .collect();
        let replicas: Vec<String> = p.replicas.iter().map(u64::to_string).collect();
        let _ = writeln!(
            out,
            "{:<20} {:<6} {:<18} {:<12} {:<7} {}",
            p.table,
            p.group,
            p.hash_from,
            replicas.join(","),
            p.leader.map_or("?".to_string(), |l| l.to_string()),
            lag.join(" ")
        );
    }
    Ok(out)
}

/// Every partition of every global table and where its replication to
/// each peer region stands, as each partition's leader reports it.
pub async fn replication(
    remote: &Remote,
    control: &[ControlMember],
) -> Result<Vec<ReplicationRow>, ClusterError> {
    Ok(survey(remote, control, false).await?.replication_rows())
}

pub fn render_replication(rows: &[ReplicationRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "TABLE                GROUP  LEADER  REGION          SHIPPED     BACKLOG   LAG MS    COPIED"
    );
    for r in rows {
        let s = &r.status;
        let _ = writeln!(
            out,
            "{:<20} {:<6} {:<7} {:<15} {:<11} {:<9} {:<9} {}",
            r.table,
            r.group,
            r.leader,
            s.region,
            s.shipped,
            s.backlog,
            s.lag_ms,
            if s.copied { "yes" } else { "no" }
        );
    }
    out
}

/// Every partition of every table and index, with its range, size,
/// replicas and leader.
pub async fn partitions(
    remote: &Remote,
    control: &[ControlMember],
) -> Result<Vec<PartitionRow>, ClusterError> {
    Ok(survey(remote, control, true).await?.partition_rows())
}

/// [`partitions`] as a plain-text table.
pub fn render_partitions(rows: &[PartitionRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "TABLE                INDEX        GROUP  HASH FROM         HASH TO           ITEMS      BYTES        LOAD/S  HOT KEY           REPLICAS     LEADER  PARENT  SPLITTING"
    );
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    for r in rows {
        let replicas: Vec<String> = r.replicas.iter().map(u64::to_string).collect();
        let _ = writeln!(
            out,
            "{:<20} {:<12} {:<6} {:<17} {:<17} {:<10} {:<12} {:<7} {:<17} {:<12} {:<7} {:<7} {}",
            r.table,
            or_dash(r.index.clone()),
            r.group,
            r.hash_from,
            or_dash(r.hash_to.clone()),
            or_dash(r.items.map(|v| v.to_string())),
            or_dash(r.bytes.map(|v| v.to_string())),
            or_dash(r.load_per_s.map(|v| v.to_string())),
            or_dash(r.hot_key.clone()),
            replicas.join(","),
            or_dash(r.leader.map(|v| v.to_string())),
            or_dash(r.parent.map(|v| v.to_string())),
            or_dash(
                r.splitting
                    .as_ref()
                    .map(|(at, c)| format!("at {at} -> {c}"))
            ),
        );
    }
    out
}

/// Begins a split of one partition of `table` (or of its global index
/// `index`): partition `group` (optional when there is only one), at hash
/// `at` (by default where the partition's bytes halve). The control
/// plane's leader finishes it. A missing table, index or partition, a
/// hash outside the partition, or a partition that cannot be split (fewer
/// than two partition-key values) is refused with the reason.
pub async fn split(
    remote: &Remote,
    control: &[ControlMember],
    table: &str,
    index: Option<&str>,
    group: Option<u64>,
    at: Option<u64>,
) -> Result<String, SplitError> {
    let doc = catalog(remote, control).await?;
    let refuse = |why: String| Err(SplitError::Refused(why));
    let Some(t) = doc.tables.iter().find(|t| t.name == table) else {
        return refuse(format!("table {table} does not exist"));
    };
    let (index_id, parts) = match index {
        None => (None, &t.partitions),
        Some(name) => match t.global_indexes.iter().find(|g| g.index.name == name) {
            Some(g) => (Some(g.id), &g.partitions),
            None => return refuse(format!("table {table} has no global index {name}")),
        },
    };
    let p = match (group, parts.as_slice()) {
        (Some(g), _) => parts.iter().find(|p| p.group == g),
        (None, [only]) => Some(only),
        (None, _) => {
            return refuse(format!(
                "table {table} has {} partitions; name one with --group",
                parts.len()
            ));
        }
    };
    let Some(p) = p else {
        return refuse(format!(
            "table {table} has no partition {}",
            group.unwrap_or(0)
        ));
    };
    let at = match at {
        Some(at) => at,
        None => {
            let addrs: BTreeMap<u64, &str> =
                doc.nodes.iter().map(|n| (n.id, n.addr.as_str())).collect();
            let call = Request::SplitPoint {
                index_partition: index_id.is_some(),
            };
            let mut point = None;
            for addr in p.replicas.iter().filter_map(|r| addrs.get(r)) {
                if let Ok(Reply::SplitPoint(at)) = remote.call(addr, p.group, 0, &call).await {
                    point = Some(at);
                    break;
                }
            }
            match point {
                Some(Some(at)) => at,
                Some(None) => {
                    return refuse(format!(
                        "partition {} cannot be split: it holds fewer than two partition-key values",
                        p.group
                    ));
                }
                None => return refuse(format!("no replica of partition {} answered", p.group)),
            }
        }
    };
    let cmd = dynaraft_storage::Command::BeginSplit {
        table: table.to_string(),
        index: index_id,
        group: p.group,
        at,
    };
    match propose_to_control(remote, control, cmd).await? {
        Outcome::TableMissing => refuse(format!("table {table} does not exist")),
        Outcome::Table(meta) => {
            let child = meta
                .partitions_of(index_id)
                .and_then(|ps| ps.iter().find(|q| q.group == p.group))
                .and_then(|q| q.splitting);
            match child {
                Some(s) => Ok(format!(
                    "split of partition {} at {} begun (child group {}); the control plane finishes it\n",
                    p.group,
                    hex(s.at),
                    s.child
                )),
                None => refuse(format!("partition {} is not splitting", p.group)),
            }
        }
        Outcome::Invalid(why) => refuse(why),
        other => refuse(format!("split refused: {other:?}")),
    }
}

/// Why `dynaraft admin split` (or `drain`) did not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    /// The request was wrong or the partition cannot be split.
    #[error("{0}")]
    Refused(String),
    /// The cluster could not be asked.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// Marks node `node` as draining (`undo`: no longer): the control plane's
/// leader then moves its replicas, one at a time, to other nodes of its
/// zone, and places nothing new on it. Refused, with the reason, for a
/// node that is not registered or has no other node in its zone.
pub async fn drain(
    remote: &Remote,
    control: &[ControlMember],
    node: u64,
    undo: bool,
) -> Result<String, SplitError> {
    let doc = catalog(remote, control).await?;
    let Some(record) = doc.nodes.iter().find(|n| n.id == node) else {
        return Err(SplitError::Refused(format!("no node {node} is registered")));
    };
    if !undo
        && !doc
            .nodes
            .iter()
            .any(|n| n.id != node && n.az == record.az && !n.draining)
    {
        return Err(SplitError::Refused(format!(
            "node {node} is the only node of zone {} that is not draining: its replicas have nowhere to go",
            record.az
        )));
    }
    let cmd = dynaraft_storage::Command::SetDraining {
        node,
        draining: !undo,
    };
    match propose_to_control(remote, control, cmd).await? {
        Outcome::Done if undo => Ok(format!("node {node} no longer draining\n")),
        Outcome::Done => {
            let held = doc
                .tables
                .iter()
                .flat_map(|t| t.all_partitions())
                .filter(|p| p.replicas.contains(&node))
                .count();
            Ok(format!(
                "node {node} draining: its {held} replicas move to other nodes of {}; `admin partitions` shows when it holds none\n",
                record.az
            ))
        }
        Outcome::Invalid(why) => Err(SplitError::Refused(why)),
        other => Err(SplitError::Refused(format!("drain refused: {other:?}"))),
    }
}

/// Proposes catalog command `cmd` to the control members, one after
/// another until one (the leader) applies it; its outcome.
async fn propose_to_control(
    remote: &Remote,
    control: &[ControlMember],
    cmd: dynaraft_storage::Command,
) -> Result<Outcome, ClusterError> {
    let mut last = ClusterError::Unavailable("no control members given".into());
    for m in control {
        match remote
            .call(&m.addr, 0, 0, &Request::Propose(Box::new(cmd.clone())))
            .await
        {
            Ok(Reply::Proposed(outcome, _)) => return Ok(outcome),
            Ok(_) => last = ClusterError::Unavailable("unexpected reply".into()),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Adds a user to the control plane, or replaces the one with its access
/// key id (its policies checked by the caller); routers authenticate it
/// once they read the new catalog.
pub async fn put_user(
    remote: &Remote,
    control: &[ControlMember],
    user: dynaraft_storage::UserRecord,
) -> Result<String, SplitError> {
    let id = user.access_key_id.clone();
    match propose_to_control(remote, control, dynaraft_storage::Command::PutUser(user)).await? {
        Outcome::Done => Ok(format!("user {id} stored\n")),
        other => Err(SplitError::Refused(format!("refused: {other:?}"))),
    }
}

/// Removes the control plane's user with `access_key_id`.
pub async fn delete_user(
    remote: &Remote,
    control: &[ControlMember],
    access_key_id: &str,
) -> Result<String, SplitError> {
    let cmd = dynaraft_storage::Command::DeleteUser {
        access_key_id: access_key_id.to_string(),
    };
    match propose_to_control(remote, control, cmd).await? {
        Outcome::Done => Ok(format!("user {access_key_id} deleted\n")),
        Outcome::Invalid(why) => Err(SplitError::Refused(why)),
        other => Err(SplitError::Refused(format!("refused: {other:?}"))),
    }
}

/// The control plane's users as a plain-text table: access key id,
/// account, name and how many policies (never a secret).
pub async fn users(remote: &Remote, control: &[ControlMember]) -> Result<String, ClusterError> {
    let doc = catalog(remote, control).await?;
    let mut out = format!(
        "{:<24} {:<14} {:<24} {}\n",
        "ACCESS KEY", "ACCOUNT", "NAME", "POLICIES"
    );
    for u in &doc.users {
        let name = u.name.as_deref().unwrap_or(&u.access_key_id);
        out += &format!(
            "{:<24} {:<14} {:<24} {}\n",
            u.access_key_id,
            u.account_id,
            name,
            u.policies.len()
        );
    }
    Ok(out)
}

/// The control group as each member named in `control` sees it: whether
/// it answers, the voters and the leader it knows, its log and applied
/// index, and how far it trails the leader.
pub async fn control_report(
    remote: &Remote,
    control: &[ControlMember],
) -> Result<String, ClusterError> {
    let mut rows = Vec::new();
    for m in control {
        let status = match remote.call(&m.addr, 0, 0, &Request::Status).await {
            Ok(Reply::Status(groups)) => Some(
                groups
                    .into_iter()
                    .find(|g| g.group == dynaraft_storage::machine::CATALOG_GROUP),
            ),
            _ => None,
        };
        rows.push((m, status));
    }
    let leader = rows
        .iter()
        .find_map(|(_, s)| s.as_ref().and_then(|s| s.as_ref()).and_then(|g| g.leader));
    // The leader's own view: its log head and its voters.
    let led = rows
        .iter()
        .filter(|(m, _)| Some(m.id) == leader)
        .find_map(|(_, s)| s.as_ref().and_then(|s| s.as_ref()));
    let head = led.map(|g| g.last_log_index);
    let voters = led.map(|g| g.voters.clone()).unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "control group leader: {}; voters (as the leader has them): {}\n",
        leader.map_or("unknown".to_string(), |l| l.to_string()),
        if voters.is_empty() {
            "unknown".to_string()
        } else {
            voters
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        }
    );
    let _ = writeln!(
        out,
        "MEMBER  AZ       ADDRESS                STATE                 LOG        APPLIED    LAG"
    );
    for (m, s) in &rows {
        let (state, log, applied, lag) = match s {
            None => (
                "not answering".to_string(),
                "-".into(),
                "-".into(),
                "-".into(),
            ),
            Some(None) => (
                "no control replica".to_string(),
                "-".into(),
                "-".into(),
                "-".into(),
            ),
            Some(Some(g)) => {
                let role = if Some(m.id) == g.leader {
                    "leader"
                } else if voters.contains(&m.id) {
                    "voter"
                } else {
                    "not a voter"
                };
                (
                    role.to_string(),
                    g.last_log_index.to_string(),
                    g.applied_index.to_string(),
                    head.map_or("?".into(), |h| {
                        h.saturating_sub(g.applied_index).to_string()
                    }),
                )
            }
        };
        let _ = writeln!(
            out,
            "{:<7} {:<8} {:<22} {:<21} {:<10} {:<10} {}",
            m.id, m.az, m.addr, state, log, applied, lag
        );
    }
    Ok(out)
}

/// Changes the control group's voters at its leader: removes `remove`
/// (a member lost for good, or one to be replaced) and/or adds `add`
/// (joined as a learner, made a voter once caught up).
pub async fn change_control(
    remote: &Remote,
    control: &[ControlMember],
    remove: Option<u64>,
    add: Option<ControlMember>,
) -> Result<String, SplitError> {
    if remove.is_none() && add.is_none() {
        return Err(SplitError::Refused(
            "nothing to change: give --node or --member".into(),
        ));
    }
    let mut leader = None;
    for m in control {
        if let Ok(Reply::Status(groups)) = remote.call(&m.addr, 0, 0, &Request::Status).await
            && let Some(l) = groups
                .iter()
                .find(|g| g.group == dynaraft_storage::machine::CATALOG_GROUP)
                .and_then(|g| g.leader)
        {
            leader = Some(l);
            break;
        }
    }
    let Some(leader) = leader else {
        return Err(SplitError::Refused(
            "no control member answered with a leader: the control group has no quorum".into(),
        ));
    };
    let addr = match control.iter().find(|m| m.id == leader) {
        Some(m) => m.addr.clone(),
        None => catalog(remote, control)
            .await?
            .nodes
            .into_iter()
            .find(|n| n.id == leader)
            .map(|n| n.addr)
            .ok_or_else(|| {
                SplitError::Refused(format!("the leader, node {leader}, has no known address"))
            })?,
    };
    let call = Request::ChangeVoters {
        remove,
        add: add.map(|m| {
            (
                m.id,
                dynaraft_raft::NodeInfo {
                    addr: m.addr,
                    az: m.az,
                },
            )
        }),
    };
    match remote.call(&addr, 0, 0, &call).await {
        Ok(Reply::Voters(v)) => Ok(format!(
            "control group voters now: {}\n",
            v.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
        )),
        Ok(_) => Err(SplitError::Refused("unexpected reply".into())),
        Err(e) => Err(SplitError::Refused(e.to_string())),
    }
}
