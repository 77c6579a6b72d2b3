//! The sparse-key write and read against the float64 dense recurrence: a sparse key
//! written out densely must give the same state and reads.

mod common;

use common::*;
use ltm_engine::backend::cpu::Isa;
use ltm_engine::backend::{SparseBackend, SparseKeys, SparseWrites};
use ltm_engine::reference::recurrent_forward;
use ltm_engine::{CpuBackend, ForwardInputs, MemoryConfig, State};
use rand::rngs::StdRng;
use rand::Rng;

const F32_TOL: f64 = 1e-5;

struct Sparse {
    rows: Vec<u32>,
    weights: Vec<f32>,
}

/// `n` keys of `s` random rows (repeats allowed: they must add up like a dense key).
fn random_keys(rng: &mut StdRng, n: usize, s: usize, key_dim: usize) -> Sparse {
    let rows = (0..n * s)
        .map(|_| rng.random_range(0..key_dim as u32))
        .collect();
    let weights = (0..n * s)
        .map(|_| {
            let sign = if rng.random::<bool>() { 1.0 } else { -1.0 };
            sign * rng.random_range(0.2f32..1.0) / (s as f32).sqrt()
        })
        .collect();
    Sparse { rows, weights }
}

fn densify(keys: &Sparse, n: usize, s: usize, key_dim: usize) -> Vec<f32> {
    let mut dense = vec![0.0f32; n * key_dim];
    for i in 0..n {
        for a in 0..s {
            dense[i * key_dim + keys.rows[i * s + a] as usize] += keys.weights[i * s + a];
        }
    }
    dense
}

#[allow(clippy::too_many_arguments)]
fn check(
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
    let keys = random_keys(&mut rng, n, s, config.key_dim);
    let queries = random_keys(&mut rng, n, s, config.key_dim);
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
    let initial = if with_state {
        random_state(&mut rng, config, batch)
    } else {
        State::zeros(config, batch)
    };

    // The float64 dense recurrence with g = 0.
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
    let mut ref_state: Vec<f64> = initial.values().iter().map(|&x| x as f64).collect();
    recurrent_forward(config, &dense, &mut ref_state).unwrap();
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

    fn sparse_keys(k: &Sparse, batch: usize, tokens: usize, s: usize) -> SparseKeys<'_> {
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
    for backend in [CpuBackend::new(), CpuBackend::new().with_isa(Isa::Portable)] {
        let mut state = initial.clone();
        backend.sparse_write(config, &writes, &mut state).unwrap();
        assert_eq!(state.tokens_seen(), initial.tokens_seen() + tokens as u64);
        let mut o = vec![0.0f32; n * vd];
        backend
            .sparse_read_into(
                config,
                &sparse_keys(&queries, batch, tokens, s),
                &state,
                &mut o,
            )
            .unwrap();
        let es = normalised_error(state.values(), &ref_state);
        let eo = normalised_error(&o, &ref_o);
        eprintln!(
            "{name} T={tokens} s={s} [{:?}]: state {es:.2e}, reads {eo:.2e}",
            backend.isa()
        );
        assert!(
            es < F32_TOL && eo < F32_TOL,
            "{name} B={batch} T={tokens} s={s}: state error {es:e}, read error {eo:e}"
        );
    }
}

#[test]
fn lengths_and_active_rows() {
    let config = MemoryConfig::new(2, 24, 20).with_scale(1.0);
    for tokens in [0, 1, 9, 200] {
        for s in [1, 2, 3, 8] {
            check("lengths", &config, 2, tokens, s, 0.0, false);
        }
    }
}

#[test]
fn zero_write_strengths_and_carried_state() {
    // β = 0 tokens are skipped by the CPU loop: they must leave the state exactly as the
    // dense recurrence does; a random initial state checks the correction term.
    let config = MemoryConfig::new(3, 16, 33);
    check("beta-zero", &config, 1, 300, 4, 0.5, true);
}

#[test]
fn tall_memory_few_rows_per_key() {
    // Many rows, few touched: collisions are rare, so most keys read back exactly.
    let config = MemoryConfig::new(1, 512, 16).with_scale(1.0);
    check("tall", &config, 1, 400, 2, 0.1, false);
}

#[test]
fn thread_counts_give_identical_states() {
    let config = MemoryConfig::new(4, 64, 32);
    let mut rng = rng("threads");
    let (tokens, s) = (500, 4);
    let n = tokens * config.heads;
    let keys = random_keys(&mut rng, n, s, config.key_dim);
    let v = normal(&mut rng, n * config.value_dim);
    let beta = vec![1.0f32; n];
    let writes = SparseWrites {
        keys: SparseKeys {
            batch: 1,
            tokens,
            active: s,
            rows: &keys.rows,
            weights: &keys.weights,
        },
        v: (&v).into(),
        beta: (&beta).into(),
    };
    let mut states = Vec::new();
    for threads in [1, 2, 3] {
        let backend = CpuBackend::new().with_threads(threads).unwrap();
        let mut state = State::zeros(&config, 1);
        backend.sparse_write(&config, &writes, &mut state).unwrap();
        assert!(state.values().iter().all(|x| x.is_finite()));
        states.push(state);
    }
    assert!(states.iter().any(|s| s.values().iter().any(|&x| x != 0.0)));
    assert_eq!(states[0], states[1]);
    assert_eq!(states[0], states[2]);
}

#[test]
fn rows_outside_the_memory_are_errors() {
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
    let err = CpuBackend::new()
        .sparse_write(&config, &writes, &mut state)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("row 8") && err.contains("token 1") && err.contains("8 rows"),
        "{err}"
    );
    assert!(
        state.values().iter().all(|&x| x == 0.0),
        "a failed write changed the state"
    );
}
