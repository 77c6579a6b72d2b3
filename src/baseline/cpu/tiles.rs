//! Prefill: each task takes a tile of consecutive queries of one (sequence, head) and
//! sweeps the cached key blocks up to its last query, with two matrix products per
//! block (`S = Q Kᵀ`, `O += P V`) and the online softmax between them.

use rayon::prelude::*;

use crate::backend::cpu::gemm::{gemm, Isa, Mat, Part};
use crate::backend::cpu::SharedMut;
use crate::baseline::kv_cache::BLOCK;
use crate::baseline::softmax::fold;
use crate::baseline::{AttentionConfig, AttentionInputs, KvCache};

/// Queries per tile: a multiple of the micro-kernel's 6 rows, small enough that the
/// tile's queries, scores and outputs stay in L2 next to one key and value block.
const TILE: usize = 96;

/// Per-thread scratch, reused across tiles.
struct Scratch {
    /// `[TILE × Dp]` scaled queries.
    q: Vec<f32>,
    /// `[TILE × BLOCK]` scores, then weights.
    s: Vec<f32>,
    /// `[TILE × Dp]` unnormalised outputs.
    acc: Vec<f32>,
    m: Vec<f32>,
    l: Vec<f32>,
}

impl Scratch {
    fn new(dp: usize) -> Self {
        Scratch {
            q: vec![0.0; TILE * dp],
            s: vec![0.0; TILE * BLOCK],
            acc: vec![0.0; TILE * dp],
            m: vec![0.0; TILE],
            l: vec![0.0; TILE],
        }
    }
}

/// What every tile of one call shares.
struct Job<'a> {
    isa: Isa,
    inputs: &'a AttentionInputs<'a>,
    cache: &'a KvCache,
    heads: usize,
    head_dim: usize,
    scale: f32,
    /// Position of the first new token in the cache.
    first: usize,
}

pub(super) fn run(
    isa: Isa,
    config: &AttentionConfig,
    inputs: &AttentionInputs<'_>,
    cache: &KvCache,
    out: &mut [f32],
) {
    let tiles = inputs.tokens.div_ceil(TILE);
    // Later tiles attend to more keys: starting them first leaves the short ones to
    // fill the gaps at the end.
    let mut tasks = Vec::with_capacity(tiles * inputs.batch * config.heads);
    for tile in (0..tiles).rev() {
        for b in 0..inputs.batch {
            for h in 0..config.heads {
                tasks.push((b, h, tile));
            }
        }
    }
    let job = Job {
        isa,
        inputs,
        cache,
        heads: config.heads,
        head_dim: config.head_dim,
        scale: config.effective_scale(),
        first: cache.len() - inputs.tokens,
    };
    let out = SharedMut::new(out);
    let dp = cache.padded_dim();
    tasks.par_iter().for_each_init(
        || Scratch::new(dp),
        |scratch, &(b, h, tile)| query_tile(&job, b, h, tile, scratch, &out),
    );
}

fn query_tile(
    job: &Job<'_>,
    b: usize,
    h: usize,
    tile: usize,
    ws: &mut Scratch,
    out: &SharedMut<'_>,
) {
    match job.isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx512` is only chosen after the CPU reported AVX-512F.
        Isa::Avx512 => unsafe { query_tile_avx512(job, b, h, tile, ws, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2` is only chosen after the CPU reported AVX2 and FMA.
        Isa::Avx2 => unsafe { query_tile_avx2(job, b, h, tile, ws, out) },
        _ => query_tile_impl(job, b, h, tile, ws, out),
    }
}

simd_twin! {
    /// The same code compiled for AVX-512, so that the softmax between the products
    /// (max, exponentials, sums, rescaling) vectorises 16 wide too.
    fn query_tile_avx512(
        job: &Job<'_>,
        b: usize,
        h: usize,
        tile: usize,
        ws: &mut Scratch,
        out: &SharedMut<'_>,
    ) = query_tile_impl
}

simd_twin! {
    /// The same code compiled for AVX2 and FMA (8 lanes).
    features = "avx2,fma",
    fn query_tile_avx2(
        job: &Job<'_>,
        b: usize,
        h: usize,
        tile: usize,
        ws: &mut Scratch,
        out: &SharedMut<'_>,
    ) = query_tile_impl
}

#[inline(always)]
fn query_tile_impl(
    job: &Job<'_>,
    b: usize,
    h: usize,
    tile: usize,
    ws: &mut Scratch,
    out: &SharedMut<'_>,
) {
    let (d, dp, tokens) = (job.head_dim, job.cache.padded_dim(), job.inputs.tokens);
    let t0 = tile * TILE;
    let rows = TILE.min(tokens - t0);
    let row_offset = |t: usize| ((b * tokens + t) * job.heads + h) * d;
    for i in 0..rows {
        let q_row = &mut ws.q[i * dp..(i + 1) * dp];
        job.inputs
            .q
            .read_scaled(row_offset(t0 + i), &mut q_row[..d], job.scale);
        q_row[d..].fill(0.0);
    }
    ws.acc[..rows * dp].fill(0.0);
    ws.m[..rows].fill(f32::NEG_INFINITY);
    ws.l[..rows].fill(0.0);

    let keys = job.cache.head_keys(b, h);
    let values = job.cache.head_values(b, h);
    let p0 = job.first + t0; // cache position of the tile's first query
    let last = p0 + rows - 1;
    for blk in 0..=last / BLOCK {
        let j0 = blk * BLOCK;
        let depth = BLOCK.min(last + 1 - j0); // keys of this block any row can see
        gemm(
            job.isa,
            Part::Full,
            rows,
            BLOCK,
            dp,
            Mat {
                data: &ws.q,
                ld: dp,
            },
            Mat {
                data: &keys[blk * dp * BLOCK..],
                ld: BLOCK,
            },
            &mut ws.s,
            BLOCK,
            false,
        );
        for i in 0..rows {
            let visible = (p0 + i + 1).saturating_sub(j0).min(BLOCK);
            let s_row = &mut ws.s[i * BLOCK..(i + 1) * BLOCK];
            let alpha = fold(job.isa, s_row, visible, &mut ws.m[i], &mut ws.l[i]);
            if alpha != 1.0 {
                ws.acc[i * dp..(i + 1) * dp]
                    .iter_mut()
                    .for_each(|x| *x *= alpha);
            }
        }
        gemm(
            job.isa,
            Part::Full,
            rows,
            dp,
            depth,
            Mat {
                data: &ws.s,
                ld: BLOCK,
            },
            Mat {
                data: &values[j0 * dp..],
                ld: dp,
            },
            &mut ws.acc,
            dp,
            true,
        );
    }
    for i in 0..rows {
        let inv = 1.0 / ws.l[i];
        let row = &mut ws.acc[i * dp..i * dp + d];
        row.iter_mut().for_each(|x| *x *= inv);
        out.write(row_offset(t0 + i), row);
    }
}
