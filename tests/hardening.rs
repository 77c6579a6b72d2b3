//! Issue 11: hostile and mistaken inputs end with an `error:` line naming what was
//! wrong, never a panic, an abort, a signal, a hang or a silent success.

use std::path::Path;
use std::process::{Command, Output};

use safetensors::tensor::{Dtype, TensorView};

mod common;
use common::cli::{cli, expect_error, expect_ok, p};

fn write_safetensors(path: &Path, tensors: &[(&str, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, shape, bytes)| {
            (
                *n,
                TensorView::new(Dtype::F32, shape.clone(), bytes).unwrap(),
            )
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

/// Kernel inputs of `[b, t, h, k]` / `[b, t, h, v]`, all values 0.5 (β) or 0 (g).
fn kernel_tensors(
    b: usize,
    t: usize,
    h: usize,
    k: usize,
    v: usize,
) -> Vec<(&'static str, Vec<usize>, Vec<u8>)> {
    let f = |n: usize, x: f32| bytemuck::cast_slice(&vec![x; n]).to_vec();
    vec![
        ("q", vec![b, t, h, k], f(b * t * h * k, 0.1)),
        ("k", vec![b, t, h, k], f(b * t * h * k, 0.1)),
        ("v", vec![b, t, h, v], f(b * t * h * v, 1.0)),
        ("beta", vec![b, t, h], f(b * t * h, 0.5)),
        ("g", vec![b, t, h], f(b * t * h, 0.0)),
    ]
}

fn text_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("ctx.txt");
    let mut text = String::new();
    for i in 0..200 {
        text.push_str(&format!("key{i} = value{i}\n"));
    }
    std::fs::write(&path, text).unwrap();
    path
}

// --- 1: sizes from headers and options ----------------------------------------------

#[test]
fn kernel_with_batch_0_runs_without_dividing_by_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (
        dir.path().join("in.safetensors"),
        dir.path().join("out.safetensors"),
    );
    write_safetensors(&input, &kernel_tensors(0, 8, 2, 4, 4));
    expect_ok(&cli(&[
        "kernel",
        "--input",
        p(&input),
        "--output",
        p(&output),
    ]));
    assert!(output.exists());
    // An output that is the input is refused, and the input kept.
    let before = std::fs::read(&input).unwrap();
    let out = cli(&["kernel", "--input", p(&input), "--output", p(&input)]);
    expect_error(&out, &["in.safetensors", "is the input (--input)"]);
    assert_eq!(std::fs::read(&input).unwrap(), before);
}

#[test]
fn kernel_state_too_large_for_memory_is_an_error_naming_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (
        dir.path().join("in.safetensors"),
        dir.path().join("out.safetensors"),
    );
    // T = 0: no data at all, yet K = V = 2^20 asks for a 4 TiB state.
    write_safetensors(&input, &kernel_tensors(1, 0, 4, 1 << 20, 1 << 20));
    assert!(std::fs::metadata(&input).unwrap().len() < 1000);
    let out = cli(&["kernel", "--input", p(&input), "--output", p(&output)]);
    expect_error(
        &out,
        &["[1, 4, 1048576, 1048576]", "17592186044416 bytes", "`q`"],
    );
    assert!(!output.exists());
}

#[test]
fn kernel_repeats_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (
        dir.path().join("in.safetensors"),
        dir.path().join("out.safetensors"),
    );
    write_safetensors(&input, &kernel_tensors(1, 4, 1, 4, 4));
    let out = cli(&[
        "kernel",
        "--input",
        p(&input),
        "--output",
        p(&output),
        "--repeats",
        "18446744073709551615",
    ]);
    expect_error(&out, &["--repeats"]);
}

#[test]
fn bench_shapes_too_large_are_errors_naming_the_options() {
    for args in [["--heads", "1000000000"], ["--head-dim", "4294967296"]] {
        let mut all = vec!["bench", "--max-tokens", "128"];
        all.extend_from_slice(&args);
        expect_error(&cli(&all), &[&args.join(" ")[..], "bytes asked for"]);
    }
}

#[test]
fn state_bytes_beyond_memory_is_an_error_naming_the_option() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = text_file(dir.path());
    let out = cli(&["run", "--context-file", p(&ctx), "--state-bytes", "1024GiB"]);
    expect_error(&out, &["--state-bytes", "bytes asked for"]);
}

