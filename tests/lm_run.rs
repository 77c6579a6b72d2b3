//! Streaming files through a language model: windows never change the tokens or the
//! scores, checkpoints and `--resume` equal one run bit for bit, and bad inputs are
//! errors that name the problem.

use std::path::{Path, PathBuf};
use std::process::Command;

use ltm_engine::lm::state_file::{load_model_state, save_model_state, SourcePosition};
use ltm_engine::lm::stream::{stream_text, LmStreamOptions};
use ltm_engine::lm::{LanguageModel, Logits, Sampler, Sampling};
use ltm_engine::stream::StreamOptions;
use ltm_engine::stream::{ContextFile, Format, Quiet};
use ltm_engine::Device;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A few KB of real text with varied lines: the fixtures' own documentation.
fn sample_text() -> String {
    let mut text = std::fs::read_to_string(fixture("README.md")).unwrap();
    text.push_str(&std::fs::read_to_string(fixture("SEMANTICS.md")).unwrap());
    text
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn run(args: &[&str]) -> (bool, serde_json::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ltm-engine"))
        .arg("run")
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "panic: {err}");
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.success(), json, err)
}

#[test]
fn streamed_windows_give_the_tokens_and_scores_of_one_call() {
    let model = LanguageModel::load(fixture("gdn-gva"), Device::Cpu).unwrap();
    let text = sample_text();
    let ids = model
        .require_tokenizer()
        .unwrap()
        .encode(&text, true)
        .unwrap();
    let vocab = model.config().vocab_size;
    let mut one = model.session().unwrap();
    let logits = one.feed(&ids, Logits::All).unwrap();
    let nll: f64 = (0..ids.len() - 1)
        .map(|t| {
            let row = &logits[t * vocab..(t + 1) * vocab];
            ltm_engine::lm::ops::log_sum_exp(row) - row[ids[t + 1] as usize] as f64
        })
        .sum::<f64>()
        / (ids.len() - 1) as f64;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ctx.txt");
    std::fs::write(&path, &text).unwrap();
    for (window_bytes, prefill) in [(150, 64), (1 << 20, 512), (999, 1)] {
        let file = ContextFile::open(&path, Some(Format::Text)).unwrap();
        let mut session = model.session().unwrap();
        session.set_window(prefill).unwrap();
        let mut position = SourcePosition::default();
        let options = StreamOptions {
            window_bytes,
            ..StreamOptions::default()
        };
        let lm = LmStreamOptions::default();
        let s = stream_text(
            &file,
            &mut session,
            &mut position,
            &options,
            &lm,
            &mut Quiet,
        )
        .unwrap();
        assert_eq!(
            s.tokens,
            ids.len() as u64,
            "window {window_bytes}: token count"
        );
        assert_eq!(s.predicted_tokens, ids.len() as u64 - 1);
        let got = s.mean_nll.unwrap();
        assert!(
            ((got - nll) / nll).abs() < 1e-5,
            "window {window_bytes}/{prefill}: mean NLL {got} vs one call {nll}"
        );
        assert_eq!(position.bytes, text.len() as u64);
        assert_eq!(position.crc32, crc32fast::hash(text.as_bytes()));
        if window_bytes == 150 {
            assert!(s.windows > 10, "{} windows", s.windows);
        }
    }
}

#[test]
fn checkpoints_and_resume_equal_one_run_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx.txt");
    std::fs::write(&ctx, sample_text().repeat(2)).unwrap();
    let model = p(&fixture("gdn-gva")).to_string();
    let (full, partial, resumed) = (
        dir.path().join("full.state"),
        dir.path().join("partial.state"),
        dir.path().join("resumed.state"),
    );
    let common = [
        "--model",
        &model,
        "--context-file",
        p(&ctx),
        "--json",
        "--window-bytes",
        "700",
    ];
    let (ok, a, err) = run(&[
        &common[..],
        &["--checkpoint-every", "300", "--save-state", p(&full)],
    ]
    .concat());
    assert!(ok, "{err}");
    let (ok, b, err) = run(&[
        &common[..],
        &[
            "--checkpoint-every",
            "300",
            "--max-tokens",
            "900",
            "--save-state",
            p(&partial),
        ],
    ]
    .concat());
    assert!(ok, "{err}");
    assert_eq!(b["tokens"], 900);
    assert_eq!(b["checkpoints"], 3);
    let (ok, c, err) = run(&[
        &common[..],
        &[
            "--checkpoint-every",
            "300",
            "--load-state",
            p(&partial),
            "--resume",
            "--save-state",
            p(&resumed),
        ],
    ]
    .concat());
    assert!(ok, "{err}");
    assert_eq!(c["skipped_tokens"], 900);
    assert_eq!(
        c["tokens"].as_u64().unwrap() + 900,
        a["tokens"].as_u64().unwrap()
    );
    assert_eq!(c["perplexity"], a["perplexity"], "perplexity of the chain");
    let (x, y) = (
        std::fs::read(&full).unwrap(),
        std::fs::read(&resumed).unwrap(),
    );
    assert!(
        x == y,
        "the resumed chain's state file differs from one run's"
    );
}

