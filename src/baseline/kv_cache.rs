//! The KV cache: every key and value seen so far, per sequence and head. It grows by
//! one key and one value per head with every token; that growth is what the
//! fixed-size memory avoids.

use rayon::prelude::*;

use super::{AttentionConfig, AttentionInputs};
use crate::backend::cpu::gemm::LANES;
use crate::error::{Error, Result};
use crate::tensor::{shape_string, Data};

/// Tokens per key block. Keys are stored transposed within a block, so that the
/// scores of a query tile against a block are one matrix product with contiguous
/// rows, and a single query's scores are 16-wide multiply-adds without horizontal sums.
pub const BLOCK: usize = 64;

/// Keys and values in f32 for `batch` sequences. Per (sequence, head): keys as
/// `[blocks, Dp, BLOCK]` (each block transposed) and values as `[capacity, Dp]`,
/// with `Dp` the head dimension rounded up to 16 and zero padding.
#[derive(Clone, Debug)]
pub struct KvCache {
    batch: usize,
    heads: usize,
    head_dim: usize,
    padded_dim: usize,
    len: usize,
    /// Tokens of room per sequence, a multiple of [`BLOCK`].
    capacity: usize,
    k: Vec<f32>,
    v: Vec<f32>,
}

impl KvCache {
    /// An empty cache.
    pub fn new(config: &AttentionConfig, batch: usize) -> Result<Self> {
        config.validate()?;
        Ok(KvCache {
            batch,
            heads: config.heads,
            head_dim: config.head_dim,
            padded_dim: config.head_dim.div_ceil(LANES) * LANES,
            len: 0,
            capacity: 0,
            k: Vec::new(),
            v: Vec::new(),
        })
    }

    /// An empty cache with room for `tokens` tokens per sequence.
    pub fn with_capacity(config: &AttentionConfig, batch: usize, tokens: usize) -> Result<Self> {
        let mut cache = Self::new(config, batch)?;
        cache.reserve(tokens)?;
        Ok(cache)
    }

    /// Tokens cached per sequence.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no token is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sequences the cache holds.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Forgets every token, keeping the allocation.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Forgets every token past the first `len`.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Bytes holding the cached tokens: `2 · B · len · H · Dp · 4`.
    pub fn used_bytes(&self) -> u64 {
        2 * (self.batch * self.len * self.heads * self.padded_dim) as u64 * 4
    }

    /// Bytes allocated, including room not yet used.
    pub fn allocated_bytes(&self) -> u64 {
        ((self.k.len() + self.v.len()) * std::mem::size_of::<f32>()) as u64
    }

    /// Makes room for `additional` more tokens per sequence. Fails with an error, not an
    /// abort, when the memory cannot be had.
    pub fn reserve(&mut self, additional: usize) -> Result<()> {
        let needed = self
            .len
            .checked_add(additional)
            .ok_or_else(|| too_large(usize::MAX))?;
        if needed <= self.capacity {
            return Ok(());
        }
        let capacity = needed.max(2 * self.capacity).div_ceil(BLOCK) * BLOCK;
        let per_head = capacity
            .checked_mul(self.padded_dim)
            .ok_or_else(|| too_large(capacity))?;
        let total = per_head
            .checked_mul(self.batch * self.heads)
            .ok_or_else(|| too_large(capacity))?;
        let alloc = |total: usize| -> Result<Vec<f32>> {
            let mut x = Vec::new();
            x.try_reserve_exact(total)
                .map_err(|_| too_large(capacity))?;
            x.resize(total, 0.0);
            Ok(x)
        };
        let (mut k, mut v) = (alloc(total)?, alloc(total)?);
        // Both layouts keep a head's tokens as a prefix of its region, so growing is a
        // copy of each head's old region to the start of its new one.
        let old = self.capacity * self.padded_dim;
        if old > 0 {
            for (new, old_buf) in [(&mut k, &self.k), (&mut v, &self.v)] {
                for (dst, src) in new
                    .chunks_exact_mut(per_head)
                    .zip(old_buf.chunks_exact(old))
                {
                    dst[..old].copy_from_slice(src);
                }
            }
        }
        self.k = k;
        self.v = v;
        self.capacity = capacity;
        Ok(())
    }

