//! `ltm-engine run` with its default, the built-in memory model: answers from the
//! state, checkpoints and `--resume` equal to one run, crashes lose nothing.

mod common;

use std::path::Path;
use std::process::Command;

use ltm_engine::memory_model::ModelConfig;
use ltm_engine::state_file::load_state;
use rand::Rng;

const STATE: &str = "8MiB";

fn run(args: &[&str]) -> (bool, serde_json::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ltm-engine"))
        .args(["run", "--state-bytes", STATE, "--json"])
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "panic: {err}");
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.success(), json, err)
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Lines `keyN = valueN` of random words, so every key is followed by one value.
fn write_pairs(path: &Path, lines: usize, rng: &mut impl Rng) -> Vec<(String, String)> {
    let word = |rng: &mut dyn rand::RngCore| -> String {
        (0..10)
            .map(|_| (b'a' + (rng.next_u32() % 26) as u8) as char)
            .collect()
    };
    let pairs: Vec<(String, String)> = (0..lines).map(|_| (word(rng), word(rng))).collect();
    let text: String = pairs.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
    std::fs::write(path, text).unwrap();
    pairs
}

fn memory_config() -> ltm_engine::MemoryConfig {
    ModelConfig::with_state_bytes(8 << 20)
        .unwrap()
        .memory_config()
}

#[test]
fn answers_come_from_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("pairs.txt");
    let pairs = write_pairs(&ctx, 200, &mut common::rng("answers"));
    let queries: Vec<String> = pairs[..20].iter().map(|(k, _)| format!("{k} =")).collect();
    let mut args = vec!["--context-file", p(&ctx)];
    for q in &queries {
        args.extend(["--query", q.as_str()]);
    }
    let (ok, json, err) = run(&args);
    assert!(ok, "{err}");
    assert_eq!(json["writes"], 200, "one pair per line");
    for (answer, (_, value)) in json["answers"].as_array().unwrap().iter().zip(&pairs) {
        assert_eq!(answer["answer"], value.as_str());
    }
}

#[test]
fn a_resumed_run_equals_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("pairs.txt");
    write_pairs(&ctx, 3000, &mut common::rng("resume-memory"));
    let (whole, part, rest_state) = (
        dir.path().join("whole.ltmstate"),
        dir.path().join("part.ltmstate"),
        dir.path().join("rest.ltmstate"),
    );
    let (ok, all, err) = run(&["--context-file", p(&ctx), "--save-state", p(&whole)]);
    assert!(ok, "{err}");
    // Stop early (at a line end), then resume from the saved state in small windows.
    let (ok, first, err) = run(&[
        "--context-file",
        p(&ctx),
        "--save-state",
        p(&part),
        "--max-tokens",
        "2000",
    ]);
    assert!(ok, "{err}");
    let stopped = first["tokens"].as_u64().unwrap();
    assert!(
        (2000..2100).contains(&stopped),
        "stops at the end of the line after 2000 tokens: {stopped}"
    );
    let (ok, rest, err) = run(&[
        "--context-file",
        p(&ctx),
        "--load-state",
        p(&part),
        "--resume",
        "--save-state",
        p(&rest_state),
        "--window-bytes",
        "1000",
        "--checkpoint-every",
        "500",
    ]);
    assert!(ok, "{err}");
    assert_eq!(rest["skipped_tokens"], stopped);
    assert_eq!(
        stopped + rest["tokens"].as_u64().unwrap(),
        all["tokens"].as_u64().unwrap()
    );
    let config = memory_config();
    let (a, b) = (
        load_state(&whole, &config).unwrap(),
        load_state(&rest_state, &config).unwrap(),
    );
    assert_eq!(a.tokens_seen(), b.tokens_seen());
    assert!(
        a.values() == b.values(),
        "resumed state differs from one run"
    );
}

#[test]
fn a_crash_while_checkpointing_keeps_the_previous_state() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("pairs.txt");
    write_pairs(&ctx, 500, &mut common::rng("crash-memory"));
    let state = dir.path().join("s.ltmstate");
    let (ok, _, err) = run(&["--context-file", p(&ctx), "--save-state", p(&state)]);
    assert!(ok, "{err}");
    let before = std::fs::read(&state).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ltm-engine"))
        .args([
            "run",
            "--state-bytes",
            STATE,
            "--context-file",
            p(&ctx),
            "--save-state",
            p(&state),
        ])
        .args(["--checkpoint-every", "100", "--window-bytes", "500"])
        .env("LTM_FAULT", "abort-before-rename")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "the injected crash must kill the run"
    );
    assert_eq!(
        std::fs::read(&state).unwrap(),
        before,
        "the previous state is intact"
    );
    load_state(&state, &memory_config()).expect("and loadable");
}

#[test]
fn wrong_inputs_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("pairs.txt");
    write_pairs(&ctx, 50, &mut common::rng("wrong-memory"));
    let (ok, _, err) = run(&["--context-file", p(&ctx), "--format", "u32"]);
    assert!(!ok && err.contains("memory model reads text"), "{err}");
    // A state of another size is another configuration.
    let state = dir.path().join("s.ltmstate");
    assert!(run(&["--context-file", p(&ctx), "--save-state", p(&state)]).0);
    let out = Command::new(env!("CARGO_BIN_EXE_ltm-engine"))
        .args([
            "run",
            "--state-bytes",
            "2MiB",
            "--context-file",
            p(&ctx),
            "--load-state",
            p(&state),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("s.ltmstate"), "{err}");
    // Resuming a state against a file it did not come from.
    let other = dir.path().join("other.txt");
    std::fs::write(&other, "tiny = file\n").unwrap();
    let (ok, _, err) = run(&[
        "--context-file",
        p(&other),
        "--load-state",
        p(&state),
        "--resume",
    ]);
    assert!(
        !ok && err.contains("s.ltmstate was not made from") && err.contains("other.txt"),
        "{err}"
    );
    let (ok, _, err) = run(&["--context-file", p(&ctx), "--device", "cuda"]);
    assert!(!ok && err.contains("cuda:0"), "{err}");
}
