//! `run`'s streaming: window sizes and save/load splits give identical results; bad
//! files and states give clear errors; a crash while checkpointing loses nothing.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use ltm_engine::model::{Model, RandomFeatureModel};
use ltm_engine::state_file::{load_state, save_state};
use ltm_engine::stream::{stream_context, ContextFile, Observer, StreamOptions};
use ltm_engine::{CpuBackend, State};
use rand::Rng;

struct Collect(Vec<f32>);
impl Observer for Collect {
    fn outputs(&mut self, o: &[f32]) {
        self.0.extend_from_slice(o);
    }
}

/// Random text of `words` words from a small vocabulary, so contexts repeat.
fn write_text(path: &Path, words: usize, rng: &mut impl Rng) {
    let vocab = [
        "alpha", "beta", "gamma", "delta", "épsilon", "zeta", "eta", "theta", "iota", "kappa",
        "lambda", "mu",
    ];
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..words {
        let w = vocab[rng.random_range(0..vocab.len())];
        let sep = if i % 13 == 12 { ".\n" } else { " " };
        write!(f, "{w}{sep}").unwrap();
    }
}

fn model() -> RandomFeatureModel {
    RandomFeatureModel::new(RandomFeatureModel::default_config(), 3)
}

fn stream(path: &Path, state: &mut State, options: &StreamOptions) -> (Vec<f32>, u64) {
    let mut file = ContextFile::open(path, None).unwrap();
    let mut outs = Collect(Vec::new());
    let summary = stream_context(
        &mut file,
        &model(),
        &CpuBackend::new(),
        state,
        options,
        &mut outs,
    )
    .unwrap();
    assert_eq!(outs.0.len() as u64, summary.tokens * 4 * 64);
    (outs.0, summary.tokens)
}

#[test]
fn window_sizes_give_identical_states_and_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ctx.txt");
    write_text(&path, 5000, &mut common::rng("windows"));
    let config = RandomFeatureModel::default_config();
    let mut reference: Option<(Vec<f32>, State)> = None;
    for window in [64, 1000, 4096, 1 << 16] {
        let mut state = State::zeros(&config, 1);
        let options = StreamOptions {
            window_tokens: window,
            ..Default::default()
        };
        let (o, tokens) = stream(&path, &mut state, &options);
        assert!(
            tokens > 5000,
            "words, full stops and line breaks are tokens"
        );
        assert!(o.iter().all(|x| x.is_finite()));
        match &reference {
            None => reference = Some((o, state)),
            Some((ro, rs)) => {
                assert!(&o == ro, "outputs differ with window {window}");
                assert_eq!(&state, rs, "state differs with window {window}");
            }
        }
    }
}

#[test]
fn two_runs_joined_by_a_state_file_equal_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ctx.txt");
    write_text(&path, 3000, &mut common::rng("resume"));
    let m = model();
    let config = m.memory_config().clone();
    let mut whole = State::zeros(&config, 1);
    let (whole_o, total) = stream(
        &path,
        &mut whole,
        &StreamOptions {
            window_tokens: 256,
            ..Default::default()
        },
    );

    let mut first = State::zeros(&config, 1);
    let part = StreamOptions {
        window_tokens: 256,
        max_tokens: Some(1280),
        ..Default::default()
    };
    let (mut o, n1) = stream(&path, &mut first, &part);
    assert_eq!(n1, 1280);
    let saved = dir.path().join("s.ltmstate");
    save_state(&saved, &config, &first).unwrap();
    let mut second = load_state(&saved, &config).unwrap();
    let rest = StreamOptions {
        window_tokens: 512,
        resume: true,
        ..Default::default()
    };
    let (o2, n2) = stream(&path, &mut second, &rest);
    o.extend(o2);
    assert_eq!(n1 + n2, total);
    assert_eq!(second, whole);
    assert!(o == whole_o, "joined outputs differ from one run");
}