#[test]
fn huge_windows_are_errors_naming_the_option_for_both_models() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = text_file(dir.path());
    for model in ["memory", "random-features"] {
        for w in ["4294967296", "18446744073709551615"] {
            let out = cli(&[
                "run",
                "--context-file",
                p(&ctx),
                "--model",
                model,
                "--window-tokens",
                w,
            ]);
            expect_error(&out, &[&format!("--window-tokens {w}")]);
        }
    }
}

// --- 3: a closed pipe ------------------------------------------------------------------

#[test]
fn a_closed_stdout_pipe_stops_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = text_file(dir.path());
    for args in [
        vec!["info"],
        vec!["run", "--context-file", p(&ctx), "--query", "key1 ="],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        // Closed before the process starts: its first write to stdout meets a broken pipe.
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_ltm-engine"))
            .args(&args)
            .stdout(writer)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.is_empty(), "{args:?}: {err}");
        assert_ne!(out.status.code(), Some(101), "{args:?}");
        use std::os::unix::process::ExitStatusExt;
        assert!(
            out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
            "{args:?}: {:?}",
            out.status
        );
    }
}

// --- 5: a resumed state must come from the same bytes ------------------------------------

fn lines_file(path: &Path, prefix: &str, n: usize) {
    let text: String = (0..n).map(|i| format!("{prefix}{i} = w{i}\n")).collect();
    std::fs::write(path, text).unwrap();
}

#[test]
fn resume_refuses_a_state_made_from_another_file_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.txt"), dir.path().join("b.txt"));
    // The same token structure line by line, other words: the count lands on a line end
    // in both, which is all the memory model checked before.
    lines_file(&a, "alpha", 400);
    lines_file(&b, "beta", 300);
    let state = dir.path().join("a.ltmstate");
    for model in ["memory", "random-features"] {
        let _ = std::fs::remove_file(&state);
        expect_ok(&cli(&[
            "run",
            "--model",
            model,
            "--context-file",
            p(&a),
            "--max-tokens",
            "640",
            "--save-state",
            p(&state),
        ]));
        let out = cli(&[
            "run",
            "--model",
            model,
            "--context-file",
            p(&b),
            "--load-state",
            p(&state),
            "--resume",
        ]);
        expect_error(&out, &["a.ltmstate", "b.txt", "was not made from"]);
        // The right file resumes.
        expect_ok(&cli(&[
            "run",
            "--model",
            model,
            "--context-file",
            p(&a),
            "--load-state",
            p(&state),
            "--resume",
        ]));
    }
}

// --- 8: inputs that are not files, outputs that cannot be written -----------------------

