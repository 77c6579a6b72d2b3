//! The whole state of one sequence in a language model: every layer's memory and
//! conv cache, and the last token's hidden vector (what the next token's probability
//! is computed from). Fixed size whatever the length of the sequence.

use crate::error::{Error, Result};
use crate::state::State;

use super::model::LanguageModel;

/// One layer's part of a sequence's state.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerState {
    /// The gated-delta-rule memory, f32 `[1, HV, K, V]` (the engine's layout; fla's
    /// cache holds its transpose `[1, HV, V, K]`).
    pub memory: State,
    /// The last `W` inputs of the short convolution before it, `[2·Dk + Dv, W]`, oldest
    /// first (q channels, then k, then v; fla keeps three tensors `[1, C, W]`).
    pub conv: Vec<f32>,
}

/// A sequence's state, on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelState {
    /// Fingerprint of the model this state belongs to.
    pub model: u64,
    /// Per layer, in order.
    pub layers: Vec<LayerState>,
    /// The residual stream after the last layer for the last token fed, `[D]`; `None`
    /// before any token.
    pub last_hidden: Option<Vec<f32>>,
    /// Tokens fed so far.
    pub tokens: u64,
}

impl ModelState {
    /// The state of an empty sequence.
    pub fn zeros(model: &LanguageModel) -> Self {
        let c = model.config();
        let conv = (2 * c.key_width() + c.value_width()) * c.conv_size;
        ModelState {
            model: model.fingerprint(),
            layers: (0..c.layers)
                .map(|_| LayerState {
                    memory: State::zeros(model.memory_config(), 1),
                    conv: vec![0.0; conv],
                })
                .collect(),
            last_hidden: None,
            tokens: 0,
        }
    }

    /// A copy that shares no values with `self` (a plain clone shares them until the
    /// first write, which then pays for the copy): for timing steps from one state.
    pub fn unshared(&self) -> ModelState {
        let mut out = self.clone();
        for layer in &mut out.layers {
            let tokens = layer.memory.tokens_seen();
            let dims = layer.memory.dims();
            let config = crate::config::MemoryConfig::new(dims[1], dims[2], dims[3]);
            let mut fresh = State::from_values(&config, dims[0], layer.memory.values().to_vec())
                .expect("the same shape");
            fresh.set_tokens_seen(tokens);
            layer.memory = fresh;
        }
        out
    }

    /// Fails unless this state has `model`'s fingerprint and shapes.
    pub fn check_matches(&self, model: &LanguageModel) -> Result<()> {
        if self.model != model.fingerprint() {
            return Err(Error::StateMismatch(format!(
                "the state belongs to another model (fingerprint {:016x}, this model {} has {:016x})",
                self.model,
                model.name(),
                model.fingerprint()
            )));
        }
        let c = model.config();
        let conv = (2 * c.key_width() + c.value_width()) * c.conv_size;
        if self.layers.len() != c.layers {
            return Err(Error::StateMismatch(format!(
                "expected {} layers, found {}",
                c.layers,
                self.layers.len()
            )));
        }
        for (i, layer) in self.layers.iter().enumerate() {
            layer
                .memory
                .check_matches(model.memory_config(), 1)
                .map_err(|e| Error::StateMismatch(format!("layer {i}: {e}")))?;
            if layer.conv.len() != conv {
                return Err(Error::StateMismatch(format!(
                    "layer {i}: conv cache of {} values, expected {conv}",
                    layer.conv.len()
                )));
            }
        }
        if let Some(h) = &self.last_hidden {
            if h.len() != c.hidden_size {
                return Err(Error::StateMismatch(format!(
                    "last hidden vector of {} values, expected {}",
                    h.len(),
                    c.hidden_size
                )));
            }
        }
        Ok(())
    }
}
