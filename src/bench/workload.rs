//! Synthetic inputs for timing: unit-norm queries and keys, as Gated DeltaNet
//! normalises them, random values, β = 0.5 and a small decay. Neither the memory nor
//! attention has data-dependent work, so the values only need to be ordinary.

use crate::baseline::AttentionInputs;
use crate::inputs::ForwardInputs;

/// `tokens` tokens of one sequence: `q, k, v: [1, T, H, D]`, `beta, g: [1, T, H]`.
pub struct Workload {
    /// Tokens (`T`).
    pub tokens: usize,
    /// Heads (`H`).
    pub heads: usize,
    /// Values per head (`D`): attention's head dimension, the memory's `K = V`.
    pub head_dim: usize,
    /// Queries, `[1, T, H, D]`, unit norm per head.
    pub q: Vec<f32>,
    /// Keys, `[1, T, H, D]`, unit norm per head.
    pub k: Vec<f32>,
    /// Values, `[1, T, H, D]`, uniform in `[-0.5, 0.5)`.
    pub v: Vec<f32>,
    /// Write strengths, `[1, T, H]`, all 0.5.
    pub beta: Vec<f32>,
    /// Log-decays, `[1, T, H]`, all −0.02: a small decay.
    pub g: Vec<f32>,
}

impl Workload {
    /// Inputs made from `seed` alone, so every run of a bench times the same numbers.
    pub fn new(tokens: usize, heads: usize, head_dim: usize, seed: u64) -> Self {
        let mut rng = XorShift(seed | 1);
        let rows = tokens * heads;
        let unit_rows = |rng: &mut XorShift| {
            let mut x: Vec<f32> = (0..rows * head_dim).map(|_| rng.next_centred()).collect();
            for r in x.chunks_exact_mut(head_dim) {
                let n = r.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-6);
                r.iter_mut().for_each(|a| *a /= n);
            }
            x
        };
        let q = unit_rows(&mut rng);
        let k = unit_rows(&mut rng);
        let v = (0..rows * head_dim).map(|_| rng.next_centred()).collect();
        Workload {
            tokens,
            heads,
            head_dim,
            q,
            k,
            v,
            beta: vec![0.5; rows],
            g: vec![-0.02; rows],
        }
    }

    fn range(&self, t0: usize, tokens: usize, per_token: usize) -> std::ops::Range<usize> {
        assert!(t0 + tokens <= self.tokens, "workload range out of bounds");
        t0 * per_token..(t0 + tokens) * per_token
    }

    /// Tokens `t0..t0+tokens` as the memory's inputs.
    pub fn memory_inputs(&self, t0: usize, tokens: usize) -> ForwardInputs<'_> {
        let rows = self.range(t0, tokens, self.heads * self.head_dim);
        let gates = self.range(t0, tokens, self.heads);
        ForwardInputs {
            batch: 1,
            tokens,
            q: self.q[rows.clone()].into(),
            k: self.k[rows.clone()].into(),
            v: self.v[rows].into(),
            beta: self.beta[gates.clone()].into(),
            g: self.g[gates].into(),
        }
    }

    /// Tokens `t0..t0+tokens` as attention's inputs.
    pub fn attention_inputs(&self, t0: usize, tokens: usize) -> AttentionInputs<'_> {
        let rows = self.range(t0, tokens, self.heads * self.head_dim);
        AttentionInputs {
            batch: 1,
            tokens,
            q: self.q[rows.clone()].into(),
            k: self.k[rows.clone()].into(),
            v: self.v[rows].into(),
        }
    }

    /// Bytes of the buffers: the inputs here, not counting outputs.
    pub fn bytes(&self) -> u64 {
        ((self.q.len() + self.k.len() + self.v.len() + self.beta.len() + self.g.len()) * 4) as u64
    }
}

/// xorshift64: fast, deterministic and good enough for timing inputs.
struct XorShift(u64);

impl XorShift {
    fn next_centred(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }
}