/// Runs `args`, failing the test if the process is still running after 20 s.
fn cli_with_deadline(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ltm-engine"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed().as_secs() > 20 {
            let _ = child.kill();
            panic!("{args:?} still running after 20 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn directories_fifos_and_devices_are_refused_as_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = text_file(dir.path());
    let fifo = dir.path().join("fifo");
    let c = std::ffi::CString::new(p(&fifo)).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let d = p(dir.path());
    for (args, needle) in [
        (vec!["run", "--context-file", d], "is a directory"),
        (
            vec!["run", "--model", "random-features", "--context-file", d],
            "is a directory",
        ),
        (vec!["run", "--context-file", p(&fifo)], "FIFO"),
        (
            vec![
                "run",
                "--context-file",
                p(&ctx),
                "--load-state",
                "/dev/zero",
            ],
            "character device",
        ),
        (
            vec![
                "kernel",
                "--input",
                d,
                "--output",
                "/tmp/never-written.safetensors",
            ],
            "is a directory",
        ),
        (
            vec![
                "hashhop",
                "eval",
                "--context-file",
                p(&ctx),
                "--targets",
                p(&fifo),
            ],
            "FIFO",
        ),
    ] {
        let out = cli_with_deadline(&args);
        expect_error(&out, &[needle]);
    }
}

#[test]
fn unwritable_outputs_are_found_before_the_work() {
    let dir = tempfile::tempdir().unwrap();
    // Valid text, then a bad byte at the end: a run that streamed before checking its
    // output would report the bad byte, not the output.
    let ctx = dir.path().join("late-error.txt");
    let mut bytes = b"a = b\n".repeat(1000);
    bytes.push(0xff);
    std::fs::write(&ctx, bytes).unwrap();
    let nowhere = dir.path().join("no/such/dir/s.ltmstate");
    for model in ["memory", "random-features"] {
        let out = cli(&[
            "run",
            "--model",
            model,
            "--context-file",
            p(&ctx),
            "--save-state",
            p(&nowhere),
        ]);
        expect_error(&out, &["s.ltmstate", "cannot be written"]);
        let out = cli(&[
            "run",
            "--model",
            model,
            "--context-file",
            p(&ctx),
            "--save-state",
            p(dir.path()),
        ]);
        expect_error(&out, &["is a directory"]);
    }
    let plot = dir.path().join("no/such/dir/chart.svg");
    let out = cli(&[
        "bench",
        "--min-tokens",
        "64",
        "--max-tokens",
        "128",
        "--runs",
        "1",
        "--plot",
        p(&plot),
    ]);
    expect_error(&out, &["chart.svg", "cannot be written"]);
    assert!(out.stdout.is_empty(), "the sweep ran before the check");
}

fn hashhop_files(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let out = dir.join("hh");
    expect_ok(&cli(&[
        "hashhop",
        "generate",
        "--tokens",
        "3000",
        "--hops",
        "2",
        "--queries",
        "5",
        "--seed",
        "1",
        "--out",
        p(&out),
    ]));
    (out.join("prompt.txt"), out.join("targets.json"))
}

#[test]
fn hashhop_eval_bounds_hops_and_queries_and_cuts_quoted_input() {
    let dir = tempfile::tempdir().unwrap();
    let (prompt, targets) = hashhop_files(dir.path());
    let eval = |extra: &[&str], targets: &Path| {
        let mut args = vec![
            "hashhop",
            "eval",
            "--context-file",
            p(&prompt),
            "--targets",
            p(targets),
        ];
        args.extend_from_slice(extra);
        cli_with_deadline(&args)
    };
    expect_error(
        &eval(&["--hops", "1000000000000"], &targets),
        &["--hops 1000000000000"],
    );
    expect_error(&eval(&["--max-queries", "0"], &targets), &["--max-queries"]);
    let huge = dir.path().join("huge.json");
    std::fs::write(&huge, format!("{{\"abc\": \"{}\"}}", "x-".repeat(5 << 20))).unwrap();
    let err = expect_error(&eval(&[], &huge), &["huge.json", "bytes in all"]);
    assert!(err.len() < 1000, "{} bytes of error", err.len());
    // --answers over an input of the run is refused before the run, the input kept.
    let before = std::fs::read(&targets).unwrap();
    expect_error(
        &eval(&["--answers", p(&targets)], &targets),
        &["is the targets file"],
    );
    assert_eq!(std::fs::read(&targets).unwrap(), before);
}

// --- 11: one rule for the token count of a loaded state ---------------------------------

#[test]
fn a_loaded_state_without_resume_adds_to_its_count_for_every_model() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = text_file(dir.path());
    let state = dir.path().join("s.ltmstate");
    for model in ["memory", "random-features"] {
        let _ = std::fs::remove_file(&state);
        let first = expect_ok(&cli(&[
            "run",
            "--model",
            model,
            "--context-file",
            p(&ctx),
            "--save-state",
            p(&state),
            "--json",
        ]));
        let first: serde_json::Value = serde_json::from_str(&first).unwrap();
        let n = first["state_tokens"].as_u64().unwrap();
        assert!(n > 0);
        let second = expect_ok(&cli(&[
            "run",
            "--model",
            model,
            "--context-file",
            p(&ctx),
            "--load-state",
            p(&state),
            "--json",
        ]));
        let second: serde_json::Value = serde_json::from_str(&second).unwrap();
        assert_eq!(second["tokens"].as_u64().unwrap(), n, "{model}");
        assert_eq!(second["state_tokens"].as_u64().unwrap(), 2 * n, "{model}");
    }
}

// --- 4: the same text checks for every model -------------------------------------------

