//! A sequence fed in pieces, with the state carried between calls, gives what one
//! call over the whole sequence gives.

mod common;

use common::*;
use ltm_engine::{Backend, CpuBackend, MemoryConfig, State};

fn run_pieces(
    config: &MemoryConfig,
    inputs: &Owned,
    cuts: &[usize],
    initial: &State,
) -> (Vec<f32>, State) {
    let backend = CpuBackend::new();
    let mut state = initial.clone();
    let mut pieces = Vec::new();
    let mut bounds = vec![0];
    bounds.extend_from_slice(cuts);
    bounds.push(inputs.tokens);
    for w in bounds.windows(2) {
        let piece = inputs.slice(config, w[0], w[1]);
        pieces.push(
            backend
                .forward(config, &piece.inputs(), &mut state)
                .unwrap(),
        );
    }
    // Reassemble [B, T, H, V] from per-piece outputs.
    let row = config.heads * config.value_dim;
    let mut o = Vec::new();
    for b in 0..inputs.batch {
        for (p, w) in pieces.iter().zip(bounds.windows(2)) {
            let len = (w[1] - w[0]) * row;
            o.extend_from_slice(&p[b * len..(b + 1) * len]);
        }
    }
    (o, state)
}

#[test]
fn chunk_aligned_pieces_are_bitwise_identical() {
    let config = MemoryConfig::new(3, 32, 48);
    let mut rng = rng("aligned");
    let inputs = random_inputs(&mut rng, &config, 2, 1000, Gates::Typical);
    let initial = random_state(&mut rng, &config, 2);
    let (whole_o, whole_s) = run_pieces(&config, &inputs, &[], &initial);
    let (o, s) = run_pieces(&config, &inputs, &[64, 512, 576], &initial);
    assert_eq!(o, whole_o);
    assert_eq!(s.values(), whole_s.values());
    assert_eq!(s.tokens_seen(), 1000);
}

#[test]
fn arbitrary_pieces_match_one_call_and_the_reference() {
    let config = MemoryConfig::new(2, 64, 32);
    let mut rng = rng("pieces");
    let inputs = random_inputs(&mut rng, &config, 2, 1000, Gates::Typical);
    let initial = random_state(&mut rng, &config, 2);
    let (whole_o, whole_s) = run_pieces(&config, &inputs, &[], &initial);
    let want_o: Vec<f64> = whole_o.iter().map(|&x| x as f64).collect();
    let want_s: Vec<f64> = whole_s.values().iter().map(|&x| x as f64).collect();
    for cuts in [
        vec![1],
        vec![500],
        vec![37, 100, 101, 999],
        vec![63, 65, 127, 129],
    ] {
        let (o, s) = run_pieces(&config, &inputs, &cuts, &initial);
        // Pieces move the chunk boundaries, so only rounding may differ.
        let (eo, es) = (
            normalised_error(&o, &want_o),
            normalised_error(s.values(), &want_s),
        );
        assert!(
            eo < 1e-6 && es < 1e-6,
            "cuts {cuts:?}: output {eo:e}, state {es:e}"
        );
        assert_eq!(s.tokens_seen(), 1000);
    }
}

#[test]
fn empty_pieces_change_nothing() {
    let config = MemoryConfig::new(1, 16, 16);
    let mut rng = rng("empty");
    let initial = random_state(&mut rng, &config, 1);
    let inputs = random_inputs(&mut rng, &config, 1, 0, Gates::Typical);
    let mut state = initial.clone();
    let o = CpuBackend::new()
        .forward(&config, &inputs.inputs(), &mut state)
        .unwrap();
    assert!(o.is_empty());
    assert_eq!(state, initial);
}
