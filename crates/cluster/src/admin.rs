//! `dynaraft admin`: the cluster as a table, read from the control plane
//! (nodes, zones, partitions, replicas) and from every node (which replica
//! leads, how far each follower's applied index trails the leader's log).

use crate::ClusterError;
use crate::node::ControlMember;
use crate::remote::Remote;
use crate::wire::{CatalogDoc, GroupStatus, Reply, Request};
use std::collections::BTreeMap;
use std::fmt::Write;

/// The catalog from the first control member that answers.
async fn catalog(remote: &Remote, control: &[ControlMember]) -> Result<CatalogDoc, ClusterError> {
    let mut last = ClusterError::Unavailable("no control members given".into());
    for m in control {
        match remote
            .call(&m.addr, 0, 0, &Request::Catalog { since: 0 })
            .await
        {
            Ok(Reply::Catalog(doc)) => return Ok(doc),
            Ok(_) => last = ClusterError::Unavailable("unexpected reply".into()),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Renders nodes and partitions as two plain-text tables.
pub async fn report(control: &[ControlMember]) -> Result<String, ClusterError> {
    let remote = Remote::default();
    let doc = catalog(&remote, control).await?;
    let mut status: BTreeMap<u64, Option<BTreeMap<u64, GroupStatus>>> = BTreeMap::new();
    for n in &doc.nodes {
        let s = match remote.call(&n.addr, 0, 0, &Request::Status).await {
            Ok(Reply::Status(groups)) => Some(groups.into_iter().map(|g| (g.group, g)).collect()),
            _ => None,
        };
        status.insert(n.id, s);
    }
    let mut out = String::new();
    let _ = writeln!(out, "catalog version {}\n", doc.version);
    let _ = writeln!(
        out,
        "NODE   AZ       ADDRESS                UP     REPLICAS"
    );
    for n in &doc.nodes {
        let s = status.get(&n.id).and_then(|s| s.as_ref());
        let up = if s.is_some() { "yes" } else { "no" };
        let count = s.map_or("-".to_string(), |s| s.len().to_string());
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
    for t in &doc.tables {
        for p in &t.partitions {
            let of = |node: u64| {
                status
                    .get(&node)
                    .and_then(|s| s.as_ref())
                    .and_then(|s| s.get(&p.group))
            };
            let leader = p
                .replicas
                .iter()
                .find_map(|r| of(*r).and_then(|g| g.leader));
            let head = leader.and_then(of).map(|g| g.last_log_index);
            let lag: Vec<String> = p
                .replicas
                .iter()
                .map(|r| match (of(*r), head) {
                    (Some(g), Some(h)) => format!("{r}:{}", h.saturating_sub(g.applied_index)),
                    _ => format!("{r}:?"),
                })
                .collect();
            let replicas: Vec<String> = p.replicas.iter().map(u64::to_string).collect();
            let _ = writeln!(
                out,
                "{:<20} {:<6} {:<18} {:<12} {:<7} {}",
                t.name,
                p.group,
                format!("{:016x}", p.hash_lo),
                replicas.join(","),
                leader.map_or("?".to_string(), |l| l.to_string()),
                lag.join(" ")
            );
        }
    }
    Ok(out)
}
