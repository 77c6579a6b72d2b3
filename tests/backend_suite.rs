//! One table of cases, run on every backend: the CPU on each instruction set
//! (AVX-512, AVX2+FMA, portable) and CUDA. The `suite!` macro at the end writes one
//! `#[test]` per case and backend, so a case added to the table runs everywhere.
//!
//! An instruction set this CPU lacks prints `skipped: …` on stderr (outside the test
//! harness's capture, so it shows in a plain `cargo test`) instead of passing silently
//! on another set. The CUDA tests are `#[ignore]`d: `cargo test --release --test
//! backend_suite -- --ignored` (or `scripts/gpu-check.sh`) runs them, and without a
//! usable GPU each one fails.
//!
//! Every output buffer a case hands a backend starts as NaN and sits between guard
//! values that must come back untouched; a value left unwritten can never pass, since
//! a NaN makes any error infinite.

mod common;

use std::collections::HashMap;
use std::io::Write;

use common::*;
use ltm_engine::backend::cpu::Isa;
#[cfg(feature = "cuda")]
use ltm_engine::backend::cuda::CudaBackend;
use ltm_engine::backend::{sparse_backend_for, SparseBackend, SparseKeys, SparseWrites};
use ltm_engine::reference::recurrent_forward;
use ltm_engine::{
    Backend, CpuBackend, Data, Device, Error, ForwardInputs, MemoryConfig, Result, State,
};
use rand::seq::SliceRandom;
use rand::Rng;

// ---- the backends -----------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Target {
    Cpu(Isa),
    #[cfg(feature = "cuda")]
    Cuda,
}

/// How close a backend must come. The CPU's bounds are those its own tests always had;
/// CUDA's are those `tests/gpu_forward.rs` held it to against the CPU.
struct Tolerances {
    /// Outputs and final states against the float64 recurrence.
    reference: f64,
    /// Calls or windows that move chunk boundaries, against one call: only rounding
    /// differs.
    split: f64,
    /// A one-hot write against the value written, per entry, relative to max(1, |v|).
    row: f64,
    /// A one-hot read against scale × the value just written, per entry.
    read: f64,
}

/// A backend under test.
struct Subject {
    name: String,
    backend: Box<dyn Backend>,
    /// `None` where the backend has no sparse-key op: `sparse_backend_for(device)`
    /// must then refuse with the documented error.
    sparse: Option<Box<dyn SparseBackend>>,
    device: Device,
    tol: Tolerances,
}

const CPU_TOL: Tolerances = Tolerances {
    reference: 1e-5,
    split: 1e-6,
    row: 1e-6,
    read: 1e-5,
};

#[cfg(feature = "cuda")]
const CUDA_TOL: Tolerances = Tolerances {
    reference: 1e-4,
    // f32-accurate tensor-core products differ by ~1e-5 between chunkings (measured up
    // to 1.1e-5 in kernels/emu).
    split: 5e-5,
    row: 1e-4,
    read: 1e-4,
};

