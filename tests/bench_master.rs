//! `switchyard bench master` end to end, small: a real node configured with the TOML the
//! bench prints (`--print-config`), a handful of simulated workers and forced builds; every
//! build completes exactly once, with latencies and the master's CPU and memory measured.
//! (The benchmark itself runs from benches/compare_master.sh, not in the test suite.)

mod common;

use common::masters::*;

#[test]
fn bench_master_runs_every_build_once_and_reports() {
    let dir = TempDir::new("benchmaster");
    let port = free_port();
    let printed = std::process::Command::new(BIN)
        .args([
            "bench",
            "master",
            "--token",
            TOKEN,
            "--workers",
            "3",
            "--print-config",
        ])
        .output()
        .unwrap();
    assert!(printed.status.success());
    let workers_toml = String::from_utf8(printed.stdout).unwrap();
    assert!(
        workers_toml.contains("name = \"bench-2\""),
        "{workers_toml}"
    );
    let config = format!(
        "listen = \"127.0.0.1:{port}\"\n[master]\nname = \"solo\"\ndata_dir = \"data\"\n\
         [master.api]\ntokens = [\"{TOKEN}\"]\n{workers_toml}"
    );
    let node = Node::start(dir.path(), "solo", port, &config);
    let pid = node.child.as_ref().unwrap().id().to_string();
    let out = std::process::Command::new(BIN)
        .args(["bench", "master", "--token", TOKEN, "--workers", "3"])
        .args([
            "--builds",
            "12",
            "--step-ms",
            "20",
            "--json",
            "--timeout",
            "60",
        ])
        .args(["--url", &node.ws_url(), "--api", &node.addr().to_string()])
        .args(["--router-pid", &pid])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(r["completed"], 12, "{r}");
    assert_eq!(r["failures"], 0, "{r}");
    assert_eq!(r["duplicates"], 0, "{r}");
    assert_eq!(r["duplicate_completions"], 0, "{r}");
    assert_eq!(r["missing"], 0, "{r}");
    assert_eq!(r["submit_to_start_ms"]["samples"], 12, "{r}");
    // A 20 ms step: no build completes faster than that after its submission.
    assert!(
        r["submit_to_complete_ms"]["p50"].as_f64().unwrap() >= 20.0,
        "{r}"
    );
    assert!(r["builds_per_s"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["master_rss_peak_mib"].as_f64().unwrap() > 1.0, "{r}");
    assert!(r["master_cpu_s"].as_f64().is_some(), "{r}");
}