#[test]
fn a_state_is_refused_by_another_model_and_another_text() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx.txt");
    std::fs::write(&ctx, sample_text()).unwrap();
    let other = dir.path().join("other.txt");
    std::fs::write(&other, sample_text().replace("model", "mouse")).unwrap();
    let state = dir.path().join("s.state");
    let gva = p(&fixture("gdn-gva")).to_string();
    let tiny = p(&fixture("gdn-tiny")).to_string();
    let (ok, _, err) = run(&[
        "--model",
        &gva,
        "--context-file",
        p(&ctx),
        "--max-tokens",
        "500",
        "--save-state",
        p(&state),
    ]);
    assert!(ok, "{err}");
    let before = std::fs::read(&state).unwrap();
    let (ok, _, err) = run(&[
        "--model",
        &tiny,
        "--context-file",
        p(&ctx),
        "--load-state",
        p(&state),
    ]);
    assert!(!ok && err.contains("another model"), "{err}");
    let (ok, _, err) = run(&[
        "--model",
        &gva,
        "--context-file",
        p(&other),
        "--load-state",
        p(&state),
        "--resume",
        "--save-state",
        p(&dir.path().join("next.state")),
    ]);
    assert!(!ok, "{err}");
    assert!(
        err.contains("another text") && err.contains("other.txt") && err.contains("s.state"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&state).unwrap(),
        before,
        "a refused resume changed the state file"
    );
}

#[test]
fn state_files_refuse_every_damaged_byte_of_the_header() {
    let model = LanguageModel::load(fixture("gdn-gva"), Device::Cpu).unwrap();
    let mut s = model.session().unwrap();
    s.feed(&[1, 5, 9, 200], Logits::None).unwrap();
    let state = s.snapshot().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.state");
    let pos = SourcePosition {
        bytes: 10,
        crc32: 7,
        window_start: 4,
        tokens_past: 2,
        nll_sum: 3.5,
        nll_tokens: 3,
    };
    save_model_state(&path, &model, &state, &pos).unwrap();
    let (back, back_pos) = load_model_state(&path, &model).unwrap();
    assert_eq!(back, state);
    assert_eq!(back_pos, pos);
    let good = std::fs::read(&path).unwrap();
    // What the free-space check before a run asks for is what a save writes.
    assert_eq!(
        good.len() as u64,
        ltm_engine::lm::state_file::file_bytes(&model)
    );
    let header = 8 + 4 + 8 + 24 + 8 + 4 + 8 + 4 + 8 + 8 + 8 + 8 + 4;
    for i in 0..good.len() {
        // Every header byte, and a sample of payload bytes.
        if i >= header && i % 97 != 0 && i != good.len() - 1 {
            continue;
        }
        let mut bad = good.clone();
        bad[i] ^= 0x10;
        std::fs::write(&path, &bad).unwrap();
        assert!(
            load_model_state(&path, &model).is_err(),
            "flipped byte {i} was accepted"
        );
    }
    for len in [0, 7, 20, header - 1, header, good.len() - 1] {
        std::fs::write(&path, &good[..len]).unwrap();
        assert!(
            load_model_state(&path, &model).is_err(),
            "{len} bytes accepted"
        );
    }
}

#[test]
fn cli_generation_is_the_librarys_and_bad_inputs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx.txt");
    std::fs::write(&ctx, sample_text()).unwrap();
    let gva = p(&fixture("gdn-gva")).to_string();
    let (ok, j, err) = run(&[
        "--model",
        &gva,
        "--context-file",
        p(&ctx),
        "--json",
        "--prompt",
        "The model",
        "--generate",
        "12",
    ]);
    assert!(ok, "{err}");
    let model = LanguageModel::load(fixture("gdn-gva"), Device::Cpu).unwrap();
    let tok = model.require_tokenizer().unwrap();
    let mut s = model.session().unwrap();
    s.feed(&tok.encode(&sample_text(), true).unwrap(), Logits::None)
        .unwrap();
    let mut sampler = Sampler::new(Sampling::default()).unwrap();
    let want = s
        .generate(&tok.encode("The model", false).unwrap(), 12, &mut sampler)
        .unwrap();
    let got: Vec<u32> = j["generated"]["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(got, want);
    assert_eq!(j["generated"]["text"], tok.decode(&want).unwrap());

    // Sampling with a seed repeats; another seed (almost surely) differs.
    let sample = |seed: &str| {
        let (ok, j, err) = run(&[
            "--model",
            &gva,
            "--context-file",
            p(&ctx),
            "--json",
            "--max-tokens",
            "200",
            "--generate",
            "20",
            "--temperature",
            "1.0",
            "--top-p",
            "0.95",
            "--top-k",
            "50",
            "--seed",
            seed,
        ]);
        assert!(ok, "{err}");
        j["generated"]["ids"].clone()
    };
    assert_eq!(sample("5"), sample("5"));
    assert_ne!(sample("5"), sample("6"));

    let bad_utf8 = dir.path().join("bad.txt");
    let mut bytes = b"good text\nmore\n".to_vec();
    bytes.extend_from_slice(&[0xff, 0xfe]);
    std::fs::write(&bad_utf8, &bytes).unwrap();
    let (ok, _, err) = run(&["--model", &gva, "--context-file", p(&bad_utf8)]);
    assert!(!ok && err.contains("invalid UTF-8 at byte 15"), "{err}");
    let (ok, _, err) = run(&["--context-file", p(&ctx), "--prompt", "x"]);
    assert!(
        !ok && err.contains("--prompt needs a language model"),
        "{err}"
    );
    let (ok, _, err) = run(&["--model", "/nonexistent/model", "--context-file", p(&ctx)]);
    assert!(!ok && err.contains("/nonexistent/model"), "{err}");
    let (ok, _, err) = run(&["--model", &gva, "--context-file", p(&ctx), "--top-p", "0"]);
    assert!(!ok && err.contains("--top-p"), "{err}");
    let (ok, _, err) = run(&[
        "--model",
        &gva,
        "--context-file",
        p(&ctx),
        "--save-state",
        "/nonexistent/dir/s.state",
    ]);
    assert!(!ok && err.contains("cannot be written"), "{err}");
    for (option, value) in [
        ("--window-bytes", "2048MiB"),
        ("--window-tokens", "4294967296"),
    ] {
        let (ok, _, err) = run(&["--model", &gva, "--context-file", p(&ctx), option, value]);
        assert!(!ok && err.contains(option), "{option} {value}: {err}");
    }
}

