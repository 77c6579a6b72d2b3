//! Language models on CUDA: the matrix products through cuBLAS against a float64
//! product on the host for every weight type; the fixture models' logits against
//! fla's reference (f32 weights within 1e-4, bf16/f16 within 1e-2), split calls and
//! window sizes against one call, greedy ids against the CPU's, a GPU snapshot resumed
//! on the CPU, and a million tokens with device memory flat; generation picking on the
//! device (greedy and seeded sampling) with the CPU's ids and draws, one id per token
//! coming back; no weights left on the host. The GPU tests are
//! `#[ignore]`d (`scripts/gpu-check.sh` runs them); without a GPU each fails. One CPU
//! test checks the bf16 conversion the GPU tests use.

mod common;

use std::path::Path;

use common::lm::{fixture, reference_f32, reference_ids, rel_err};
use ltm_engine::backend::cuda::{CudaBackend, GemmShape};
use std::sync::{Mutex, MutexGuard};

use ltm_engine::lm::cuda::{ids_downloaded, logits_downloaded};
use ltm_engine::lm::{LanguageModel, Logits, PickPath, Sampler, Sampling};
use ltm_engine::{DType, Device};
use safetensors::SafeTensors;

/// The download counters are per process: tests that use the device take turns, so
/// that one test's counts are its own even when the harness runs several at once.
fn serial() -> MutexGuard<'static, ()> {
    static DEVICE: Mutex<()> = Mutex::new(());
    DEVICE.lock().unwrap_or_else(|p| p.into_inner())
}

fn gpu() -> CudaBackend {
    match CudaBackend::new(0) {
        Ok(b) => b.with_checks(true),
        Err(e) => panic!("this GPU test needs a usable CUDA device: {e}"),
    }
}

fn wave(n: usize, f: f64) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as f64 * f).sin() * 0.9) as f32)
        .collect()
}

/// `x · wᵀ` in float64 from the values as the device holds them (rounded to `dtype`).
fn reference(x: &[f32], w: &[f32], s: GemmShape, dtype: DType) -> Vec<f64> {
    let round = |v: f32| -> f64 {
        match dtype {
            DType::F32 => v as f64,
            DType::F16 => half::f16::from_f32(v).to_f64(),
            DType::BF16 => half::bf16::from_f32(v).to_f64(),
        }
    };
    let mut y = vec![0.0; s.tokens * s.out_dim];
    for t in 0..s.tokens {
        for o in 0..s.out_dim {
            y[t * s.out_dim + o] = (0..s.in_dim)
                .map(|i| round(x[t * s.in_dim + i]) * round(w[o * s.in_dim + i]))
                .sum();
        }
    }
    y
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn cublas_projections_match_a_float64_product() {
    let _turn = serial();
    let gpu = gpu();
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for (tokens, in_dim, out_dim) in [(1, 64, 96), (37, 256, 130), (512, 1024, 384)] {
            let s = GemmShape {
                tokens,
                in_dim,
                out_dim,
            };
            let (x, w) = (wave(tokens * in_dim, 0.37), wave(out_dim * in_dim, 0.113));
            let got = gpu.linear_on_device(&x, &w, dtype, s).unwrap();
            let want = reference(&x, &w, s, dtype);
            let scale = want.iter().fold(1e-30f64, |m, v| m.max(v.abs()));
            let err = got
                .iter()
                .zip(&want)
                .map(|(g, w)| (*g as f64 - w).abs())
                .fold(
                    0.0f64,
                    |m, e| if e.is_nan() { f64::INFINITY } else { m.max(e) },
                )
                / scale;
            eprintln!("gemm {dtype:?} {s:?}: error {err:.2e} of the largest");
            // f32 accumulation of exactly representable products: only the sums round
            // (f32 inputs may go through TF32 only if a math mode asked; none does).
            assert!(err < 1e-5, "{dtype:?} {s:?}: {err:.2e}");
        }
    }
}

// ---- the model on the device -------------------------------------------------------------