/// Written to stderr directly: the harness captures `eprintln!` of passing tests, and a
/// skip must be seen.
fn skip(target: Target, why: &str) {
    let _ = writeln!(
        std::io::stderr(),
        "backend_suite {target:?}: skipped: {why}; this test ran nothing"
    );
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

fn subject(target: Target) -> Option<Subject> {
    match target {
        Target::Cpu(isa) => {
            let backend = CpuBackend::new().with_isa(isa);
            // `with_isa` keeps the detected set when the asked one is unavailable, so
            // without this check the case would run, and pass, on another set.
            if backend.isa() != isa {
                let why = if cpu_has(isa) {
                    format!(
                        "LTM_CPU_ISA={} rules out {}",
                        std::env::var("LTM_CPU_ISA").unwrap_or_default(),
                        isa.name()
                    )
                } else {
                    let label = match isa {
                        Isa::Avx512 => "AVX-512",
                        Isa::Avx2 => "AVX2+FMA",
                        Isa::Portable => "portable",
                    };
                    format!("no {label} on this CPU")
                };
                skip(target, &why);
                return None;
            }
            Some(Subject {
                name: backend.name(),
                backend: Box::new(backend),
                sparse: Some(Box::new(CpuBackend::new().with_isa(isa))),
                device: Device::Cpu,
                tol: CPU_TOL,
            })
        }
        #[cfg(feature = "cuda")]
        Target::Cuda => {
            let backend = CudaBackend::new(0)
                .unwrap_or_else(|e| panic!("this test needs a usable CUDA device: {e}"))
                .with_checks(true);
            Some(Subject {
                name: backend.name(),
                backend: Box::new(backend),
                sparse: None,
                device: Device::Cuda(0),
                tol: CUDA_TOL,
            })
        }
    }
}

fn run(target: Target, case: fn(&Subject)) {
    if let Some(s) = subject(target) {
        case(&s);
    }
}

// ---- guarded calls and measures ---------------------------------------------------------

const GUARD: usize = 256;
/// A NaN no computation produces.
const GUARD_BITS: u32 = 0x7FA5_A5A5;

/// Calls `f` on an output of `n` values that starts as NaN, between guards that must
/// survive whether the call succeeds or not.
fn guarded(s: &Subject, n: usize, f: impl FnOnce(&mut [f32]) -> Result<()>) -> Result<Vec<f32>> {
    let mut buf = vec![f32::from_bits(GUARD_BITS); n + 2 * GUARD];
    buf[GUARD..GUARD + n].fill(f32::NAN);
    let r = f(&mut buf[GUARD..GUARD + n]);
    let intact = |x: &[f32]| x.iter().all(|v| v.to_bits() == GUARD_BITS);
    assert!(
        intact(&buf[..GUARD]) && intact(&buf[GUARD + n..]),
        "[{}] a call wrote outside its output",
        s.name
    );
    r.map(|()| buf[GUARD..GUARD + n].to_vec())
}

fn forward(
    s: &Subject,
    config: &MemoryConfig,
    inputs: &ForwardInputs<'_>,
    state: &mut State,
) -> Vec<f32> {
    guarded(s, inputs.output_len(config), |out| {
        s.backend.forward_into(config, inputs, state, out)
    })
    .unwrap_or_else(|e| panic!("[{}] forward failed: {e}", s.name))
}

fn decode(
    s: &Subject,
    config: &MemoryConfig,
    inputs: &ForwardInputs<'_>,
    state: &mut State,
) -> Vec<f32> {
    guarded(s, inputs.output_len(config), |out| {
        s.backend.decode_into(config, inputs, state, out)
    })
    .unwrap_or_else(|e| panic!("[{}] decode failed: {e}", s.name))
}

fn as_f64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// The float64 recurrence's outputs and final state from `initial`.
fn reference(
    config: &MemoryConfig,
    inputs: &ForwardInputs<'_>,
    initial: &State,
) -> (Vec<f64>, Vec<f64>) {
    let mut st = as_f64(initial.values());
    let o = recurrent_forward(config, inputs, &mut st).unwrap();
    (o, st)
}

/// Asserts outputs and state within `tol` of `want`, and the tokens counted.
#[allow(clippy::too_many_arguments)]
fn assert_close(
    s: &Subject,
    what: &str,
    o: &[f32],
    state: &State,
    (want_o, want_s): &(Vec<f64>, Vec<f64>),
    tokens_seen: u64,
    tol: f64,
) {
    let (eo, es) = (
        normalised_error(o, want_o),
        normalised_error(state.values(), want_s),
    );
    eprintln!("{what} [{}]: output {eo:.2e}, state {es:.2e}", s.name);
    assert!(
        eo < tol && es < tol,
        "{what} [{}]: output error {eo:e}, state error {es:e} (tolerance {tol:e})",
        s.name
    );
    assert_eq!(state.tokens_seen(), tokens_seen, "{what}: tokens seen");
}

fn initial_state(
    rng: &mut rand::rngs::StdRng,
    config: &MemoryConfig,
    batch: usize,
    random: bool,
) -> State {
    if random {
        random_state(rng, config, batch)
    } else {
        State::zeros(config, batch)
    }
}

/// The forward from a fresh random (or zero) state against the float64 recurrence.
fn forward_case(
    s: &Subject,
    name: &str,
    config: &MemoryConfig,
    batch: usize,
    tokens: usize,
    gates: Gates,
    with_state: bool,
) {
    let mut rng = rng(name);
    let x = random_inputs(&mut rng, config, batch, tokens, gates);
    let initial = initial_state(&mut rng, config, batch, with_state);
    let mut state = initial.clone();
    let o = forward(s, config, &x.inputs(), &mut state);
    let what = format!(
        "{name} B={batch} T={tokens} H={} K={} V={} chunk={} {gates:?} state={with_state}",
        config.heads, config.key_dim, config.value_dim, config.chunk_size
    );
    let want = reference(config, &x.inputs(), &initial);
    assert_close(s, &what, &o, &state, &want, tokens as u64, s.tol.reference);
}

/// Outputs of calls over consecutive token ranges, reassembled as `[B, T, H, V]`.
fn join_pieces(config: &MemoryConfig, batch: usize, pieces: &[(usize, Vec<f32>)]) -> Vec<f32> {
    let row = config.heads * config.value_dim;
    let mut o = Vec::new();
    for b in 0..batch {
        for (len, p) in pieces {
            o.extend_from_slice(&p[b * len * row..(b + 1) * len * row]);
        }
    }
    o
}

/// The forward over `x` in calls cut at `cuts`, state carried.
fn forward_pieces(
    s: &Subject,
    config: &MemoryConfig,
    x: &Owned,
    cuts: &[usize],
    initial: &State,
) -> (Vec<f32>, State) {
    let mut state = initial.clone();
    let mut bounds = vec![0];
    bounds.extend_from_slice(cuts);
    bounds.push(x.tokens);
    let pieces: Vec<_> = bounds
        .windows(2)
        .map(|w| {
            let piece = x.slice(config, w[0], w[1]);
            (w[1] - w[0], forward(s, config, &piece.inputs(), &mut state))
        })
        .collect();
    (join_pieces(config, x.batch, &pieces), state)
}

// ---- the cases --------------------------------------------------------------------------

fn forward_lengths_around_the_chunk_size(s: &Subject) {
    let config = MemoryConfig::new(3, 32, 48);
    for tokens in [0, 1, 63, 64, 65, 1000] {
        forward_case(s, "lengths", &config, 2, tokens, Gates::Typical, false);
    }
}

fn forward_dims_that_are_not_vector_multiples(s: &Subject) {
    for (h, k, v) in [(1, 7, 5), (2, 64, 100), (4, 33, 16), (1, 128, 128)] {
        let config = MemoryConfig::new(h, k, v);
        forward_case(s, "dims", &config, 1, 150, Gates::Typical, true);
    }
}

fn forward_decay_and_write_strength_extremes(s: &Subject) {
    let config = MemoryConfig::new(2, 64, 64);
    for gates in [
        Gates::NoDecay,
        Gates::StrongDecay,
        Gates::BetaNearZero,
        Gates::BetaNearOne,
    ] {
        forward_case(s, "gates", &config, 2, 300, gates, true);
    }
}

fn forward_carries_the_initial_state(s: &Subject) {
    let config = MemoryConfig::new(4, 32, 32);
    for tokens in [1, 64, 200] {
        forward_case(s, "initial", &config, 3, tokens, Gates::Typical, true);
    }
}

fn forward_chunk_sizes(s: &Subject) {
    // CUDA always computes chunks of 64: there the chunk size must not matter.
    for chunk in [1, 16, 37, 64, 128] {
        let config = MemoryConfig::new(2, 32, 32).with_chunk_size(chunk);
        forward_case(s, "chunk", &config, 1, 333, Gates::Typical, true);
    }
}

fn forward_many_heads_and_sequences(s: &Subject) {
    let config = MemoryConfig::new(8, 16, 32);
    forward_case(s, "batch", &config, 5, 130, Gates::Typical, true);
}

fn forward_explicit_scale(s: &Subject) {
    let config = MemoryConfig::new(2, 32, 32).with_scale(0.37);
    forward_case(s, "scale", &config, 1, 100, Gates::Typical, true);
}

fn forward_half_precision_inputs(s: &Subject) {
    let config = MemoryConfig::new(2, 64, 64);
    let mut rng = rng("bf16");
    let f = random_inputs(&mut rng, &config, 2, 500, Gates::Typical);
    let initial = random_state(&mut rng, &config, 2);
    let (q, k, v, beta) = (
        to_bf16(&f.q),
        to_bf16(&f.k),
        to_bf16(&f.v),
        to_bf16(&f.beta),
    );
    let bf = ForwardInputs {
        q: Data::BF16(&q),
        k: Data::BF16(&k),
        v: Data::BF16(&v),
        beta: Data::BF16(&beta),
        ..f.inputs()
    };
    let mut state = initial.clone();
    let o = forward(s, &config, &bf, &mut state);
    // The same rounded inputs: only the arithmetic differs.
    let want = reference(&config, &bf, &initial);
    assert_close(s, "bf16", &o, &state, &want, 500, s.tol.reference);
    // The f32 originals: the bf16 rounding of the inputs.
    let want = reference(&config, &f.inputs(), &initial);
    assert_close(s, "bf16 vs f32 inputs", &o, &state, &want, 500, 1e-2);

    // One tensor rounded, the others f32.
    let mixed = ForwardInputs {
        q: Data::BF16(&q),
        ..f.inputs()
    };
    let mut state = initial.clone();
    let o = forward(s, &config, &mixed, &mut state);
    let want = reference(&config, &mixed, &initial);
    assert_close(s, "mixed", &o, &state, &want, 500, s.tol.reference);

    let config = MemoryConfig::new(2, 32, 48);
    let f = random_inputs(&mut rng, &config, 1, 200, Gates::Typical);
    let h = |x: &[f32]| {
        x.iter()
            .map(|&v| half::f16::from_f32(v))
            .collect::<Vec<_>>()
    };
    let (q, k, v, beta, g) = (h(&f.q), h(&f.k), h(&f.v), h(&f.beta), h(&f.g));
    let f16 = ForwardInputs {
        q: Data::F16(&q),
        k: Data::F16(&k),
        v: Data::F16(&v),
        beta: Data::F16(&beta),
        g: Data::F16(&g),
        ..f.inputs()
    };
    let initial = State::zeros(&config, 1);
    let mut state = initial.clone();
    let o = forward(s, &config, &f16, &mut state);
    let want = reference(&config, &f16, &initial);
    assert_close(s, "f16", &o, &state, &want, 200, s.tol.reference);
}

fn split_calls_match_one_call(s: &Subject) {
    // Cuts on chunk boundaries leave every chunk as it was: bit-identical.
    let config = MemoryConfig::new(3, 32, 48);
    let mut rng = rng("aligned");
    let x = random_inputs(&mut rng, &config, 2, 1000, Gates::Typical);
    let initial = random_state(&mut rng, &config, 2);
    let (whole_o, whole_s) = forward_pieces(s, &config, &x, &[], &initial);
    let (o, st) = forward_pieces(s, &config, &x, &[64, 512, 576], &initial);
    assert_eq!(o, whole_o, "[{}] aligned cuts: outputs", s.name);
    assert_eq!(
        st.values(),
        whole_s.values(),
        "[{}] aligned cuts: state",
        s.name
    );
    assert_eq!(st.tokens_seen(), 1000);

    // Other cuts move the chunk boundaries, and with them only the rounding.
    let config = MemoryConfig::new(2, 64, 32);
    let mut rng = common::rng("pieces");
    let x = random_inputs(&mut rng, &config, 2, 1000, Gates::Typical);
    let initial = random_state(&mut rng, &config, 2);
    let (whole_o, whole_s) = forward_pieces(s, &config, &x, &[], &initial);
    let want = (as_f64(&whole_o), as_f64(whole_s.values()));
    for cuts in [
        vec![1],
        vec![500],
        vec![37, 100, 101, 999],
        vec![63, 65, 127, 129],
    ] {
        let (o, st) = forward_pieces(s, &config, &x, &cuts, &initial);
        assert_close(
            s,
            &format!("cuts {cuts:?}"),
            &o,
            &st,
            &want,
            1000,
            s.tol.split,
        );
    }

    // An empty call changes nothing.
    let config = MemoryConfig::new(1, 16, 16);
    let initial = random_state(&mut rng, &config, 1);
    let x = random_inputs(&mut rng, &config, 1, 0, Gates::Typical);
    let mut state = initial.clone();
    let o = forward(s, &config, &x.inputs(), &mut state);
    assert!(o.is_empty());
    assert_eq!(
        state, initial,
        "[{}] an empty call changed the state",
        s.name
    );
}

/// The session seam: `open`, windows of any size through `feed`, a snapshot midway,
/// `into_state` at the end, against one forward over the whole sequence.
fn session_windows_match_one_forward(s: &Subject) {
    let config = MemoryConfig::new(2, 64, 48);
    let mut rng = rng("session windows");
    let tokens = 1000;
    let x = random_inputs(&mut rng, &config, 2, tokens, Gates::Typical);
    let initial = random_state(&mut rng, &config, 2);
    let mut whole_s = initial.clone();
    let whole_o = forward(s, &config, &x.inputs(), &mut whole_s);
    let want = (as_f64(&whole_o), as_f64(whole_s.values()));
    for window in [1, 37, 64, 100, 192, 640, 999, 1000, 4096] {
        let mut session = s
            .backend
            .open(&config, initial.clone())
            .unwrap_or_else(|e| panic!("[{}] open failed: {e}", s.name));
        let mut pieces = Vec::new();
        let mut t0 = 0;
        let mut midway = None;
        while t0 < tokens {
            let t1 = (t0 + window).min(tokens);
            let piece = x.slice(&config, t0, t1);
            let o = guarded(s, piece.inputs().output_len(&config), |out| {
                session.feed(&piece.inputs(), out)
            })
            .unwrap_or_else(|e| panic!("[{}] feed failed: {e}", s.name));
            pieces.push((t1 - t0, o));
            t0 = t1;
            assert_eq!(session.tokens_seen(), initial.tokens_seen() + t0 as u64);
            if midway.is_none() && t0 >= tokens / 2 {
                midway = Some((t0, session.snapshot().unwrap()));
            }
        }
        let end = session.into_state().unwrap();
        let o = join_pieces(&config, 2, &pieces);
        let what = format!("session, windows of {window}");
        if window % 64 == 0 || window >= tokens {
            assert_eq!(o, whole_o, "[{}] {what}: outputs not bit-identical", s.name);
            assert_eq!(end, whole_s, "[{}] {what}: state not bit-identical", s.name);
        }
        assert_close(s, &what, &o, &end, &want, tokens as u64, s.tol.split);

        // The snapshot is the state after its prefix, and the session went on after it.
        let (t, snap) = midway.unwrap();
        let mut prefix_s = initial.clone();
        forward(s, &config, &x.slice(&config, 0, t).inputs(), &mut prefix_s);
        let e = normalised_error(snap.values(), &as_f64(prefix_s.values()));
        assert!(
            e < s.tol.split && snap.tokens_seen() == t as u64,
            "[{}] {what}: snapshot after {t} tokens: error {e:e}",
            s.name
        );
    }
}

fn one_hot_inputs(config: &MemoryConfig, rows: &[usize]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let t = rows.len();
    let mut k = vec![0.0f32; t * config.key_dim];
    for (i, &j) in rows.iter().enumerate() {
        k[i * config.key_dim + j] = 1.0;
    }
    (k, vec![1.0; t], vec![0.0; t])
}

/// One-hot keys, β = 1 and no decay: the literal column write. Token t sets row j of S
/// to v_t and touches nothing else; a rewrite replaces.
fn one_hot_writes_set_exactly_their_row(s: &Subject) {
    let config = MemoryConfig::new(1, 96, 40);
    let mut rng = rng("one-hot");
    let mut rows: Vec<usize> = (0..config.key_dim).collect();
    rows.shuffle(&mut rng);
    let rows = &rows[..70]; // more than one chunk, each row written once
    let v = random_inputs(&mut rng, &config, 1, rows.len(), Gates::Typical).v;
    let (k, beta, g) = one_hot_inputs(&config, rows);
    let inputs = ForwardInputs {
        batch: 1,
        tokens: rows.len(),
        q: (&k).into(),
        k: (&k).into(),
        v: (&v).into(),
        beta: (&beta).into(),
        g: (&g).into(),
    };
    let initial = random_state(&mut rng, &config, 1);
    let mut state = initial.clone();
    let o = forward(s, &config, &inputs, &mut state);
    let vd = config.value_dim;
    let written: HashMap<usize, usize> = rows.iter().enumerate().map(|(t, &j)| (j, t)).collect();
    for j in 0..config.key_dim {
        let got = &state.values()[j * vd..(j + 1) * vd];
        match written.get(&j) {
            Some(&t) => {
                for (g, w) in got.iter().zip(&v[t * vd..(t + 1) * vd]) {
                    assert!(
                        (g - w).abs() as f64 <= s.tol.row * w.abs().max(1.0) as f64,
                        "[{}] row {j}: {g} vs {w}",
                        s.name
                    );
                }
            }
            // Rows no key touched keep their values bit for bit.
            None => assert_eq!(
                got,
                &initial.values()[j * vd..(j + 1) * vd],
                "[{}] row {j} was touched",
                s.name
            ),
        }
    }
    // Reading with the same one-hot key returns what was just written, times the scale.
    let scale = config.effective_scale();
    for t in 0..rows.len() {
        for c in 0..vd {
            let (got, want) = (o[t * vd + c], scale * v[t * vd + c]);
            assert!(
                (got - want).abs() as f64 <= s.tol.read * want.abs().max(1.0) as f64,
                "[{}] read of token {t}: {got} vs {want}",
                s.name
            );
        }
    }

    let config = MemoryConfig::new(1, 16, 16);
    let rows = [3, 7, 3, 3, 7];
    let v = random_inputs(&mut rng, &config, 1, rows.len(), Gates::Typical).v;
    let (k, beta, g) = one_hot_inputs(&config, &rows);
    let inputs = ForwardInputs {
        batch: 1,
        tokens: rows.len(),
        q: (&k).into(),
        k: (&k).into(),
        v: (&v).into(),
        beta: (&beta).into(),
        g: (&g).into(),
    };
    let mut state = State::zeros(&config, 1);
    forward(s, &config, &inputs, &mut state);
    let vd = config.value_dim;
    for (row, last) in [(3, 3), (7, 4)] {
        let got = &state.values()[row * vd..(row + 1) * vd];
        for (g, w) in got.iter().zip(&v[last * vd..(last + 1) * vd]) {
            assert!(
                (g - w).abs() as f64 <= s.tol.row * w.abs().max(1.0) as f64,
                "[{}] row {row} holds {g}, last write was {w}",
                s.name
            );
        }
    }
    for (i, &x) in state.values().iter().enumerate() {
        if ![3, 7].contains(&(i / vd)) {
            assert_eq!(x, 0.0, "[{}] row {} was touched", s.name, i / vd);
        }
    }
}

fn decode_matches_the_recurrence(s: &Subject) {
    let check = |config: &MemoryConfig, tokens: usize, gates: Gates| {
        let mut rng = rng("decode");
        let x = random_inputs(&mut rng, config, 2, tokens, gates);
        let initial = random_state(&mut rng, config, 2);
        let mut state = initial.clone();
        let o = decode(s, config, &x.inputs(), &mut state);
        let what = format!(
            "decode H={} K={} V={} T={tokens} {gates:?}",
            config.heads, config.key_dim, config.value_dim
        );
        let want = reference(config, &x.inputs(), &initial);
        assert_close(s, &what, &o, &state, &want, tokens as u64, s.tol.reference);
    };
    for (h, k, v) in [(2, 64, 64), (3, 17, 40), (1, 128, 16)] {
        for tokens in [1, 2, 7] {
            for gates in [Gates::Typical, Gates::StrongDecay, Gates::BetaNearOne] {
                check(&MemoryConfig::new(h, k, v), tokens, gates);
            }
        }
    }
    // Enough state values to run the heads in parallel.
    check(&MemoryConfig::new(8, 128, 128), 1, Gates::Typical);
}

/// Decode steps after a chunked forward, through the backend and through a session,
/// give what one forward over the whole sequence gives.
fn decode_continues_a_forward(s: &Subject) {
    let config = MemoryConfig::new(2, 32, 48);
    let mut rng = rng("continue");
    let x = random_inputs(&mut rng, &config, 2, 300, Gates::Typical);
    let initial = random_state(&mut rng, &config, 2);
    let mut whole_s = initial.clone();
    let whole = forward(s, &config, &x.inputs(), &mut whole_s);
    let row = config.heads * config.value_dim;
    let check = |what: &str, last: &[f32], state: &State| {
        let e = normalised_error(state.values(), &as_f64(whole_s.values()));
        assert!(e < s.tol.split, "[{}] {what}: state error {e:e}", s.name);
        assert_eq!(state.tokens_seen(), 300);
        // The last token's outputs of both sequences.
        for b in 0..2 {
            let want = as_f64(&whole[(b * 300 + 299) * row..(b * 300 + 300) * row]);
            let e = normalised_error(&last[b * row..(b + 1) * row], &want);
            assert!(e < s.tol.split, "[{}] {what}: output error {e:e}", s.name);
        }
    };

    let mut state = initial.clone();
    forward(s, &config, &x.slice(&config, 0, 297).inputs(), &mut state);
    let mut last = Vec::new();
    for t in 297..300 {
        last = decode(s, &config, &x.slice(&config, t, t + 1).inputs(), &mut state);
    }
    check("backend decode", &last, &state);

    let mut session = s.backend.open(&config, initial.clone()).unwrap();
    let head = x.slice(&config, 0, 297);
    guarded(s, head.inputs().output_len(&config), |out| {
        session.feed(&head.inputs(), out)
    })
    .unwrap();
    for t in 297..300 {
        let step = x.slice(&config, t, t + 1);
        last = guarded(s, step.inputs().output_len(&config), |out| {
            session.decode(&step.inputs(), out)
        })
        .unwrap();
    }
    check("session decode", &last, &session.into_state().unwrap());
}

/// Bad shapes are errors that leave the state and the output alone.
fn bad_shapes_are_errors(s: &Subject) {
    let config = MemoryConfig::new(2, 8, 8);
    let mut rng = rng("shape errors");
    let x = random_inputs(&mut rng, &config, 1, 1, Gates::Typical);
    let mut state = random_state(&mut rng, &config, 1);
    let before = state.clone();
    for decoding in [false, true] {
        let call = |state: &mut State, out: &mut [f32]| {
            if decoding {
                s.backend.decode_into(&config, &x.inputs(), state, out)
            } else {
                s.backend.forward_into(&config, &x.inputs(), state, out)
            }
        };
        match guarded(s, 3, |out| call(&mut state, out)) {
            Err(Error::Shape { tensor, .. }) => assert_eq!(tensor, "o"),
            other => panic!("[{}] expected a shape error for o, got {other:?}", s.name),
        }
        let mut wrong = random_state(&mut rng, &config, 2);
        let wrong_before = wrong.clone();
        let mut out = vec![f32::NAN; 16];
        assert!(
            matches!(call(&mut wrong, &mut out), Err(Error::StateMismatch(_))),
            "[{}] a state of another batch size was accepted",
            s.name
        );
        assert_eq!(wrong, wrong_before);
        assert!(out.iter().all(|v| v.is_nan()), "a refused call wrote");
    }
    assert_eq!(
        state, before,
        "[{}] a refused call changed the state",
        s.name
    );
}

/// Output buffers full of NaN come back fully written, at every length around a chunk
/// and through every entry point.
fn poisoned_outputs_are_overwritten(s: &Subject) {
    let config = MemoryConfig::new(3, 16, 24);
    let mut rng = rng("poison");
    let finite = |what: &str, o: &[f32]| {
        if let Some(i) = o.iter().position(|v| !v.is_finite()) {
            panic!(
                "[{}] {what}: output {i} of {} left unwritten",
                s.name,
                o.len()
            );
        }
    };
    for tokens in [0, 1, 15, 16, 63, 64, 65, 130] {
        let x = random_inputs(&mut rng, &config, 3, tokens, Gates::Typical);
        let mut state = random_state(&mut rng, &config, 3);
        finite(
            &format!("forward T={tokens}"),
            &forward(s, &config, &x.inputs(), &mut state),
        );
        finite(
            &format!("decode T={tokens}"),
            &decode(s, &config, &x.inputs(), &mut state),
        );
        let mut session = s.backend.open(&config, state).unwrap();
        let o = guarded(s, x.inputs().output_len(&config), |out| {
            session.feed(&x.inputs(), out)
        })
        .unwrap();
        finite(&format!("session T={tokens}"), &o);
    }
}

/// A NaN in any input reaches the read of the token that carries it, and the state
/// unless it is a query, never hidden; earlier chunks never see it.
fn nan_inputs_are_not_hidden(s: &Subject) {
    let config = MemoryConfig::new(1, 16, 16);
    let mut rng = rng("nan");
    let (t, d) = (70, 3); // row 6 of the second chunk
    for tensor in ["q", "k", "v", "beta", "g"] {
        let mut x = random_inputs(&mut rng, &config, 1, 100, Gates::Typical);
        match tensor {
            "q" => x.q[t * 16 + d] = f32::NAN,
            "k" => x.k[t * 16 + d] = f32::NAN,
            "v" => x.v[t * 16 + d] = f32::NAN,
            "beta" => x.beta[t] = f32::NAN,
            _ => x.g[t] = f32::NAN,
        }
        for decoding in [false, true] {
            let mut state = State::zeros(&config, 1);
            let o = if decoding {
                decode(s, &config, &x.inputs(), &mut state)
            } else {
                forward(s, &config, &x.inputs(), &mut state)
            };
            let what = format!(
                "NaN in {tensor}, {}",
                if decoding { "decode" } else { "forward" }
            );
            // A NaN value reaches its own column of the read; anywhere else it makes the
            // whole update, and so the whole read, NaN.
            let read = &o[t * 16..(t + 1) * 16];
            let reached = if tensor == "v" {
                read[d].is_nan()
            } else {
                read.iter().all(|v| v.is_nan())
            };
            assert!(
                reached,
                "[{}] {what}: the read of its token hides it: {read:?}",
                s.name
            );
            // A query is read, never written.
            assert_eq!(
                state.values().iter().any(|v| v.is_nan()),
                tensor != "q",
                "[{}] {what}: state",
                s.name
            );
            // Inside its own 16-token tile the tensor cores multiply a masked-out NaN by
            // 0, so on CUDA earlier tokens of that tile may read NaN too; the CPU skips
            // masked pairs. Either way earlier chunks stay clean.
            assert!(
                o[..64 * 16].iter().all(|v| v.is_finite()),
                "[{}] {what}: reached an earlier chunk",
                s.name
            );
        }
    }
}

struct SparseCase {
    rows: Vec<u32>,
    weights: Vec<f32>,
}

/// `n` keys of `s` random rows (repeats allowed: they must add up like a dense key).
fn random_sparse_keys(
    rng: &mut rand::rngs::StdRng,
    n: usize,
    s: usize,
    key_dim: usize,
) -> SparseCase {
    let rows = (0..n * s)
        .map(|_| rng.random_range(0..key_dim as u32))
        .collect();
    let weights = (0..n * s)
        .map(|_| {
            let sign = if rng.random::<bool>() { 1.0 } else { -1.0 };
            sign * rng.random_range(0.2f32..1.0) / (s as f32).sqrt()
        })
        .collect();
    SparseCase { rows, weights }
}

fn densify(keys: &SparseCase, n: usize, s: usize, key_dim: usize) -> Vec<f32> {
    let mut dense = vec![0.0f32; n * key_dim];
    for i in 0..n {
        for a in 0..s {
            dense[i * key_dim + keys.rows[i * s + a] as usize] += keys.weights[i * s + a];
        }
    }
    dense
}

/// Sparse writes then reads against the float64 dense recurrence (g = 0) with each key
/// written out densely.
#[allow(clippy::too_many_arguments)]
fn sparse_check(
    sub: &Subject,
    sparse: &dyn SparseBackend,
    name: &str,
    config: &MemoryConfig,
    batch: usize,
    tokens: usize,
    s: usize,
    beta_zero_share: f64,
    with_state: bool,
) {
    let mut rng = rng(name);
    let n = batch * tokens * config.heads;
    let keys = random_sparse_keys(&mut rng, n, s, config.key_dim);
    let queries = random_sparse_keys(&mut rng, n, s, config.key_dim);
    let v = normal(&mut rng, n * config.value_dim);
    let beta: Vec<f32> = (0..n)
        .map(|_| {
            if rng.random_bool(beta_zero_share) {
                0.0
            } else {
                rng.random_range(0.01f32..=1.0)
            }
        })
        .collect();
    let initial = initial_state(&mut rng, config, batch, with_state);

    let k_dense = densify(&keys, n, s, config.key_dim);
    let q_dense = densify(&queries, n, s, config.key_dim);
    let g = vec![0.0f32; n];
    let dense = ForwardInputs {
        batch,
        tokens,
        q: (&q_dense).into(),
        k: (&k_dense).into(),
        v: (&v).into(),
        beta: (&beta).into(),
        g: (&g).into(),
    };
    let (_, ref_state) = reference(config, &dense, &initial);
    // Reads of the final state: o = scale · Sᵀ q.
    let (kd, vd, h) = (config.key_dim, config.value_dim, config.heads);
    let scale = config.effective_scale() as f64;
    let mut ref_o = vec![0.0f64; n * vd];
    for i in 0..n {
        let (b, head) = (i / (tokens * h), i % h);
        let st = &ref_state[(b * h + head) * kd * vd..][..kd * vd];
        for j in 0..vd {
            ref_o[i * vd + j] = scale
                * (0..kd)
                    .map(|a| st[a * vd + j] * q_dense[i * kd + a] as f64)
                    .sum::<f64>();
        }
    }

    fn sparse_keys(k: &SparseCase, batch: usize, tokens: usize, s: usize) -> SparseKeys<'_> {
        SparseKeys {
            batch,
            tokens,
            active: s,
            rows: &k.rows,
            weights: &k.weights,
        }
    }
    let writes = SparseWrites {
        keys: sparse_keys(&keys, batch, tokens, s),
        v: (&v).into(),
        beta: (&beta).into(),
    };
    let mut state = initial.clone();
    sparse.sparse_write(config, &writes, &mut state).unwrap();
    let o = guarded(sub, n * vd, |out| {
        sparse.sparse_read_into(
            config,
            &sparse_keys(&queries, batch, tokens, s),
            &state,
            out,
        )
    })
    .unwrap();
    let what = format!("sparse {name} B={batch} T={tokens} s={s}");
    assert_close(
        sub,
        &what,
        &o,
        &state,
        &(ref_o, ref_state),
        initial.tokens_seen() + tokens as u64,
        sub.tol.reference,
    );
}