/// The rule in docs/command-line.md for random features: a first run cut on a multiple of the chunk
/// (64), whatever the window, resumes bit for bit; cut elsewhere, the chunk boundaries
/// of the rest move and the result agrees within f32 rounding.
#[test]
fn resume_is_exact_on_chunk_multiples_and_close_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ctx.txt");
    write_text(&path, 2000, &mut common::rng("resume-rule"));
    let config = model().memory_config().clone();
    let options = |max_tokens, resume| StreamOptions {
        window_tokens: 256,
        max_tokens,
        resume,
        ..Default::default()
    };
    let mut whole = State::zeros(&config, 1);
    stream(&path, &mut whole, &options(None, false));
    for cut in [640u64, 1000] {
        let mut state = State::zeros(&config, 1);
        stream(&path, &mut state, &options(Some(cut), false));
        let saved = dir.path().join("s.ltmstate");
        save_state(&saved, &config, &state).unwrap();
        let mut state = load_state(&saved, &config).unwrap();
        stream(&path, &mut state, &options(None, true));
        assert_eq!(state.tokens_seen(), whole.tokens_seen());
        if cut.is_multiple_of(64) {
            assert!(state == whole, "cut at {cut}: not bit-identical");
        } else {
            let scale = whole.values().iter().fold(0f32, |m, x| m.max(x.abs()));
            let err = state
                .values()
                .iter()
                .zip(whole.values())
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(err <= 1e-5 * scale, "cut at {cut}: error {err} of {scale}");
        }
    }
}

#[test]
fn peak_memory_does_not_grow_with_the_context() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = common::rng("fixed-memory");
    let mut peak = Vec::new();
    for words in [50_000, 2_500_000] {
        let path = dir.path().join(format!("ctx{words}.txt"));
        write_text(&path, words, &mut rng);
        let (ok, out, err) = run(&[
            "--context-file",
            p(&path),
            "--json",
            "--window-tokens",
            "4096",
        ]);
        assert!(ok, "{err}");
        let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
        peak.push(
            summary["peak_host_bytes"]
                .as_u64()
                .expect("Linux reports peak RSS"),
        );
    }
    // 20 times the context, the same memory: within 10% (plus 4 MiB for allocator noise).
    assert!(
        peak[1] as f64 <= peak[0] as f64 * 1.1 + 4.0 * 1048576.0,
        "peak resident memory grew from {} to {} bytes",
        peak[0],
        peak[1]
    );
}

// --- the command line ---------------------------------------------------------------

/// `ltm-engine run` with the random-feature model: the dense path these tests cover.
fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ltm-engine"))
        .args(["run", "--model", "random-features"])
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "panic: {err}");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        err,
    )
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn bad_context_files_are_named_and_explained() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.txt");
    let (ok, _, err) = run(&["--context-file", p(&missing)]);
    assert!(!ok && err.contains("missing.txt"), "{err}");

    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, b"").unwrap();
    let (ok, _, err) = run(&["--context-file", p(&empty)]);
    assert!(
        !ok && err.contains("empty.txt") && err.contains("empty"),
        "{err}"
    );

    let odd = dir.path().join("ids.u32");
    std::fs::write(&odd, [1u8, 0, 0, 0, 2, 0]).unwrap();
    let (ok, _, err) = run(&["--context-file", p(&odd)]);
    assert!(
        !ok && err.contains("ids.u32") && err.contains("multiple of 4") && err.contains("6 bytes"),
        "{err}"
    );

    let ids = dir.path().join("big.u32");
    let words: Vec<u8> = [5u32, 999, 1000, 7]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    std::fs::write(&ids, words).unwrap();
    let (ok, _, err) = run(&["--context-file", p(&ids), "--vocab-size", "1000"]);
    assert!(
        !ok && err.contains("big.u32")
            && err.contains("token 2")
            && err.contains("byte offset 8")
            && err.contains("1000"),
        "{err}"
    );

    let bad_utf8 = dir.path().join("bad.txt");
    std::fs::write(&bad_utf8, b"hello \xff world").unwrap();
    let (ok, _, err) = run(&["--context-file", p(&bad_utf8)]);
    assert!(
        !ok && err.contains("bad.txt") && err.contains("byte 6"),
        "{err}"
    );
    let (ok, _, _) = run(&["--context-file", p(&bad_utf8), "--format", "bytes"]);
    assert!(ok, "the same file streams as bytes");
}

fn saved_state(dir: &Path) -> PathBuf {
    let ctx = dir.join("ctx.txt");
    write_text(&ctx, 500, &mut common::rng("cli-state"));
    let state = dir.join("s.ltmstate");
    let (ok, _, err) = run(&["--context-file", p(&ctx), "--save-state", p(&state)]);
    assert!(ok, "{err}");
    state
}