#[test]
fn every_model_refuses_invalid_utf8_with_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("weights.safetensors");
    write_safetensors(&bin, &kernel_tensors(1, 8, 2, 4, 4));
    let bytes = std::fs::read(&bin).unwrap();
    let bad_at = std::str::from_utf8(&bytes).unwrap_err().valid_up_to();
    let at = format!("invalid UTF-8 at byte {bad_at}");
    for extra in [
        vec![],
        vec!["--model", "random-features", "--format", "text"],
    ] {
        let mut args = vec!["run", "--context-file", p(&bin)];
        args.extend_from_slice(&extra);
        expect_error(&cli(&args), &["weights.safetensors", &at]);
    }
    let (prompt, targets) = hashhop_files(dir.path());
    let mut text = std::fs::read(&prompt).unwrap();
    let n = text.len();
    text.insert(n / 2 - 1, 0xC3); // the start of a two-byte character, then ASCII
    std::fs::write(&prompt, &text).unwrap();
    let out = cli(&[
        "hashhop",
        "eval",
        "--context-file",
        p(&prompt),
        "--targets",
        p(&targets),
    ]);
    expect_error(&out, &["invalid UTF-8 at byte"]);
}

// --- 14, 15: answers say whether they were verified; queries are checked first ----------

#[test]
fn answers_say_whether_they_are_verified_and_unwritten_prefixes_have_none() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = text_file(dir.path());
    let out = expect_ok(&cli(&[
        "run",
        "--context-file",
        p(&ctx),
        "--query",
        "key7 =",
        "--query",
        "never written here",
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let answers = v["answers"].as_array().unwrap();
    assert_eq!(answers[0]["answer"], "value7");
    assert_eq!(answers[0]["verified"], true);
    assert_eq!(
        answers[1]["answer"],
        serde_json::Value::Null,
        "{}",
        answers[1]
    );
    assert_eq!(answers[1]["verified"], false);
    let text = expect_ok(&cli(&[
        "run",
        "--context-file",
        p(&ctx),
        "--query",
        "never written here",
    ]));
    assert!(text.contains("no answer"), "{text}");
    assert!(!text.contains("(unverified)"), "{text}");
}

#[test]
fn queries_are_checked_before_streaming() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = text_file(dir.path());
    let state = dir.path().join("s.ltmstate");
    let out = cli(&[
        "run",
        "--context-file",
        p(&ctx),
        "--save-state",
        p(&state),
        "--query",
        "key1 =",
        "--query",
        "é",
    ]);
    expect_error(&out, &["`é`", "no word"]);
    assert!(
        !state.exists(),
        "the context was streamed and saved before the query was refused"
    );
    let long = format!("--query={}", ".".repeat(100_000));
    let err = expect_error(
        &cli(&["run", "--context-file", p(&ctx), &long]),
        &["no word"],
    );
    assert!(err.len() < 1000, "{} bytes of error", err.len());
}

// --- 16: no extrapolation from two points ----------------------------------------------

#[test]
fn bench_does_not_extrapolate_from_two_lengths_and_says_why() {
    let args = [
        "bench",
        "--min-tokens",
        "64",
        "--max-tokens",
        "128",
        "--runs",
        "1",
    ];
    let mut json = args.to_vec();
    json.push("--json");
    let report: serde_json::Value = serde_json::from_str(&expect_ok(&cli(&json))).unwrap();
    let t = &report["at_target"];
    for key in [
        "memory_forward_s",
        "attention_prefill_s",
        "memory_decode_s",
        "attention_decode_s",
    ] {
        assert_eq!(t[key], serde_json::Value::Null, "{key} extrapolated: {t}");
    }
    assert!(
        t["not_extrapolated"]
            .as_str()
            .unwrap()
            .contains("2 measured lengths"),
        "{t}"
    );
    let table = expect_ok(&cli(&args));
    assert!(table.contains("not extrapolated"), "{table}");
}

// --- 13: the memory model says what it holds -------------------------------------------

#[test]
fn the_memory_model_reports_its_load_and_warns_past_capacity() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("many.txt");
    lines_file(&ctx, "k", 2000);
    // 2 heads × 32 rows = 64 rows for 2,000 pairs.
    let out = cli(&[
        "run",
        "--context-file",
        p(&ctx),
        "--state-bytes",
        "139264",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&expect_ok(&out)).unwrap();
    let c = &v["capacity"];
    assert_eq!(c["rows"], 64);
    assert_eq!(c["pairs"], 2000);
    assert_eq!(c["over_capacity"], true);
    assert!(c["predicted_recall"].as_f64().unwrap() < 0.1, "{c}");
    assert_eq!(c["state_bytes_to_hold"], 5 << 20, "{c}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning") && err.contains("--state-bytes 5MiB"),
        "{err}"
    );
    // Well under capacity: no warning, full recall predicted.
    let out = cli(&["run", "--context-file", p(&ctx), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&expect_ok(&out)).unwrap();
    assert_eq!(v["capacity"]["over_capacity"], false);
    assert!(v["capacity"]["predicted_recall"].as_f64().unwrap() > 0.999);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// --- 9: a load needs the state's size in memory, not twice it ---------------------------

#[test]
fn loading_a_state_peaks_near_its_size() {
    // In memory where possible: a 512 MiB file on a shared disk is slow to write.
    let dir = match std::fs::metadata("/dev/shm") {
        Ok(m) if m.is_dir() => tempfile::tempdir_in("/dev/shm").unwrap(),
        _ => tempfile::tempdir().unwrap(),
    };
    let ctx = text_file(dir.path());
    let state = dir.path().join("big.ltmstate");
    let base = [
        "run",
        "--context-file",
        p(&ctx),
        "--state-bytes",
        "512MiB",
        "--window-tokens",
        "64",
        "--json",
    ];
    let mut save = base.to_vec();
    save.extend(["--save-state", p(&state)]);
    expect_ok(&cli(&save));
    let mut load = base.to_vec();
    load.extend(["--load-state", p(&state)]);
    let v: serde_json::Value = serde_json::from_str(&expect_ok(&cli(&load))).unwrap();
    let size = v["state_bytes"].as_f64().unwrap();
    let peak = v["peak_host_bytes"].as_f64().unwrap();
    assert!(
        peak <= 1.05 * size,
        "peak {peak} for a state of {size} ({:.3}×)",
        peak / size
    );
}

// --- 7: unknown tensors ------------------------------------------------------------------

#[test]
fn kernel_refuses_unknown_tensors_listing_them() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (
        dir.path().join("in.safetensors"),
        dir.path().join("out.safetensors"),
    );
    let mut tensors = kernel_tensors(1, 4, 1, 4, 4);
    tensors.push((
        "initial_stat",
        vec![1, 1, 4, 4],
        bytemuck::cast_slice(&[1.0f32; 16]).to_vec(),
    ));
    tensors.push(("extra", vec![1], bytemuck::cast_slice(&[1.0f32]).to_vec()));
    write_safetensors(&input, &tensors);
    let out = cli(&["kernel", "--input", p(&input), "--output", p(&output)]);
    expect_error(
        &out,
        &[
            "in.safetensors",
            "unknown tensors `extra`, `initial_stat`",
            "initial_state",
        ],
    );
    assert!(!output.exists());
}

// --- 2: a file cut short while it is read --------------------------------------------------

#[test]
fn a_context_file_cut_short_while_streaming_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    for model in ["memory", "random-features"] {
        let ctx = dir.path().join(format!("shrinking-{model}.txt"));
        // Long enough (~7M tokens) to be mid-stream when it is cut.
        let line = "alpha beta gamma = delta epsilon zeta eta theta iota kappa\n";
        std::fs::write(&ctx, line.repeat(700_000)).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ltm-engine"))
            .args([
                "run",
                "--model",
                model,
                "--context-file",
                p(&ctx),
                "--window-bytes",
                "64KiB",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(400));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&ctx)
            .unwrap()
            .set_len(1000)
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let err = expect_error(&out, &[&format!("shrinking-{model}.txt"), "shrank"]);
        assert!(err.contains("to 1000 bytes"), "{err}");
    }
}

