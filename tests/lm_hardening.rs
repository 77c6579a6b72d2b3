//! Issue 18 on the language-model path: options and texts that would grow a buffer
//! past the memory are refused before the run, a file cut short is found as for the
//! built-in models, bad UTF-8 deep in a text is found before the compute that would
//! reach it, sampling never lets an overflow pick the least likely token, and
//! generation is bounded and still reported when interrupted.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ltm_engine::lm::LanguageModel;
use ltm_engine::tokenize::incremental::IncrementalText;
use ltm_engine::Device;

mod common;
use common::cli::{cli, expect_error, p};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Some kilobytes of prose: the fixtures' own documentation.
fn prose() -> String {
    let mut text = std::fs::read_to_string(fixture("README.md")).unwrap();
    text.push_str(&std::fs::read_to_string(fixture("SEMANTICS.md")).unwrap());
    text
}

/// [`prose`] repeated to at least `bytes` bytes.
fn prose_of(bytes: usize) -> String {
    let text = prose();
    text.repeat(bytes.div_ceil(text.len()))
}

#[test]
fn window_options_past_the_memory_are_refused_before_the_run_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx.txt");
    std::fs::write(&ctx, prose()).unwrap();
    let model = fixture("gdn-tiny");
    for (option, value) in [("--window-tokens", "1048576"), ("--window-bytes", "64MiB")] {
        let t0 = Instant::now();
        let out = cli(&[
            "run",
            "--model",
            p(&model),
            "--context-file",
            p(&ctx),
            option,
            value,
        ]);
        expect_error(&out, &[option, "bytes asked for", "available"]);
        // Refused up front: nothing was computed (a run of this file takes seconds).
        assert!(t0.elapsed() < Duration::from_secs(20), "{option} {value}");
    }
}

#[test]
fn a_context_file_cut_short_under_a_language_model_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("shrinking-lm.txt");
    // About 50K tokens: ten seconds of streaming on two cores, in windows of ~1K.
    std::fs::write(&ctx, prose_of(200_000)).unwrap();
    let state = dir.path().join("cut.state");
    let child = Command::new(env!("CARGO_BIN_EXE_ltm-engine"))
        .args([
            "run",
            "--model",
            p(&fixture("gdn-tiny")),
            "--context-file",
            p(&ctx),
            "--window-bytes",
            "4KiB",
            "--save-state",
            p(&state),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&ctx)
        .unwrap()
        .set_len(1000)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = expect_error(&out, &["shrinking-lm.txt", "shrank", "to 1000 bytes"]);
    assert!(!state.exists(), "a state of zeros read was saved: {err}");
}

#[test]
fn bad_utf8_deep_in_a_text_is_found_before_streaming() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("late-bad-byte.txt");
    let mut bytes = prose_of(2_000_000).into_bytes();
    let at = bytes.len();
    bytes.extend_from_slice(b"tail \xff\xfe end\n");
    std::fs::write(&ctx, &bytes).unwrap();
    let out = cli(&[
        "run",
        "--model",
        p(&fixture("gdn-tiny")),
        "--context-file",
        p(&ctx),
        "--json",
    ]);
    // Streaming 500K tokens would take minutes; the byte is named first.
    expect_error(
        &out,
        &[
            "late-bad-byte.txt",
            &format!("invalid UTF-8 at byte {}", at + 5),
            "before streaming",
        ],
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn a_temperature_that_overflows_the_logits_generates_the_greedy_text() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx.txt");
    std::fs::write(&ctx, prose()).unwrap();
    let model = fixture("gdn-gva");
    let gen = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "--model",
            p(&model),
            "--context-file",
            p(&ctx),
            "--json",
            "--max-tokens",
            "300",
            "--prompt",
            "The model",
            "--generate",
            "24",
        ];
        args.extend_from_slice(extra);
        let out = cli(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        j["generated"]["ids"].clone()
    };
    let greedy = gen(&[]);
    for t in ["1e-38", "1e-37"] {
        assert_eq!(
            gen(&["--temperature", t, "--seed", "5"]),
            greedy,
            "--temperature {t}"
        );
    }
    let out = cli(&[
        "run",
        "--model",
        p(&model),
        "--context-file",
        p(&ctx),
        "--generate",
        "2",
        "--temperature",
        "1e-45",
    ]);
    expect_error(&out, &["--temperature", "too small"]);
}

