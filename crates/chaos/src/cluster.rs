//! A real local cluster for the harness: three storage nodes (one per
//! zone, each a control-plane member) and a router, as separate `dynaraft`
//! processes, with every node-to-node and router-to-node link routed
//! through the fault-injecting proxy (`proxy`). The harness can kill -9,
//! restart, pause (SIGSTOP) and resume (SIGCONT) any node, make its fsyncs
//! fail (an `LD_PRELOAD` shim), leave a torn write at the end of its WAL,
//! and ask whether it has caught up (its `/ready`). With a spare, a fourth
//! node (not a control member) runs in az-a beside node 1, so that
//! replicas of a node down past the replace-after time have somewhere to
//! move.

use crate::proxy::{self, Net, Zone};
use anyhow::Context;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::process::{Child, Command};

/// Zones of the cluster, in node order (node i is in `ZONES[i - 1]`).
pub const ZONES: [&str; 3] = ["az-a", "az-b", "az-c"];
/// The router's zone: the edge, where clients are.
pub const EDGE: Zone = 0;
/// The zone of the spare node, when there is one (az-a).
pub const SPARE_ZONE: Zone = 1;

pub struct Node {
    pub id: u64,
    pub zone: Zone,
    pub addr: SocketAddr,
    args: Vec<String>,
    child: Option<Child>,
    paused: bool,
    /// libfaketime's control file for this node's clock offset.
    clock_file: PathBuf,
    /// While this file exists, the fsync shim fails the node's fsyncs.
    fsync_flag: PathBuf,
    /// The node's data directory.
    data: PathBuf,
    /// Where the node serves `/metrics` and `/ready`.
    pub metrics: SocketAddr,
}

pub struct Cluster {
    binary: PathBuf,
    faketime: Option<PathBuf>,
    fail_fsync: Option<PathBuf>,
    dir: PathBuf,
    pub nodes: Vec<Node>,
    router: Option<Child>,
    pub router_addr: SocketAddr,
    pub net: Net,
    /// The control-plane members, as `dynaraft admin --control` takes them.
    pub control: String,
}

pub struct ClusterConfig {
    pub binary: PathBuf,
    pub dir: PathBuf,
    /// The router's port; nodes listen on the three ports after it.
    pub base_port: u16,
    pub partitions: usize,
    pub seed: u64,
    /// Extra flags for the router (e.g. the deliberately broken mode).
    pub router_flags: Vec<String>,
    /// Extra flags for every storage node (e.g. a region and its peers).
    pub node_flags: Vec<String>,
    /// libfaketime, preloaded into the nodes when clocks are to be skewed.
    pub faketime: Option<PathBuf>,
    /// The fsync shim (tests/faults/fail_fsync.c built), preloaded into the
    /// nodes when their fsyncs are to fail.
    pub fail_fsync: Option<PathBuf>,
    /// A fourth node in [`SPARE_ZONE`] (port `base_port + 4`), and every
    /// node's `--replace-after-ms`: a node down that long has its
    /// replicas moved to another node of its zone.
    pub spare: Option<SpareConfig>,
}

#[derive(Clone, Copy, Debug)]
pub struct SpareConfig {
    pub replace_after_ms: u64,
}

/// A node's metrics port is this far above its own (a second region's
/// router is 4 above the first's, its nodes just after it).
pub const METRICS_PORT_OFFSET: u16 = 10;
/// Longest wait for a node's `/ready` answer, in milliseconds.
pub const READY_TIMEOUT_MS: u64 = 500;
/// The environment variable naming the fsync shim's flag file.
pub const FAIL_FSYNC_FLAG_ENV: &str = "DYNARAFT_FAIL_FSYNC_FLAG";

/// Where Debian's libfaketime (package `libfaketime`) puts its
/// multi-threaded variant.
pub fn find_faketime() -> Option<PathBuf> {
    ["x86_64-linux-gnu", "aarch64-linux-gnu"]
        .iter()
        .map(|arch| PathBuf::from(format!("/usr/lib/{arch}/faketime/libfaketimeMT.so.1")))
        .find(|p| p.exists())
}

/// How often a node re-reads its clock offset, in seconds.
pub const FAKETIME_REREAD_S: u32 = 1;

