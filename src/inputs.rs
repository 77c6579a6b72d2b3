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

/// Where a backend reads a forward's inputs from, one (sequence, token, head) row at a
/// time: from tensors in memory ([`ForwardInputs`]) or computed on the fly by a model,
/// so that a streamed context never needs its features written out and read back.
pub trait InputRows: Sync {
    fn batch(&self) -> usize;
    fn tokens(&self) -> usize;
    /// Fails unless the rows fit `config`.
    fn check(&self, config: &MemoryConfig) -> Result<()>;
    /// Writes token `t` of sequence `b`, head `h`: `q` (times `scale`) and `k`, each
    /// `key_dim` long, and value columns `v0..v0 + v.len()`; returns `(β, g)`.
    #[allow(clippy::too_many_arguments)]
    fn row(
        &self,
        config: &MemoryConfig,
        b: usize,
        t: usize,
        h: usize,
        scale: f32,
        q: &mut [f32],
        k: &mut [f32],
        v0: usize,
        v: &mut [f32],
    ) -> (f32, f32);
}

impl InputRows for ForwardInputs<'_> {
    fn batch(&self) -> usize {
        self.batch
    }

    fn tokens(&self) -> usize {
        self.tokens
    }

    fn check(&self, config: &MemoryConfig) -> Result<()> {
        self.validate(config)
    }

    #[inline(always)]
    fn row(
        &self,
        config: &MemoryConfig,
        b: usize,
        t: usize,
        h: usize,
        scale: f32,
        q: &mut [f32],
        k: &mut [f32],
        v0: usize,
        v: &mut [f32],
    ) -> (f32, f32) {
        let gate = (b * self.tokens + t) * config.heads + h;
        let (kd, vd) = (config.key_dim, config.value_dim);
        self.q.read_scaled(gate * kd, q, scale);
        self.k.read_scaled(gate * kd, k, 1.0);
        self.v.read_scaled(gate * vd + v0, v, 1.0);
        (self.beta.get(gate), self.g.get(gate))
    }
}
