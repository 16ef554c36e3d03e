//! `dynaraft-chaos`: run fault scenarios against a real local cluster and
//! check the histories (see the library docs).

use clap::{Parser, Subcommand};
use dynaraft_chaos::faults::{Kind, Timing};
use dynaraft_chaos::run::{RunConfig, RunResult};
use dynaraft_chaos::{checker, history, report, run};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "dynaraft-chaos",
    about = "Fault harness for dynaraft: seeded faults, a concurrent workload, a linearizability checker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run scenarios (one per fault kind, plus `mixed`) and write a summary.
    Run(RunArgs),
    /// The two-region scenario (global tables): conflicting writes in both
    /// regions, the link between them cut and healed, nodes killed; at the
    /// end both regions identical and every key's last writer the winner.
    Global(GlobalArgs),
    /// Check a recorded history file.
    Check { history: PathBuf },
    /// Check every run under an out folder again and rewrite its results
    /// and summary (e.g. after a checker change).
    Report {
        #[arg(default_value = "target/chaos")]
        out: PathBuf,
    },
}

#[derive(clap::Args)]
struct GlobalArgs {
    /// The dynaraft binary to test.
    #[arg(long)]
    binary: PathBuf,
    /// Where the run keeps both clusters' data, logs and writes.
    #[arg(long, default_value = "target/chaos/global")]
    out: PathBuf,
    /// Seed of the fault schedule and the clients (default: the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Length of the run, in seconds.
    #[arg(long, default_value_t = 60)]
    duration_s: u64,
    /// Clients per region.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// The first region's router port; the second region's is 4 above it.
    #[arg(long, default_value_t = 19200)]
    base_port: u16,
}

#[derive(clap::Args)]
struct RunArgs {
    /// The dynaraft binary to test.
    #[arg(long)]
    binary: PathBuf,
    /// Where runs keep their cluster data, logs, histories and results.
    #[arg(long, default_value = "target/chaos")]
    out: PathBuf,
    /// Scenarios to run: fault kinds, or `mixed` for all kinds together
    /// (comma-separated; default: every kind, then mixed).
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Seed of the first scenario (the others use the next seeds). Default:
    /// from the clock, printed so a run can be replayed.
    #[arg(long)]
    seed: Option<u64>,
    /// Length of each scenario, in seconds.
    #[arg(long, default_value_t = 60)]
    duration_s: u64,
    /// Shortest and longest fault, in seconds.
    #[arg(long, default_value_t = 4)]
    fault_min_s: u64,
    #[arg(long, default_value_t = 12)]
    fault_max_s: u64,
    /// Shortest and longest fault-free stretch between faults, in seconds.
    #[arg(long, default_value_t = 4)]
    quiet_min_s: u64,
    #[arg(long, default_value_t = 10)]
    quiet_max_s: u64,
    /// Concurrent workload clients (the probes come on top).
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Partitions of the test table.
    #[arg(long, default_value_t = 3)]
    partitions: usize,
    /// Router port; the nodes use the three ports after it (four when the
    /// `replace` scenario adds a spare node).
    #[arg(long, default_value_t = 19100)]
    base_port: u16,
    /// Start the router with --unsafe-ack-before-commit, a deliberately
    /// broken build, and succeed only if the checker catches it.
    #[arg(long)]
    expect_violations: bool,
    /// Split a random partition of the test table every this many seconds
    /// while the faults run (0: never), through `dynaraft admin split`.
    #[arg(long, default_value_t = 0)]
    split_every_s: u64,
    /// Markdown summary table written here as well as to the out folder.
    #[arg(long)]
    summary: Option<PathBuf>,
    /// The fsync shim (tests/faults/fail_fsync.c built as a shared
    /// library), for the fsync-failure scenario.
    #[arg(long)]
    fail_fsync_lib: Option<PathBuf>,
}

fn scenario_kinds(name: &str) -> anyhow::Result<Vec<Kind>> {
    if name == "mixed" {
        return Ok(Kind::ALL.to_vec());
    }
    <Kind as clap::ValueEnum>::from_str(name, true)
        .map(|k| vec![k])
        .map_err(|e| anyhow::anyhow!("unknown scenario {name:?}: {e}"))
}

