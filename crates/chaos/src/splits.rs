//! Splits while faults run: every few seconds the harness asks the cluster
//! to split a random partition of the test table (`dynaraft admin split`,
//! from outside the faulted network, as an operator would). A split that
//! cannot begin (the control plane is cut off, the partition holds one
//! key) is skipped; one that began is finished by the control plane's
//! leader, faults or not. The checker's guarantees do not change.

use crate::workload;
use serde::Deserialize;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;
use tokio::sync::watch;

/// Longest one `dynaraft admin` call may take, in milliseconds.
pub const ADMIN_TIMEOUT_MS: u64 = 15_000;

/// The fields of `dynaraft admin partitions --json` the harness reads.
#[derive(Deserialize)]
struct Row {
    table: String,
    index: Option<String>,
    group: u64,
}

/// Runs `dynaraft admin --control <control> <args>`; its stdout when it
/// succeeded in time.
async fn admin(binary: &PathBuf, control: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(binary)
        .arg("admin")
        .arg("--control")
        .arg(control)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_millis(ADMIN_TIMEOUT_MS), out).await {
        Ok(Ok(o)) if o.status.success() => Some(String::from_utf8_lossy(&o.stdout).into_owned()),
        _ => None,
    }
}

/// The test table's partitions (groups), when the cluster answered.
async fn partitions(binary: &PathBuf, control: &str) -> Option<Vec<u64>> {
    let json = admin(binary, control, &["partitions", "--json"]).await?;
    let rows: Vec<Row> = serde_json::from_str(&json).ok()?;
    Some(
        rows.into_iter()
            .filter(|r| r.table == workload::TABLE && r.index.is_none())
            .map(|r| r.group)
            .collect(),
    )
}

/// Splits a random partition every `every` until `stop`; returns how many
/// splits began and the partitions the table has at the end.
pub async fn run(
    binary: PathBuf,
    control: String,
    every: Duration,
    seed: u64,
    name: String,
    mut stop: watch::Receiver<bool>,
) -> (usize, usize) {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x5911_7e55);
    let mut begun = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        let Some(groups) = partitions(&binary, &control).await else {
            continue;
        };
        let Some(group) = groups.get(rng.usize(..groups.len().max(1))).copied() else {
            continue;
        };
        let g = group.to_string();
        let args = ["split", "--table", workload::TABLE, "--group", &g];
        if let Some(said) = admin(&binary, &control, &args).await {
            begun += 1;
            println!("[{name}] {}", said.trim());
        }
    }
    let at_end = partitions(&binary, &control).await.map_or(0, |p| p.len());
    (begun, at_end)
}
