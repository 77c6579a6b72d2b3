//! The inputs of one forward call and their shape checks.

use crate::config::MemoryConfig;
use crate::error::Result;
use crate::state::State;
use crate::tensor::{check_len, check_output_len, Data};

/// Inputs of a forward over `batch` sequences of `tokens` tokens each, in the layout of
/// flash-linear-attention's gated delta rule: `q, k: [B, T, H, K]`, `v: [B, T, H, V]`,
/// `beta, g: [B, T, H]`, all row-major. `beta` is the write strength in (0, 1) and `g`
/// the log-decay (≤ 0); each tensor may have its own element type.
#[derive(Clone, Copy, Debug)]
pub struct ForwardInputs<'a> {
    /// Sequences (`B`).
    pub batch: usize,
    /// Tokens per sequence (`T`).
    pub tokens: usize,
    /// Queries, `[B, T, H, K]`.
    pub q: Data<'a>,
    /// Keys, `[B, T, H, K]`.
    pub k: Data<'a>,
    /// Values, `[B, T, H, V]`.
    pub v: Data<'a>,
    /// Write strengths, `[B, T, H]`.
    pub beta: Data<'a>,
    /// Log-decays, `[B, T, H]`.
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
            check_len(name, data.len(), &dims)?;
        }
        Ok(())
    }

    /// Number of output values: `B · T · H · V`.
    pub fn output_len(&self, config: &MemoryConfig) -> usize {
        self.batch * self.tokens * config.heads * config.value_dim
    }
}

/// Checks a forward call before anything runs: the rows against `config`, the state
/// against their batch, and room in `out` for exactly `B · T · H · V` reads.
pub(crate) fn check_forward_call<R: InputRows + ?Sized>(
    config: &MemoryConfig,
    rows: &R,
    state: &State,
    out: &[f32],
) -> Result<()> {
    rows.check(config)?;
    state.check_matches(config, rows.batch())?;
    check_output_len(
        out,
        rows.batch() * rows.tokens() * config.heads * config.value_dim,
    )
}

/// Where a backend reads a forward's inputs from, one (sequence, token, head) row at a
/// time: from tensors in memory ([`ForwardInputs`]) or computed on the fly by a model,
/// so that a streamed context never needs its features written out and read back.
pub trait InputRows: Sync {
    /// Sequences (`B`).
    fn batch(&self) -> usize;
    /// Tokens per sequence (`T`).
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

/// Input rows written out as f32 tensors, for backends that need them in memory (a GPU
/// backend's staging buffers). Reused across calls: buffers only grow.
#[derive(Default, Debug)]
pub struct MaterializedRows {
    /// Sequences (`B`) of the last fill.
    pub batch: usize,
    /// Tokens per sequence (`T`) of the last fill.
    pub tokens: usize,
    /// Queries, `[B, T, H, K]`, unscaled.
    pub q: Vec<f32>,
    /// Keys, `[B, T, H, K]`.
    pub k: Vec<f32>,
    /// Values, `[B, T, H, V]`.
    pub v: Vec<f32>,
    /// Write strengths, `[B, T, H]`.
    pub beta: Vec<f32>,
    /// Log-decays, `[B, T, H]`.
    pub g: Vec<f32>,
}

impl MaterializedRows {
    /// Writes every row of `rows` (queries unscaled), on all cores.
    pub fn fill(&mut self, rows: &dyn InputRows, config: &MemoryConfig) -> Result<()> {
        use rayon::prelude::*;
        rows.check(config)?;
        let (b, t, h) = (rows.batch(), rows.tokens(), config.heads);
        let (kd, vd) = (config.key_dim, config.value_dim);
        let n = b * t * h;
        self.batch = b;
        self.tokens = t;
        self.q.resize(n * kd, 0.0);
        self.k.resize(n * kd, 0.0);
        self.v.resize(n * vd, 0.0);
        self.beta.resize(n, 0.0);
        self.g.resize(n, 0.0);
        self.q
            .par_chunks_mut(kd)
            .zip(self.k.par_chunks_mut(kd))
            .zip(self.v.par_chunks_mut(vd))
            .zip(self.beta.par_iter_mut().zip(self.g.par_iter_mut()))
            .enumerate()
            .for_each(|(i, (((q, k), v), (beta, g)))| {
                let (seq, tok, head) = (i / (t * h), i / h % t, i % h);
                (*beta, *g) = rows.row(config, seq, tok, head, 1.0, q, k, 0, v);
            });
        Ok(())
    }

    /// The rows of the last fill as tensors for a forward.
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
}
