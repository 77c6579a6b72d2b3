//! Language-model speed on this machine, medians of repeated runs, as JSON lines:
//!
//! - `prefill-tiny`: the `gdn-tiny` fixture over 4,096 tokens in windows of 512,
//!   scoring every token (logits at every position, as `run` does for perplexity);
//! - `prefill-large`: a random-weight model of hidden 1024, 8 layers, 8 heads of
//!   128, V = 256, vocabulary 32,000, over 2,048 tokens, with its FLOPs per token, so
//!   `--peak-gflops` (from `examples/cpu_peak.rs`, same run) gives the share of the
//!   arithmetic floor;
//! - `decode`: `gdn-tiny`'s decode step after 1K and after 1M tokens of context, next
//!   to the attention baseline's decode step over a KV cache of the same lengths (one
//!   layer of gdn-tiny's query/key shape, H = 4, D = 64; times the layer count).
//!
//! - `gemm`: the projections' products through the `gemm` crate (what the runtime
//!   uses) next to the engine's own register-blocked micro-kernels
//!   (`backend::cpu::gemm`, rows split over the cores), alternating, medians.
//!
//! `cargo run --release --example lm_bench -- [prefill-tiny|prefill-large|decode|gemm|all]
//!  [--runs N] [--window W] [--peak-gflops G] [--decode-context N]`

use std::time::Instant;

use ltm_engine::baseline::{AttentionBackend, AttentionConfig, CpuAttention, KvCache};
use ltm_engine::bench::workload::Workload;
use ltm_engine::hash::SplitMix64;
use ltm_engine::lm::{GdnConfig, LanguageModel, Logits};
use ltm_engine::Device;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn random_ids(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut rng = SplitMix64::new(seed);
    (0..n).map(|_| rng.below(vocab as u64) as u32).collect()
}

/// Median seconds of `runs` prefills of `ids` from an empty state.
fn time_prefill(model: &LanguageModel, ids: &[u32], window: usize, runs: usize) -> f64 {
    let once = || {
        let mut s = model.session().unwrap();
        s.set_window(window).unwrap();
        let t = Instant::now();
        s.feed_with(ids, Logits::All, &mut |l| {
            std::hint::black_box(l);
        })
        .unwrap();
        t.elapsed().as_secs_f64()
    };
    once();
    median((0..runs).map(|_| once()).collect())
}

