//! Sparse-key writes and reads of the gated delta rule: each key addresses a few rows of
//! a very tall memory (Kanerva-style hashed keys), so a write or read costs `s · V`
//! instead of the dense `K · V`, and a multi-GiB state stays affordable per token.
//!
//! Semantics are those of DESIGN.md §1 with a key `k` whose only non-zero entries are
//! `weights[i]` at `rows[i]` (i < s), and no decay (`g = 0`):
//!
//! ```text
//! u = β (v − Sᵀ k);   S ← S + k uᵀ          (write, token by token, in order)
//! o = scale · Sᵀ q                           (read, state unchanged)
//! ```
//!
//! A sparse key written out densely gives exactly the dense recurrence, which is how
//! the CPU implementation is tested (`reference::recurrent_forward` with `g = 0`).
//! Decay is left out on purpose: `exp(g) · S` touches all `K · V` values per token, which
//! is what sparse keys avoid (a lazy global decay factor would need a place in the state
//! file; nothing needs it yet).

use crate::config::MemoryConfig;
use crate::error::{Error, Result};
use crate::state::State;
use crate::tensor::{check_len, check_output_len, Data};

/// Keys of `batch × tokens × heads` tokens, each with `active` (row, weight) entries,
/// laid out `[B, T, H, s]` row-major like the dense inputs.
#[derive(Clone, Copy, Debug)]
pub struct SparseKeys<'a> {
    /// Sequences.
    pub batch: usize,
    /// Tokens per sequence.
    pub tokens: usize,
    /// Active rows per key (`s`).
    pub active: usize,
    /// Row of each entry, `< key_dim`, `[B, T, H, s]`.
    pub rows: &'a [u32],
    /// Weight of each entry, `[B, T, H, s]` (finite).
    pub weights: &'a [f32],
}

impl SparseKeys<'_> {
    /// Checks lengths and that every row is inside the memory (`< key_dim`); names the
    /// first offending token and head.
    pub fn validate(&self, config: &MemoryConfig, name: &str) -> Result<()> {
        config.validate()?;
        let dims = [self.batch, self.tokens, config.heads, self.active];
        for (tensor, len) in [("rows", self.rows.len()), ("weights", self.weights.len())] {
            check_len(format!("{name}.{tensor}"), len, &dims)?;
        }
        if let Some(i) = self.rows.iter().position(|&r| r as usize >= config.key_dim) {
            let per_token = config.heads * self.active;
            return Err(Error::Config(format!(
                "{name}: row {} at token {} head {} is outside the memory's {} rows",
                self.rows[i],
                (i / per_token) % self.tokens.max(1),
                (i / self.active) % config.heads,
                config.key_dim
            )));
        }
        if let Some(i) = self.weights.iter().position(|w| !w.is_finite()) {
            return Err(Error::Config(format!(
                "{name}: weight {} at position {i} is not finite",
                self.weights[i]
            )));
        }
        Ok(())
    }
}

/// Writes: sparse keys, dense values `v: [B, T, H, V]` and write strengths
/// `beta: [B, T, H]` (β = 0 writes nothing and costs nothing).
#[derive(Clone, Copy, Debug)]
pub struct SparseWrites<'a> {
    /// Where each token is written.
    pub keys: SparseKeys<'a>,
    /// What is written, `[B, T, H, V]`.
    pub v: Data<'a>,
    /// Write strength per token and head, `[B, T, H]`, in `[0, 1]`.
    pub beta: Data<'a>,
}

impl SparseWrites<'_> {
    /// Checks the keys (see [`SparseKeys::validate`]) and the lengths of `v` and `beta`.
    pub fn validate(&self, config: &MemoryConfig) -> Result<()> {
        self.keys.validate(config, "k")?;
        let (b, t, h) = (self.keys.batch, self.keys.tokens, config.heads);
        for (name, data, dims) in [
            ("v", self.v, vec![b, t, h, config.value_dim]),
            ("beta", self.beta, vec![b, t, h]),
        ] {
            check_len(name, data.len(), &dims)?;
        }
        Ok(())
    }
}

/// The sparse-key operations of a backend.
pub trait SparseBackend: Send + Sync {
    /// Human-readable description.
    fn sparse_name(&self) -> String;

    /// Writes every token of `writes` into `state`, in order per sequence and head.
    /// Results do not depend on the number of threads.
    fn sparse_write(
        &self,
        config: &MemoryConfig,
        writes: &SparseWrites<'_>,
        state: &mut State,
    ) -> Result<()>;

    /// Reads `o = scale · Sᵀ q` for every query key into `out: [B, T, H, V]`.
    fn sparse_read_into(
        &self,
        config: &MemoryConfig,
        queries: &SparseKeys<'_>,
        state: &State,
        out: &mut [f32],
    ) -> Result<()>;
}

/// Shape checks shared by implementations of [`SparseBackend::sparse_read_into`].
pub fn check_read(
    config: &MemoryConfig,
    queries: &SparseKeys<'_>,
    state: &State,
    out: &[f32],
) -> Result<()> {
    queries.validate(config, "q")?;
    state.check_matches(config, queries.batch)?;
    check_output_len(
        out,
        queries.batch * queries.tokens * config.heads * config.value_dim,
    )
}
