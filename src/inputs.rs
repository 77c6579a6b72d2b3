//! The inputs of one forward call and their shape checks.

use crate::config::MemoryConfig;
use crate::error::{Error, Result};
use crate::tensor::{shape_string, Data};

/// Inputs of a forward over `batch` sequences of `tokens` tokens each, in the layout of
/// flash-linear-attention's gated delta rule: `q, k: [B, T, H, K]`, `v: [B, T, H, V]`,
/// `beta, g: [B, T, H]`, all row-major. `beta` is the write strength in (0, 1) and `g`
/// the log-decay (≤ 0); each tensor may have its own element type.
#[derive(Clone, Copy, Debug)]
pub struct ForwardInputs<'a> {
    pub batch: usize,
    pub tokens: usize,
    pub q: Data<'a>,
    pub k: Data<'a>,
    pub v: Data<'a>,
    pub beta: Data<'a>,
    pub g: Data<'a>,
}

impl<'a> ForwardInputs<'a> {
    /// Checks every tensor's length against the shape implied by `config`, naming the
    /// first tensor that does not fit.
    pub fn validate(&self, config: &MemoryConfig) -> Result<()> {
        config.validate()?;
        let (b, t, h) = (self.batch, self.tokens, config.heads);
        let expected = [
            ("q", self.q, vec![b, t, h, config.key_dim]),
            ("k", self.k, vec![b, t, h, config.key_dim]),
            ("v", self.v, vec![b, t, h, config.value_dim]),
            ("beta", self.beta, vec![b, t, h]),
            ("g", self.g, vec![b, t, h]),
        ];
        for (name, data, dims) in expected {
            let want: usize = dims.iter().product();
            if data.len() != want {
                return Err(Error::Shape {
                    tensor: name.to_string(),
                    expected: format!("{} ({want} values)", shape_string(&dims)),
                    found: format!("{} values", data.len()),
                });
            }
        }
        Ok(())
    }

    /// Number of output values: `B · T · H · V`.
    pub fn output_len(&self, config: &MemoryConfig) -> usize {
        self.batch * self.tokens * config.heads * config.value_dim
    }
}