fn kind_name(k: Kind) -> String {
    clap::ValueEnum::to_possible_value(&k)
        .map_or_else(|| format!("{k:?}"), |v| v.get_name().to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Check { history } => {
            let ops = history::read_history(&history)?;
            let rep = checker::check(&ops);
            println!("{}", serde_json::to_string_pretty(&rep)?);
            if rep.violations() > 0 {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Run(args) => run_all(args).await,
        Command::Global(args) => global(args).await,
        Command::Report { out } => rereport(&out),
    }
}

async fn global(args: GlobalArgs) -> anyhow::Result<()> {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs())
    });
    std::fs::create_dir_all(&args.out)?;
    let r = dynaraft_chaos::global::run(dynaraft_chaos::global::GlobalConfig {
        binary: std::fs::canonicalize(&args.binary)?,
        dir: std::fs::canonicalize(&args.out)?,
        seed,
        run_ms: args.duration_s * 1000,
        clients: args.clients,
        base_port: args.base_port,
    })
    .await?;
    println!("[global] seed {seed}");
    for f in &r.faults {
        println!("  fault: {f}");
    }
    println!(
        "  {} writes ({} acknowledged); regions identical {}; {} violations",
        r.writes,
        r.acked,
        r.converged_ms.map_or("never".to_string(), |ms| format!(
            "{ms} ms after the last heal"
        )),
        r.violations.len()
    );
    for v in &r.violations {
        println!("  VIOLATION: {v}");
    }
    anyhow::ensure!(
        r.violations.is_empty(),
        "{} violations; replay with --seed {seed}",
        r.violations.len()
    );
    Ok(())
}

fn rereport(out: &std::path::Path) -> anyhow::Result<()> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(out)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("result.json").exists() && p.join("history.jsonl").exists())
        .collect();
    dirs.sort();
    let mut results = Vec::new();
    for dir in dirs {
        let saved: run::Saved = serde_json::from_slice(&std::fs::read(dir.join("result.json"))?)?;
        let ops = history::read_history(&dir.join("history.jsonl"))?;
        let r = run::summarize(saved, &ops);
        std::fs::write(dir.join("result.json"), serde_json::to_vec_pretty(&r)?)?;
        println!("[{}] seed {}", r.name, r.seed);
        print!("{}", report::details(&r));
        results.push(r);
    }
    let table = report::summary(&results);
    std::fs::write(out.join("summary.md"), &table)?;
    println!("\n{table}");
    Ok(())
}

async fn run_all(args: RunArgs) -> anyhow::Result<()> {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs())
    });
    let names: Vec<String> = if args.scenarios.is_empty() {
        Kind::ALL
            .iter()
            .map(|k| kind_name(*k))
            .chain(["mixed".to_string()])
            .collect()
    } else {
        args.scenarios.clone()
    };
    let binary = std::fs::canonicalize(&args.binary)?;
    std::fs::create_dir_all(&args.out)?;
    let out = std::fs::canonicalize(&args.out)?;
    let mut results: Vec<RunResult> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let cfg = RunConfig {
            name: name.clone(),
            binary: binary.clone(),
            dir: out.join(name),
            seed: seed + i as u64,
            kinds: scenario_kinds(name)?,
            timing: Timing {
                run_ms: args.duration_s * 1000,
                warmup_ms: 5_000.min(args.duration_s * 250),
                fault_min_ms: args.fault_min_s * 1000,
                fault_max_ms: args.fault_max_s * 1000,
                quiet_min_ms: args.quiet_min_s * 1000,
                quiet_max_ms: args.quiet_max_s * 1000,
            },
            clients: args.clients,
            partitions: args.partitions,
            base_port: args.base_port,
            router_flags: if args.expect_violations {
                vec!["--unsafe-ack-before-commit".into()]
            } else {
                Vec::new()
            },
            split_every_ms: args.split_every_s * 1000,
            fail_fsync: args
                .fail_fsync_lib
                .as_deref()
                .map(std::fs::canonicalize)
                .transpose()?,
        };
        let r = run::run(cfg).await?;
        println!(
            "[{name}] seed {} — {} operations, {} violations; result in {}",
            r.seed,
            r.report.operations,
            r.report.violations(),
            out.join(name).join("result.json").display()
        );
        print!("{}", report::details(&r));
        results.push(r);
    }
    let table = report::summary(&results);
    std::fs::write(out.join("summary.md"), &table)?;
    if let Some(p) = &args.summary {
        std::fs::write(p, &table)?;
    }
    println!("\n{table}");
    let violations: usize = results.iter().map(|r| r.report.violations()).sum();
    let undecided: usize = results.iter().map(|r| r.report.undecided.len()).sum();
    match (args.expect_violations, violations) {
        (true, 0) => anyhow::bail!("the deliberately broken build passed the checker"),
        (true, n) => println!("the checker caught the deliberately broken build ({n} violations)"),
        (false, 0) if undecided == 0 => println!("no violations"),
        (false, 0) => anyhow::bail!("{undecided} keys could not be decided (search limit)"),
        (false, n) => anyhow::bail!("{n} violations; replay with --seed {seed}"),
    }
    Ok(())
}
