//! The fixed-size memory of a batch of sequences.

use std::sync::Arc;

use crate::config::MemoryConfig;
use crate::error::{Error, Result};
use crate::tensor::{check_len, shape_string};

/// The memory `S` of each sequence and head: f32 `[B, H, K, V]`, row-major.
///
/// Cloning is O(1): clones share the values until one of them is written, so a state
/// can be snapshotted after a long context and queried from many times.
#[derive(Clone, Debug, PartialEq)]
pub struct State {
    batch: usize,
    heads: usize,
    key_dim: usize,
    value_dim: usize,
    tokens_seen: u64,
    source: Source,
    values: Arc<Vec<f32>>,
}

/// The context a state was streamed from, as far as it has read it: its first `tokens`
/// tokens, which end at byte `bytes`, whose CRC-32 is `crc32`. State files carry it, so
/// `--resume` can refuse a state made from other bytes. All zero for a state no file
/// went into.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Source {
    /// Tokens of the context consumed.
    pub tokens: u64,
    /// The byte those tokens end at.
    pub bytes: u64,
    /// CRC-32 of the context's bytes up to `bytes`.
    pub crc32: u32,
}

/// Most tokens a state may have seen: 2^53, beyond any run (285 years at a million
/// tokens a second) and still exact wherever the count is read as a double (JSON).
pub const MAX_TOKENS: u64 = 1 << 53;

impl State {
    /// An empty memory for `batch` sequences.
    pub fn zeros(config: &MemoryConfig, batch: usize) -> Self {
        State {
            batch,
            heads: config.heads,
            key_dim: config.key_dim,
            value_dim: config.value_dim,
            tokens_seen: 0,
            source: Source::default(),
            values: Arc::new(vec![0.0; batch * config.state_len()]),
        }
    }

    /// An empty memory whose size comes from outside (a file header, an option): the
    /// size is computed with checked arithmetic and must fit in the memory available;
    /// errors name `what` and the bytes asked for.
    pub fn try_zeros(config: &MemoryConfig, batch: usize, what: &str) -> Result<Self> {
        let n = [batch, config.heads, config.key_dim, config.value_dim]
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d));
        let Some(n) = n else {
            return Err(Error::TooLarge {
                what: what.to_string(),
                bytes: None,
                problem: format!(
                    "for a state [B, H, K, V] = [{batch}, {}, {}, {}]",
                    config.heads, config.key_dim, config.value_dim
                ),
            });
        };
        let values = crate::limits::try_zeroed_f32(what, n)?;
        Self::from_values(config, batch, values)
    }

    /// A memory with given values, laid out `[B, H, K, V]`.
    pub fn from_values(config: &MemoryConfig, batch: usize, values: Vec<f32>) -> Result<Self> {
        let dims = [batch, config.heads, config.key_dim, config.value_dim];
        check_len("state", values.len(), &dims)?;
        Ok(State {
            batch,
            heads: config.heads,
            key_dim: config.key_dim,
            value_dim: config.value_dim,
            tokens_seen: 0,
            source: Source::default(),
            values: Arc::new(values),
        })
    }

    /// Sequences (`B`).
    pub fn batch(&self) -> usize {
        self.batch
    }
    /// Heads (`H`).
    pub fn heads(&self) -> usize {
        self.heads
    }
    /// Rows of each head's matrix (`K`).
    pub fn key_dim(&self) -> usize {
        self.key_dim
    }
    /// Columns of each head's matrix (`V`).
    pub fn value_dim(&self) -> usize {
        self.value_dim
    }
    /// `[B, H, K, V]`.
    pub fn dims(&self) -> [usize; 4] {
        [self.batch, self.heads, self.key_dim, self.value_dim]
    }

    /// Tokens written into each sequence's memory so far.
    pub fn tokens_seen(&self) -> u64 {
        self.tokens_seen
    }
    /// Records how many tokens each sequence's memory holds (after a write outside the
    /// backends, or on load).
    pub fn set_tokens_seen(&mut self, tokens: u64) {
        self.tokens_seen = tokens;
    }

    /// `tokens_seen` plus `tokens`; fails past [`MAX_TOKENS`] instead of wrapping
    /// (a hostile state file could otherwise start the count near 2^64).
    pub fn tokens_after(&self, tokens: u64) -> Result<u64> {
        self.tokens_seen
            .checked_add(tokens)
            .filter(|&t| t <= MAX_TOKENS)
            .ok_or_else(|| {
                Error::StateMismatch(format!(
                    "the state has seen {} tokens; {tokens} more would pass the limit of {MAX_TOKENS}",
                    self.tokens_seen
                ))
            })
    }

    /// The context this state was streamed from (see [`Source`]).
    pub fn source(&self) -> Source {
        self.source
    }
    /// Records the context this state was streamed from.
    pub fn set_source(&mut self, source: Source) {
        self.source = source;
    }

    /// The values, `[B, H, K, V]` row-major f32.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// Mutable values; copies them first if a clone still shares them.
    pub fn values_mut(&mut self) -> &mut [f32] {
        Arc::make_mut(&mut self.values).as_mut_slice()
    }

    /// The `K × V` memory of sequence `b`, head `h`.
    pub fn head(&self, b: usize, h: usize) -> &[f32] {
        let len = self.key_dim * self.value_dim;
        let start = (b * self.heads + h) * len;
        &self.values[start..start + len]
    }

    /// Bytes of f32 state: fixed by the configuration, never by the context length.
    pub fn size_bytes(&self) -> usize {
        self.values.len() * std::mem::size_of::<f32>()
    }

    /// Fails unless this state belongs to `config` and a batch of `batch` sequences.
    pub fn check_matches(&self, config: &MemoryConfig, batch: usize) -> Result<()> {
        let want = [batch, config.heads, config.key_dim, config.value_dim];
        if self.dims() != want {
            return Err(Error::StateMismatch(format!(
                "expected state [B, H, K, V] = {}, found {}",
                shape_string(&want),
                shape_string(&self.dims())
            )));
        }
        Ok(())
    }
}
