//! Generation: a few tokens at a time through the recurrence itself, token by token.
//! A chunk of one token would pay for a whole padded chunk (Gram matrices, the
//! triangular solve); one token only needs one read and one write of the state.

use rayon::prelude::*;

use super::exp::exp;
use super::gemm::Isa;
use crate::config::MemoryConfig;
use crate::inputs::ForwardInputs;

/// Below this many state values the heads run on the calling thread: starting
/// threads would cost more than the work.
const PARALLEL_FROM: usize = 1 << 18;

/// Runs every token of `inputs` through `state` (`[B, H, K, V]`) and writes
/// `o: [B, T, H, V]`. The caller has checked the shapes.
pub(crate) fn run(
    isa: Isa,
    config: &MemoryConfig,
    inputs: &ForwardInputs<'_>,
    state: &mut [f32],
    out: &mut [f32],
) {
    let (kd, vd, heads) = (config.key_dim, config.value_dim, config.heads);
    let work = |(bh, s): (usize, &mut [f32])| -> Vec<f32> {
        let mut o = vec![0.0; inputs.tokens * vd];
        head(isa, config, inputs, bh / heads, bh % heads, s, &mut o);
        o
    };
    let per_head: Vec<Vec<f32>> = if state.len() >= PARALLEL_FROM {
        state
            .par_chunks_exact_mut(kd * vd)
            .enumerate()
            .map(work)
            .collect()
    } else {
        state
            .chunks_exact_mut(kd * vd)
            .enumerate()
            .map(work)
            .collect()
    };
    for (bh, o) in per_head.iter().enumerate() {
        let (b, h) = (bh / heads, bh % heads);
        for (t, row) in o.chunks_exact(vd).enumerate() {
            let at = ((b * inputs.tokens + t) * heads + h) * vd;
            out[at..at + vd].copy_from_slice(row);
        }
    }
}

fn head(
    isa: Isa,
    config: &MemoryConfig,
    inputs: &ForwardInputs<'_>,
    b: usize,
    h: usize,
    s: &mut [f32],
    o: &mut [f32],
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx512` is only chosen after the CPU reported AVX-512F.
        Isa::Avx512 => unsafe { head_avx512(config, inputs, b, h, s, o) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2` is only chosen after the CPU reported AVX2 and FMA.
        Isa::Avx2 => unsafe { head_avx2(config, inputs, b, h, s, o) },
        _ => head_impl(config, inputs, b, h, s, o),
    }
}

simd_twin! {
    fn head_avx512(
        config: &MemoryConfig,
        inputs: &ForwardInputs<'_>,
        b: usize,
        h: usize,
        s: &mut [f32],
        o: &mut [f32],
    ) = head_impl
}

simd_twin! {
    /// The same code compiled for AVX2 and FMA (8 lanes).
    features = "avx2,fma",
    fn head_avx2(
        config: &MemoryConfig,
        inputs: &ForwardInputs<'_>,
        b: usize,
        h: usize,
        s: &mut [f32],
        o: &mut [f32],
    ) = head_impl
}

/// With `S' = e^g S + k uᵀ`, the read `S'ᵀq = e^g Sᵀq + (k·q) u` needs `Sᵀq` and
/// `Sᵀk` of the old state only: one pass reads both, a second writes `S'`.
#[inline(always)]
fn head_impl(
    config: &MemoryConfig,
    inputs: &ForwardInputs<'_>,
    b: usize,
    h: usize,
    s: &mut [f32],
    o: &mut [f32],
) {
    let (kd, vd, heads) = (config.key_dim, config.value_dim, config.heads);
    let mut q = vec![0.0f32; kd];
    let mut k = vec![0.0f32; kd];
    let mut u = vec![0.0f32; vd];
    let mut sq = vec![0.0f32; vd];
    let mut sk = vec![0.0f32; vd];
    for t in 0..inputs.tokens {
        let gate = (b * inputs.tokens + t) * heads + h;
        inputs
            .q
            .read_scaled(gate * kd, &mut q, config.effective_scale());
        inputs.k.read_scaled(gate * kd, &mut k, 1.0);
        inputs.v.read_scaled(gate * vd, &mut u, 1.0);
        let (beta, decay) = (inputs.beta.get(gate), exp(inputs.g.get(gate)));
        sq.fill(0.0);
        sk.fill(0.0);
        for ((row, &qa), &ka) in s.chunks_exact(vd).zip(&q).zip(&k) {
            for ((x, y), &sv) in sq.iter_mut().zip(sk.iter_mut()).zip(row) {
                *x += qa * sv;
                *y += ka * sv;
            }
        }
        let kq: f32 = k.iter().zip(&q).map(|(a, b)| a * b).sum();
        let o_t = &mut o[t * vd..(t + 1) * vd];
        for (((uj, oj), &skj), &sqj) in u.iter_mut().zip(o_t.iter_mut()).zip(&sk).zip(&sq) {
            *uj = beta * (*uj - decay * skj);
            *oj = decay * sqj + kq * *uj;
        }
        for (row, &ka) in s.chunks_exact_mut(vd).zip(&k) {
            for (x, &uj) in row.iter_mut().zip(&u) {
                *x = decay * *x + ka * uj;
            }
        }
    }
}
