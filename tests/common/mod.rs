//! Shared test helpers: fresh random inputs and normalised error measures.
#![allow(dead_code)]

pub mod cli;
pub mod lm;
pub mod lm_configs;
pub mod lm_desc;
pub mod suite;

use half::bf16;
use ltm_engine::{ForwardInputs, MemoryConfig, State};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

/// A seed per run (fresh inputs every time), printed so a failure can be replayed
/// with `LTM_TEST_SEED=<seed>`.
pub fn rng(test: &str) -> StdRng {
    let seed = std::env::var("LTM_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            t.as_nanos() as u64 ^ (test.len() as u64) << 48
        });
    eprintln!("{test}: LTM_TEST_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

/// How strongly the memory forgets and writes.
#[derive(Clone, Copy, Debug)]
pub enum Gates {
    /// Gated DeltaNet-like: β = sigmoid(N(0,1)), g = logsigmoid(N(0,1)) / 16.
    Typical,
    /// g = 0: nothing is forgotten.
    NoDecay,
    /// g ≈ -5 per token: the state forgets almost everything within a few tokens.
    StrongDecay,
    /// β ∈ (0, 1e-3): almost nothing is written.
    BetaNearZero,
    /// β ∈ (0.999, 1): full overwrites.
    BetaNearOne,
}

pub struct Owned {
    pub batch: usize,
    pub tokens: usize,
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    pub beta: Vec<f32>,
    pub g: Vec<f32>,
}

impl Owned {
    pub fn inputs(&self) -> ForwardInputs<'_> {
        ForwardInputs {
            batch: self.batch,
            tokens: self.tokens,
            q: (&self.q).into(),
            k: (&self.k).into(),
            v: (&self.v).into(),
            beta: (&self.beta).into(),
            g: (&self.g).into(),
        }
    }

    /// Tokens `t0..t1` of every sequence, as a new input set.
    pub fn slice(&self, config: &MemoryConfig, t0: usize, t1: usize) -> Owned {
        let h = config.heads;
        let cut = |x: &[f32], per_token: usize| -> Vec<f32> {
            let mut out = Vec::new();
            for b in 0..self.batch {
                let row = |t: usize| (b * self.tokens + t) * per_token;
                out.extend_from_slice(&x[row(t0)..row(t1)]);
            }
            out
        };
        Owned {
            batch: self.batch,
            tokens: t1 - t0,
            q: cut(&self.q, h * config.key_dim),
            k: cut(&self.k, h * config.key_dim),
            v: cut(&self.v, h * config.value_dim),
            beta: cut(&self.beta, h),
            g: cut(&self.g, h),
        }
    }
}

pub fn normal(rng: &mut StdRng, n: usize) -> Vec<f32> {
    let d = Normal::new(0.0f32, 1.0).unwrap();
    (0..n).map(|_| d.sample(rng)).collect()
}

/// Rows of `dim` values, each scaled to unit L2 norm, as Gated DeltaNet's keys are.
fn unit_rows(rng: &mut StdRng, rows: usize, dim: usize) -> Vec<f32> {
    let mut x = normal(rng, rows * dim);
    for r in x.chunks_exact_mut(dim) {
        let n = r.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-6);
        r.iter_mut().for_each(|v| *v /= n);
    }
    x
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

pub fn random_inputs(
    rng: &mut StdRng,
    config: &MemoryConfig,
    batch: usize,
    tokens: usize,
    gates: Gates,
) -> Owned {
    let rows = batch * tokens * config.heads;
    let q = unit_rows(rng, rows, config.key_dim);
    let k = unit_rows(rng, rows, config.key_dim);
    let v = normal(rng, rows * config.value_dim);
    let z = normal(rng, rows);
    let (beta, g): (Vec<f32>, Vec<f32>) = z
        .iter()
        .map(|&z| {
            let u: f32 = rng.random();
            match gates {
                Gates::Typical => (sigmoid(z), -(1.0 + (-z).exp()).ln() / 16.0),
                Gates::NoDecay => (sigmoid(z), 0.0),
                Gates::StrongDecay => (sigmoid(z), -5.0 + 0.5 * z),
                Gates::BetaNearZero => (1e-3 * u, -(1.0 + (-z).exp()).ln() / 16.0),
                Gates::BetaNearOne => (1.0 - 1e-3 * u, -(1.0 + (-z).exp()).ln() / 16.0),
            }
        })
        .unzip();
    Owned {
        batch,
        tokens,
        q,
        k,
        v,
        beta,
        g,
    }
}

pub fn random_state(rng: &mut StdRng, config: &MemoryConfig, batch: usize) -> State {
    let values = normal(rng, batch * config.state_len());
    State::from_values(config, batch, values).unwrap()
}

pub fn to_bf16(x: &[f32]) -> Vec<bf16> {
    x.iter().map(|&v| bf16::from_f32(v)).collect()
}

/// `max |got − want| / max |want|` (or the plain max error when `want` is all zeros).
/// Any NaN or infinity in `got` gives infinity, so it can never pass.
pub fn normalised_error(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    if got.iter().any(|x| !x.is_finite()) {
        return f64::INFINITY;
    }
    let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let err = got
        .iter()
        .zip(want)
        .fold(0.0f64, |m, (g, w)| m.max((*g as f64 - w).abs()));
    if scale > 0.0 {
        err / scale
    } else {
        err
    }
}
