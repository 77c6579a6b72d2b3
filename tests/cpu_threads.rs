//! The CPU backend gives bit-identical results on any number of threads, dense and
//! sparse. (What every backend shares is in `tests/backend_suite.rs`; thread pools are
//! the CPU's alone.)

mod common;

use common::*;
use ltm_engine::backend::{SparseBackend, SparseKeys, SparseWrites};
use ltm_engine::{Backend, CpuBackend, MemoryConfig, State};
use rand::Rng;

#[test]
fn dense_thread_counts_give_identical_results() {
    let config = MemoryConfig::new(1, 64, 128);
    let mut rng = rng("threads");
    let inputs = random_inputs(&mut rng, &config, 1, 400, Gates::Typical);
    let initial = random_state(&mut rng, &config, 1);
    let run = |threads| {
        let backend = CpuBackend::new().with_threads(threads).unwrap();
        let mut s = initial.clone();
        let o = backend.forward(&config, &inputs.inputs(), &mut s).unwrap();
        (o, s)
    };
    // One head on several threads splits the value columns; they never mix.
    let (o1, s1) = run(1);
    for threads in [2, 3, 8] {
        let (o, s) = run(threads);
        assert_eq!(o, o1, "outputs differ with {threads} threads");
        assert_eq!(s, s1, "state differs with {threads} threads");
    }
}

#[test]
fn sparse_thread_counts_give_identical_states() {
    let config = MemoryConfig::new(4, 64, 32);
    let mut rng = rng("sparse threads");
    let (tokens, s) = (500, 4);
    let n = tokens * config.heads;
    let rows: Vec<u32> = (0..n * s)
        .map(|_| rng.random_range(0..config.key_dim as u32))
        .collect();
    let weights: Vec<f32> = (0..n * s)
        .map(|_| {
            let sign = if rng.random::<bool>() { 1.0 } else { -1.0 };
            sign * rng.random_range(0.2f32..1.0) / (s as f32).sqrt()
        })
        .collect();
    let v = normal(&mut rng, n * config.value_dim);
    let beta = vec![1.0f32; n];
    let writes = SparseWrites {
        keys: SparseKeys {
            batch: 1,
            tokens,
            active: s,
            rows: &rows,
            weights: &weights,
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
