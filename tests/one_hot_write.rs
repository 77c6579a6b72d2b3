//! With one-hot keys, β = 1 and no decay, the memory is the literal column write of the
//! design: token t sets row j of S (column j of W = Sᵀ) to v_t and touches nothing else.

mod common;

use common::*;
use ltm_engine::{Backend, CpuBackend, ForwardInputs, MemoryConfig, State};
use rand::seq::SliceRandom;

fn one_hot_inputs(
    config: &MemoryConfig,
    rows: &[usize],
    v: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let t = rows.len();
    let mut k = vec![0.0f32; t * config.key_dim];
    for (i, &j) in rows.iter().enumerate() {
        k[i * config.key_dim + j] = 1.0;
    }
    assert_eq!(v.len(), t * config.value_dim);
    (k, vec![1.0; t], vec![0.0; t])
}

#[test]
fn each_token_writes_exactly_its_row() {
    let config = MemoryConfig::new(1, 96, 40);
    let mut rng = rng("one-hot");
    let mut rows: Vec<usize> = (0..config.key_dim).collect();
    rows.shuffle(&mut rng);
    let rows = &rows[..70]; // more than one chunk, each row written once
    let v = random_inputs(&mut rng, &config, 1, rows.len(), Gates::Typical).v;
    let (k, beta, g) = one_hot_inputs(&config, rows, &v);
    let q = k.clone();
    let inputs = ForwardInputs {
        batch: 1,
        tokens: rows.len(),
        q: (&q).into(),
        k: (&k).into(),
        v: (&v).into(),
        beta: (&beta).into(),
        g: (&g).into(),
    };
    let initial = random_state(&mut rng, &config, 1);
    let mut state = initial.clone();
    let o = CpuBackend::new()
        .forward(&config, &inputs, &mut state)
        .unwrap();
    let vd = config.value_dim;
    let written: std::collections::HashMap<usize, usize> =
        rows.iter().enumerate().map(|(t, &j)| (j, t)).collect();
    for j in 0..config.key_dim {
        let got = &state.values()[j * vd..(j + 1) * vd];
        match written.get(&j) {
            Some(&t) => {
                let want = &v[t * vd..(t + 1) * vd];
                for (g, w) in got.iter().zip(want) {
                    assert!(
                        (g - w).abs() <= 1e-6 * w.abs().max(1.0),
                        "row {j}: {g} vs {w}"
                    );
                }
            }
            // Rows no key touched keep their values bit for bit.
            None => assert_eq!(
                got,
                &initial.values()[j * vd..(j + 1) * vd],
                "row {j} was touched"
            ),
        }
    }
    // Reading with the same one-hot key returns what was just written, times the scale.
    let scale = config.effective_scale();
    for (t, _) in rows.iter().enumerate() {
        for c in 0..vd {
            let (got, want) = (o[t * vd + c], scale * v[t * vd + c]);
            assert!(
                (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                "read of token {t}"
            );
        }
    }
}

#[test]
fn rewriting_a_row_replaces_it() {
    let config = MemoryConfig::new(1, 16, 16);
    let mut rng = rng("rewrite");
    let rows = [3, 7, 3, 3, 7];
    let v = random_inputs(&mut rng, &config, 1, rows.len(), Gates::Typical).v;
    let (k, beta, g) = one_hot_inputs(&config, &rows, &v);
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
    CpuBackend::new()
        .forward(&config, &inputs, &mut state)
        .unwrap();
    let vd = config.value_dim;
    for (row, last) in [(3, 3), (7, 4)] {
        let got = &state.values()[row * vd..(row + 1) * vd];
        let want = &v[last * vd..(last + 1) * vd];
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g - w).abs() <= 1e-6 * w.abs().max(1.0),
                "row {row} holds {g}, last write was {w}"
            );
        }
    }
    let untouched = state
        .values()
        .iter()
        .enumerate()
        .filter(|(i, _)| ![3, 7].contains(&(i / vd)));
    for (_, &x) in untouched {
        assert_eq!(x, 0.0);
    }
}
