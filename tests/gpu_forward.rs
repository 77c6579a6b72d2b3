//! What only the CUDA backend has, against the CPU backend on fresh random inputs: each
//! stage alone, the FAST bf16 scan, device windows, segment counts, a million tokens,
//! the kernels' shape limits. The cases every backend shares (the forward against the
//! float64 recurrence at every shape, split calls, sessions, decode, one-hot writes,
//! NaN, poisoned outputs) are the CUDA instantiation of `tests/backend_suite.rs`.
//! Every test needs a GPU and is `#[ignore]`d: run them with
//! `cargo test --release --test gpu_forward -- --ignored` (or the bundle's
//! `scripts/gpu-check.sh`). Without a usable GPU each one fails, it never passes.
//!
//! Every GPU run poisons its device outputs with NaN first and checks the guard bytes
//! around every device buffer after (`with_checks`); host outputs sit between guard
//! values that must come back untouched, and start as NaN.

mod common;
#[path = "common/stages.rs"]
mod stages;

use common::*;
use ltm_engine::backend::cuda::{CudaBackend, PrepOutputs};
use ltm_engine::{Backend, CpuBackend, Data, ForwardInputs, MemoryConfig, State};
use stages::chunk_prep_reference;

/// f32 inputs, and any inputs against the CPU on the same inputs.
const F32_TOL: f64 = 1e-4;
/// bf16 inputs against the CPU on the f32 values they were rounded from.
const BF16_TOL: f64 = 1e-2;
const GUARD: usize = 1024;
const GUARD_BITS: u32 = 0x7FA5_A5A5; // a NaN no computation produces

fn gpu() -> CudaBackend {
    match CudaBackend::new(0) {
        Ok(b) => b.with_checks(true),
        Err(e) => panic!("this GPU test needs a usable CUDA device: {e}"),
    }
}

/// The GPU forward into a NaN-poisoned host buffer with guards on both sides.
fn gpu_forward(
    backend: &CudaBackend,
    config: &MemoryConfig,
    inputs: &ForwardInputs<'_>,
    state: &mut State,
) -> Vec<f32> {
    let n = inputs.output_len(config);
    let mut buf = vec![f32::from_bits(GUARD_BITS); n + 2 * GUARD];
    buf[GUARD..GUARD + n].fill(f32::NAN);
    backend
        .forward_into(config, inputs, state, &mut buf[GUARD..GUARD + n])
        .unwrap_or_else(|e| panic!("GPU forward failed: {e}"));
    let intact = |s: &[f32]| s.iter().all(|x| x.to_bits() == GUARD_BITS);
    assert!(
        intact(&buf[..GUARD]) && intact(&buf[GUARD + n..]),
        "the GPU forward wrote outside its output"
    );
    buf[GUARD..GUARD + n].to_vec()
}

fn as_f64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// The CPU backend's outputs and final state from `initial`.
fn cpu_reference(
    config: &MemoryConfig,
    inputs: &ForwardInputs<'_>,
    initial: &State,
) -> (Vec<f32>, State) {
    let mut state = initial.clone();
    let o = CpuBackend::new()
        .forward(config, inputs, &mut state)
        .unwrap();
    (o, state)
}

/// GPU vs a CPU reference computed once by [`cpu_reference`].
fn check_against(
    name: &str,
    backend: &CudaBackend,
    config: &MemoryConfig,
    inputs: &ForwardInputs<'_>,
    initial: &State,
    tol: f64,
    (cpu_o, cpu_state): &(Vec<f32>, State),
) -> (Vec<f32>, State) {
    let mut state = initial.clone();
    let o = gpu_forward(backend, config, inputs, &mut state);
    let eo = normalised_error(&o, &as_f64(cpu_o));
    let es = normalised_error(state.values(), &as_f64(cpu_state.values()));
    eprintln!(
        "{name}: B={} T={} H={} K={} V={}: output {eo:.2e}, state {es:.2e}",
        inputs.batch, inputs.tokens, config.heads, config.key_dim, config.value_dim
    );
    assert!(
        eo < tol && es < tol,
        "{name}: output error {eo:e}, state error {es:e} (tolerance {tol:e})"
    );
    assert_eq!(state.tokens_seen(), cpu_state.tokens_seen());
    (o, state)
}

// ---- stage 1: chunk preparation -------------------------------------------------------

