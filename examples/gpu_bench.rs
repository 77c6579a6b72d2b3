//! GPU forward throughput with inputs already on the device (kernels only, no host
//! copies), printed as one JSON line per measurement.
//!
//! ```sh
//! gpu_bench [--tokens 65536] [--heads 16] [--dim 128] [--value-dim D] [--batch 1] [--dtype bf16]
//!           [--repeats 5] [--total-tokens N] [--segments G] [--prep-only]
//!           [--bf16-fast] [--chunked]
//! ```
//! With `--total-tokens N` one sequence of N tokens streams through: ceil(N / tokens)
//! windows of `--tokens` back to back, the state carried, each window reusing the same
//! device inputs (the kernels' cost does not depend on the values). `--prep-only` times
//! stage 1 alone; `--segments G` fixes the segment count of the scan (1: plain scan);
//! `--bf16-fast` runs the FAST bf16 scan (`CudaBackend::with_bf16_fast`). A window of at
//! most 16 tokens runs token by token (`kernels/step.cu`); `--chunked` times stage 1 and
//! the scan for it instead, so `--tokens 1 --total-tokens 2000` with and without it
//! compares the two paths for decode. `--value-dim` (default: `--dim`) gives the value
//! width its own size, e.g. fla-hub's 1.3B memory: `--heads 6 --dim 256 --value-dim 512`.

use half::bf16;
use ltm_engine::backend::cuda::{CudaBackend, TimedStages};
use ltm_engine::{Data, ForwardInputs, MemoryConfig, State};

struct Args {
    tokens: usize,
    heads: usize,
    dim: usize,
    value_dim: Option<usize>,
    batch: usize,
    dtype: String,
    repeats: usize,
    total_tokens: Option<usize>,
    segments: Option<usize>,
    prep_only: bool,
    bf16_fast: bool,
    chunked: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        tokens: 65_536,
        heads: 16,
        dim: 128,
        value_dim: None,
        batch: 1,
        dtype: "bf16".into(),
        repeats: 5,
        total_tokens: None,
        segments: None,
        prep_only: false,
        bf16_fast: false,
        chunked: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let num = |v: String| v.parse::<usize>().map_err(|e| format!("{v}: {e}"));
        match flag.as_str() {
            "--tokens" => a.tokens = num(value()?)?,
            "--heads" => a.heads = num(value()?)?,
            "--dim" => a.dim = num(value()?)?,
            "--value-dim" => a.value_dim = Some(num(value()?)?),
            "--batch" => a.batch = num(value()?)?,
            "--dtype" => a.dtype = value()?,
            "--repeats" => a.repeats = num(value()?)?.max(1),
            "--total-tokens" => a.total_tokens = Some(num(value()?)?),
            "--segments" => a.segments = Some(num(value()?)?),
            "--prep-only" => a.prep_only = true,
            "--bf16-fast" => a.bf16_fast = true,
            "--chunked" => a.chunked = true,
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    if !matches!(a.dtype.as_str(), "bf16" | "f32") {
        return Err(format!("--dtype {}: expected bf16 or f32", a.dtype));
    }
    Ok(a)
}

/// Gated DeltaNet-like values from a fixed xorshift stream: unit-norm q and k.
fn inputs(config: &MemoryConfig, rows: usize) -> [Vec<f32>; 5] {
    let mut x = 0x9E37_79B9u32;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x as f32 / u32::MAX as f32 - 0.5
    };
    let mut unit = |dim: usize| {
        let mut v: Vec<f32> = (0..rows * dim).map(|_| next()).collect();
        for r in v.chunks_exact_mut(dim) {
            let n = r.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-6);
            r.iter_mut().for_each(|a| *a /= n);
        }
        v
    };
    let q = unit(config.key_dim);
    let k = unit(config.key_dim);
    let v = unit(config.value_dim);
    [q, k, v, vec![0.5; rows], vec![-0.02; rows]]
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let a = parse()?;
    let config = MemoryConfig::new(a.heads, a.dim, a.value_dim.unwrap_or(a.dim));
    let mut backend = CudaBackend::new(0)?.with_bf16_fast(a.bf16_fast);
    if let Some(g) = a.segments {
        backend = backend.with_segments(g);
    }
    let rows = a.batch * a.tokens * a.heads;
    let [q, k, v, beta, g] = inputs(&config, rows);
    let (qb, kb, vb) = (to_bf16(&q), to_bf16(&k), to_bf16(&v));
    let fi = ForwardInputs {
        batch: a.batch,
        tokens: a.tokens,
        q: if a.dtype == "bf16" {
            Data::BF16(&qb)
        } else {
            Data::F32(&q)
        },
        k: if a.dtype == "bf16" {
            Data::BF16(&kb)
        } else {
            Data::F32(&k)
        },
        v: if a.dtype == "bf16" {
            Data::BF16(&vb)
        } else {
            Data::F32(&v)
        },
        beta: (&beta).into(),
        g: (&g).into(),
    };
    let state = State::zeros(&config, a.batch);
    let windows = a.total_tokens.map_or(1, |n| n.div_ceil(a.tokens).max(1));
    let repeats = if a.total_tokens.is_some() {
        1
    } else {
        a.repeats
    };
    let (stages, stage_name) = if a.prep_only {
        (TimedStages::PrepOnly, "prep")
    } else if a.chunked {
        (TimedStages::Chunked, "chunked")
    } else {
        (TimedStages::All, "all")
    };
    let mut times = backend.time_resident(&config, &fi, &state, windows, repeats, stages)?;
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let tokens = (a.batch * a.tokens * windows) as f64;
    let line = serde_json::json!({
        "device": ltm_engine::Backend::name(&backend),
        "batch": a.batch, "tokens_per_window": a.tokens, "windows": windows,
        "tokens_total": tokens, "heads": a.heads, "key_dim": a.dim, "value_dim": config.value_dim,
        "dtype": a.dtype, "stages": stage_name,
        "bf16_fast": a.bf16_fast,
        "segments": a.segments.map_or("auto".to_string(), |g| g.to_string()),
        "seconds_median": median, "seconds_all": times,
        "tokens_per_second": tokens / median.max(1e-12),
    });
    println!("{line}");
    Ok(())
}

fn to_bf16(x: &[f32]) -> Vec<bf16> {
    x.iter().map(|&a| bf16::from_f32(a)).collect()
}
