//! The online softmax: a query's scores arrive one key block at a time, and the
//! running max and sum let each block's weights be used at once and corrected later,
//! so that no row of scores is ever held whole.

use crate::backend::cpu::exp::exp;
use crate::backend::cpu::gemm::Isa;

const W: usize = 16;

/// [`fold_block`], with the AVX-512 version when the ISA allows and the block is
/// whole (every score visible, a multiple of 16 of them): the common case, where
/// the exponentials are most of the work between the two matrix products.
#[inline(always)]
pub(crate) fn fold(isa: Isa, s: &mut [f32], visible: usize, m: &mut f32, l: &mut f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 && visible == s.len() && visible > 0 && visible.is_multiple_of(W) {
        // SAFETY: `Isa::Avx512` is only chosen after the CPU reported AVX-512F; the
        // length is a positive multiple of 16 as the function requires.
        return unsafe { fold_whole_avx512(s, m, l) };
    }
    let _ = isa;
    fold_block(s, visible, m, l)
}

/// Folds one block of a row's scores into its running max `m` and sum `l`.
/// `s[..valid]` become the weights `exp(s − m_new)` and the rest zeros; the returned
/// factor `exp(m_old − m_new)` is what the row's output so far must be multiplied by.
/// With `valid == 0` the row is untouched and the factor is 1.
#[inline(always)]
pub(crate) fn fold_block(s: &mut [f32], valid: usize, m: &mut f32, l: &mut f32) -> f32 {
    if valid == 0 {
        s.fill(0.0);
        return 1.0;
    }
    let (live, dead) = s.split_at_mut(valid);
    dead.fill(0.0);
    let m_new = max(live).max(*m);
    let mut sums = [0.0f32; W];
    let mut chunks = live.chunks_exact_mut(W);
    for c in &mut chunks {
        for (x, acc) in c.iter_mut().zip(sums.iter_mut()) {
            *x = exp(*x - m_new);
            *acc += *x;
        }
    }
    let mut sum: f32 = sums.iter().sum();
    for x in chunks.into_remainder() {
        *x = exp(*x - m_new);
        sum += *x;
    }
    // The first block of a row: `m` is −∞ and there is nothing to correct (0 · exp(−∞)
    // would be 0 · ~1e-38 with this exp, but l and the output are still exactly 0).
    let alpha = if *m == f32::NEG_INFINITY {
        0.0
    } else {
        exp(*m - m_new)
    };
    *l = *l * alpha + sum;
    *m = m_new;
    alpha
}

/// [`fold_block`] for a whole block, `s.len()` a positive multiple of 16: the same
/// exponential as `backend::cpu::exp` (degree-7 polynomial after the reduction by
/// ln 2), written with fused multiply-adds, which portable Rust does not emit.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fold_whole_avx512(s: &mut [f32], m: &mut f32, l: &mut f32) -> f32 {
    use std::arch::x86_64::*;
    let n = s.len() / W;
    let ptr = s.as_mut_ptr();
    let mut top = _mm512_set1_ps(f32::NEG_INFINITY);
    for i in 0..n {
        top = _mm512_max_ps(top, _mm512_loadu_ps(ptr.add(i * W)));
    }
    let m_new = _mm512_reduce_max_ps(top).max(*m);
    let shift = _mm512_set1_ps(m_new);
    let mut sum = _mm512_setzero_ps();
    for i in 0..n {
        let x = _mm512_sub_ps(_mm512_loadu_ps(ptr.add(i * W)), shift);
        let p = exp_avx512(x);
        _mm512_storeu_ps(ptr.add(i * W), p);
        sum = _mm512_add_ps(sum, p);
    }
    let alpha = if *m == f32::NEG_INFINITY {
        0.0
    } else {
        exp(*m - m_new)
    };
    *l = *l * alpha + _mm512_reduce_add_ps(sum);
    *m = m_new;
    alpha
}

