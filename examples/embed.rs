//! Embedding ltm-engine as a library: stream a long sequence through the memory in
//! pieces, save the state, load it back and keep going.
//!
//! `cargo run --release --example embed`

use std::time::Instant;

use ltm_engine::state_file::{load_state, save_state};
use ltm_engine::{Backend, CpuBackend, ForwardInputs, MemoryConfig, State};

fn main() -> ltm_engine::Result<()> {
    let config = MemoryConfig::new(4, 64, 64);
    let backend = CpuBackend::new();
    let mut state = State::zeros(&config, 1);
    let piece = 16_384;
    let pieces = 16;

    let started = Instant::now();
    let mut out = vec![0.0f32; piece * config.heads * config.value_dim];
    for p in 0..pieces {
        let [q, k, v, beta, g] = synthetic(&config, piece, p as u32);
        let inputs = ForwardInputs {
            batch: 1,
            tokens: piece,
            q: (&q).into(),
            k: (&k).into(),
            v: (&v).into(),
            beta: (&beta).into(),
            g: (&g).into(),
        };
        backend.forward_into(&config, &inputs, &mut state, &mut out)?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{} tokens through {} in {:.2} s ({:.0} tokens/s, synthetic inputs incl.); state {} KiB",
        state.tokens_seen(),
        backend.name(),
        secs,
        state.tokens_seen() as f64 / secs,
        state.size_bytes() / 1024
    );

    let path = std::env::temp_dir().join("ltm-engine-example.ltmstate");
    save_state(&path, &config, &state)?;
    let loaded = load_state(&path, &config)?;
    assert_eq!(loaded, state);
    println!(
        "saved and reloaded {} ({} tokens seen)",
        path.display(),
        loaded.tokens_seen()
    );
    std::fs::remove_file(&path).ok();
    Ok(())
}

/// Unit-norm keys and queries, values in [-0.5, 0.5], β = 0.5, a mild decay.
fn synthetic(config: &MemoryConfig, tokens: usize, seed: u32) -> [Vec<f32>; 5] {
    let mut x = seed.wrapping_mul(0x9E37_79B9) | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x as f32 / u32::MAX as f32 - 0.5
    };
    let rows = tokens * config.heads;
    let mut unit = |dim: usize| {
        let mut v: Vec<f32> = (0..rows * dim).map(|_| next()).collect();
        for r in v.chunks_exact_mut(dim) {
            let n = r.iter().map(|a| a * a).sum::<f32>().sqrt();
            r.iter_mut().for_each(|a| *a /= n);
        }
        v
    };
    let (q, k, v) = (
        unit(config.key_dim),
        unit(config.key_dim),
        unit(config.value_dim),
    );
    [q, k, v, vec![0.5; rows], vec![-0.01; rows]]
}
