//! The memory's token-by-token decode path against the float64 recurrence and
//! against the chunked forward.

mod common;

use common::*;
use ltm_engine::backend::cpu::Isa;
use ltm_engine::reference::recurrent_forward;
use ltm_engine::{Backend, CpuBackend, Error, MemoryConfig};

fn decode_error(
    backend: &CpuBackend,
    config: &MemoryConfig,
    batch: usize,
    tokens: usize,
    gates: Gates,
    name: &str,
) -> f64 {
    let mut rng = rng(name);
    let inputs = random_inputs(&mut rng, config, batch, tokens, gates);
    let initial = random_state(&mut rng, config, batch);
    let mut state = initial.clone();
    let mut out = vec![f32::NAN; inputs.inputs().output_len(config)];
    backend
        .decode_into(config, &inputs.inputs(), &mut state, &mut out)
        .unwrap();
    assert_eq!(state.tokens_seen(), tokens as u64);
    let mut want_state: Vec<f64> = initial.values().iter().map(|&x| x as f64).collect();
    let want = recurrent_forward(config, &inputs.inputs(), &mut want_state).unwrap();
    normalised_error(&out, &want).max(normalised_error(state.values(), &want_state))
}

#[test]
fn decode_matches_the_recurrence() {
    for (h, k, v) in [(2, 64, 64), (3, 17, 40), (1, 128, 16)] {
        let config = MemoryConfig::new(h, k, v);
        for tokens in [1, 2, 7] {
            for gates in [Gates::Typical, Gates::StrongDecay, Gates::BetaNearOne] {
                for backend in [CpuBackend::new(), CpuBackend::new().with_isa(Isa::Portable)] {
                    let err = decode_error(&backend, &config, 2, tokens, gates, "decode");
                    assert!(
                        err < 1e-5,
                        "H={h} K={k} V={v} T={tokens} {gates:?} [{}]: {err:e}",
                        backend.name()
                    );
                }
            }
        }
    }
    // Enough state values to run the heads in parallel.
    let config = MemoryConfig::new(8, 128, 128);
    let err = decode_error(
        &CpuBackend::new(),
        &config,
        2,
        1,
        Gates::Typical,
        "decode_parallel",
    );
    assert!(err < 1e-5, "parallel heads: {err:e}");
}

#[test]
fn decode_continues_a_forward() {
    let config = MemoryConfig::new(2, 32, 48);
    let mut rng = rng("continue");
    let inputs = random_inputs(&mut rng, &config, 2, 300, Gates::Typical);
    let backend = CpuBackend::new();
    let mut whole_state = random_state(&mut rng, &config, 2);
    let mut state = whole_state.clone();
    let whole = backend
        .forward(&config, &inputs.inputs(), &mut whole_state)
        .unwrap();
    let head = inputs.slice(&config, 0, 297);
    backend
        .forward(&config, &head.inputs(), &mut state)
        .unwrap();
    let mut last = Vec::new();
    for t in 297..300 {
        let step = inputs.slice(&config, t, t + 1);
        let mut o = vec![0.0; 2 * 2 * 48];
        backend
            .decode_into(&config, &step.inputs(), &mut state, &mut o)
            .unwrap();
        last.push(o);
    }
    let want: Vec<f64> = whole_state.values().iter().map(|&x| x as f64).collect();
    assert!(normalised_error(state.values(), &want) < 1e-6);
    // The last token's outputs of both sequences.
    let row = 2 * 48;
    for b in 0..2 {
        let got = &last[2][b * row..(b + 1) * row];
        let w: Vec<f64> = whole[(b * 300 + 299) * row..(b * 300 + 300) * row]
            .iter()
            .map(|&x| x as f64)
            .collect();
        assert!(normalised_error(got, &w) < 1e-6);
    }
}

#[test]
fn decode_rejects_bad_shapes() {
    let config = MemoryConfig::new(2, 8, 8);
    let mut rng = rng("decode_errors");
    let inputs = random_inputs(&mut rng, &config, 1, 1, Gates::Typical);
    let mut state = random_state(&mut rng, &config, 1);
    let before = state.clone();
    let mut short = vec![0.0; 3];
    match CpuBackend::new().decode_into(&config, &inputs.inputs(), &mut state, &mut short) {
        Err(Error::Shape { tensor, .. }) => assert_eq!(tensor, "o"),
        other => panic!("expected a shape error for o, got {other:?}"),
    }
    let mut wrong = random_state(&mut rng, &config, 2);
    let mut out = vec![0.0; 16];
    assert!(matches!(
        CpuBackend::new().decode_into(&config, &inputs.inputs(), &mut wrong, &mut out),
        Err(Error::StateMismatch(_))
    ));
    assert_eq!(state, before);
}
