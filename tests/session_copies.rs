//! A memory session keeps its state where the backend computes: streaming windows
//! through it makes no whole-state copy to the host; only snapshots and hand-backs do.
//! (Its own test binary: the counter is process-wide, and the tests here take turns.)
//! On CUDA the state lives in device memory: the upload at open, snapshots and the
//! hand-back are the only whole-state copies (the ignored test, run by
//! `scripts/gpu-check.sh`).

use std::sync::Mutex;

#[cfg(feature = "cuda")]
use ltm_engine::backend::cuda::CudaBackend;
use ltm_engine::backend::session::state_copies;
use ltm_engine::lm::{LanguageModel, Logits};
use ltm_engine::{Backend, CpuBackend, ForwardInputs, MemoryConfig, State};

/// The copy counter is shared by the whole process: one test counts at a time.
static COUNTING: Mutex<()> = Mutex::new(());

#[test]
fn streaming_copies_no_state_and_snapshots_count() {
    let _turn = COUNTING.lock().unwrap_or_else(|p| p.into_inner());
    let config = MemoryConfig::new(2, 16, 16);
    let backend = CpuBackend::new();
    let mut session = backend.open(&config, State::zeros(&config, 1)).unwrap();
    let tokens = 100;
    let n = tokens * 2;
    let (q, k, v) = (
        vec![0.1f32; n * 16],
        vec![0.2f32; n * 16],
        vec![1.0f32; n * 16],
    );
    let (beta, g) = (vec![0.5f32; n], vec![-0.1f32; n]);
    let inputs = ForwardInputs {
        batch: 1,
        tokens,
        q: (&q).into(),
        k: (&k).into(),
        v: (&v).into(),
        beta: (&beta).into(),
        g: (&g).into(),
    };
    let mut out = vec![0.0f32; n * 16];
    let before = state_copies();
    for _ in 0..20 {
        session.feed(&inputs, &mut out).unwrap();
    }
    assert_eq!(state_copies(), before, "a window copied the state");
    let snap = session.snapshot().unwrap();
    assert_eq!(snap.tokens_seen(), 2000);
    assert_eq!(state_copies(), before + 1);
    let end = session.into_state().unwrap();
    assert_eq!(end, snap);
    assert_eq!(state_copies(), before + 2);

    // A language model holds one session per layer: a long feed copies nothing, a
    // snapshot copies each layer once.
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gdn-gva");
    let model = LanguageModel::load(dir, ltm_engine::Device::Cpu).unwrap();
    let mut s = model.session().unwrap();
    s.set_window(64).unwrap();
    let ids: Vec<u32> = (0..1000).map(|i| (i * 7 % 4000) as u32).collect();
    let before = state_copies();
    s.feed(&ids, Logits::None).unwrap();
    assert_eq!(state_copies(), before);
    s.snapshot().unwrap();
    assert_eq!(state_copies(), before + model.config().layers as u64);
}

/// Deterministic, varied inputs (a SplitMix-style hash of the index), so that the
/// outputs depend on every window.
#[cfg(feature = "cuda")]
fn pseudo(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    (0..n as u64)
        .map(|i| {
            let mut z = (i ^ (seed << 32)).wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            lo + (hi - lo) * ((z >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect()
}

#[cfg(feature = "cuda")]
fn max_rel_err(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(1e-30f64, |m, x| m.max((*x as f64).abs()));
    got.iter()
        .zip(want)
        .map(|(g, w)| {
            let e = (*g as f64 - *w as f64).abs();
            if e.is_nan() {
                f64::INFINITY
            } else {
                e
            }
        })
        .fold(0.0, f64::max)
        / scale
}

#[test]
#[ignore = "needs a CUDA GPU"]
#[cfg(feature = "cuda")]
fn cuda_session_keeps_the_state_on_the_device() {
    let _turn = COUNTING.lock().unwrap_or_else(|p| p.into_inner());
    let config = MemoryConfig::new(4, 64, 64);
    let gpu = CudaBackend::new(0)
        .unwrap_or_else(|e| panic!("this test needs a usable CUDA device: {e}"))
        .with_checks(true);
    let cpu = CpuBackend::new();
    let (batch, tokens, windows) = (2, 200, 12);
    let n = batch * tokens * config.heads;
    let start = State::from_values(
        &config,
        batch,
        pseudo(batch * config.state_len(), 99, -0.1, 0.1),
    )
    .unwrap();
    let before = state_copies();
    let mut on_gpu = gpu.open(&config, start.clone()).unwrap();
    assert_eq!(state_copies(), before + 1, "open uploads the state once");
    let mut on_cpu = cpu.open(&config, start).unwrap();
    let mut worst: f64 = 0.0;
    let mut snap = None;
    for w in 0..windows as u64 {
        let (q, k, v) = (
            pseudo(n * 64, 3 * w, -1.0, 1.0),
            pseudo(n * 64, 3 * w + 1, -1.0, 1.0),
            pseudo(n * 64, 3 * w + 2, -1.0, 1.0),
        );
        let (beta, g) = (
            pseudo(n, 1000 + w, 0.1, 0.9),
            pseudo(n, 2000 + w, -0.2, -0.01),
        );
        let inputs = ForwardInputs {
            batch,
            tokens,
            q: (&q).into(),
            k: (&k).into(),
            v: (&v).into(),
            beta: (&beta).into(),
            g: (&g).into(),
        };
        let mut out_gpu = vec![f32::NAN; n * 64];
        let mut out_cpu = vec![f32::NAN; n * 64];
        let copies = state_copies();
        on_gpu.feed(&inputs, &mut out_gpu).unwrap();
        assert_eq!(state_copies(), copies, "window {w} copied the state");
        on_cpu.feed(&inputs, &mut out_cpu).unwrap();
        worst = worst.max(max_rel_err(&out_gpu, &out_cpu));
        if w == windows as u64 / 2 {
            snap = Some((on_gpu.snapshot().unwrap(), on_cpu.snapshot().unwrap()));
        }
    }
    eprintln!("session on the device: outputs vs the CPU, error {worst:.2e} of the largest");
    // The backend suite's bound for CUDA against a reference (tests/backend_suite.rs).
    assert!(worst < 1e-4, "outputs differ from the CPU's: {worst:.2e}");
    let (snap_gpu, snap_cpu) = snap.unwrap();
    assert_eq!(snap_gpu.tokens_seen(), snap_cpu.tokens_seen());
    let snap_err = max_rel_err(snap_gpu.values(), snap_cpu.values());
    assert!(snap_err < 1e-4, "snapshot differs: {snap_err:.2e}");
    let copies = state_copies();
    let end_gpu = on_gpu.into_state().unwrap();
    let end_cpu = on_cpu.into_state().unwrap();
    // The CPU's hand-back counts as one too.
    assert_eq!(state_copies(), copies + 2);
    assert_eq!(end_gpu.tokens_seen(), (windows * tokens) as u64);
    let end_err = max_rel_err(end_gpu.values(), end_cpu.values());
    eprintln!("session on the device: final state vs the CPU, error {end_err:.2e}");
    assert!(end_err < 1e-4, "final state differs: {end_err:.2e}");
    // open + the midway snapshot + the hand-back (and the CPU's two): nothing per window.
    assert_eq!(state_copies(), before + 1 + 2 + 2);
}