// --- issue 18: outputs replace only what is ours; inputs are bounded regular files ------

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(p(path)).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// Text whose last byte is invalid: a run that streamed before checking its output
/// would report that byte instead of the output.
fn late_error_text(dir: &Path) -> std::path::PathBuf {
    let ctx = dir.join("late-error.txt");
    let mut bytes = b"a = b\n".repeat(1000);
    bytes.push(0xff);
    std::fs::write(&ctx, bytes).unwrap();
    ctx
}

/// A model directory of its own holding copies of gdn-tiny's small files and a
/// symlink to its weights.
fn model_copy(dir: &Path) -> std::path::PathBuf {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gdn-tiny");
    let model = dir.join("model");
    std::fs::create_dir(&model).unwrap();
    for name in ["config.json", "tokenizer.json"] {
        std::fs::copy(fixture.join(name), model.join(name)).unwrap();
    }
    std::os::unix::fs::symlink(
        fixture.join("model.safetensors"),
        model.join("model.safetensors"),
    )
    .unwrap();
    model
}

#[test]
fn save_state_refuses_devices_fifos_sockets_and_symlinks_before_the_run() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    let ctx = late_error_text(dir.path());
    let fifo = dir.path().join("fifo.ltmstate");
    mkfifo(&fifo);
    let socket = dir.path().join("socket.ltmstate");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let target = dir.path().join("target");
    std::fs::write(&target, b"not yours").unwrap();
    let link = dir.path().join("link.ltmstate");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let null = Path::new("/dev/null");
    for (out, needles) in [
        (null, vec!["/dev/null", "character device"]),
        (&fifo, vec!["fifo.ltmstate", "FIFO"]),
        (&socket, vec!["socket.ltmstate", "socket"]),
        (&link, vec!["link.ltmstate", "is a symlink to", p(&target)]),
    ] {
        for model in ["memory", "random-features"] {
            let out = cli_with_deadline(&[
                "run",
                "--model",
                model,
                "--context-file",
                p(&ctx),
                "--save-state",
                p(out),
            ]);
            expect_error(&out, &needles);
        }
    }
    assert!(std::fs::metadata(null)
        .unwrap()
        .file_type()
        .is_char_device());
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
    assert!(std::fs::symlink_metadata(&socket)
        .unwrap()
        .file_type()
        .is_socket());
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read(&target).unwrap(), b"not yours");
    let out = cli(&[
        "bench",
        "--min-tokens",
        "64",
        "--max-tokens",
        "128",
        "--runs",
        "1",
        "--plot",
        p(&link),
    ]);
    expect_error(&out, &["is a symlink to"]);
    assert!(out.stdout.is_empty(), "the sweep ran before the check");
    assert_eq!(std::fs::read(&target).unwrap(), b"not yours");
}

