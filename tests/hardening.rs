//! Issue 11: hostile and mistaken inputs end with an `error:` line naming what was
//! wrong, never a panic, an abort, a signal, a hang or a silent success.

use std::path::Path;
use std::process::{Command, Output};

use safetensors::tensor::{Dtype, TensorView};

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ltm-engine"))
        .args(args)
        .output()
        .unwrap()
}

/// Exit status 1 with one `error:` message that contains every needle: not a panic
/// (101), an abort (134) or a signal.
fn expect_error(out: &Output, needles: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "status {:?}: {err}", out.status);
    assert!(err.starts_with("error: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "`{n}` missing from: {err}");
    }
    err
}

fn expect_ok(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "status {:?}: {err}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

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
