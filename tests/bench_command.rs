//! `ltm-engine bench` end to end on a tiny sweep: the JSON report, the chart file,
//! and clear errors for bad arguments.

use std::process::{Command, Output};

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ltm-engine"))
        .arg("bench")
        .args(args)
        .output()
        .expect("the binary runs")
}

#[test]
fn tiny_sweep_writes_report_and_chart() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("chart.svg");
    let out = bench(&[
        "--device",
        "cpu",
        "--heads",
        "2",
        "--head-dim",
        "16",
        "--min-tokens",
        "64",
        "--max-tokens",
        "256",
        "--runs",
        "1",
        "--json",
        "--plot",
        svg.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let points = report["points"].as_array().unwrap();
    let lengths: Vec<u64> = points
        .iter()
        .map(|p| p["tokens"].as_u64().unwrap())
        .collect();
    assert_eq!(lengths, [64, 128, 256]);
    for p in points {
        for key in [
            "memory_forward",
            "attention_prefill",
            "memory_decode",
            "attention_decode",
        ] {
            assert_eq!(p[key]["status"], "measured", "{key} at {}", p["tokens"]);
            let s = p[key]["median_s"].as_f64().unwrap();
            assert!(s > 0.0 && s.is_finite(), "{key}: {s}");
        }
        // H · K · V f32 values; 2 · H · D f32 values per cached token.
        assert_eq!(p["state_bytes"], 2 * 16 * 16 * 4);
        assert_eq!(
            p["kv_cache_bytes"].as_u64().unwrap(),
            p["tokens"].as_u64().unwrap() * 2 * 2 * 16 * 4
        );
    }
    assert!(report["fits"]["attention_prefill"]["exponent"]
        .as_f64()
        .is_some());
    assert_eq!(report["at_target"]["tokens"], 1e8);
    let chart = std::fs::read_to_string(&svg).expect("chart written");
    assert!(chart.starts_with("<svg") && chart.contains("attention prefill (measured)"));
    assert!(stderr.contains("256 tokens"), "no progress lines: {stderr}");
}

#[test]
fn bad_arguments_are_clear_errors() {
    for (args, message) in [
        (&["--heads", "0"][..], "heads must be at least 1"),
        (
            &["--min-tokens", "4096", "--max-tokens", "1000"],
            "no power of two between",
        ),
        (&["--device", "cuda:3"], "cuda:3 requested"),
        (&["--device", "tpu"], "unknown device"),
        (
            &["--prefill-budget=-1"],
            "prefill_budget_s must be a non-negative",
        ),
    ] {
        let out = bench(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    }
}