#[test]
fn generation_kept_for_json_is_bounded_and_printed_text_is_the_decoded_ids() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx.txt");
    std::fs::write(&ctx, prose()).unwrap();
    let model = fixture("gdn-tiny");
    let base = [
        "run",
        "--model",
        p(&model),
        "--context-file",
        p(&ctx),
        "--max-tokens",
        "200",
        "--prompt",
        "The model",
    ];
    let out = cli(&[&base[..], &["--json", "--generate", "18446744073709551615"]].concat());
    expect_error(&out, &["--generate", "bytes asked for"]);

    let out = cli(&[&base[..], &["--json", "--generate", "40"]].concat());
    assert!(out.status.success());
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let out = cli(&[&base[..], &["--generate", "40"]].concat());
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    let after = printed
        .split_once("generated   after")
        .unwrap()
        .1
        .split_once(":\n")
        .unwrap()
        .1;
    assert_eq!(
        after.strip_suffix('\n').unwrap(),
        j["generated"]["text"].as_str().unwrap()
    );
}

/// The pieces of the incremental decoder, joined, are one decode of all the ids,
/// for texts with characters split over byte tokens, and it keeps a bounded tail.
#[test]
fn incremental_text_joins_to_one_decode() {
    for name in ["gdn-tiny", "gdn-gva"] {
        let model = LanguageModel::load(fixture(name), Device::Cpu).unwrap();
        let tok = model.require_tokenizer().unwrap();
        let text = format!(
            "{} ünïcödé 漢字 🦀 tabs\tand  spaces\n\nend",
            prose().chars().take(3000).collect::<String>()
        );
        let ids = tok.encode(&text, false).unwrap();
        let mut inc = IncrementalText::new(tok);
        let mut joined = String::new();
        for &id in &ids {
            joined.push_str(&inc.push(id).unwrap());
        }
        joined.push_str(&inc.finish().unwrap());
        assert_eq!(joined, tok.decode(&ids).unwrap(), "{name}");
    }
}

#[test]
fn an_interrupted_generation_still_prints_its_json() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx.txt");
    std::fs::write(&ctx, prose()).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_ltm-engine"))
        .args([
            "run",
            "--model",
            p(&fixture("gdn-tiny")),
            "--context-file",
            p(&ctx),
            "--max-tokens",
            "100",
            "--json",
            "--generate",
            "1000000",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    // SAFETY: sends SIGINT to the child this test started.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    let err = expect_error(&out, &["interrupted"]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON after the interrupt ({e}): {err}"));
    assert_eq!(j["generated"]["interrupted"], true);
    let n = j["generated"]["ids"].as_array().unwrap().len();
    assert!(n > 0 && n < 1_000_000, "{n} ids");
    assert_eq!(j["tokens"], 100);
}

#[test]
fn a_megabyte_name_makes_a_line_of_error_not_a_megabyte() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    for f in ["model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixture("gdn-tiny").join(f), model.join(f)).unwrap();
    }
    let config = std::fs::read_to_string(fixture("gdn-tiny/config.json")).unwrap();
    let long = "k".repeat(1 << 20);
    let config = config.replacen('{', &format!("{{\n  \"{long}\": 1,"), 1);
    std::fs::write(model.join("config.json"), config).unwrap();
    let ctx = dir.path().join("ctx.txt");
    std::fs::write(&ctx, "some text\n").unwrap();
    let out = cli(&["run", "--model", p(&model), "--context-file", p(&ctx)]);
    let err = expect_error(&out, &["config.json", "kkkk"]);
    assert!(err.len() < 8192, "a message of {} bytes", err.len());
}

