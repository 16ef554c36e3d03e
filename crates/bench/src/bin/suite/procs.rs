//! The systems under test as child processes: start, wait until they
//! answer, measure start-up and resident memory, stop.

use anyhow::{Context, bail};
use dynaraft_bench::client::{Conn, Endpoint};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a system may take to answer its first request, in seconds.
const READY_TIMEOUT_S: u64 = 60;
/// Pause between readiness probes, in milliseconds (small: start-up is
/// measured with it).
const READY_POLL_MS: u64 = 2;
/// How long a stopped process may take to exit before SIGKILL, in seconds.
const STOP_TIMEOUT_S: u64 = 20;

/// A child process, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Proc {
    child: Child,
}

impl Proc {
    /// Start `cmd` with its output in `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<Self> {
        let out =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Self { child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stop(&mut self) {
        let pid = self.child.id() as i32;
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(STOP_TIMEOUT_S);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// Wait until `url` answers a DynamoDB ListTables (or, with `etcd`, an
/// etcd range request) with a 200; returns how long that took from `since`.
pub async fn wait_ready(url: &str, etcd: bool, since: Instant) -> anyhow::Result<Duration> {
    let endpoint = Arc::new(Endpoint::parse(url, "us-east-1")?);
    let deadline = since + Duration::from_secs(READY_TIMEOUT_S);
    while Instant::now() < deadline {
        let mut conn = Conn::new(endpoint.clone());
        let answer = if etcd {
            conn.post("/v3/kv/range", br#"{"key":"AA=="}"#.to_vec())
                .await
        } else {
            conn.dynamodb("ListTables", b"{}".to_vec()).await
        };
        if answer.is_ok_and(|r| r.status == 200) {
            return Ok(since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(READY_POLL_MS)).await;
    }
    bail!("{url} did not answer within {READY_TIMEOUT_S} s")
}

/// Resident set size of a process, in bytes (from /proc).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Bytes the file system allocated to the files under `dir`: what `du`
/// shows, and what the disk holds. A file's length would also count the
/// holes of sparse files, which hold nothing (fjall's journal is created
/// 64 MiB long and written from its start).
pub fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    /// `st_blocks` counts 512-byte units, whatever the file system's block.
    const STAT_BLOCK_BYTES: u64 = 512;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_bytes(&e.path()),
            Ok(m) => m.blocks() * STAT_BLOCK_BYTES,
            Err(_) => 0,
        })
        .sum()
}

/// The value of the Prometheus counter or gauge `name` (without labels)
/// that `url` serves at `/metrics`, if it does.
pub async fn metric(url: &str, name: &str) -> Option<f64> {
    let endpoint = Arc::new(Endpoint::parse(url, "us-east-1").ok()?);
    let answer = Conn::new(endpoint).get("/metrics").await.ok()?;
    let text = std::str::from_utf8(&answer.body).ok()?;
    text.lines().find_map(|l| {
        let (key, value) = l.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok())?
    })
}

/// dynalite's command-line entry point, installed from npm into `dir` on
/// first use.
pub fn dynalite(dir: &Path, version: &str) -> anyhow::Result<PathBuf> {
    let cli = dir.join("node_modules/dynalite/cli.js");
    if cli.exists() {
        return Ok(cli);
    }
    std::fs::create_dir_all(dir)?;
    eprintln!(
        "[suite] installing dynalite@{version} from npm into {}",
        dir.display()
    );
    let status = Command::new("npm")
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            "--prefix",
        ])
        .arg(dir)
        .arg(format!("dynalite@{version}"))
        .status()
        .context("running npm")?;
    if !status.success() || !cli.exists() {
        bail!("npm install dynalite@{version} failed ({status})");
    }
    Ok(cli)
}

/// The local three-zone cluster, through `deploy/local/cluster.sh`.
pub struct Cluster {
    dir: PathBuf,
}

impl Cluster {
    /// Starts it with `partitions` per table, `node_flags` added to every
    /// storage node's command line (cluster.sh's NODE_FLAGS), and node i
    /// also serving the DynamoDB API on `api_port + i - 1` when given
    /// (cluster.sh's API_BASE).
    pub fn start_with(
        binary: &Path,
        dir: &Path,
        router_port: u16,
        node_port: u16,
        partitions: usize,
        node_flags: &str,
        api_port: Option<u16>,
    ) -> anyhow::Result<Self> {
        let _ = std::fs::remove_dir_all(dir);
        let mut cmd = Command::new("deploy/local/cluster.sh");
        if let Some(port) = api_port {
            cmd.env("API_BASE", port.to_string());
        }
        let status = cmd
            .env("NODE_FLAGS", node_flags)
            .arg("start")
            .arg(binary)
            .arg(dir)
            .arg(router_port.to_string())
            .arg(node_port.to_string())
            .args([
                "--partitions-per-table",
                &partitions.to_string(),
                "--transition-delay-ms",
                "0",
            ])
            .status()
            .context("running deploy/local/cluster.sh")?;
        if !status.success() {
            bail!(
                "cluster did not start ({status}); logs in {}",
                dir.display()
            );
        }
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// The cluster's data directory (cluster.sh keeps `control` there).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Resident memory of every process (three nodes and the router).
    pub fn rss_bytes(&self) -> u64 {
        let pids = std::fs::read_to_string(self.dir.join("pids")).unwrap_or_default();
        pids.lines()
            .filter_map(|p| p.trim().parse().ok())
            .filter_map(rss_bytes)
            .sum()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("deploy/local/cluster.sh")
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}

/// A three-member etcd cluster on 127.0.0.1, clients on `port..port+3`,
/// peers on the three ports after those.
pub fn etcd(binary: &Path, dir: &Path, port: u16) -> anyhow::Result<Vec<Proc>> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let peer = |i: u16| format!("http://127.0.0.1:{}", port + 3 + i);
    let initial = (0..3)
        .map(|i| format!("m{i}={}", peer(i)))
        .collect::<Vec<_>>()
        .join(",");
    (0..3)
        .map(|i| {
            let client = format!("http://127.0.0.1:{}", port + i);
            let mut cmd = Command::new(binary);
            cmd.arg("--name")
                .arg(format!("m{i}"))
                .arg("--data-dir")
                .arg(dir.join(format!("m{i}")))
                .args([
                    "--listen-client-urls",
                    &client,
                    "--advertise-client-urls",
                    &client,
                ])
                .args([
                    "--listen-peer-urls",
                    &peer(i),
                    "--initial-advertise-peer-urls",
                    &peer(i),
                ])
                .args([
                    "--initial-cluster",
                    &initial,
                    "--initial-cluster-state",
                    "new",
                ])
                .args([
                    "--initial-cluster-token",
                    "dynaraft-bench",
                    "--log-level",
                    "warn",
                ]);
            Proc::spawn(&format!("etcd m{i}"), cmd, &dir.join(format!("m{i}.log")))
        })
        .collect()
}