/// `e^x` for `x ≤ 0` (scores minus their running max), 16 lanes; NaN stays NaN.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn exp_avx512(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    const MAGIC: f32 = 12_582_912.0; // 1.5·2^23: adding it rounds to an integer
                                     // Below −87 the result would be subnormal; like `exp`, give ~1e-38 instead.
                                     // `max(x, −87)` with x NaN returns the NaN (the second operand wins on NaN).
    let x = _mm512_max_ps(_mm512_set1_ps(-87.0), x);
    let rounded = _mm512_fmadd_ps(
        x,
        _mm512_set1_ps(std::f32::consts::LOG2_E),
        _mm512_set1_ps(MAGIC),
    );
    let n = _mm512_sub_ps(rounded, _mm512_set1_ps(MAGIC));
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_145_75), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428_606_8e-6), r);
    let mut p = _mm512_set1_ps(1.0 / 5040.0);
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    let bits = _mm512_add_epi32(
        _mm512_sub_epi32(
            _mm512_castps_si512(rounded),
            _mm512_set1_epi32(MAGIC.to_bits() as i32),
        ),
        _mm512_set1_epi32(127),
    );
    _mm512_mul_ps(p, _mm512_castsi512_ps(_mm512_slli_epi32::<23>(bits)))
}

/// The largest value, reduced 16 lanes at a time so it vectorises. NaN scores are
/// skipped here but still poison the weights, so they reach the output.
#[inline(always)]
fn max(x: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; W];
    let mut chunks = x.chunks_exact(W);
    for c in &mut chunks {
        for (m, &v) in lanes.iter_mut().zip(c) {
            *m = m.max(v);
        }
    }
    let mut m = lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for &v in chunks.remainder() {
        m = m.max(v);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Folding a row block by block and rescaling gives the weights of one softmax.
    #[test]
    fn blocks_fold_into_one_softmax() {
        let scores: Vec<f32> = (0..100)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.7)
            .collect();
        let top = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let total: f64 = scores.iter().map(|&s| (s as f64 - top).exp()).sum();
        let values: Vec<f64> = (0..100).map(|i| (i as f64).sin()).collect();
        let want: f64 = scores
            .iter()
            .zip(&values)
            .map(|(&s, v)| (s as f64 - top).exp() * v)
            .sum::<f64>()
            / total;
        let (mut m, mut l, mut acc) = (f32::NEG_INFINITY, 0.0f32, 0.0f32);
        for (start, len) in [(0, 40), (40, 32), (72, 28)] {
            let mut block = vec![f32::NAN; 64];
            block[..len].copy_from_slice(&scores[start..start + len]);
            let alpha = fold_block(&mut block, len, &mut m, &mut l);
            assert!(block[len..].iter().all(|&x| x == 0.0));
            acc *= alpha;
            acc += block[..len]
                .iter()
                .zip(&values[start..])
                .map(|(&p, &v)| p * v as f32)
                .sum::<f32>();
        }
        let got = (acc / l) as f64;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        assert_eq!(m as f64, top);
    }

    /// The AVX-512 whole-block path gives what the portable one gives.
    #[test]
    fn both_paths_agree() {
        for len in [16, 64, 128] {
            let scores: Vec<f32> = (0..len)
                .map(|i| ((i * 53 % 31) as f32 - 15.0) * 3.1)
                .collect();
            let mut a = scores.clone();
            let mut b = scores.clone();
            let (mut ma, mut la) = (0.25f32, 3.0f32);
            let (mut mb, mut lb) = (0.25f32, 3.0f32);
            let alpha_a = fold(Isa::detect(), &mut a, len, &mut ma, &mut la);
            let alpha_b = fold_block(&mut b, len, &mut mb, &mut lb);
            assert_eq!(ma, mb);
            assert!((alpha_a - alpha_b).abs() <= 1e-6 * alpha_b);
            assert!((la - lb).abs() <= 1e-6 * lb, "{la} vs {lb}");
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() <= 1e-6 * y.abs() + 1e-37, "{x} vs {y}");
            }
            let mut nan = scores.clone();
            nan[len / 2] = f32::NAN;
            let (mut m, mut l) = (f32::NEG_INFINITY, 0.0f32);
            fold(Isa::detect(), &mut nan, len, &mut m, &mut l);
            assert!(l.is_nan(), "a NaN score vanished");
        }
    }

    #[test]
    fn empty_block_changes_nothing() {
        let (mut m, mut l) = (1.5f32, 2.0f32);
        let mut block = vec![3.0f32; 16];
        assert_eq!(fold_block(&mut block, 0, &mut m, &mut l), 1.0);
        assert_eq!((m, l), (1.5, 2.0));
        assert!(block.iter().all(|&x| x == 0.0));
    }

    #[test]
    fn nan_scores_reach_the_sum() {
        let (mut m, mut l) = (f32::NEG_INFINITY, 0.0f32);
        let mut block = vec![0.5f32; 32];
        block[7] = f32::NAN;
        fold_block(&mut block, 32, &mut m, &mut l);
        assert!(l.is_nan());
    }
}