fn large_config() -> GdnConfig {
    GdnConfig::fla_defaults(1024, 8, 8, 128, 32_000).expect("a valid config")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let what = args
        .iter()
        .find(|a| !a.starts_with("--") && a.parse::<f64>().is_err())
        .cloned()
        .unwrap_or_else(|| "all".into());
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(|v| v.parse::<f64>().expect("a number"))
    };
    let runs = opt("--runs").unwrap_or(5.0) as usize;
    let peak = opt("--peak-gflops");
    let long = opt("--decode-context").unwrap_or(1_048_576.0) as usize;
    let window = opt("--window").unwrap_or(512.0) as usize;
    let tiny_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gdn-tiny");

    if what == "all" || what == "prefill-tiny" {
        let model = LanguageModel::load(tiny_dir, Device::Cpu).unwrap();
        let ids = random_ids(4096, model.config().vocab_size, 1);
        let s = time_prefill(&model, &ids, window, runs);
        println!(
            "{}",
            serde_json::json!({"bench": "prefill", "model": "gdn-tiny", "tokens": ids.len(),
                "window": window, "runs": runs, "median_s": s, "tokens_per_second": ids.len() as f64 / s,
                "backend": model.backend().name()})
        );
    }
    if what == "all" || what == "prefill-large" {
        let config = large_config();
        let flops = config.matmul_flops_per_token() + config.memory_flops_per_token();
        let model = LanguageModel::random(config, 3, Device::Cpu).unwrap();
        let ids = random_ids(2048, model.config().vocab_size, 2);
        let s = time_prefill(&model, &ids, window, runs);
        let rate = ids.len() as f64 / s;
        let gflops = rate * flops as f64 / 1e9;
        println!(
            "{}",
            serde_json::json!({"bench": "prefill", "model": model.name(), "tokens": ids.len(),
                "window": window, "runs": runs, "median_s": s, "tokens_per_second": rate,
                "flops_per_token": flops, "gflops": gflops,
                "peak_gflops": peak, "share_of_floor": peak.map(|p| gflops / p)})
        );
    }
    if what == "all" || what == "gemm" {
        use ltm_engine::backend::cpu::gemm::{gemm, Isa, Mat, Part};
        use rayon::prelude::*;
        let isa = Isa::detect();
        // (rows, inner, out): gdn-tiny's input projection and MLP, the large model's.
        for (m, k, n) in [
            (512usize, 256usize, 1536usize),
            (512, 1024, 6144),
            (512, 1024, 5632),
        ] {
            let mut rng = SplitMix64::new(4);
            let mut fill = |len: usize| -> Vec<f32> {
                (0..len)
                    .map(|_| (rng.below(2000) as f32 - 1000.0) / 1000.0)
                    .collect()
            };
            let x = fill(m * k);
            let w = fill(n * k); // [out, in], as nn.Linear stores it
            let mut wt = vec![0.0f32; k * n]; // [in, out] for the micro-kernels
            for i in 0..n {
                for j in 0..k {
                    wt[j * n + i] = w[i * k + j];
                }
            }
            let mut y = vec![0.0f32; m * n];
            let threads = rayon::current_num_threads();
            let rows = m.div_ceil(threads);
            let (mut ours, mut crate_) = (Vec::new(), Vec::new());
            for _ in 0..runs.max(3) + 1 {
                let t = Instant::now();
                ltm_engine::lm::linear::matmul_t(&x, m, k, &w, n, &mut y, false);
                crate_.push(t.elapsed().as_secs_f64());
                let t = Instant::now();
                y.par_chunks_mut(rows * n).enumerate().for_each(|(i, c)| {
                    let r = c.len() / n;
                    let a = Mat {
                        data: &x[i * rows * k..],
                        ld: k,
                    };
                    gemm(
                        isa,
                        Part::Full,
                        r,
                        n,
                        k,
                        a,
                        Mat { data: &wt, ld: n },
                        c,
                        n,
                        false,
                    );
                });
                ours.push(t.elapsed().as_secs_f64());
            }
            let flop = 2.0 * (m * k * n) as f64;
            let (a, b) = (median(crate_[1..].to_vec()), median(ours[1..].to_vec()));
            println!(
                "{}",
                serde_json::json!({"bench": "gemm", "m": m, "k": k, "n": n,
                    "gemm_crate_gflops": flop / a / 1e9, "engine_microkernels_gflops": flop / b / 1e9,
                    "isa": isa.name(), "ratio_crate_over_engine": b / a})
            );
        }
    }
    if what == "all" || what == "decode" {
        let model = LanguageModel::load(tiny_dir, Device::Cpu).unwrap();
        let vocab = model.config().vocab_size;
        let layers = model.config().layers;
        let attention = CpuAttention::new();
        let ac = AttentionConfig::new(4, 64);
        let piece = Workload::new(65_536, 4, 64, 9);
        let one = Workload::new(1, 4, 64, 5);
        // The two states and the two KV caches are made first; then short rounds
        // alternate between the lengths, so drift in the machine's speed hits both.
        let mut session = model.session().unwrap();
        let mut states = Vec::new();
        let mut caches = Vec::new();
        let mut fed = 0usize;
        for context in [1024usize, long] {
            let t = Instant::now();
            let ids = random_ids(context - fed, vocab, 7 + context as u64);
            session.feed_with(&ids, Logits::None, &mut |_| {}).unwrap();
            fed = context;
            eprintln!(
                "context {context}: prefill {:.1} s",
                t.elapsed().as_secs_f64()
            );
            states.push(session.snapshot().unwrap().unshared());
            let mut cache = KvCache::new(&ac, 1).unwrap();
            cache.reserve(context).unwrap();
            while cache.len() < context {
                let n = (context - cache.len()).min(65_536);
                cache.append(&ac, &piece.attention_inputs(0, n)).unwrap();
            }
            caches.push(cache);
        }
        let rounds = runs.max(5);
        let mut step_times = vec![Vec::new(), Vec::new()];
        let mut att_times = vec![Vec::new(), Vec::new()];
        let mut out = vec![0.0f32; 4 * 64];
        for round in 0..rounds {
            for i in 0..2 {
                let mut s = model.resume(states[i].unshared()).unwrap();
                s.step(1).unwrap(); // allocates the workspace
                for j in 0..20 {
                    let t = Instant::now();
                    std::hint::black_box(s.step(((round * 20 + j) * 31 % vocab) as u32).unwrap());
                    step_times[i].push(t.elapsed().as_secs_f64());
                }
                let context = caches[i].len();
                for _ in 0..4 {
                    caches[i].truncate(context);
                    let t = Instant::now();
                    attention
                        .attend_into(&ac, &one.attention_inputs(0, 1), &mut caches[i], &mut out)
                        .unwrap();
                    att_times[i].push(t.elapsed().as_secs_f64());
                }
                caches[i].truncate(context);
            }
        }
        let steps: Vec<f64> = step_times.into_iter().map(median).collect();
        let atts: Vec<f64> = att_times.into_iter().map(median).collect();
        for (i, context) in [1024usize, long].into_iter().enumerate() {
            println!(
                "{}",
                serde_json::json!({"bench": "decode", "context": context, "rounds": rounds,
                    "gdn_tiny_step_us": steps[i] * 1e6, "gdn_tiny_tokens_per_second": 1.0 / steps[i],
                    "state_bytes": model.state_bytes(),
                    "attention_layer_step_us": atts[i] * 1e6,
                    "attention_all_layers_us": atts[i] * 1e6 * layers as f64,
                    "kv_cache_bytes_per_layer": caches[i].used_bytes()})
            );
        }
        println!(
            "{}",
            serde_json::json!({"bench": "decode_ratio", "gdn_tiny_long_over_short": steps[1] / steps[0],
                "attention_long_over_short": atts[1] / atts[0]})
        );
    }
}
