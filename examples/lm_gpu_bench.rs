//! Language models on the GPU, one JSON line per measurement (for `scripts/gpu-check.sh`):
//!
//! - `gemm`: the card's bf16 matrix rate through cuBLAS (f32 accumulation), one large
//!   product (`--gemm-size`, default 8192³) repeated;
//! - `prefill`: a 1.3B-class model with random bf16 weights (fla-hub's Gated DeltaNet
//!   1.3B widths: hidden 2048, 24 layers, key width 1536, value width 3072, MLP 5632,
//!   vocabulary 32,000, 6 heads of K = 256 and V = 512 through the wide scan kernels;
//!   `--head-dim 128` runs the same widths as 12 heads of K = 128, same parameters and
//!   FLOPs, through the narrow ones) over
//!   `--prefill-tokens` tokens in windows of `--window`, no logits; tokens/s and, with
//!   the FLOPs per token of its matrix products, the share of the `gemm` rate;
//! - `stream`: one sequence of `--stream-tokens` (default 10M) tokens through that
//!   model, stopped after `--max-seconds`; the time for 100M tokens extrapolated from
//!   the measured rate, labelled so;
//! - `decode`: token-by-token steps after 1K and after `--decode-context` (default 1M)
//!   tokens of context, greedy on the device (one id back a token, as generation runs),
//!   and beside it with the logits row brought back and picked on the host.
//!
//! `lm_gpu_bench [gemm|prefill|stream|decode|all] [--layers N] [--head-dim 256|128] [--window W] ...`

use std::time::Instant;

use ltm_engine::backend::cuda::GemmShape;
use ltm_engine::hash::SplitMix64;
use ltm_engine::lm::sample::argmax;
use ltm_engine::lm::{GdnConfig, LanguageModel, Logits, Sampler, Sampling};
use ltm_engine::{DType, Device};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// fla-hub's 1.3B widths (key width 1536, value width 3072) as heads of `head_dim`.
fn config(layers: usize, head_dim: usize) -> GdnConfig {
    GdnConfig::fla_defaults(2048, layers, 1536 / head_dim, head_dim, 32_000)
        .expect("fla-hub's 1.3B widths are a valid config")
}

/// FLOPs per token of the layers' matrix products (no output head).
fn flops_per_token(c: &GdnConfig) -> f64 {
    let (d, i, dk, dv, hv) = (
        c.hidden_size,
        c.intermediate_size,
        c.key_width(),
        c.value_width(),
        c.value_heads,
    );
    let n_in = 2 * dk + 2 * dv + 2 * hv;
    (2 * c.layers * (d * n_in + dv * d + 2 * i * d + i * d)) as f64
}