    /// Appends the keys and values of `inputs` (`[B, T, H, D]`) after the cached tokens.
    pub fn append(&mut self, config: &AttentionConfig, inputs: &AttentionInputs<'_>) -> Result<()> {
        inputs.validate(config)?;
        self.check_matches(config, inputs.batch)?;
        if inputs.tokens == 0 {
            return Ok(());
        }
        self.reserve(inputs.tokens)?;
        let (heads, d, dp, n0, tokens) = (
            self.heads,
            self.head_dim,
            self.padded_dim,
            self.len,
            inputs.tokens,
        );
        let per_head = self.capacity * dp;
        let (k_src, v_src) = (inputs.k, inputs.v);
        let copy = |(bh, (k_head, v_head)): (usize, (&mut [f32], &mut [f32]))| {
            let (b, h) = (bh / heads, bh % heads);
            let mut row = vec![0.0f32; d];
            for t in 0..tokens {
                let src = ((b * tokens + t) * heads + h) * d;
                let p = n0 + t;
                write_key(k_head, dp, p, k_src, src, &mut row);
                v_src.read_scaled(src, &mut v_head[p * dp..p * dp + d], 1.0);
            }
        };
        // A decode step appends one token: not worth starting threads for.
        if inputs.batch * tokens * heads * dp >= super::cpu::PARALLEL_FROM {
            self.k
                .par_chunks_exact_mut(per_head)
                .zip(self.v.par_chunks_exact_mut(per_head))
                .enumerate()
                .for_each(copy);
        } else {
            self.k
                .chunks_exact_mut(per_head)
                .zip(self.v.chunks_exact_mut(per_head))
                .enumerate()
                .for_each(copy);
        }
        self.len += tokens;
        Ok(())
    }

    /// Fails unless this cache belongs to `config` and a batch of `batch` sequences.
    pub fn check_matches(&self, config: &AttentionConfig, batch: usize) -> Result<()> {
        let want = [batch, config.heads, config.head_dim];
        let found = [self.batch, self.heads, self.head_dim];
        if want != found {
            return Err(Error::Shape {
                tensor: "kv_cache".into(),
                expected: format!("[B, H, D] = {}", shape_string(&want)),
                found: shape_string(&found),
            });
        }
        Ok(())
    }

    /// Padded head dimension `Dp` of the stored rows.
    pub(crate) fn padded_dim(&self) -> usize {
        self.padded_dim
    }

    /// Keys of sequence `b`, head `h`: `[blocks, Dp, BLOCK]`.
    pub(crate) fn head_keys(&self, b: usize, h: usize) -> &[f32] {
        let per_head = self.capacity * self.padded_dim;
        &self.k[(b * self.heads + h) * per_head..][..per_head]
    }

    /// Values of sequence `b`, head `h`: `[capacity, Dp]`.
    pub(crate) fn head_values(&self, b: usize, h: usize) -> &[f32] {
        let per_head = self.capacity * self.padded_dim;
        &self.v[(b * self.heads + h) * per_head..][..per_head]
    }
}

/// Writes the key of token `p` into column `p % BLOCK` of its transposed block.
#[inline]
fn write_key(k_head: &mut [f32], dp: usize, p: usize, src: Data<'_>, at: usize, row: &mut [f32]) {
    src.read_scaled(at, row, 1.0);
    let block = &mut k_head[(p / BLOCK) * dp * BLOCK..][..dp * BLOCK];
    let col = p % BLOCK;
    for (c, &x) in row.iter().enumerate() {
        block[c * BLOCK + col] = x;
    }
}

fn too_large(tokens: usize) -> Error {
    Error::Config(format!(
        "KV cache for {tokens} tokens per sequence does not fit in memory"
    ))
}