/// The fixture `name` with every weight rounded to `dtype`, in a temporary directory.
fn converted(name: &str, dtype: DType) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture(name);
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (tname, view) in st.tensors() {
        let values: Vec<f32> = match view.dtype() {
            safetensors::Dtype::F32 => view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            other => panic!("{tname}: the fixture is f32, found {other:?}"),
        };
        let (d, data) = match dtype {
            DType::F32 => (
                safetensors::Dtype::F32,
                bytemuck::cast_slice(&values).to_vec(),
            ),
            DType::F16 => (
                safetensors::Dtype::F16,
                values
                    .iter()
                    .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                    .collect(),
            ),
            DType::BF16 => (
                safetensors::Dtype::BF16,
                values
                    .iter()
                    .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                    .collect(),
            ),
        };
        out.push((tname, d, view.shape().to_vec(), data));
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = out
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let file = safetensors::serialize(views, None).unwrap();
    std::fs::write(dir.path().join("model.safetensors"), file).unwrap();
    dir
}

fn on_gpu(dir: &Path) -> LanguageModel {
    let model = LanguageModel::load(dir, Device::Cuda(0))
        .unwrap_or_else(|e| panic!("this GPU test needs a usable CUDA device: {e}"));
    assert!(
        model.device_model().is_some(),
        "the model loaded on cuda:0 but does not run there"
    );
    model
}

