//! Models turn tokens into the memory's inputs: keys, values, queries and gates.

pub mod random_features;

use std::cell::RefCell;

use crate::config::MemoryConfig;
use crate::error::{Error, Result};
use crate::inputs::{InputRows, MaterializedRows};

pub use random_features::RandomFeatureModel;

/// A map from tokens (and the tokens just before them) to the memory's inputs.
///
/// A token's features depend only on it and the `context_len()` tokens before it, so a
/// run can be cut into windows anywhere, or resumed from a state file, with the same
/// result; and the backend can ask for them row by row while it computes, without
/// features ever being written out for a whole window.
pub trait Model: Send + Sync {
    /// Human-readable description, for summaries.
    fn name(&self) -> String;
    /// The memory the model writes into, with the model's digest in
    /// [`MemoryConfig::model`], so state files of another model are refused.
    fn memory_config(&self) -> &MemoryConfig;
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
    /// The model that computes each row's features.
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

/// A window's features (after `prefix`) written out as `[T, H, *]` tensors, computed on
/// all cores: for tests, benchmarks, and comparing with features read from memory.
pub fn materialize(model: &dyn Model, prefix: &[u64], window: &[u64]) -> MaterializedRows {
    let mut tokens = prefix.to_vec();
    tokens.extend_from_slice(window);
    let rows = ModelRows {
        model,
        tokens: &tokens,
        start: prefix.len(),
    };
    let mut out = MaterializedRows::default();
    out.fill(&rows, model.memory_config())
        .expect("a model's rows fit its own configuration");
    out
}