fn check_prep(name: &str, got: &PrepOutputs, config: &MemoryConfig, inputs: &ForwardInputs<'_>) {
    let want = chunk_prep_reference(config, inputs);
    assert_eq!(
        (got.kp, got.num_chunks),
        (want.kp, want.num_chunks),
        "{name}: layout"
    );
    for (tensor, g, w) in [
        ("W", &got.w, &want.w),
        ("U", &got.u, &want.u),
        ("P", &got.p, &want.p),
        ("gamma", &got.gamma, &want.gamma),
    ] {
        let e = normalised_error(g, w);
        eprintln!("{name}: stage 1 {tensor} error {e:.2e}");
        assert!(e < F32_TOL, "{name}: stage 1 {tensor} error {e:e}");
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn chunk_prep_matches_the_float64_definition() {
    let backend = gpu();
    let mut rng = rng("prep");
    for (h, k, v, tokens, gates) in [
        (1, 7, 5, 70, Gates::Typical),
        (2, 64, 100, 150, Gates::Typical),
        (1, 128, 128, 200, Gates::StrongDecay),
        (3, 32, 48, 65, Gates::BetaNearOne),
        (2, 33, 16, 1, Gates::NoDecay),
        (1, 256, 64, 130, Gates::Typical),
    ] {
        let config = MemoryConfig::new(h, k, v);
        let x = random_inputs(&mut rng, &config, 2, tokens, gates);
        let got = backend.chunk_prep(&config, &x.inputs()).unwrap();
        check_prep(
            &format!("prep {h}x{k}x{v} T={tokens} {gates:?}"),
            &got,
            &config,
            &x.inputs(),
        );
        // bf16 q, k, v take the one-MMA path for exact operands.
        let (q, kk, vv) = (to_bf16(&x.q), to_bf16(&x.k), to_bf16(&x.v));
        let bf = ForwardInputs {
            q: Data::BF16(&q),
            k: Data::BF16(&kk),
            v: Data::BF16(&vv),
            ..x.inputs()
        };
        let got = backend.chunk_prep(&config, &bf).unwrap();
        check_prep(
            &format!("prep bf16 {h}x{k}x{v} T={tokens}"),
            &got,
            &config,
            &bf,
        );
    }
}

// ---- stage 2: the scan, from the float64 stage 1 ---------------------------------------

#[test]
#[ignore = "needs a CUDA GPU"]
fn scan_from_reference_stage_one_matches_cpu_forward() {
    let backend = gpu();
    let mut rng = rng("scan");
    for (h, k, v, tokens, segments) in [
        (2, 32, 48, 300, 1),
        (1, 128, 128, 1000, 1),
        (1, 128, 128, 1000, 4),
        (3, 7, 5, 129, 2),
        (1, 64, 100, 2000, 7),
        (2, 256, 80, 300, 1),
        (1, 200, 512, 700, 3),
    ] {
        let config = MemoryConfig::new(h, k, v);
        let x = random_inputs(&mut rng, &config, 2, tokens, Gates::Typical);
        let initial = random_state(&mut rng, &config, 2);
        let r = chunk_prep_reference(&config, &x.inputs());
        let to32 = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<_>>();
        let prep = PrepOutputs {
            kp: r.kp,
            num_chunks: r.num_chunks,
            w: to32(&r.w),
            u: to32(&r.u),
            p: to32(&r.p),
            gamma: to32(&r.gamma),
        };
        let mut state = initial.clone();
        let o = backend
            .scan_prepared(&config, &x.inputs(), &prep, &mut state, segments)
            .unwrap();
        let mut cpu_state = initial.clone();
        let cpu_o = CpuBackend::new()
            .forward(&config, &x.inputs(), &mut cpu_state)
            .unwrap();
        let eo = normalised_error(&o, &as_f64(&cpu_o));
        let es = normalised_error(state.values(), &as_f64(cpu_state.values()));
        eprintln!("scan {h}x{k}x{v} T={tokens} G={segments}: output {eo:.2e}, state {es:.2e}");
        assert!(
            eo < F32_TOL && es < F32_TOL,
            "scan G={segments}: {eo:e} {es:e}"
        );
    }
}

/// The FAST bf16 scan (every MMA operand in bf16) against the CPU on the same bf16
/// inputs: within the bf16 tolerance, plain and segmented, over many chunks, and not
/// bit-identical to the exact kernels (so the variant really ran).
#[test]
#[ignore = "needs a CUDA GPU"]
fn bf16_fast_stay_within_the_bf16_tolerance() {
    let config = MemoryConfig::new(4, 128, 128);
    let mut rng = rng("bf16 products");
    let f = random_inputs(&mut rng, &config, 1, 20_000, Gates::Typical);
    let initial = random_state(&mut rng, &config, 1);
    let (q, k, v) = (to_bf16(&f.q), to_bf16(&f.k), to_bf16(&f.v));
    let bf = ForwardInputs {
        q: Data::BF16(&q),
        k: Data::BF16(&k),
        v: Data::BF16(&v),
        ..f.inputs()
    };
    let reference = cpu_reference(&config, &bf, &initial);
    let (exact, _) = check_against(
        "bf16 exact",
        &gpu(),
        &config,
        &bf,
        &initial,
        F32_TOL,
        &reference,
    );
    for segments in [1, 5] {
        let fast = gpu().with_bf16_fast(true).with_segments(segments);
        let name = format!("bf16 products, {segments} segment(s)");
        let (o, _) = check_against(&name, &fast, &config, &bf, &initial, BF16_TOL, &reference);
        assert_ne!(o, exact, "{name}: identical to the exact kernels");
    }
}

// ---- device windows and segments -----------------------------------------------------

#[test]
#[ignore = "needs a CUDA GPU"]
fn windows_are_bit_identical_to_one_window() {
    let config = MemoryConfig::new(2, 64, 48);
    let mut rng = rng("windows");
    let x = random_inputs(&mut rng, &config, 2, 1000, Gates::Typical);
    let initial = random_state(&mut rng, &config, 2);
    let run = |backend: CudaBackend| {
        let mut s = initial.clone();
        let o = gpu_forward(&backend, &config, &x.inputs(), &mut s);
        (o, s)
    };
    let (o1, s1) = run(gpu().with_segments(1));
    for window in [64, 192, 640] {
        let (o, s) = run(gpu().with_segments(1).with_window_tokens(window));
        assert_eq!(o, o1, "outputs differ with windows of {window} tokens");
        assert_eq!(
            s.values(),
            s1.values(),
            "state differs with windows of {window}"
        );
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn segmented_scan_matches_the_plain_scan_and_cpu() {
    // One sequence, one head: the case the segment scan exists for.
    let config = MemoryConfig::new(1, 128, 128);
    let mut rng = rng("segments");
    let x = random_inputs(&mut rng, &config, 1, 5000, Gates::Typical);
    let initial = random_state(&mut rng, &config, 1);
    let reference = cpu_reference(&config, &x.inputs(), &initial);
    let (plain_o, plain_s) = check_against(
        "segments=1",
        &gpu().with_segments(1),
        &config,
        &x.inputs(),
        &initial,
        F32_TOL,
        &reference,
    );
    for g in [2, 5, 13, 79] {
        let (o, s) = check_against(
            &format!("segments={g}"),
            &gpu().with_segments(g),
            &config,
            &x.inputs(),
            &initial,
            F32_TOL,
            &reference,
        );
        let eo = normalised_error(&o, &as_f64(&plain_o));
        let es = normalised_error(s.values(), &as_f64(plain_s.values()));
        assert!(
            eo < 1e-5 && es < 1e-5,
            "segments={g} vs plain: {eo:e} {es:e}"
        );
    }
}

// ---- short windows: token by token (kernels/step.cu) ------------------------------------

/// Windows of at most 16 tokens run token by token on the state (`ltm_step_*`): from a
/// random state, 1, 3 and 16 tokens (16: two batches of staged inputs) against the CPU
/// on the same inputs, f32 and bf16, V not a multiple of the 32-column slice, two
/// sequences; 17 tokens (the chunked path) beside them. Only f32 sums in both: within
/// 1e-5 of the largest value.
#[test]
#[ignore = "needs a CUDA GPU"]
fn short_windows_match_the_cpu_token_by_token() {
    let backend = gpu();
    let mut rng = rng("step");
    for (h, k, v) in [(3, 7, 5), (2, 64, 100), (1, 128, 128)] {
        let config = MemoryConfig::new(h, k, v);
        for tokens in [1, 3, 16, 17] {
            let x = random_inputs(&mut rng, &config, 2, tokens, Gates::Typical);
            let initial = random_state(&mut rng, &config, 2);
            let tol = if tokens <= 16 { 1e-5 } else { F32_TOL };
            let reference = cpu_reference(&config, &x.inputs(), &initial);
            let name = format!("step f32 T={tokens}");
            check_against(
                &name,
                &backend,
                &config,
                &x.inputs(),
                &initial,
                tol,
                &reference,
            );
            let (q, kk, vv) = (to_bf16(&x.q), to_bf16(&x.k), to_bf16(&x.v));
            let bf = ForwardInputs {
                q: Data::BF16(&q),
                k: Data::BF16(&kk),
                v: Data::BF16(&vv),
                ..x.inputs()
            };
            let reference = cpu_reference(&config, &bf, &initial);
            let name = format!("step bf16 T={tokens}");
            check_against(&name, &backend, &config, &bf, &initial, tol, &reference);
        }
    }
}

/// Decode as a language model runs it: a session on the device takes a 100-token
/// prefill (chunked), then 20 one-token windows (token by token on the resident state),
/// beside a CPU session given the same windows; every step's outputs and the final
/// state agree.
#[test]
#[ignore = "needs a CUDA GPU"]
fn decode_steps_on_a_device_session_follow_the_cpu() {
    let backend = gpu();
    let cpu = CpuBackend::new();
    let config = MemoryConfig::new(4, 64, 48);
    let mut rng = rng("decode session");
    let initial = random_state(&mut rng, &config, 2);
    let x = random_inputs(&mut rng, &config, 2, 120, Gates::Typical);
    let mut on_gpu = backend.open(&config, initial.clone()).unwrap();
    let mut on_cpu = cpu.open(&config, initial).unwrap();
    let mut spans = vec![(0, 100)];
    spans.extend((100..120).map(|t| (t, t + 1)));
    let mut worst = 0.0f64;
    for (t0, t1) in spans {
        let w = x.slice(&config, t0, t1);
        let n = w.inputs().output_len(&config);
        let (mut og, mut oc) = (vec![f32::NAN; n], vec![f32::NAN; n]);
        on_gpu.decode(&w.inputs(), &mut og).unwrap();
        on_cpu.decode(&w.inputs(), &mut oc).unwrap();
        let e = normalised_error(&og, &as_f64(&oc));
        assert!(e < F32_TOL, "tokens {t0}..{t1}: output error {e:e}");
        worst = worst.max(e);
    }
    let (sg, sc) = (on_gpu.into_state().unwrap(), on_cpu.into_state().unwrap());
    let es = normalised_error(sg.values(), &as_f64(sc.values()));
    eprintln!("decode session: outputs {worst:.2e}, final state {es:.2e}");
    assert!(es < F32_TOL, "final state error {es:e}");
    assert_eq!(sg.tokens_seen(), 120);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn a_million_tokens() {
    let config = MemoryConfig::new(2, 64, 64);
    let mut rng = rng("million");
    let x = random_inputs(&mut rng, &config, 1, 1_000_000, Gates::Typical);
    let initial = random_state(&mut rng, &config, 1);
    let backend = gpu(); // first: without a GPU, fail before the CPU reference
    let reference = cpu_reference(&config, &x.inputs(), &initial);
    let (o, s) = check_against(
        "T=1e6",
        &backend,
        &config,
        &x.inputs(),
        &initial,
        F32_TOL,
        &reference,
    );
    // Windows of 2^16 tokens with the segment scan forced: the same within rounding.
    let backend = gpu().with_window_tokens(1 << 16).with_segments(8);
    let (o2, s2) = check_against(
        "T=1e6 windows",
        &backend,
        &config,
        &x.inputs(),
        &initial,
        F32_TOL,
        &reference,
    );
    let eo = normalised_error(&o2, &as_f64(&o));
    let es = normalised_error(s2.values(), &as_f64(s.values()));
    assert!(eo < 1e-5 && es < 1e-5, "windowed vs whole: {eo:e} {es:e}");
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn unsupported_shapes_are_errors() {
    let config = MemoryConfig::new(1, 272, 16);
    let mut rng = rng("kmax");
    let x = random_inputs(&mut rng, &config, 1, 10, Gates::Typical);
    let mut state = State::zeros(&config, 1);
    let err = gpu()
        .forward(&config, &x.inputs(), &mut state)
        .expect_err("key_dim 272 is beyond the kernels");
    assert!(err.to_string().contains("key_dim"), "{err}");
}

/// fla-hub's 1.3B head (K = 256, V = 512) through the wide kernels: one long sequence,
/// plain and segmented, against the CPU.
#[test]
#[ignore = "needs a CUDA GPU"]
fn wide_keys_match_the_cpu_plain_and_segmented() {
    let config = MemoryConfig::new(2, 256, 512);
    let mut rng = rng("wide");
    let x = random_inputs(&mut rng, &config, 1, 3000, Gates::Typical);
    let initial = random_state(&mut rng, &config, 1);
    let _first = gpu(); // without a GPU, fail before the CPU reference
    let reference = cpu_reference(&config, &x.inputs(), &initial);
    for g in [1, 6] {
        check_against(
            &format!("K=256 V=512 segments={g}"),
            &gpu().with_segments(g),
            &config,
            &x.inputs(),
            &initial,
            F32_TOL,
            &reference,
        );
    }
}