#[test]
fn save_state_refuses_the_runs_own_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = text_file(dir.path());
    let original = std::fs::read(&ctx).unwrap();
    let state = dir.path().join("s.ltmstate");
    expect_ok(&cli(&[
        "run",
        "--model",
        "random-features",
        "--context-file",
        p(&ctx),
        "--save-state",
        p(&state),
    ]));
    let saved = std::fs::read(&state).unwrap();
    let twin = dir.path().join("twin.txt");
    std::fs::hard_link(&ctx, &twin).unwrap();
    let dotted = dir.path().join(".").join("ctx.txt");
    for (out, needle) in [
        (&ctx, "is the context file"),
        (&dotted, "is the context file"),
        (&twin, "is the context file"),
        (&state, "is the state loaded (--load-state)"),
    ] {
        let out = cli(&[
            "run",
            "--model",
            "random-features",
            "--context-file",
            p(&ctx),
            "--load-state",
            p(&state),
            "--save-state",
            p(out),
        ]);
        expect_error(&out, &[needle]);
    }
    assert_eq!(std::fs::read(&ctx).unwrap(), original);
    assert_eq!(std::fs::read(&state).unwrap(), saved);
    let model = model_copy(dir.path());
    let tokenizer = std::fs::read(model.join("tokenizer.json")).unwrap();
    let out = cli(&[
        "run",
        "--model",
        p(&model),
        "--context-file",
        p(&ctx),
        "--save-state",
        p(&model.join("tokenizer.json")),
    ]);
    expect_error(&out, &["is a file of the model directory"]);
    assert_eq!(
        std::fs::read(model.join("tokenizer.json")).unwrap(),
        tokenizer
    );
}

#[test]
fn a_state_path_another_run_is_writing_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = text_file(dir.path());
    let state = dir.path().join("s.ltmstate");
    let args = [
        "run",
        "--model",
        "random-features",
        "--context-file",
        p(&ctx),
        "--save-state",
        p(&state),
    ];
    let held = ltm_engine::output_path::OutputPath::claim(&state, &[]).unwrap();
    let out = cli(&args);
    let me = format!("another ltm-engine run (pid {})", std::process::id());
    expect_error(&out, &[&me, "is writing", p(&state)]);
    assert!(!state.exists());
    drop(held);
    expect_ok(&cli(&args));
    assert!(state.exists());
}

/// Whether process `pid` holds a `flock` on the file of inode `ino` (read off
/// `/proc/locks`, which looks without taking the lock itself).
fn holds_flock(pid: u32, ino: u64) -> bool {
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    locks.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 5
            && f[1] == "FLOCK"
            && f[4] == pid.to_string()
            && f[5].rsplit(':').next() == Some(&ino.to_string())
    })
}