/// f32 weights: logits within 1e-4 of the largest |logit| of fla's reference, in one
/// call, in two calls and in windows of 37 tokens; greedy ids equal to the CPU's.
fn f32_checks(name: &str) {
    let model = on_gpu(&fixture(name));
    let ids = reference_ids(name, "input_ids");
    let want = reference_f32(name, "logits");
    let mut one = model.session().unwrap();
    let all = one.feed(&ids, Logits::All).unwrap();
    let e = rel_err(&all, &want);
    eprintln!("{name} on the GPU: logits error {e:.2e} (one call)");
    assert!(e < 1e-4, "{name}: logits error {e:.2e}");

    // Perplexity scored on the device (only the scores come back): the prompt's mean
    // NLL as fla's generation.json gives it, in windows of 100 (boundaries scored from
    // the state).
    let mut scored = model.session().unwrap();
    scored.set_window(100).unwrap();
    let mut nll = Vec::new();
    scored.feed_scored(&ids, &mut nll).unwrap();
    assert_eq!(nll.len(), ids.len() - 1);
    let mean = nll.iter().sum::<f64>() / nll.len() as f64;
    let gen: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture(name).join("generation.json")).unwrap(),
    )
    .unwrap();
    let want_nll = gen["prompt_mean_ce_nats"].as_f64().unwrap();
    eprintln!("{name} on the GPU: mean NLL {mean} vs fla {want_nll}");
    assert!(
        ((mean - want_nll) / want_nll).abs() < 1e-4,
        "{name}: mean NLL {mean} vs {want_nll}"
    );

    let mut split = model.session().unwrap();
    let a = split.feed(&ids[..139], Logits::All).unwrap();
    let b = split.feed(&ids[139..], Logits::All).unwrap();
    let e_a = rel_err(&a, &reference_f32(name, "split.logits_a"));
    let e_b = rel_err(&b, &reference_f32(name, "split.logits_b"));
    eprintln!("{name} on the GPU: split calls {e_a:.2e}, {e_b:.2e}");
    assert!(
        e_a < 1e-4 && e_b < 1e-4,
        "{name}: split {e_a:.2e} {e_b:.2e}"
    );
    let joined: Vec<f32> = a.iter().chain(&b).copied().collect();
    let e_one = rel_err(&joined, &all);
    assert!(e_one < 1e-4, "{name}: two calls vs one: {e_one:.2e}");
    for window in [37, 64, 300] {
        let mut w = model.session().unwrap();
        w.set_window(window).unwrap();
        let got = w.feed(&ids, Logits::All).unwrap();
        let e = rel_err(&got, &all);
        eprintln!("{name} on the GPU: windows of {window} vs one call {e:.2e}");
        assert!(e < 1e-4, "{name}: windows of {window}: {e:.2e}");
    }

    // Greedy: 40 tokens, the same ids as the CPU and as fla.
    let gen = |device_model: &LanguageModel| {
        let mut s = device_model.session().unwrap();
        s.generate(&ids, 40, &mut Sampler::new(Sampling::default()).unwrap())
            .unwrap()
    };
    let cpu = LanguageModel::load(fixture(name), Device::Cpu).unwrap();
    let on_device = gen(&model);
    assert_eq!(
        on_device,
        gen(&cpu),
        "{name}: greedy ids differ from the CPU's"
    );
    assert_eq!(
        on_device,
        reference_ids(name, "gen.ids"),
        "{name}: greedy ids vs fla"
    );

    // A snapshot on the device resumes on the CPU (same state layout).
    let mut s = model.session().unwrap();
    s.feed(&ids[..139], Logits::None).unwrap();
    let state = s.snapshot().unwrap();
    let mut resumed = cpu.resume(state).unwrap();
    let b_cpu = resumed.feed(&ids[139..], Logits::All).unwrap();
    let e = rel_err(&b_cpu, &reference_f32(name, "split.logits_b"));
    eprintln!("{name}: GPU snapshot resumed on the CPU {e:.2e}");
    assert!(e < 1e-4, "{name}: resumed on the CPU: {e:.2e}");
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gdn_tiny_on_the_gpu_matches_the_reference() {
    let _turn = serial();
    f32_checks("gdn-tiny");
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gdn_gva_on_the_gpu_matches_the_reference() {
    let _turn = serial();
    f32_checks("gdn-gva");
}

/// bf16 and f16 checkpoints stay in their dtype on the device (bf16/f16 products, f32
/// accumulation): logits within 1e-2 of the largest |logit|, against fla's f32
/// reference and against the CPU on the same rounded weights.
#[test]
#[ignore = "needs a CUDA GPU"]
fn half_precision_checkpoints_stay_within_1e_2() {
    let _turn = serial();
    for name in ["gdn-tiny", "gdn-gva"] {
        let ids = reference_ids(name, "input_ids");
        let want = reference_f32(name, "logits");
        for dtype in [DType::BF16, DType::F16] {
            let dir = converted(name, dtype);
            let model = on_gpu(dir.path());
            assert_eq!(model.device_model().unwrap().dtype(), dtype);
            let got = model.session().unwrap().feed(&ids, Logits::All).unwrap();
            let cpu = LanguageModel::load(dir.path(), Device::Cpu).unwrap();
            let cpu_logits = cpu.session().unwrap().feed(&ids, Logits::All).unwrap();
            let (e_ref, e_cpu) = (rel_err(&got, &want), rel_err(&got, &cpu_logits));
            eprintln!(
                "{name} {dtype:?}: vs fla {e_ref:.2e}, vs the CPU on the same weights {e_cpu:.2e}"
            );
            assert!(e_ref < 1e-2, "{name} {dtype:?}: vs fla {e_ref:.2e}");
            assert!(e_cpu < 1e-2, "{name} {dtype:?}: vs the CPU {e_cpu:.2e}");
        }
    }
}

/// A million tokens through the model on the device: free device memory after the
/// first windows and at the end agree (nothing grows with the context), and the
/// logits stay finite.
#[test]
#[ignore = "needs a CUDA GPU"]
fn a_million_tokens_keep_device_memory_flat() {
    let _turn = serial();
    let model = on_gpu(&fixture("gdn-tiny"));
    let cuda = model.backend().as_cuda().expect("on cuda");
    let vocab = model.config().vocab_size as u64;
    let mut s = model.session().unwrap();
    s.set_window(4096).unwrap();
    let ids: Vec<u32> = (0..1u64 << 16)
        .map(|i| ((i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 33) % vocab) as u32)
        .collect();
    s.feed(&ids, Logits::None).unwrap();
    let (free_early, total) = cuda.memory_info().unwrap();
    let total_tokens = 1_000_000u64;
    while s.tokens() < total_tokens {
        let n = ((total_tokens - s.tokens()) as usize).min(ids.len());
        s.feed(&ids[..n], Logits::None).unwrap();
    }
    let last = s.feed(&ids[..1], Logits::Last).unwrap();
    assert!(
        last.iter().all(|x| x.is_finite()),
        "non-finite logits after 1M tokens"
    );
    let (free_end, _) = cuda.memory_info().unwrap();
    eprintln!(
        "1M tokens on the GPU: free device memory {free_early} → {free_end} bytes of {total}"
    );
    assert!(
        free_end + (16 << 20) >= free_early,
        "device memory grew by {} bytes over the stream",
        free_early - free_end
    );
    assert_eq!(s.tokens(), total_tokens + 1);
}

/// The converted checkpoints the GPU tests load: a bf16 fixture loads (as bf16: the
/// device would keep that dtype) and runs on the CPU within the bf16 tolerance.
#[test]
fn a_bf16_checkpoint_keeps_its_dtype_and_stays_within_1e_2_on_the_cpu() {
    let name = "gdn-tiny";
    let dir = converted(name, DType::BF16);
    let files = ltm_engine::lm::weights::WeightFiles::open(dir.path()).unwrap();
    let (dtype, _, _) = files.raw("model.embeddings.weight").unwrap();
    assert_eq!(dtype, DType::BF16);
    let model = LanguageModel::load(dir.path(), Device::Cpu).unwrap();
    let ids = reference_ids(name, "input_ids");
    let got = model.session().unwrap().feed(&ids, Logits::All).unwrap();
    let e = rel_err(&got, &reference_f32(name, "logits"));
    eprintln!("{name} bf16 on the CPU: vs fla {e:.2e}");
    assert!(e < 1e-2 && e > 0.0, "{name} bf16 on the CPU: {e:.2e}");
}

/// Greedy and seeded sampling on the device choose the CPU's ids for the same seed and
/// consume the same draws, bringing back one id per token and no logits; a generation
/// continued on the CPU (the device's snapshot, a sampler at the device's draw count)
/// goes on as one that ran on the CPU throughout. A setting the device sampler does not
/// take (top-k 0) picks on the host, from the copied rows.
#[test]
#[ignore = "needs a CUDA GPU"]
fn device_picks_match_the_cpu_and_bring_back_one_id_per_token() {
    let _turn = serial();
    let name = "gdn-tiny";
    let model = on_gpu(&fixture(name));
    let cpu = LanguageModel::load(fixture(name), Device::Cpu).unwrap();
    let vocab = model.config().vocab_size as u64;
    let prompt = &reference_ids(name, "input_ids")[..64];
    let n = 24;
    let settings = [
        (Sampling::default(), PickPath::DeviceGreedy),
        (
            Sampling {
                temperature: 1.0,
                top_k: 1,
                top_p: 1.0,
                seed: 1,
            },
            PickPath::DeviceGreedy,
        ),
        (
            Sampling {
                temperature: 0.8,
                top_k: 40,
                top_p: 0.9,
                seed: 3,
            },
            PickPath::DeviceSampled,
        ),
        (
            Sampling {
                temperature: 1.0,
                top_k: 1024,
                top_p: 1.0,
                seed: 7,
            },
            PickPath::DeviceSampled,
        ),
        (
            Sampling {
                temperature: 1.7,
                top_k: 300,
                top_p: 0.95,
                seed: 11,
            },
            PickPath::DeviceSampled,
        ),
        (
            Sampling {
                temperature: 0.5,
                top_k: 5,
                top_p: 0.5,
                seed: 12345,
            },
            PickPath::DeviceSampled,
        ),
        (
            Sampling {
                temperature: 0.9,
                top_k: 0,
                top_p: 0.9,
                seed: 5,
            },
            PickPath::Host,
        ),
    ];
    for (cfg, path) in settings {
        // The CPU throughout: n tokens, then n more continuing the same sampler.
        let mut cpu_sampler = Sampler::new(cfg.clone()).unwrap();
        let mut cpu_s = cpu.session().unwrap();
        let want = cpu_s.generate(prompt, n, &mut cpu_sampler).unwrap();
        let cpu_draws = cpu_sampler.draws();
        let want_more = cpu_s.generate(&[], n, &mut cpu_sampler).unwrap();

        let mut sampler = Sampler::new(cfg.clone()).unwrap();
        let mut s = model.session().unwrap();
        assert_eq!(s.pick_path(&sampler), path, "{cfg:?}");
        s.feed(prompt, Logits::None).unwrap();
        let (logits0, ids0) = (logits_downloaded(), ids_downloaded());
        let got = s.generate(&[], n, &mut sampler).unwrap();
        let (logits_down, ids_down) = (logits_downloaded() - logits0, ids_downloaded() - ids0);
        eprintln!("{cfg:?}: {path:?}, {ids_down} ids and {logits_down} logits came down");
        assert_eq!(got, want, "{cfg:?}: ids differ from the CPU's");
        assert_eq!(sampler.draws(), cpu_draws, "{cfg:?}: draws differ");
        // n + 1 picks: the last chosen after the last token fed, as on the CPU.
        let picks = n as u64 + 1;
        if path == PickPath::Host {
            assert_eq!((ids_down, logits_down), (0, picks * vocab), "{cfg:?}");
        } else {
            assert_eq!((ids_down, logits_down), (picks, 0), "{cfg:?}");
        }

        // Continued on the CPU from the device's state and draw count.
        let mut resumed = cpu.resume(s.snapshot().unwrap()).unwrap();
        let mut later = Sampler::at(cfg.clone(), sampler.draws()).unwrap();
        let more = resumed.generate(&[], n, &mut later).unwrap();
        assert_eq!(more, want_more, "{cfg:?}: continued on the CPU");
    }
}

/// On the device the host keeps no weights (the matrices went up in their dtype, the
/// small vectors in f32, and both were dropped): zero host weight bytes, and the
/// device holds what the CPU model holds on the host (f32 fixture: the same bytes).
#[test]
#[ignore = "needs a CUDA GPU"]
fn a_model_on_the_device_keeps_no_weights_on_the_host() {
    let _turn = serial();
    for name in ["gdn-tiny", "gdn-gva"] {
        let model = on_gpu(&fixture(name));
        let cpu = LanguageModel::load(fixture(name), Device::Cpu).unwrap();
        assert!(model.weights().is_none(), "{name}: host weights kept");
        assert_eq!(model.host_weight_bytes(), 0, "{name}");
        assert_eq!(model.fingerprint(), cpu.fingerprint(), "{name}");
        let dev = model.device_model().unwrap();
        eprintln!(
            "{name}: {} weight bytes on the device, {} on the host for the CPU",
            dev.weight_bytes(),
            cpu.host_weight_bytes()
        );
        if dev.dtype() == DType::F32 {
            assert_eq!(dev.weight_bytes(), cpu.host_weight_bytes(), "{name}");
        } else {
            assert!(dev.weight_bytes() < cpu.host_weight_bytes(), "{name}");
        }
    }
    // A random model built on the device also drops its host copy.
    let c = LanguageModel::load(fixture("gdn-tiny"), Device::Cpu)
        .unwrap()
        .config()
        .clone();
    let random = LanguageModel::random_in(c, 3, Device::Cuda(0), DType::BF16).unwrap();
    assert!(random.device_model().is_some());
    assert_eq!(random.host_weight_bytes(), 0);
}

/// fla-hub's 1.3B head shape (K = 256, V = 512: the wide scan kernels) in a small random
/// model: logits on the GPU within 1e-4 of the largest |logit| of the CPU's, from the
/// same seed, over a prompt of several chunks in windows of 100.
#[test]
#[ignore = "needs a CUDA GPU"]
fn wide_heads_on_the_gpu_match_the_cpu() {
    let _turn = serial();
    let config = ltm_engine::lm::GdnConfig::fla_defaults(256, 2, 2, 256, 1000).unwrap();
    let gpu = LanguageModel::random(config.clone(), 7, Device::Cuda(0))
        .unwrap_or_else(|e| panic!("this GPU test needs a usable CUDA device: {e}"));
    assert!(
        gpu.device_model().is_some(),
        "the K = 256 model does not run on the GPU"
    );
    let cpu = LanguageModel::random(config, 7, Device::Cpu).unwrap();
    let ids: Vec<u32> = (0..300u32).map(|i| (i * 7919 + 13) % 1000).collect();
    let mut g = gpu.session().unwrap();
    g.set_window(100).unwrap();
    let got = g.feed(&ids, Logits::All).unwrap().to_vec();
    let want = cpu
        .session()
        .unwrap()
        .feed(&ids, Logits::All)
        .unwrap()
        .to_vec();
    let e = rel_err(&got, &want);
    eprintln!("K=256 V=512 random model on the GPU: logits error {e:.2e} vs the CPU");
    assert!(e < 1e-4, "K = 256 logits error {e:.2e}");
}