#[test]
fn bad_state_files_fail_and_stay_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let state = saved_state(dir.path());
    let ctx = dir.path().join("ctx.txt");
    let good = std::fs::read(&state).unwrap();
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", good[..good.len() - 100].to_vec()),
        ("checksum", {
            let mut b = good.clone();
            let n = b.len();
            b[n - 5] ^= 1;
            b
        }),
        ("version 7", {
            let mut b = good.clone();
            b[8] = 7;
            b
        }),
    ];
    cases.push(("magic", b"not a state at all".to_vec()));
    let out = dir.path().join("out.ltmstate");
    for (needle, bytes) in cases {
        std::fs::write(&state, &bytes).unwrap();
        let (ok, _, err) = run(&[
            "--context-file",
            p(&ctx),
            "--load-state",
            p(&state),
            "--save-state",
            p(&out),
        ]);
        assert!(
            !ok && err.contains("s.ltmstate") && err.contains(needle),
            "{needle}: {err}"
        );
        assert!(!out.exists(), "{needle}: a state was saved");
        assert_eq!(
            std::fs::read(&state).unwrap(),
            bytes,
            "{needle}: the state file was changed"
        );
    }
    std::fs::write(&state, &good).unwrap();
    let (ok, _, err) = run(&[
        "--context-file",
        p(&ctx),
        "--load-state",
        p(&state),
        "--seed",
        "99",
    ]);
    assert!(!ok && err.contains("another configuration"), "{err}");
    let (ok, out, err) = run(&[
        "--context-file",
        p(&ctx),
        "--load-state",
        p(&state),
        "--resume",
        "--json",
    ]);
    assert!(ok, "{err}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["tokens"], 0, "everything was already consumed");
}

#[test]
fn a_crash_while_checkpointing_keeps_the_previous_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let state = saved_state(dir.path());
    let ctx = dir.path().join("ctx.txt");
    let before = std::fs::read(&state).unwrap();
    let out = checkpointing_run(&ctx, &state)
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
        "the previous checkpoint is intact"
    );
    let m = model_seed0();
    load_state(&state, m.memory_config()).expect("and loadable");
}

#[test]
fn killed_runs_always_leave_a_loadable_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx.txt");
    write_text(&ctx, 200_000, &mut common::rng("kill"));
    let state = dir.path().join("k.ltmstate");
    let m = model_seed0();
    let mut rng = common::rng("kill-times");
    for _ in 0..6 {
        let mut child = checkpointing_run(&ctx, &state)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(rng.random_range(20..400)));
        let _ = child.kill();
        let _ = child.wait();
        if state.exists() {
            let s =
                load_state(&state, m.memory_config()).expect("checkpoint loadable after a kill");
            assert!(s.tokens_seen().is_multiple_of(64) || s.tokens_seen() > 200_000);
        }
    }
    assert!(state.exists(), "some checkpoint was written within 400 ms");
}

/// `run` over `ctx` saving a checkpoint to `state` after every 64-token window.
fn checkpointing_run(ctx: &Path, state: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ltm-engine"));
    cmd.args([
        "run",
        "--model",
        "random-features",
        "--context-file",
        p(ctx),
        "--save-state",
        p(state),
    ])
    .args(["--checkpoint-every", "64", "--window-tokens", "64"]);
    cmd
}

fn model_seed0() -> RandomFeatureModel {
    RandomFeatureModel::new(RandomFeatureModel::default_config(), 0)
}

#[test]
fn features_made_on_the_fly_equal_features_read_from_memory() {
    use ltm_engine::model::{materialize, ModelRows};
    use ltm_engine::Backend;
    let m = model();
    let config = m.memory_config().clone();
    let mut rng = common::rng("rows");
    let tokens: Vec<u64> = (0..700).map(|_| rng.random_range(0..50)).collect();
    let features = materialize(&m, &tokens[..2], &tokens[2..]);
    // 8 threads on 4 heads also splits value columns, which asks the model for slices.
    for backend in [
        CpuBackend::new(),
        CpuBackend::new().with_threads(8).unwrap(),
    ] {
        let (mut s1, mut s2) = (State::zeros(&config, 1), State::zeros(&config, 1));
        let o1 = backend
            .forward(&config, &features.inputs(), &mut s1)
            .unwrap();
        let rows = ModelRows {
            model: &m,
            tokens: &tokens,
            start: 2,
        };
        let mut o2 = vec![f32::NAN; o1.len()];
        backend
            .forward_rows(&config, &rows, &mut s2, &mut o2)
            .unwrap();
        assert!(o1 == o2, "{}: outputs differ", backend.name());
        assert_eq!(s1, s2);
    }
}
