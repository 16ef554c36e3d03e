//! Golden transcripts (tests/transcripts/*.txt) replayed against the
//! embedded server and against an in-process three-zone cluster with two
//! partitions per table: both must answer every request exactly as the
//! transcript records. `UPDATE_TRANSCRIPTS=1 cargo test -p dynaraft-tests
//! --test transcripts` rewrites the files from the embedded server's
//! answers (the cluster must still agree).

use dynaraft_tests::cluster::TestCluster;
use dynaraft_tests::{TestServer, transcript};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transcripts_embedded_and_cluster() {
    let files = transcript::files();
    assert!(!files.is_empty(), "no transcripts found");
    let embedded = TestServer::start().await;
    let cluster = TestCluster::start("transcripts", 3, 2).await;
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read transcript");
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let (addr, text2) = (embedded.addr, text.clone());
        let got = tokio::task::spawn_blocking(move || transcript::replay(addr, &text2))
            .await
            .expect("replay");
        if transcript::updating() {
            std::fs::write(file, &got).expect("write transcript");
        } else if got != text {
            failures.push(format!("{name} (embedded):\n{}", diff(&text, &got)));
        }
        let addr = cluster.api_addr;
        let on_cluster = tokio::task::spawn_blocking(move || transcript::replay(addr, &text))
            .await
            .expect("replay");
        if on_cluster != got {
            failures.push(format!(
                "{name} (cluster vs embedded):\n{}",
                diff(&got, &on_cluster)
            ));
        }
    }
    embedded.stop().await;
    cluster.stop().await;
    assert!(
        failures.is_empty(),
        "transcripts differ:\n{}",
        failures.join("\n")
    );
}

/// The first lines where `want` and `got` differ, with their line numbers.
fn diff(want: &str, got: &str) -> String {
    let w: Vec<&str> = want.lines().collect();
    let g: Vec<&str> = got.lines().collect();
    let first = w
        .iter()
        .zip(&g)
        .position(|(a, b)| a != b)
        .unwrap_or(w.len().min(g.len()));
    let show = |l: &[&str]| {
        l.iter()
            .skip(first)
            .take(8)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    };
    format!(
        "at line {}:\n--- want\n{}\n--- got\n{}",
        first + 1,
        show(&w),
        show(&g)
    )
}
