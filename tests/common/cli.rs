//! Running the `ltm-engine` program and reading how it ended.

use std::path::Path;
use std::process::{Command, Output};

/// `ltm-engine ARGS`, run to the end.
pub fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ltm-engine"))
        .args(args)
        .output()
        .unwrap()
}

/// Exit status 1 with one `error:` message that contains every needle: not a panic
/// (101), an abort (134) or a signal.
pub fn expect_error(out: &Output, needles: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "status {:?}: {err}", out.status);
    assert!(err.starts_with("error: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "`{n}` missing from: {err}");
    }
    err
}

/// Exit status 0; the standard output.
pub fn expect_ok(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "status {:?}: {err}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A path as the `&str` an argument list takes.
pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}
