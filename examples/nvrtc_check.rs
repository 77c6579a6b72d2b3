//! Compiles the embedded kernel sources with NVRTC, the load-time fallback for a driver
//! older than the embedded PTX, and checks every entry point of the PTX comes out again.
//! Needs no GPU, only libnvrtc (CI: `bash scripts/install-nvcc.sh --nvrtc`, then
//! `LD_LIBRARY_PATH=<venv>/nvidia/cu13/lib`). Fails, never skips, when it cannot run.

use std::process::ExitCode;

use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};
use ltm_engine::backend::EMBEDDED_KERNELS;

fn entries(ptx: &str) -> Vec<String> {
    ptx.lines()
        .filter_map(|l| l.trim().strip_prefix(".visible .entry "))
        .map(|rest| rest.split('(').next().unwrap_or("").to_string())
        .collect()
}

fn main() -> ExitCode {
    if EMBEDDED_KERNELS.is_empty() {
        eprintln!("error: this build has no kernels embedded (build with NVCC set)");
        return ExitCode::FAILURE;
    }
    // SAFETY: only looks for the shared library.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        eprintln!("error: libnvrtc not found (set LD_LIBRARY_PATH to its directory)");
        return ExitCode::FAILURE;
    }
    let mut failed = 0;
    for kernel in EMBEDDED_KERNELS {
        let want = entries(kernel.ptx);
        for arch in ["compute_80", "compute_90"] {
            let opts = CompileOptions {
                arch: Some(arch),
                options: vec!["--std=c++17".into()],
                name: Some(format!("{}.cu", kernel.name)),
                ..Default::default()
            };
            match compile_ptx_with_opts(kernel.source, opts) {
                Ok(ptx) => {
                    let got = entries(&ptx.to_src());
                    let missing: Vec<_> = want.iter().filter(|e| !got.contains(e)).collect();
                    if missing.is_empty() {
                        println!("{} for {arch}: {} entry points", kernel.name, got.len());
                    } else {
                        println!("{} for {arch}: missing {missing:?}", kernel.name);
                        failed += 1;
                    }
                }
                Err(e) => {
                    println!("{} for {arch}: NVRTC failed: {e}", kernel.name);
                    failed += 1;
                }
            }
        }
    }
    let total = 2 * EMBEDDED_KERNELS.len();
    println!("{} passed, {failed} failed", total - failed);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
