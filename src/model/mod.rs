//! Models turn tokens into the memory's inputs: keys, values, queries and gates.

pub mod random_features;

use rayon::prelude::*;

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
    /// Writes the features of `window` into `out`, whose slices are sized for it.
    /// `prefix` holds up to `context_len()` tokens before it; fewer at the start of a
    /// context.
    fn featurize(&self, prefix: &[u64], window: &[u64], out: FeaturesMut<'_>);
}

/// Featurizes `window` into `out` (resized to fit) on all cores: the window is cut
/// into pieces, each with the tokens before it as its prefix.
pub fn featurize_parallel(model: &dyn Model, prefix: &[u64], window: &[u64], out: &mut Features) {
    const PIECE: usize = 512;
    out.resize(model.memory_config(), window.len());
    let ctx = model.context_len();
    let mut pieces = Vec::with_capacity(window.len().div_ceil(PIECE));
    let mut rest = out.as_mut();
    let mut start = 0;
    while start < window.len() {
        let end = (start + PIECE).min(window.len());
        let (piece, tail) = rest.split_at(end - start, model.memory_config());
        rest = tail;
        pieces.push((start, end, piece));
        start = end;
    }
    pieces.into_par_iter().for_each(|(start, end, piece)| {
        // The piece's prefix: the `ctx` tokens before it, from the window or before it.
        let mut before: Vec<u64> = prefix.to_vec();
        before.extend_from_slice(&window[start.saturating_sub(ctx)..start]);
        let before = &before[before.len().saturating_sub(ctx)..];
        model.featurize(before, &window[start..end], piece);
    });
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

    pub fn as_mut(&mut self) -> FeaturesMut<'_> {
        FeaturesMut {
            q: &mut self.q,
            k: &mut self.k,
            v: &mut self.v,
            beta: &mut self.beta,
            g: &mut self.g,
        }
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

/// Mutable views of the feature buffers of some tokens, `[T, H, *]`.
pub struct FeaturesMut<'a> {
    pub q: &'a mut [f32],
    pub k: &'a mut [f32],
    pub v: &'a mut [f32],
    pub beta: &'a mut [f32],
    pub g: &'a mut [f32],
}

impl<'a> FeaturesMut<'a> {
    /// Tokens these buffers hold.
    pub fn tokens(&self, config: &MemoryConfig) -> usize {
        self.beta.len() / config.heads
    }

    /// The first `tokens` tokens, and the rest.
    pub fn split_at(
        self,
        tokens: usize,
        config: &MemoryConfig,
    ) -> (FeaturesMut<'a>, FeaturesMut<'a>) {
        let rows = tokens * config.heads;
        let (q0, q1) = self.q.split_at_mut(rows * config.key_dim);
        let (k0, k1) = self.k.split_at_mut(rows * config.key_dim);
        let (v0, v1) = self.v.split_at_mut(rows * config.value_dim);
        let (b0, b1) = self.beta.split_at_mut(rows);
        let (g0, g1) = self.g.split_at_mut(rows);
        (
            FeaturesMut {
                q: q0,
                k: k0,
                v: v0,
                beta: b0,
                g: g0,
            },
            FeaturesMut {
                q: q1,
                k: k1,
                v: v1,
                beta: b1,
                g: g1,
            },
        )
    }
}
