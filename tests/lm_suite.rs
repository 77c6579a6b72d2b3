//! One table of language-model cases, run on every device: the CPU on each instruction
//! set of its memory kernels (AVX-512, AVX2+FMA, portable) and CUDA. The `suite!` macro
//! at the end writes one `#[test]` per case and device, as `tests/backend_suite.rs`
//! does for the memory alone, so a case added here runs everywhere the forward does.
//!
//! An instruction set this CPU lacks prints `skipped: …` on stderr instead of passing on
//! another set. The CUDA tests are `#[ignore]`d: `scripts/gpu-check.sh` runs them, and
//! without a usable GPU each one fails.
//!
//! Models come from the fixtures, from `config.json` files written here, and from a
//! description made in code (`tests/common/lm_desc.rs`), so the forward is checked
//! apart from the readers too.

mod common;

use std::io::Write;
use std::path::Path;

use common::lm::{fixture, rel_err, Reference};
use common::lm_configs::{check_with, every_configuration, Wt};
use common::lm_desc::{described, reference_over_weights};
use ltm_engine::backend::cpu::Isa;
use ltm_engine::lm::{LanguageModel, Logits, Sampler, Sampling};
use ltm_engine::{Backend, CpuBackend};

#[derive(Clone, Copy, Debug)]
enum Target {
    Cpu(Isa),
    #[cfg(feature = "cuda")]
    Cuda,
}

/// A device to load models on, and how close it must come.
struct Subject {
    target: Target,
    /// f32 weights against flash-linear-attention's or the float64 reference.
    tol: f64,
    /// f16/bf16 weights against the float64 reference of the same rounded weights: the
    /// CPU runs them in f32, CUDA keeps them (and each product's input) in their dtype.
    half_tol: f64,
}

impl Subject {
    fn backend(&self) -> Box<dyn Backend> {
        match self.target {
            Target::Cpu(isa) => Box::new(CpuBackend::new().with_isa(isa)),
            #[cfg(feature = "cuda")]
            Target::Cuda => Box::new(
                ltm_engine::backend::cuda::CudaBackend::new(0)
                    .unwrap_or_else(|e| panic!("this test needs a usable CUDA device: {e}"))
                    .with_checks(true),
            ),
        }
    }

    fn load(&self, dir: &Path) -> LanguageModel {
        let model = LanguageModel::load_on(dir, self.backend()).unwrap();
        #[cfg(feature = "cuda")]
        if let Target::Cuda = self.target {
            assert!(model.device_model().is_some(), "not on the device");
        }
        model
    }
}

fn cpu_has(isa: Isa) -> bool {
    match isa {
        Isa::Portable => true,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => is_x86_feature_detected!("avx512f"),
        #[cfg(not(target_arch = "x86_64"))]
        _ => false,
    }
}

// Without the cuda feature the CPU is the only target.
#[allow(irrefutable_let_patterns)]
fn run(target: Target, case: fn(&Subject)) {
    if let Target::Cpu(isa) = target {
        // `with_isa` keeps the detected set when the asked one is unavailable.
        if CpuBackend::new().with_isa(isa).isa() != isa {
            let why = if cpu_has(isa) {
                "LTM_CPU_ISA rules it out"
            } else {
                "this CPU lacks it"
            };
            let _ = writeln!(
                std::io::stderr(),
                "lm_suite {target:?}: skipped: {why}; this test ran nothing"
            );
            return;
        }
    }
    let subject = match target {
        Target::Cpu(_) => Subject {
            target,
            tol: 1e-4,
            half_tol: 1e-4,
        },
        #[cfg(feature = "cuda")]
        Target::Cuda => Subject {
            target,
            tol: 1e-4,
            half_tol: 1e-2,
        },
    };
    case(&subject);
}

// ---- the cases ----------------------------------------------------------------------------