fn ids(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut rng = SplitMix64::new(seed);
    (0..n).map(|_| rng.below(vocab as u64) as u32).collect()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let what = args
        .iter()
        .find(|a| !a.starts_with("--") && a.parse::<f64>().is_err())
        .cloned()
        .unwrap_or_else(|| "all".into());
    let opt = |name: &str, default: f64| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(|v| v.parse::<f64>().expect("a number"))
            .unwrap_or(default)
    };
    let layers = opt("--layers", 24.0) as usize;
    let head_dim = opt("--head-dim", 256.0) as usize;
    if head_dim == 0 || !1536usize.is_multiple_of(head_dim) {
        eprintln!("--head-dim must divide the key width 1536, found {head_dim}");
        std::process::exit(2);
    }
    let window = opt("--window", 4096.0) as usize;
    let gemm_size = opt("--gemm-size", 8192.0) as usize;
    let prefill_tokens = opt("--prefill-tokens", 65_536.0) as usize;
    let stream_tokens = opt("--stream-tokens", 1e7) as u64;
    let max_seconds = opt("--max-seconds", 90.0);
    let decode_context = opt("--decode-context", 1_048_576.0) as u64;
    let all = what == "all";

    let mut rate = opt("--gemm-tflops", 0.0) * 1e12;
    if all || what == "gemm" {
        let backend = ltm_engine::backend::cuda::CudaBackend::new(0).expect("a CUDA device");
        let shape = GemmShape {
            tokens: gemm_size,
            in_dim: gemm_size,
            out_dim: gemm_size,
        };
        let calls = 10;
        let t = median(
            backend
                .time_gemm(shape, DType::BF16, calls, 5)
                .expect("the bf16 product"),
        );
        rate = 2.0 * (gemm_size as f64).powi(3) * calls as f64 / t;
        println!(
            "{}",
            serde_json::json!({"bench": "gemm", "dtype": "bf16", "m_n_k": gemm_size,
                "tflops": rate / 1e12, "device": backend.device_info().name})
        );
    }
    if !(all || ["prefill", "stream", "decode"].contains(&what.as_str())) {
        return;
    }
    let c = config(layers, head_dim);
    let t0 = Instant::now();
    let model = LanguageModel::random_in(c.clone(), 7, Device::Cuda(0), DType::BF16)
        .expect("the model on cuda:0");
    let dev = model.device_model().expect("on the device");
    println!(
        "{}",
        serde_json::json!({"bench": "load", "model": model.name(), "weights_bytes": dev.weight_bytes(),
            "seconds": t0.elapsed().as_secs_f64()})
    );
    let vocab = c.vocab_size;
    let fpt = flops_per_token(&c);

    if all || what == "prefill" {
        let x = ids(prefill_tokens, vocab, 1);
        let once = || {
            let mut s = model.session().unwrap();
            s.set_window(window).unwrap();
            let t = Instant::now();
            s.feed(&x, Logits::None).unwrap();
            // `feed` with no logits returns once the work is queued: the snapshot's
            // copies wait for it (and are a few MB, small next to the prefill).
            s.snapshot().unwrap();
            t.elapsed().as_secs_f64()
        };
        once();
        let secs = median((0..3).map(|_| once()).collect());
        let tps = prefill_tokens as f64 / secs;
        let share = (rate > 0.0).then(|| tps * fpt / rate);
        println!(
            "{}",
            serde_json::json!({"bench": "prefill", "tokens": prefill_tokens, "window": window,
                "tokens_per_second": tps, "flops_per_token": fpt,
                "share_of_gemm_rate": share, "goal": 0.5})
        );
    }
    if all || what == "stream" {
        let x = ids(window * 16, vocab, 2);
        let mut s = model.session().unwrap();
        s.set_window(window).unwrap();
        let t = Instant::now();
        while s.tokens() < stream_tokens && t.elapsed().as_secs_f64() < max_seconds {
            let n = ((stream_tokens - s.tokens()) as usize).min(x.len());
            s.feed(&x[..n], Logits::None).unwrap();
        }
        let last = s.feed(&x[..1], Logits::Last).unwrap();
        assert!(last.iter().all(|v| v.is_finite()), "non-finite logits");
        let secs = t.elapsed().as_secs_f64();
        let done = s.tokens();
        let tps = done as f64 / secs;
        println!(
            "{}",
            serde_json::json!({"bench": "stream", "tokens_measured": done, "seconds": secs,
                "tokens_per_second": tps,
                "seconds_for_100m_extrapolated": 1e8 / tps,
                "note": "100M is extrapolated from the measured tokens, not run"})
        );
    }
    if all || what == "decode" {
        for context in [1024u64, decode_context] {
            let mut s = model.session().unwrap();
            s.set_window(window).unwrap();
            let x = ids(window.min(context as usize), vocab, 3);
            while s.tokens() < context {
                let n = ((context - s.tokens()) as usize).min(x.len());
                s.feed(&x[..n], Logits::None).unwrap();
            }
            // As generation runs: greedy on the device, one id back a token; then the
            // same steps with the whole logits row brought back and picked on the host.
            let mut greedy = Sampler::new(Sampling::default()).unwrap();
            let mut next = s.step_pick(1, &mut greedy).unwrap();
            let steps = 64;
            let t = Instant::now();
            for _ in 0..steps {
                next = s.step_pick(next, &mut greedy).unwrap();
            }
            let secs = t.elapsed().as_secs_f64();
            let t = Instant::now();
            for _ in 0..steps {
                next = argmax(s.step(next).unwrap());
            }
            let host_secs = t.elapsed().as_secs_f64();
            println!(
                "{}",
                serde_json::json!({"bench": "decode", "context": context,
                    "pick": format!("{:?}", s.pick_path(&greedy)),
                    "ms_per_token_logits_to_host": 1e3 * host_secs / steps as f64,
                    "tokens_per_second": steps as f64 / secs, "ms_per_token": 1e3 * secs / steps as f64})
            );
        }
    }
}