/// `--device cuda` for a model: without a usable GPU a clear error naming what is
/// missing and the way out (`--device cpu`), never a panic; `auto` runs on the CPU.
#[test]
fn a_model_on_cuda_fails_clearly_without_a_gpu() {
    use ltm_engine::backend::device::cuda_missing;
    let dir = fixture("gdn-tiny");
    let text = fixture("SEMANTICS.md");
    let args = |device| {
        vec![
            "--model".to_string(),
            p(&dir).to_string(),
            "--context-file".to_string(),
            p(&text).to_string(),
            "--max-tokens".to_string(),
            "40".to_string(),
            "--device".to_string(),
            device,
            "--json".to_string(),
        ]
    };
    let call = |device: &str| {
        let a = args(device.to_string());
        run(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let (ok, _, err) = call("cuda");
    if cuda_missing(0).is_none() {
        assert!(ok, "a usable GPU, yet --device cuda failed: {err}");
        return;
    }
    assert!(!ok, "--device cuda ran without a GPU");
    assert!(
        err.contains("cuda:0") && err.contains("--device cpu"),
        "the error does not say what is missing and what to do: {err}"
    );
    let (ok, json, err) = call("auto");
    assert!(ok, "--device auto failed without a GPU: {err}");
    assert_eq!(json["tokens"].as_u64(), Some(40), "{json}");
    assert!(
        json["backend"]
            .as_str()
            .is_some_and(|d| d.starts_with("cpu")),
        "{json}"
    );
}

/// `--max-tokens` on a multiple of the prefill window (here 128), then `--resume`:
/// the state file equals that of one run without any stop, though the text windows
/// (`--window-bytes 700`) end elsewhere; a stop off the grid says it is not bit-exact
/// and stays within f32 rounding.
#[test]
fn a_stop_on_the_window_grid_resumes_bit_for_bit_and_one_off_it_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx.txt");
    std::fs::write(&ctx, sample_text().repeat(2)).unwrap();
    let model = p(&fixture("gdn-tiny")).to_string();
    let common = [
        "--model",
        &model,
        "--context-file",
        p(&ctx),
        "--json",
        "--window-bytes",
        "700",
        "--window-tokens",
        "128",
    ];
    let whole = dir.path().join("whole.state");
    let (ok, a, err) = run(&[&common[..], &["--save-state", p(&whole)]].concat());
    assert!(ok, "{err}");
    assert!(a["tokens"].as_u64().unwrap() > 1000, "{a}");
    for (stop, on_grid) in [(640u64, true), (650, false)] {
        let first = dir.path().join(format!("first-{stop}.state"));
        let last = dir.path().join(format!("last-{stop}.state"));
        let stop_s = stop.to_string();
        let (ok, b, err) = run(&[
            &common[..],
            &["--max-tokens", &stop_s, "--save-state", p(&first)],
        ]
        .concat());
        assert!(ok, "{err}");
        assert_eq!(b["tokens"], stop);
        assert_eq!(err.contains("not bit"), !on_grid, "{err}");
        let (ok, c, err) = run(&[
            &common[..],
            &[
                "--load-state",
                p(&first),
                "--resume",
                "--save-state",
                p(&last),
            ],
        ]
        .concat());
        assert!(ok, "{err}");
        let (pa, pc) = (
            a["perplexity"].as_f64().unwrap(),
            c["perplexity"].as_f64().unwrap(),
        );
        if on_grid {
            assert_eq!(pa, pc, "perplexity of the chain stopped at {stop}");
            assert!(
                std::fs::read(&whole).unwrap() == std::fs::read(&last).unwrap(),
                "the chain stopped at {stop} differs from one run"
            );
        } else {
            assert!(((pa - pc) / pa).abs() < 1e-6, "{pa} vs {pc}");
        }
    }
}
