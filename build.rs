//! Compiles each `kernels/*.cu` to PTX with nvcc and embeds it (DESIGN.md §4).
//!
//! nvcc is looked for in `$NVCC`, then `$CUDA_HOME/bin`, then `PATH`. Without one the
//! build is CPU-only and says so once; with `LTM_REQUIRE_KERNELS=1` a missing nvcc or a
//! kernel that fails to compile fails the build. The generated `OUT_DIR/kernels.rs`
//! holds `EMBEDDED_KERNELS`: per `.cu` file its name, target, PTX, and its source with the
//! local headers inlined (for NVRTC, when a driver is too old for the PTX).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Generic kernels: PTX for compute_80, JIT-compiled by the driver for the card at load
/// (A100, H100/H200 and later). No kernel uses sm_90a-only instructions (wgmma, TMA)
/// yet; when one does, it gets a second PTX for `sm_90a` chosen at run time.
const TARGET: &str = "compute_80";

struct Kernel {
    name: String,
    cu: PathBuf,
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let dir = manifest.join("kernels");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=kernels");
    for var in ["NVCC", "CUDA_HOME", "PATH", "LTM_REQUIRE_KERNELS"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let require = std::env::var("LTM_REQUIRE_KERNELS").is_ok_and(|v| v == "1");

    let mut kernels = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    entries.sort();
    for path in entries {
        let ext = path.extension().and_then(|e| e.to_str());
        if matches!(ext, Some("cu" | "cuh")) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
        if ext == Some("cu") {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            kernels.push(Kernel { name, cu: path });
        }
    }

    // Cargo sets CARGO_FEATURE_CUDA for a build with the `cuda` feature; without it
    // nothing would load the kernels.
    let cuda = std::env::var_os("CARGO_FEATURE_CUDA").is_some();
    let compiled = match find_nvcc().filter(|_| cuda) {
        None if !cuda => Vec::new(),
        None => {
            let why = "no nvcc found ($NVCC, $CUDA_HOME/bin, PATH)";
            if require {
                fail(&format!("LTM_REQUIRE_KERNELS=1 but {why}"));
            }
            println!(
                "cargo:warning=ltm-engine: {why}: building CPU-only, without CUDA kernels. \
                 For the GPU backend: NVCC=$(bash scripts/install-nvcc.sh | tail -n1) cargo build --release"
            );
            Vec::new()
        }
        Some(nvcc) => {
            match compile_all(&nvcc, &kernels, &out) {
                Ok(c) => c,
                Err(e) if require => fail(&e),
                Err(e) => {
                    println!("cargo:warning=ltm-engine: building CPU-only, a kernel failed to compile: {e}");
                    Vec::new()
                }
            }
        }
    };

    let mut rs = String::from(
        "/// The CUDA modules this build compiled, one per `.cu` file; empty in a CPU-only build.\npub static EMBEDDED_KERNELS: &[EmbeddedKernel] = &[\n");
    for (name, ptx, source) in &compiled {
        writeln!(
            rs,
            "    EmbeddedKernel {{ name: {:?}, target: {TARGET:?}, ptx: include_str!({:?}), source: include_str!({:?}) }},",
            name, ptx, source
        )
        .unwrap();
    }
    rs.push_str("];\n");
    std::fs::write(out.join("kernels.rs"), rs).expect("write kernels.rs");
}

fn fail(message: &str) -> ! {
    eprintln!("error: ltm-engine build: {message}");
    std::process::exit(1);
}

fn find_nvcc() -> Option<PathBuf> {
    let exe = if cfg!(windows) { "nvcc.exe" } else { "nvcc" };
    if let Some(p) = std::env::var_os("NVCC").filter(|p| !p.is_empty()) {
        // An explicit NVCC that does not exist is not silently replaced by another.
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    if let Some(home) = std::env::var_os("CUDA_HOME").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(home).join("bin").join(exe);
        if p.is_file() {
            return Some(p);
        }
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(exe))
        .find(|p| p.is_file())
}

/// Compiles every kernel (in parallel: nvcc is single-threaded) and returns, per kernel,
/// the PTX path and the path of its self-contained source.
fn compile_all(
    nvcc: &Path,
    kernels: &[Kernel],
    out: &Path,
) -> Result<Vec<(String, PathBuf, PathBuf)>, String> {
    let results: Vec<Result<(PathBuf, PathBuf), String>> = std::thread::scope(|s| {
        let handles: Vec<_> = kernels
            .iter()
            .map(|k| s.spawn(|| compile(nvcc, k, out)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    kernels
        .iter()
        .zip(results)
        .map(|(k, r)| r.map(|(ptx, src)| (k.name.clone(), ptx, src)))
        .collect()
}

fn compile(nvcc: &Path, kernel: &Kernel, out: &Path) -> Result<(PathBuf, PathBuf), String> {
    let ptx = out.join(format!("{}.ptx", kernel.name));
    let output = Command::new(nvcc)
        .args([
            "-ptx",
            &format!("-arch={TARGET}"),
            "-O3",
            "-std=c++17",
            "-lineinfo",
        ])
        .arg("-o")
        .arg(&ptx)
        .arg(&kernel.cu)
        .output()
        .map_err(|e| format!("{}: cannot run {}: {e}", kernel.name, nvcc.display()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let first: Vec<&str> = stderr.lines().take(20).collect();
        return Err(format!(
            "{}: nvcc failed ({}):\n{}",
            kernel.cu.display(),
            output.status,
            first.join("\n")
        ));
    }
    let source = out.join(format!("{}.nvrtc.cu", kernel.name));
    let inlined = inline_includes(&kernel.cu)?;
    std::fs::write(&source, inlined).map_err(|e| format!("{}: {e}", source.display()))?;
    Ok((ptx, source))
}

/// The `.cu` text with `#include "local.cuh"` lines replaced by the header's text (once
/// each), so NVRTC can compile it with no include paths.
fn inline_includes(cu: &Path) -> Result<String, String> {
    fn walk(path: &Path, seen: &mut Vec<PathBuf>, out: &mut String) -> Result<(), String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for line in text.lines() {
            let t = line.trim();
            if t == "#pragma once" {
                continue;
            }
            let local = t
                .strip_prefix("#include \"")
                .and_then(|rest| rest.strip_suffix('"'));
            match local {
                Some(name) => {
                    let header = path.parent().unwrap().join(name);
                    if !seen.contains(&header) {
                        seen.push(header.clone());
                        walk(&header, seen, out)?;
                    }
                }
                None => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        Ok(())
    }
    let mut out = String::new();
    walk(cu, &mut Vec::new(), &mut out)?;
    Ok(out)
}