/// Both fixtures against flash-linear-attention: logits of one call, of two calls and of
/// windows of 37, the prompt's perplexity through the scored path, 40 greedy tokens.
fn fixtures_match_flash_linear_attention(s: &Subject) {
    for name in ["gdn-tiny", "gdn-gva"] {
        let model = s.load(&fixture(name));
        let r = Reference::load(name);
        let ids = r.ids("input_ids");
        let want = r.f32("logits");

        let mut one = model.session().unwrap();
        let e = rel_err(&one.feed(&ids, Logits::All).unwrap(), &want);
        assert!(e < s.tol, "{name}: logits error {e:.2e}");

        let mut split = model.session().unwrap();
        let a = split.feed(&ids[..139], Logits::All).unwrap();
        let b = split.feed(&ids[139..], Logits::All).unwrap();
        let e = rel_err(&a, &r.f32("split.logits_a")).max(rel_err(&b, &r.f32("split.logits_b")));
        assert!(e < s.tol, "{name}: two calls: {e:.2e}");

        let mut windows = model.session().unwrap();
        windows.set_window(37).unwrap();
        let e = rel_err(&windows.feed(&ids, Logits::All).unwrap(), &want);
        assert!(e < s.tol, "{name}: windows of 37: {e:.2e}");

        let gen: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixture(name).join("generation.json")).unwrap(),
        )
        .unwrap();
        let mut nll = Vec::new();
        model
            .session()
            .unwrap()
            .feed_scored(&ids, &mut nll)
            .unwrap();
        assert_eq!(nll.len(), ids.len() - 1);
        let mean = nll.iter().sum::<f64>() / nll.len() as f64;
        let want_nll = gen["prompt_mean_ce_nats"].as_f64().unwrap();
        assert!(
            ((mean - want_nll) / want_nll).abs() < s.tol,
            "{name}: mean NLL {mean} vs {want_nll}"
        );

        let mut sampler = Sampler::new(Sampling::default()).unwrap();
        let got = one.generate(&[], 40, &mut sampler).unwrap();
        assert_eq!(got, r.ids("gen.ids"), "{name}: greedy ids");
    }
}

/// A snapshot taken mid-stream and resumed in a new session continues as the stream
/// would have: the same logits, the same state.
fn a_snapshot_resumes_where_it_stopped(s: &Subject) {
    let model = s.load(&fixture("gdn-gva"));
    let ids = Reference::load("gdn-gva").ids("input_ids");
    let mut whole = model.session().unwrap();
    whole.feed(&ids[..120], Logits::None).unwrap();
    let saved = whole.snapshot().unwrap();
    let want = whole.feed(&ids[120..], Logits::All).unwrap();
    let mut resumed = model.resume(saved).unwrap();
    assert_eq!(resumed.tokens(), 120);
    let got = resumed.feed(&ids[120..], Logits::All).unwrap();
    let e = rel_err(&got, &want);
    assert!(e < 1e-6, "resumed: {e:.2e}");
    let (a, b) = (whole.into_state().unwrap(), resumed.into_state().unwrap());
    assert_eq!(a.tokens, b.tokens);
    for (x, y) in a.layers.iter().zip(&b.layers) {
        assert!(rel_err(y.memory.values(), x.memory.values()) < 1e-6);
        assert!(rel_err(&y.conv, &x.conv) < 1e-6);
    }
}

/// The configurations no fixture has (`tests/common/lm_configs.rs`: tied head, no gate,
/// β up to 2, grouped value heads, conv width 3, a sigmoid gate, f16 and bf16 weights)
/// against the float64 reference, prefill then decode.
fn configurations_match_a_float64_reference(s: &Subject) {
    every_configuration(&|config, wt, label| {
        let tol = if wt == Wt::F32 { s.tol } else { s.half_tol };
        check_with(config, wt, label, &|dir| s.load(dir), tol);
    });
}

/// A model described in code (`tests/common/lm_desc.rs`: no reader, no `config.json`)
/// with random weights, against a float64 forward over the same weights (those the CPU
/// holds for the same description and seed): prefill, then decode.
fn a_model_described_in_code_matches_a_float64_forward(s: &Subject) {
    let desc = described();
    let model = LanguageModel::random_desc(&desc, 7, s.backend()).unwrap();
    assert_eq!(model.desc(), &desc);
    let host = LanguageModel::random_desc(&desc, 7, Box::new(CpuBackend::new())).unwrap();
    let ids: Vec<u32> = (0..60u32).map(|i| (i * 37 + 5) % 97).collect();
    let want = reference_over_weights(&desc, host.weights().unwrap(), &ids);
    let vocab = desc.vocab_size;
    let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let err = |got: &[f32], want: &[f64]| {
        got.iter()
            .zip(want)
            .map(|(g, w)| {
                assert!(g.is_finite(), "non-finite logit");
                (*g as f64 - w).abs()
            })
            .fold(0.0f64, f64::max)
            / scale
    };
    let mut session = model.session().unwrap();
    let got = session.feed(&ids[..45], Logits::All).unwrap();
    let e = err(&got, &want[..45 * vocab]);
    assert!(e < s.tol, "prefill: {e:.2e}");
    for (t, &id) in ids.iter().enumerate().skip(45) {
        let got = session.step(id).unwrap().to_vec();
        let e = err(&got, &want[t * vocab..(t + 1) * vocab]);
        assert!(e < s.tol, "decode token {t}: {e:.2e}");
    }
}

// ---- the instantiations ------------------------------------------------------------------

common::suite::device_suite!(
    fixtures_match_flash_linear_attention,
    a_snapshot_resumes_where_it_stopped,
    configurations_match_a_float64_reference,
    a_model_described_in_code_matches_a_float64_forward,
);
