//! Models turn tokens into the memory's inputs: keys, values, queries and gates.

pub mod random_features;

use crate::config::MemoryConfig;
use crate::inputs::ForwardInputs;

pub use random_features::RandomFeatureModel;

/// A map from tokens (and the tokens just before them) to the memory's inputs.
///
/// Models are stateless between windows: whatever context they need comes in as
/// `prefix`, the `context_len()` tokens before the window, so a run can be cut into
/// windows anywhere, or resumed from a state file, with the same result.
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
    /// Writes the features of `window` into `out` (resized to fit). `prefix` holds up to
    /// `context_len()` tokens before it; fewer at the start of a context.
    fn featurize(&self, prefix: &[u64], window: &[u64], out: &mut Features);
}

/// The memory's inputs for one window of one sequence, `[T, H, *]` row-major, f32.
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
    /// Sizes every buffer for `tokens` tokens; capacity is kept, so a reused
    /// `Features` allocates only on its first, largest window.
    pub fn resize(&mut self, config: &MemoryConfig, tokens: usize) {
        let rows = tokens * config.heads;
        self.tokens = tokens;
        self.q.resize(rows * config.key_dim, 0.0);
        self.k.resize(rows * config.key_dim, 0.0);
        self.v.resize(rows * config.value_dim, 0.0);
        self.beta.resize(rows, 0.0);
        self.g.resize(rows, 0.0);
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
