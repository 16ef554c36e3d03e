//! `dynaraft bench`, the load generator, against an in-process embedded
//! server: every workload runs without errors and measures what it says,
//! and wrong answers are counted as errors, never as throughput.

use dynaraft_bench::keys::Distribution;
use dynaraft_bench::ops::Protocol;
use dynaraft_bench::runner::{BenchArgs, LoadMode};
use dynaraft_bench::workload::Workload;
use dynaraft_tests::TestServer;

fn args(server: &TestServer, workload: Workload) -> BenchArgs {
    BenchArgs {
        endpoint: format!("http://{}", server.addr),
        protocol: Protocol::Dynamodb,
        workload,
        distribution: None,
        table: None,
        records: 300,
        item_bytes: 200,
        concurrency: 4,
        duration_s: 1,
        warmup_s: 0,
        rate: None,
        consistent_reads: false,
        timeout_ms: 5000,
        seed: Some(7),
        load: LoadMode::Auto,
        region: "us-east-1".into(),
        quiet: true,
        replica_region: None,
        replica_endpoint: None,
        stream_view_type: None,
        backup: false,
        pitr: false,
        export_bucket: None,
        server_pid: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_workload_runs_clean_with_its_operation_mix() {
    let server = TestServer::start().await;
    for (workload, kinds) in [
        (Workload::A, vec!["read (GetItem)", "update (PutItem)"]),
        (Workload::B, vec!["read (GetItem)", "update (PutItem)"]),
        (Workload::C, vec!["read (GetItem)"]),
        (Workload::D, vec!["read (GetItem)", "insert (PutItem)"]),
        (Workload::E, vec!["insert (PutItem)", "scan (Query)"]),
        (Workload::F, vec!["read (GetItem)", "read-modify-write"]),
        (Workload::Put, vec!["update (PutItem)"]),
    ] {
        let report = dynaraft_bench::run(&args(&server, workload))
            .await
            .expect("run");
        let s = &report.summary;
        assert_eq!(s.errors, 0, "{workload:?}: {:?}", s.failures);
        assert!(s.ok > 20, "{workload:?}: only {} operations", s.ok);
        let got: Vec<&str> = s.per_op.iter().map(|l| l.op.as_str()).collect();
        assert_eq!(got, kinds, "{workload:?}");
        assert_eq!(s.throughput, s.ok as f64, "one-second window");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_rate_keeps_to_its_schedule() {
    let server = TestServer::start().await;
    let mut a = args(&server, Workload::B);
    a.rate = Some(200.0);
    a.duration_s = 2;
    a.distribution = Some(Distribution::Uniform);
    let report = dynaraft_bench::run(&a).await.expect("run");
    let s = &report.summary;
    assert_eq!(s.errors, 0, "{:?}", s.failures);
    // 200 requests are due each second; a server this idle answers them all.
    assert_eq!(s.ok, 400, "operations in 2 s at 200/s");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_answers_are_errors_not_throughput() {
    let server = TestServer::start().await;
    // Loaded with 200-byte items, read as if they were 120 bytes: every
    // payload mismatches its version.
    dynaraft_bench::run(&args(&server, Workload::C))
        .await
        .expect("load");
    let mut wrong_size = args(&server, Workload::C);
    wrong_size.item_bytes = 120;
    let s = dynaraft_bench::run(&wrong_size).await.expect("run").summary;
    assert_eq!((s.ok, s.throughput), (0, 0.0));
    assert!(s.errors > 20, "{} errors", s.errors);
    assert_eq!(s.failures.len(), 1);
    assert_eq!(s.failures[0].class, "wrong answer");
    assert!(
        s.failures[0].example.contains("payload does not match"),
        "{}",
        s.failures[0].example
    );

    // A table that was never loaded: every GetItem finds nothing.
    let mut empty = args(&server, Workload::C);
    empty.table = Some("never-loaded".into());
    empty.load = LoadMode::Never;
    let s = dynaraft_bench::run(&empty).await.expect("run").summary;
    assert_eq!(s.ok, 0);
    assert!(
        s.failures.iter().all(|f| f.example.contains("no item")),
        "{:?}",
        s.failures
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_pid_gets_its_cpu_time_per_operation() {
    // The server runs in this process: its CPU time (the load generator's
    // included) over the window, per successful operation.
    let server = TestServer::start().await;
    let mut a = args(&server, Workload::C);
    a.server_pid = Some(std::process::id());
    let report = dynaraft_bench::run(&a).await.unwrap();
    let us = report.summary.server_cpu_us_per_op.unwrap();
    assert!(report.summary.ok > 0 && us > 0.0, "{us} µs per op");
    assert!(dynaraft_bench::runner::process_cpu_time(std::process::id()).is_some());
    assert_eq!(dynaraft_bench::runner::process_cpu_time(u32::MAX), None);
}