fn sparse_writes_match_the_dense_recurrence(sub: &Subject) {
    let Some(sparse) = &sub.sparse else {
        // The documented refusal, not a silent fallback to another device.
        let err = sparse_backend_for(sub.device)
            .err()
            .unwrap_or_else(|| panic!("[{}] a sparse backend without a sparse op", sub.name))
            .to_string();
        assert!(err.contains("no CUDA implementation"), "{err}");
        return;
    };
    let sparse = sparse.as_ref();
    let config = MemoryConfig::new(2, 24, 20).with_scale(1.0);
    for tokens in [0, 1, 9, 200] {
        for s in [1, 2, 3, 8] {
            sparse_check(sub, sparse, "lengths", &config, 2, tokens, s, 0.0, false);
        }
    }
    // β = 0 tokens are skipped by the CPU loop: they must leave the state exactly as the
    // dense recurrence does; a random initial state checks the correction term.
    let config = MemoryConfig::new(3, 16, 33);
    sparse_check(sub, sparse, "beta-zero", &config, 1, 300, 4, 0.5, true);
    // Many rows, few touched: collisions are rare, so most keys read back exactly.
    let config = MemoryConfig::new(1, 512, 16).with_scale(1.0);
    sparse_check(sub, sparse, "tall", &config, 1, 400, 2, 0.1, false);

    // Rows outside the memory are errors that name the token and leave the state alone.
    let config = MemoryConfig::new(1, 8, 4);
    let rows = [1u32, 2, 3, 8];
    let weights = [0.5f32; 4];
    let v = vec![1.0f32; 8];
    let beta = vec![1.0f32; 2];
    let writes = SparseWrites {
        keys: SparseKeys {
            batch: 1,
            tokens: 2,
            active: 2,
            rows: &rows,
            weights: &weights,
        },
        v: (&v).into(),
        beta: (&beta).into(),
    };
    let mut state = State::zeros(&config, 1);
    let err = sparse
        .sparse_write(&config, &writes, &mut state)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("row 8") && err.contains("token 1") && err.contains("8 rows"),
        "{err}"
    );
    assert_eq!(
        state,
        State::zeros(&config, 1),
        "a failed write changed the state"
    );
}

// ---- the instantiations -----------------------------------------------------------------

common::suite::device_suite!(
    forward_lengths_around_the_chunk_size,
    forward_dims_that_are_not_vector_multiples,
    forward_decay_and_write_strength_extremes,
    forward_carries_the_initial_state,
    forward_chunk_sizes,
    forward_many_heads_and_sequences,
    forward_explicit_scale,
    forward_half_precision_inputs,
    split_calls_match_one_call,
    session_windows_match_one_forward,
    one_hot_writes_set_exactly_their_row,
    decode_matches_the_recurrence,
    decode_continues_a_forward,
    bad_shapes_are_errors,
    poisoned_outputs_are_overwritten,
    nan_inputs_are_not_hidden,
    sparse_writes_match_the_dense_recurrence,
);
