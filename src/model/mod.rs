//! Models turn tokens into the memory's inputs: keys, values, queries and gates.

pub mod random_features;

use std::cell::RefCell;

use rayon::prelude::*;

use crate::config::MemoryConfig;
use crate::error::{Error, Result};
use crate::inputs::{ForwardInputs, InputRows};

pub use random_features::RandomFeatureModel;

/// A map from tokens (and the tokens just before them) to the memory's inputs.
///
/// A token's features depend only on it and the `context_len()` tokens before it, so a
/// run can be cut into windows anywhere, or resumed from a state file, with the same
/// result; and the backend can ask for them row by row while it computes, without
/// features ever being written out for a whole window.
pub trait Model: Send + Sync {
    fn name(&self) -> String;
    /// The memory the model writes into.
    fn memory_config(&self) -> &MemoryConfig;
    /// Identifies everything that changes what a state means; state files carry it.
    fn fingerprint(&self) -> u64;
    /// Tokens of context each token's features depend on.
    fn context_len(&self) -> usize;
    /// Largest token id accepted from `bytes` and `u32` files, plus one.
    fn vocab_size(&self) -> u64;
    /// Features of `tokens[t]` for head `h`: writes `q`, `k` (`key_dim`) and `v`
    /// (`value_dim`), returns `(β, g)`. `tokens[..t]` holds the tokens before it, at
    /// least `context_len()` of them unless the context starts there.
    fn token_features(
        &self,
        tokens: &[u64],
        t: usize,
        h: usize,
        q: &mut [f32],
        k: &mut [f32],
        v: &mut [f32],
    ) -> (f32, f32);
}

/// A window of tokens as the backend's input rows, features computed on demand.
pub struct ModelRows<'a> {
    pub model: &'a dyn Model,
    /// The context before the window, then the window.
    pub tokens: &'a [u64],
    /// Where the window starts in `tokens`.
    pub start: usize,
}

thread_local! {
    /// A whole value row, for backends that ask for a slice of one.
    static VALUE_ROW: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

impl InputRows for ModelRows<'_> {
    fn batch(&self) -> usize {
        1
    }

    fn tokens(&self) -> usize {
        self.tokens.len() - self.start
    }

    fn check(&self, config: &MemoryConfig) -> Result<()> {
        let own = self.model.memory_config();
        if (own.heads, own.key_dim, own.value_dim)
            != (config.heads, config.key_dim, config.value_dim)
        {
            return Err(Error::Config(format!(
                "model {} makes H={}, K={}, V={}, the memory is H={}, K={}, V={}",
                self.model.name(),
                own.heads,
                own.key_dim,
                own.value_dim,
                config.heads,
                config.key_dim,
                config.value_dim
            )));
        }
        Ok(())
    }

    fn row(
        &self,
        config: &MemoryConfig,
        _b: usize,
        t: usize,
        h: usize,
        scale: f32,
        q: &mut [f32],
        k: &mut [f32],
        v0: usize,
        v: &mut [f32],
    ) -> (f32, f32) {
        let t = self.start + t;
        let gates = if v0 == 0 && v.len() == config.value_dim {
            self.model.token_features(self.tokens, t, h, q, k, v)
        } else {
            VALUE_ROW.with_borrow_mut(|row| {
                row.resize(config.value_dim, 0.0);
                let gates = self.model.token_features(self.tokens, t, h, q, k, row);
                v.copy_from_slice(&row[v0..v0 + v.len()]);
                gates
            })
        };
        if scale != 1.0 {
            q.iter_mut().for_each(|x| *x *= scale);
        }
        gates
    }
}

/// A window's features written out as tensors `[T, H, *]`, for tests, benchmarks and
/// other backends that want them materialised.
#[derive(Default, Clone, Debug)]
pub struct Features {
    pub tokens: usize,
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    pub beta: Vec<f32>,
    pub g: Vec<f32>,
}

impl Features {
    /// Computes the features of `window` (after `prefix`) on all cores.
    pub fn compute(model: &dyn Model, prefix: &[u64], window: &[u64]) -> Features {
        let c = model.memory_config();
        let (heads, kd, vd) = (c.heads, c.key_dim, c.value_dim);
        let mut tokens = prefix.to_vec();
        tokens.extend_from_slice(window);
        let rows = window.len() * heads;
        let mut f = Features {
            tokens: window.len(),
            q: vec![0.0; rows * kd],
            k: vec![0.0; rows * kd],
            v: vec![0.0; rows * vd],
            beta: vec![0.0; rows],
            g: vec![0.0; rows],
        };
        f.q.par_chunks_mut(kd)
            .zip(f.k.par_chunks_mut(kd))
            .zip(f.v.par_chunks_mut(vd))
            .zip(f.beta.par_iter_mut().zip(f.g.par_iter_mut()))
            .enumerate()
            .for_each(|(row, (((q, k), v), (beta, g)))| {
                let (t, h) = (prefix.len() + row / heads, row % heads);
                (*beta, *g) = model.token_features(&tokens, t, h, q, k, v);
            });
        f
    }

    pub fn inputs(&self) -> ForwardInputs<'_> {
        ForwardInputs {
            batch: 1,
            tokens: self.tokens,
            q: (&self.q).into(),
            k: (&self.k).into(),
            v: (&self.v).into(),
            beta: (&self.beta).into(),
            g: (&self.g).into(),
        }
    }
}
