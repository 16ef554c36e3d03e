//! A real local cluster for the harness: three storage nodes (one per
//! zone, each a control-plane member) and a router, as separate `dynaraft`
//! processes, with every node-to-node and router-to-node link routed
//! through the fault-injecting proxy (`proxy`). The harness can kill -9,
//! restart, pause (SIGSTOP) and resume (SIGCONT) any node.

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

pub struct Node {
    pub id: u64,
    pub zone: Zone,
    pub addr: SocketAddr,
    args: Vec<String>,
    child: Option<Child>,
    paused: bool,
    /// libfaketime's control file for this node's clock offset.
    clock_file: PathBuf,
}

pub struct Cluster {
    binary: PathBuf,
    faketime: Option<PathBuf>,
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
}

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
        let addrs: Vec<SocketAddr> = (1..=3u16)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], cfg.base_port + i)))
            .collect();
        let control: Vec<String> = addrs
            .iter()
            .zip(ZONES)
            .enumerate()
            .map(|(i, (a, z))| format!("{}={a}@{z}", i + 1))
            .collect();
        let control = control.join(",");
        // One proxy listener per (source zone, destination node).
        let mut routes: Vec<Vec<String>> = vec![Vec::new(); 4];
        for (from, r) in routes.iter_mut().enumerate() {
            for (j, addr) in addrs.iter().enumerate() {
                let to = j + 1;
                if from == to {
                    continue;
                }
                let seed = cfg.seed ^ ((from as u64) << 8 | to as u64);
                let via = proxy::listen(net.clone(), from, to, *addr, seed).await?;
                r.push(format!("{addr}={via}"));
            }
        }
        let mut nodes = Vec::new();
        for (i, addr) in addrs.iter().enumerate() {
            let id = i as u64 + 1;
            let data = cfg.dir.join(format!("node-{id}"));
            let args = vec![
                "node".into(),
                "--id".into(),
                id.to_string(),
                "--az".into(),
                ZONES[i].into(),
                "--listen".into(),
                addr.to_string(),
                "--data-dir".into(),
                data.display().to_string(),
                "--control".into(),
                control.clone(),
                "--route".into(),
                routes[i + 1].join(","),
            ];
            let args: Vec<String> = args
                .into_iter()
                .chain(cfg.node_flags.iter().cloned())
                .collect();
            let clock_file = cfg.dir.join(format!("node-{id}.clock"));
            std::fs::write(&clock_file, "+0\n")?;
            nodes.push(Node {
                id,
                zone: i + 1,
                addr: *addr,
                args,
                child: None,
                paused: false,
                clock_file,
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

    fn spawn(&self, name: &str, args: &[String], clock: Option<&Path>) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{name}.log")))?;
        let err = log.try_clone()?;
        let mut cmd = Command::new(&self.binary);
        if let (Some(lib), Some(clock)) = (&self.faketime, clock) {
            cmd.env("LD_PRELOAD", lib)
                .env("FAKETIME_TIMESTAMP_FILE", clock)
                .env("FAKETIME_CACHE_DURATION", FAKETIME_REREAD_S.to_string())
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
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
        let child = self.spawn(
            &format!("node-{}", node.id),
            &node.args,
            Some(&node.clock_file),
        )?;
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

    /// Lifts every fault: network rules, pauses, clocks, and stopped nodes.
    pub fn heal(&mut self) -> anyhow::Result<()> {
        self.net.heal();
        for node in &self.nodes {
            std::fs::write(&node.clock_file, "+0\n")?;
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
