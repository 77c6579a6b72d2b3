//! The shape of the memory: heads, key and value dimensions, chunk size, read scale.

use crate::error::{Error, Result};
use crate::hash::Fnv1a;

/// Configuration of one gated-delta-rule memory layer.
///
/// The state of one sequence is `heads × key_dim × value_dim` f32 values, whatever the
/// length of the context.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryConfig {
    /// Heads (`H`): independent memories side by side.
    pub heads: usize,
    /// Rows of each head's state (`K`): the key dimension.
    pub key_dim: usize,
    /// Columns of each head's state (`V`): the value dimension.
    pub value_dim: usize,
    /// Tokens per chunk of the chunked algorithm. Any positive size gives the same
    /// results up to rounding; 64 fits the CPU kernels' registers and caches.
    pub chunk_size: usize,
    /// Read scale applied to queries; `None` means `1/sqrt(key_dim)`.
    pub scale: Option<f32>,
    /// Digest of the model that makes the keys and values (e.g. the built-in memory
    /// model's seed and hashing), when one does: it goes into the fingerprint, so a state
    /// written by another model is refused on load.
    pub model: Option<u64>,
}

impl MemoryConfig {
    /// The default chunk size, in tokens.
    pub const DEFAULT_CHUNK: usize = 64;

    /// `heads` heads of a `key_dim × value_dim` state, chunks of 64, scale
    /// `1/sqrt(key_dim)`.
    pub fn new(heads: usize, key_dim: usize, value_dim: usize) -> Self {
        MemoryConfig {
            heads,
            key_dim,
            value_dim,
            chunk_size: Self::DEFAULT_CHUNK,
            scale: None,
            model: None,
        }
    }

    /// Sets the chunk size (tokens per chunk); changes rounding only.
    pub fn with_chunk_size(mut self, chunk_size: usize) -> Self {
        self.chunk_size = chunk_size;
        self
    }

    /// Records the digest of the model that makes the keys and values (see `model`).
    pub fn with_model(mut self, model: u64) -> Self {
        self.model = Some(model);
        self
    }

    /// Multiplies queries by `scale` instead of `1/sqrt(key_dim)`.
    pub fn with_scale(mut self, scale: f32) -> Self {
        self.scale = Some(scale);
        self
    }

    /// The scale queries are multiplied by before the read.
    pub fn effective_scale(&self) -> f32 {
        self.scale
            .unwrap_or_else(|| 1.0 / (self.key_dim as f32).sqrt())
    }

    /// f32 values in the state of one sequence.
    pub fn state_len(&self) -> usize {
        self.heads * self.key_dim * self.value_dim
    }

    /// Checks that every dimension and the chunk size are positive and the scale finite.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("heads", self.heads),
            ("key_dim", self.key_dim),
            ("value_dim", self.value_dim),
            ("chunk_size", self.chunk_size),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(Error::Config(format!("{name} must be at least 1, found 0")));
            }
        }
        if self.chunk_size > 1024 {
            return Err(Error::Config(format!(
                "chunk_size must be at most 1024, found {}",
                self.chunk_size
            )));
        }
        if let Some(scale) = self.scale {
            if !scale.is_finite() {
                return Err(Error::Config(format!(
                    "scale must be finite, found {scale}"
                )));
            }
        }
        Ok(())
    }

    /// A stable 64-bit digest of everything that changes what a state means (not the
    /// chunk size, which only changes rounding). State files carry it.
    pub fn fingerprint(&self) -> u64 {
        let mut h = Fnv1a::new();
        h.write(b"ltm-engine/gated-delta/v1");
        for v in [self.heads, self.key_dim, self.value_dim] {
            h.write(&(v as u64).to_le_bytes());
        }
        h.write(&self.effective_scale().to_bits().to_le_bytes());
        if let Some(model) = self.model {
            h.write(b"model");
            h.write(&model.to_le_bytes());
        }
        h.finish()
    }
}