/// `run --model` with checkpoints killed with SIGKILL at random moments, each time
/// resumed from the newest checkpoint, finishes with the state file of one run that
/// was never killed (same checkpoints, so the same windows), byte for byte.
#[test]
fn a_checkpointed_model_run_killed_again_and_again_resumes_to_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx.txt");
    std::fs::write(&ctx, prose_of(60_000)).unwrap();
    let model = fixture("gdn-tiny");
    let base = |save: &Path| -> Vec<String> {
        [
            "run",
            "--model",
            p(&model),
            "--context-file",
            p(&ctx),
            "--window-bytes",
            "3KiB",
            "--checkpoint-every",
            "200",
            "--json",
            "--save-state",
            p(save),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let whole = dir.path().join("whole.state");
    let out = Command::new(env!("CARGO_BIN_EXE_ltm-engine"))
        .args(base(&whole))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Kill times from a seed printed here, so a failure can be replayed.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("kill times from seed {seed}");
    let mut rng = ltm_engine::hash::SplitMix64::new(seed);
    let mut latest: Option<PathBuf> = None;
    let (mut kills, mut finished) = (0, None);
    for round in 0..40 {
        let save = dir.path().join(format!("chain-{round}.state"));
        let mut args = base(&save);
        if let Some(l) = &latest {
            args.extend(["--load-state".into(), p(l).into(), "--resume".into()]);
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_ltm-engine"))
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let wait = Duration::from_millis(150 + rng.next_u64() % 900);
        let t0 = Instant::now();
        let mut done = None;
        while t0.elapsed() < wait {
            if let Some(status) = child.try_wait().unwrap() {
                done = Some(status);
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if kills < 5 && done.is_none() {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            kills += 1;
        } else {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            finished = Some(save.clone());
        }
        if save.exists() {
            latest = Some(save);
        }
        if finished.is_some() {
            break;
        }
    }
    let last = finished.expect("the chain finished");
    assert!(kills >= 1, "nothing was killed");
    assert!(
        std::fs::read(&whole).unwrap() == std::fs::read(&last).unwrap(),
        "the chain killed {kills} times differs from one run"
    );
}

/// A copy of gdn-tiny whose output head is scaled by `factor` (finite weights whose
/// logits overflow f32).
fn overflowing_model(dir: &Path, factor: f32) -> PathBuf {
    let model = dir.join("overflow");
    std::fs::create_dir_all(&model).unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(fixture("gdn-tiny").join(f), model.join(f)).unwrap();
    }
    let mut bytes = std::fs::read(fixture("gdn-tiny/model.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let offsets = &header["lm_head.weight"]["data_offsets"];
    let (a, b) = (
        8 + n + offsets[0].as_u64().unwrap() as usize,
        8 + n + offsets[1].as_u64().unwrap() as usize,
    );
    for w in bytes[a..b].chunks_mut(4) {
        let x = f32::from_le_bytes(w.try_into().unwrap()) * factor;
        assert!(x.is_finite());
        w.copy_from_slice(&x.to_le_bytes());
    }
    std::fs::write(model.join("model.safetensors"), bytes).unwrap();
    model
}

#[test]
fn scores_that_overflow_are_an_error_not_a_null_perplexity() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx.txt");
    std::fs::write(&ctx, prose()).unwrap();
    // 1e37: finite logits, a mean NLL whose exponential overflows f64; 1e38: logits
    // that overflow f32 themselves.
    for (factor, needle) in [(1e37f32, "no finite perplexity"), (1e38, "not finite")] {
        let model = overflowing_model(&dir.path().join(factor.to_string()), factor);
        let out = cli(&[
            "run",
            "--model",
            p(&model),
            "--context-file",
            p(&ctx),
            "--json",
        ]);
        expect_error(&out, &[needle]);
        assert!(
            out.stdout.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}
