//! `wagate bench` at a tiny size, twice (`--repeat 2`): every figure is printed, with the range
//! of its runs, and the command succeeds. A smoke test of the bench code only; no speed is
//! asserted (CI machines are not benchmarks).

use std::process::Stdio;
use std::time::Duration;

/// Every figure the bench prints, by the key that starts its line.
const FIGURES: [&str; 22] = [
    "bare.rate",
    "bare.ack",
    "bare.cpu",
    "floor.rate",
    "floor.cpu",
    "ingest.rate",
    "ingest.ack",
    "ingest.cpu",
    "ingest.floor",
    "bare.replies",
    "e2e.rate",
    "bare.replies.cpu",
    "e2e.cpu",
    "e2e.latency",
    "e2e.lat1000",
    "reload",
    "rule.eval",
    "export.rate",
    "export.memory",
    "rest.bare",
    "rest.2users",
    "rest.many",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_prints_every_figure_at_a_tiny_size() {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_wagate"));
    cmd.args([
        "bench",
        "--n",
        "200",
        "--concurrency",
        "8",
        "--export-n",
        "2000",
        "--rest-users",
        "5",
        "--paced-rate",
        "400",
        "--max-secs",
        "30",
        "--repeat",
        "2",
    ])
    .env_remove("WAGATE_CONFIG")
    .stdin(Stdio::null())
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(180), cmd.output())
        .await
        .expect("the bench finishes in time")
        .expect("the bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench failed: {}\n{stdout}\n{stderr}",
        out.status
    );
    for key in FIGURES {
        let line = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(key))
            .unwrap_or_else(|| panic!("no `{key}` line in:\n{stdout}"));
        let value = line[key.len()..].trim();
        assert!(!value.is_empty(), "`{key}` has no value: {line}");
        assert!(
            value.contains("[2 runs: "),
            "`{key}` gives the range of its two runs: {line}"
        );
    }
    // Every load was answered in full: a run that lost requests would be a broken bench.
    for key in ["ingest.rate", "bare.rate", "floor.rate", "e2e.rate"] {
        let line = stdout.lines().find(|l| l.starts_with(key)).unwrap();
        assert!(
            line.contains("(0 errors") || line.contains(", 0 errors)"),
            "{line}"
        );
    }
    assert!(
        stdout.contains("200 of 200 answered"),
        "every message was answered end to end:\n{stdout}"
    );
    // The writer's share of each load run is reported beside the figures.
    for step in ["ingest", "e2e"] {
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(&format!("bench: {step}: "))
                    && l.contains("the writer was busy")),
            "no writer line for {step}:\n{stderr}"
        );
    }
}
