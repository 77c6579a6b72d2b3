//! A decode step: one new query per (sequence, head) against every cached key. The
//! keys are split into fixed ranges computed in parallel (flash-decoding), each giving
//! a partial softmax `(m, l, o)`, and the partials are merged per head. The split does
//! not depend on the thread count, so results do not either.

use rayon::prelude::*;

use crate::backend::cpu::gemm::Isa;
use crate::baseline::kv_cache::BLOCK;
use crate::baseline::softmax::fold;
use crate::baseline::{AttentionConfig, AttentionInputs, KvCache};

/// Key blocks per split: 1024 keys, enough work per task to pay for its start.
const SPLIT_BLOCKS: usize = 16;

/// Below this many cached values (all heads) the step runs on the calling thread:
/// starting threads would cost more than reading the cache.
pub(crate) const PARALLEL_FROM: usize = 1 << 16;

/// The softmax of one query over one range of keys, before normalisation.
struct Partial {
    m: f32,
    l: f32,
    o: Vec<f32>,
}

pub(super) fn run(
    isa: Isa,
    config: &AttentionConfig,
    inputs: &AttentionInputs<'_>,
    cache: &KvCache,
    out: &mut [f32],
) {
    let (heads, d, dp, n) = (
        config.heads,
        config.head_dim,
        cache.padded_dim(),
        cache.len(),
    );
    let splits = n.div_ceil(BLOCK).div_ceil(SPLIT_BLOCKS);
    let scale = config.effective_scale();
    let parallel = inputs.batch * heads * n * dp >= PARALLEL_FROM;
    let partial = |task: usize| {
        let (bh, split) = (task / splits, task % splits);
        let (b, h) = (bh / heads, bh % heads);
        let mut q = vec![0.0f32; dp];
        inputs.q.read_scaled(bh * d, &mut q[..d], scale);
        let blk0 = split * SPLIT_BLOCKS;
        let blk1 = (blk0 + SPLIT_BLOCKS).min(n.div_ceil(BLOCK));
        key_range(isa, &q, cache, b, h, blk0, blk1)
    };
    let tasks = 0..inputs.batch * heads * splits;
    let partials: Vec<Partial> = if parallel {
        tasks.into_par_iter().map(partial).collect()
    } else {
        tasks.map(partial).collect()
    };
    // Merging is a few values per head: no threads needed.
    for (bh, parts) in partials.chunks_exact(splits).enumerate() {
        let top = parts.iter().fold(f32::NEG_INFINITY, |m, p| m.max(p.m));
        let mut o = vec![0.0f32; d];
        let mut l = 0.0f32;
        for p in parts {
            let w = (p.m - top).exp();
            l += w * p.l;
            for (x, &y) in o.iter_mut().zip(&p.o) {
                *x += w * y;
            }
        }
        let inv = 1.0 / l;
        o.iter_mut().for_each(|x| *x *= inv);
        out[bh * d..(bh + 1) * d].copy_from_slice(&o);
    }
}

fn key_range(
    isa: Isa,
    q: &[f32],
    cache: &KvCache,
    b: usize,
    h: usize,
    blk0: usize,
    blk1: usize,
) -> Partial {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx512` is only chosen after the CPU reported AVX-512F.
        Isa::Avx512 => unsafe { key_range_avx512(isa, q, cache, b, h, blk0, blk1) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2` is only chosen after the CPU reported AVX2 and FMA.
        Isa::Avx2 => unsafe { key_range_avx2(isa, q, cache, b, h, blk0, blk1) },
        _ => key_range_impl(isa, q, cache, b, h, blk0, blk1),
    }
}

simd_twin! {
    fn key_range_avx512(
        isa: Isa,
        q: &[f32],
        cache: &KvCache,
        b: usize,
        h: usize,
        blk0: usize,
        blk1: usize,
    ) -> Partial = key_range_impl
}

simd_twin! {
    /// The same code compiled for AVX2 and FMA (8 lanes).
    features = "avx2,fma",
    fn key_range_avx2(
        isa: Isa,
        q: &[f32],
        cache: &KvCache,
        b: usize,
        h: usize,
        blk0: usize,
        blk1: usize,
    ) -> Partial = key_range_impl
}

/// Streams key blocks `blk0..blk1`: the scores of a block are `Dp` broadcast
/// multiply-adds over its transposed keys, the output `Σ p_j v_j` one pass over its
/// values. Both are reads of the cache once; this step is bound by memory bandwidth.
#[inline(always)]
fn key_range_impl(
    isa: Isa,
    q: &[f32],
    cache: &KvCache,
    b: usize,
    h: usize,
    blk0: usize,
    blk1: usize,
) -> Partial {
    let (dp, n) = (cache.padded_dim(), cache.len());
    let keys = cache.head_keys(b, h);
    let values = cache.head_values(b, h);
    let mut o = vec![0.0f32; dp];
    let (mut m, mut l) = (f32::NEG_INFINITY, 0.0f32);
    let mut s = [0.0f32; BLOCK];
    for blk in blk0..blk1 {
        let j0 = blk * BLOCK;
        let visible = BLOCK.min(n - j0);
        s.fill(0.0);
        let kb = &keys[blk * dp * BLOCK..(blk + 1) * dp * BLOCK];
        for (&qc, row) in q.iter().zip(kb.chunks_exact(BLOCK)) {
            for (x, &k) in s.iter_mut().zip(row) {
                *x += qc * k;
            }
        }
        let alpha = fold(isa, &mut s, visible, &mut m, &mut l);
        if alpha != 1.0 {
            o.iter_mut().for_each(|x| *x *= alpha);
        }
        for (&p, v_row) in s[..visible]
            .iter()
            .zip(values[j0 * dp..(j0 + visible) * dp].chunks_exact(dp))
        {
            for (x, &v) in o.iter_mut().zip(v_row) {
                *x += p * v;
            }
        }
    }
    Partial { m, l, o }
}
