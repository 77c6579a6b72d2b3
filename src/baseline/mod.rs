//! The Transformer baseline (DESIGN.md §6): causal softmax attention over the same
//! heads and dimensions as the memory, reading a KV cache that grows with the
//! context. It is exact, its memory grows linearly with the context and its prefill
//! time with the square of it: what the fixed-size memory is measured against.
//!
//! The CPU twin follows FlashAttention's algorithm (tiles of keys and values, a
//! running max and sum per query, no `T × T` matrix), so the comparison is against a
//! strong baseline. There is no CUDA attention yet (`kernels/attention.cu` is not
//! written); one would implement the same [`AttentionBackend`].

pub mod cpu;
pub mod kv_cache;
pub mod reference;
mod softmax;

use crate::backend::device::Device;
use crate::error::{Error, Result};
use crate::tensor::{check_len, Data};

pub use cpu::CpuAttention;
pub use kv_cache::KvCache;

/// Heads and head dimension of one attention layer; queries, keys and values all have
/// `head_dim` values per head.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionConfig {
    /// Attention heads; each has its own keys and values.
    pub heads: usize,
    /// Values per head of queries, keys and values (`D`).
    pub head_dim: usize,
    /// Scale of the scores `q·k`; `None` means `1/sqrt(head_dim)`.
    pub scale: Option<f32>,
}

impl AttentionConfig {
    /// `heads` heads of `head_dim` values, scores scaled by `1/sqrt(head_dim)`.
    pub fn new(heads: usize, head_dim: usize) -> Self {
        AttentionConfig {
            heads,
            head_dim,
            scale: None,
        }
    }

    /// Scales the scores by `scale` instead of `1/sqrt(head_dim)`.
    pub fn with_scale(mut self, scale: f32) -> Self {
        self.scale = Some(scale);
        self
    }

    /// The scale the scores are multiplied by: `scale`, else `1/sqrt(head_dim)`.
    pub fn effective_scale(&self) -> f32 {
        self.scale
            .unwrap_or_else(|| 1.0 / (self.head_dim as f32).sqrt())
    }

    /// Checks that heads and head dimension are positive and the scale finite.
    pub fn validate(&self) -> Result<()> {
        for (name, value) in [("heads", self.heads), ("head_dim", self.head_dim)] {
            if value == 0 {
                return Err(Error::Config(format!("{name} must be at least 1, found 0")));
            }
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

    /// Bytes one token adds to the KV cache of one sequence: a key and a value per
    /// head, `bytes_per_value` each.
    pub fn kv_bytes_per_token(&self, bytes_per_value: usize) -> u64 {
        2 * self.heads as u64 * self.head_dim as u64 * bytes_per_value as u64
    }
}

/// The newest `tokens` tokens of `batch` sequences: `q, k, v: [B, T, H, D]`, row-major,
/// each f32, f16 or bf16.
#[derive(Clone, Copy, Debug)]
pub struct AttentionInputs<'a> {
    /// Sequences (`B`).
    pub batch: usize,
    /// New tokens per sequence (`T`); 1 for a decode step.
    pub tokens: usize,
    /// Queries, `[B, T, H, D]`.
    pub q: Data<'a>,
    /// Keys, `[B, T, H, D]`, appended to the cache.
    pub k: Data<'a>,
    /// Values, `[B, T, H, D]`, appended to the cache.
    pub v: Data<'a>,
}

impl AttentionInputs<'_> {
    /// Checks the configuration and that `q`, `k` and `v` each hold `B·T·H·D` values.
    pub fn validate(&self, config: &AttentionConfig) -> Result<()> {
        config.validate()?;
        let dims = [self.batch, self.tokens, config.heads, config.head_dim];
        for (name, data) in [("q", self.q), ("k", self.k), ("v", self.v)] {
            check_len(name, data.len(), &dims)?;
        }
        Ok(())
    }

    /// Number of output values: `B · T · H · D`.
    pub fn output_len(&self, config: &AttentionConfig) -> usize {
        self.batch * self.tokens * config.heads * config.head_dim
    }
}

/// A place to run attention. Prefill and decode are the same call: the inputs' keys
/// and values are appended to the cache, then each new query attends to every cached
/// position up to its own (causal). Prefill is a call on an empty cache with the whole
/// prompt; a decode step is a call with one token on a cache of `n`.
pub trait AttentionBackend: Send + Sync {
    /// Human-readable description, e.g. `cpu attention (avx512, 2 threads)`.
    fn name(&self) -> String;

    /// Appends `inputs.k, inputs.v` to `cache` and writes `o: [B, T, H, D]` (f32).
    fn attend_into(
        &self,
        config: &AttentionConfig,
        inputs: &AttentionInputs<'_>,
        cache: &mut KvCache,
        out: &mut [f32],
    ) -> Result<()>;

    /// [`AttentionBackend::attend_into`] into a new buffer.
    fn attend(
        &self,
        config: &AttentionConfig,
        inputs: &AttentionInputs<'_>,
        cache: &mut KvCache,
    ) -> Result<Vec<f32>> {
        let mut out = vec![0.0; inputs.output_len(config)];
        self.attend_into(config, inputs, cache, &mut out)?;
        Ok(out)
    }
}

/// The attention backend for a device choice. There is no CUDA attention kernel yet,
/// so `auto` is the CPU and `cuda` an error saying so.
pub fn attention_backend_for(device: Device) -> Result<Box<dyn AttentionBackend>> {
    match device {
        Device::Cpu | Device::Auto => Ok(Box::new(CpuAttention::new())),
        Device::Cuda(ordinal) => Err(Error::Device(format!(
            "cuda:{ordinal} requested for the attention baseline, but this version has no \
             CUDA attention kernel (kernels/attention.cu is not written yet); use --device cpu"
        ))),
    }
}