#[test]
fn a_run_holds_its_state_path_from_the_start_to_the_final_save() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let ctx = text_file(dir.path());
    let state = dir.path().join("s.state");
    let lock = dir.path().join(".s.state.lock");
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gdn-tiny");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ltm-engine"))
        .args([
            "run",
            "--model",
            p(&model),
            "--context-file",
            p(&ctx),
            "--save-state",
            p(&state),
            "--checkpoint-every",
            "200",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = false;
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(start.elapsed().as_secs() < 60, "the run took over 60 s");
        if let Ok(meta) = std::fs::metadata(&lock) {
            seen |= holds_flock(child.id(), meta.ino());
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let out = child.wait_with_output().unwrap();
    expect_ok(&out);
    assert!(seen, "the run never held a lock on {}", lock.display());
    assert!(state.exists());
    assert!(!lock.exists(), "the lock file was left behind");
}

#[test]
fn a_full_disk_is_found_before_the_run_naming_the_space_needed() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = text_file(dir.path());
    let state = dir.path().join("s.ltmstate");
    // The random-feature model's state: 4 heads of 64 × 64 f32, plus a header.
    let state_bytes = 4 * 64 * 64 * 4;
    let run = |free: usize, checkpoints: bool| {
        let mut args = vec![
            "run",
            "--model",
            "random-features",
            "--context-file",
            p(&ctx),
            "--save-state",
            p(&state),
        ];
        if checkpoints {
            args.extend(["--checkpoint-every", "1000"]);
        }
        Command::new(env!("CARGO_BIN_EXE_ltm-engine"))
            .args(&args)
            .env("LTM_FAULT", format!("free-bytes:{free}"))
            .output()
            .unwrap()
    };
    let err = expect_error(
        &run(1000, false),
        &["s.ltmstate", "bytes free", "only 1000"],
    );
    assert!(!state.exists(), "{err}");
    // Room for one state file, not for a checkpoint beside the last.
    let room = state_bytes + state_bytes / 2;
    expect_error(&run(room, true), &["checkpoint", &format!("only {room}")]);
    assert!(!state.exists());
    expect_ok(&run(room, false));
    assert!(state.exists());
}

#[test]
fn model_files_that_are_not_bounded_regular_files_are_refused_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = text_file(dir.path());
    let run = |model: &Path| {
        cli_with_deadline(&[
            "run",
            "--model",
            p(model),
            "--context-file",
            p(&ctx),
            "--max-tokens",
            "8",
        ])
    };
    let model = model_copy(dir.path());
    expect_ok(&run(&model));

    let config = model.join("config.json");
    let original = std::fs::read(&config).unwrap();
    std::fs::remove_file(&config).unwrap();
    mkfifo(&config);
    expect_error(&run(&model), &["config.json", "FIFO"]);
    std::fs::remove_file(&config).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &config).unwrap();
    expect_error(
        &run(&model),
        &["config.json", "/dev/zero", "character device"],
    );
    std::fs::remove_file(&config).unwrap();
    // Valid JSON, padded with spaces past the limit.
    let mut padded = original.clone();
    padded.resize(5 << 20, b' ');
    std::fs::write(&config, &padded).unwrap();
    expect_error(&run(&model), &["config.json", "5242880 bytes", "4194304"]);
    std::fs::write(&config, &original).unwrap();

    let tokenizer = model.join("tokenizer.json");
    std::fs::remove_file(&tokenizer).unwrap();
    std::os::unix::fs::symlink(dir.path().join("gone.json"), &tokenizer).unwrap();
    expect_error(
        &run(&model),
        &[
            "tokenizer.json",
            "is a symlink to",
            "gone.json",
            "does not exist",
        ],
    );
    std::fs::remove_file(&tokenizer).unwrap();

    let index = model.join("model.safetensors.index.json");
    let _listener = std::os::unix::net::UnixListener::bind(&index).unwrap();
    expect_error(&run(&model), &["model.safetensors.index.json", "socket"]);
}

#[test]
fn a_language_model_state_that_is_a_fifo_is_refused_without_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = text_file(dir.path());
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gdn-tiny");
    let fifo = dir.path().join("state.fifo");
    mkfifo(&fifo);
    let out = cli_with_deadline(&[
        "run",
        "--model",
        p(&model),
        "--context-file",
        p(&ctx),
        "--load-state",
        p(&fifo),
    ]);
    expect_error(&out, &["state.fifo", "FIFO"]);
}