impl Cluster {
    pub async fn start(cfg: ClusterConfig) -> anyhow::Result<Cluster> {
        std::fs::create_dir_all(&cfg.dir)?;
        let net = Net::default();
        // Node i + 1 is in zone `zones[i]` (1-based); the three first are
        // the control-plane members, one per zone.
        let mut zones: Vec<Zone> = (1..=ZONES.len()).collect();
        if cfg.spare.is_some() {
            zones.push(SPARE_ZONE);
        }
        let addrs: Vec<SocketAddr> = (1..=zones.len() as u16)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], cfg.base_port + i)))
            .collect();
        let control: Vec<String> = addrs
            .iter()
            .zip(ZONES)
            .enumerate()
            .map(|(i, (a, z))| format!("{}={a}@{z}", i + 1))
            .collect();
        let control = control.join(",");
        // One proxy listener per (source zone, destination node in another
        // zone); within a zone, nodes talk directly.
        let mut routes: Vec<Vec<String>> = vec![Vec::new(); ZONES.len() + 1];
        for (from, r) in routes.iter_mut().enumerate() {
            for (j, (addr, &to)) in addrs.iter().zip(&zones).enumerate() {
                if from == to {
                    continue;
                }
                let seed = cfg.seed ^ ((from as u64) << 8 | (j as u64 + 1));
                let via = proxy::listen(net.clone(), from, to, *addr, seed).await?;
                r.push(format!("{addr}={via}"));
            }
        }
        let mut nodes = Vec::new();
        for (i, (addr, &zone)) in addrs.iter().zip(&zones).enumerate() {
            let id = i as u64 + 1;
            let data = cfg.dir.join(format!("node-{id}"));
            let mut args = vec![
                "node".into(),
                "--id".into(),
                id.to_string(),
                "--az".into(),
                ZONES[zone - 1].into(),
                "--listen".into(),
                addr.to_string(),
                "--data-dir".into(),
                data.display().to_string(),
                "--control".into(),
                control.clone(),
                "--route".into(),
                routes[zone].join(","),
            ];
            if let Some(spare) = cfg.spare {
                args.push("--replace-after-ms".into());
                args.push(spare.replace_after_ms.to_string());
            }
            let args: Vec<String> = args
                .into_iter()
                .chain(cfg.node_flags.iter().cloned())
                .collect();
            let metrics = SocketAddr::from(([127, 0, 0, 1], addr.port() + METRICS_PORT_OFFSET));
            let args: Vec<String> = args
                .into_iter()
                .chain(["--metrics-listen".to_string(), metrics.to_string()])
                .collect();
            let clock_file = cfg.dir.join(format!("node-{id}.clock"));
            std::fs::write(&clock_file, "+0\n")?;
            nodes.push(Node {
                id,
                zone,
                addr: *addr,
                args,
                child: None,
                paused: false,
                clock_file,
                fsync_flag: cfg.dir.join(format!("node-{id}.fail-fsync")),
                data,
                metrics,
            });
        }
        let router_addr = SocketAddr::from(([127, 0, 0, 1], cfg.base_port));
        let mut router_args = vec![
            "router".to_string(),
            "--port".into(),
            cfg.base_port.to_string(),
            "--control".into(),
            control.clone(),
            "--partitions-per-table".into(),
            cfg.partitions.to_string(),
            "--transition-delay-ms".into(),
            "0".into(),
            // The harness signs with any key: open until users exist.
            "--allow-unauthenticated".into(),
            "--route".into(),
            routes[EDGE].join(","),
        ];
        router_args.extend(cfg.router_flags.iter().cloned());
        let mut cluster = Cluster {
            binary: cfg.binary,
            faketime: cfg.faketime,
            fail_fsync: cfg.fail_fsync,
            dir: cfg.dir,
            nodes,
            router: None,
            router_addr,
            net,
            control,
        };
        for i in 0..cluster.nodes.len() {
            cluster.start_node(i)?;
        }
        cluster.router = Some(cluster.spawn("router", &router_args, None)?);
        Ok(cluster)
    }

    /// The `dynaraft` binary the cluster runs.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    fn spawn(&self, name: &str, args: &[String], node: Option<&Node>) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{name}.log")))?;
        let err = log.try_clone()?;
        let mut cmd = Command::new(&self.binary);
        let mut preload = Vec::new();
        if let (Some(lib), Some(node)) = (&self.faketime, node) {
            preload.push(lib.display().to_string());
            cmd.env("FAKETIME_TIMESTAMP_FILE", &node.clock_file)
                .env("FAKETIME_CACHE_DURATION", FAKETIME_REREAD_S.to_string())
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        if let (Some(lib), Some(node)) = (&self.fail_fsync, node) {
            preload.push(lib.display().to_string());
            cmd.env(FAIL_FSYNC_FLAG_ENV, &node.fsync_flag);
        }
        if !preload.is_empty() {
            cmd.env("LD_PRELOAD", preload.join(":"));
        }
        cmd.args(args)
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))
    }

    /// Starts (or restarts) node `i` (0-based) on its data directory.
    pub fn start_node(&mut self, i: usize) -> anyhow::Result<()> {
        let Some(node) = self.nodes.get(i) else {
            anyhow::bail!("no node {i}");
        };
        let child = self.spawn(&format!("node-{}", node.id), &node.args, Some(node))?;
        if let Some(node) = self.nodes.get_mut(i) {
            node.child = Some(child);
            node.paused = false;
        }
        Ok(())
    }

    /// kill -9 of node `i`, waiting until it is gone.
    pub async fn kill_node(&mut self, i: usize) {
        if let Some(node) = self.nodes.get_mut(i)
            && let Some(mut child) = node.child.take()
        {
            let _ = child.start_kill();
            let _ = child.wait().await;
            node.paused = false;
        }
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`) to node `i`.
    pub fn pause_node(&mut self, i: usize, pause: bool) {
        if let Some(node) = self.nodes.get_mut(i)
            && let Some(pid) = node.child.as_ref().and_then(Child::id)
        {
            let sig = if pause { libc::SIGSTOP } else { libc::SIGCONT };
            // SAFETY: kill(2) with a pid we spawned and still own.
            unsafe {
                libc::kill(pid as libc::pid_t, sig);
            }
            node.paused = pause;
        }
    }

    /// Moves node `i`'s wall clock `skew_s` seconds away from the real one
    /// (within `FAKETIME_REREAD_S`).
    pub fn skew_clock(&mut self, i: usize, skew_s: i64) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.faketime.is_some(),
            "clock skew needs libfaketime (Debian package libfaketime)"
        );
        if let Some(node) = self.nodes.get(i) {
            std::fs::write(&node.clock_file, format!("{skew_s:+}s\n"))?;
        }
        Ok(())
    }

    /// Makes node `i`'s fsyncs fail with EIO (`true`) or work again.
    pub fn fail_fsyncs(&mut self, i: usize, fail: bool) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.fail_fsync.is_some(),
            "failing fsyncs needs the shim (tests/faults/fail_fsync.c built; make chaos does)"
        );
        if let Some(node) = self.nodes.get(i) {
            if fail {
                std::fs::write(&node.fsync_flag, b"")?;
            } else if node.fsync_flag.exists() {
                std::fs::remove_file(&node.fsync_flag)?;
            }
        }
        Ok(())
    }

    /// kill -9 of node `i` in the middle of a write: `torn` is appended to
    /// its newest WAL segment, as the part of a write that reached the disk
    /// before a power loss would be (never fsynced, so never acknowledged).
    /// Returns the segment. The node restarts when the fault is healed.
    pub async fn tear_wal_tail(&mut self, i: usize, torn: &[u8]) -> anyhow::Result<PathBuf> {
        self.kill_node(i).await;
        let Some(node) = self.nodes.get(i) else {
            anyhow::bail!("no node {i}");
        };
        let wal = node.data.join("wal");
        let mut segments: Vec<PathBuf> = std::fs::read_dir(&wal)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        segments.sort();
        let Some(newest) = segments.pop() else {
            anyhow::bail!("{} holds no WAL segment", wal.display());
        };
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(&newest)?
            .write_all(torn)?;
        Ok(newest)
    }

    /// Whether node `i` says it is ready: every group it holds knows its
    /// leader and has applied nearly all that the group committed (its
    /// `/ready`, within `READY_TIMEOUT_MS`).
    pub async fn node_ready(&self, i: usize) -> bool {
        let Some(node) = self.nodes.get(i) else {
            return false;
        };
        let ask = async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(node.metrics).await.ok()?;
            s.write_all(b"GET /ready HTTP/1.0\r\nHost: node\r\n\r\n")
                .await
                .ok()?;
            let mut head = [0u8; 12];
            s.read_exact(&mut head).await.ok()?;
            Some(head.ends_with(b" 200"))
        };
        let limit = std::time::Duration::from_millis(READY_TIMEOUT_MS);
        matches!(tokio::time::timeout(limit, ask).await, Ok(Some(true)))
    }

    /// Lifts every fault: network rules, pauses, clocks, failing fsyncs,
    /// and stopped nodes.
    pub fn heal(&mut self) -> anyhow::Result<()> {
        self.net.heal();
        for node in &self.nodes {
            std::fs::write(&node.clock_file, "+0\n")?;
            if node.fsync_flag.exists() {
                std::fs::remove_file(&node.fsync_flag)?;
            }
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].paused {
                self.pause_node(i, false);
            }
            if self.nodes[i].child.is_none() {
                self.start_node(i)?;
            }
        }
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops every process (SIGCONT first, so paused ones can die).
    pub async fn stop(mut self) {
        for i in 0..self.nodes.len() {
            self.pause_node(i, false);
        }
        if let Some(mut r) = self.router.take() {
            let _ = r.start_kill();
            let _ = r.wait().await;
        }
        for i in 0..self.nodes.len() {
            self.kill_node(i).await;
        }
    }
}
