//! Stage 2, the scan: hand the state from chunk to chunk, read the outputs on the way
//! and write each chunk into the state at its end, so that per-chunk states are never
//! stored (as CUDA's `scan.cu` does).

use super::column_write::{gather, prepare};
use super::gemm::{gemm, Isa, Mat, Part, LANES};
use super::workspace::Workspace;
use super::{SequenceView, SharedMut};
use crate::inputs::InputRows;

/// Runs every chunk of one (sequence, head, value slice) in order; the state slice
/// lives in `ws.s` from before the first chunk to after the last.
pub(crate) fn run_sequence<R: InputRows + ?Sized>(
    isa: Isa,
    ws: &mut Workspace,
    seq: &SequenceView<'_, R>,
    chunk: usize,
    out: &SharedMut<'_>,
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx512` is only chosen after the CPU reported AVX-512F.
        Isa::Avx512 => unsafe { run_sequence_avx512(isa, ws, seq, chunk, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2` is only chosen after the CPU reported AVX2 and FMA.
        Isa::Avx2 => unsafe { run_sequence_avx2(isa, ws, seq, chunk, out) },
        _ => run_sequence_impl(isa, ws, seq, chunk, out),
    }
}

simd_twin! {
    /// The same code compiled for AVX-512, so that the element-wise loops between the
    /// matrix products (decays, masks, the in-block solve) vectorise 16 wide too.
    fn run_sequence_avx512[R: InputRows + ?Sized](
        isa: Isa,
        ws: &mut Workspace,
        seq: &SequenceView<'_, R>,
        chunk: usize,
        out: &SharedMut<'_>,
    ) = run_sequence_impl
}

simd_twin! {
    /// The same code compiled for AVX2 and FMA (8 lanes).
    features = "avx2,fma",
    fn run_sequence_avx2[R: InputRows + ?Sized](
        isa: Isa,
        ws: &mut Workspace,
        seq: &SequenceView<'_, R>,
        chunk: usize,
        out: &SharedMut<'_>,
    ) = run_sequence_impl
}

#[inline(always)]
fn run_sequence_impl<R: InputRows + ?Sized>(
    isa: Isa,
    ws: &mut Workspace,
    seq: &SequenceView<'_, R>,
    chunk: usize,
    out: &SharedMut<'_>,
) {
    let mut t0 = 0;
    while t0 < seq.tokens {
        let len = chunk.min(seq.tokens - t0);
        gather(ws, seq, t0, len);
        prepare(isa, ws);
        correct_values(isa, ws);
        read_outputs(isa, ws);
        write_state(isa, ws);
        for i in 0..len {
            out.write(
                seq.out_offset(t0 + i),
                &ws.o[i * ws.vs..i * ws.vs + seq.v_cols],
            );
        }
        t0 += len;
    }
}

/// `V' = (I + A)⁻¹ · diag(β) (V − diag(exp γ) K S₀)`: what each token writes once the
/// state at the chunk's start and the earlier tokens of the chunk are accounted for.
/// Solved by blocked forward substitution instead of forming `(I + A)⁻¹`.
#[inline(always)]
fn correct_values(isa: Isa, ws: &mut Workspace) {
    let (cp, kp, vs) = (ws.cp, ws.kp, ws.vs);
    gemm(
        isa,
        Part::Full,
        2 * cp,
        vs,
        kp,
        Mat {
            data: &ws.qk,
            ld: kp,
        },
        Mat {
            data: &ws.s,
            ld: vs,
        },
        &mut ws.qks,
        vs,
        false,
    );
    let ks = &ws.qks[cp * vs..];
    for i in 0..cp {
        let (b, d) = (ws.beta[i], ws.decay_in[i]);
        for (x, &s) in ws.x[i * vs..(i + 1) * vs]
            .iter_mut()
            .zip(&ks[i * vs..(i + 1) * vs])
        {
            *x = b * (*x - d * s);
        }
    }
    let neg_a = &ws.gram[cp * cp..];
    let mut i0 = 0;
    while i0 < cp {
        let (done, rest) = ws.x.split_at_mut(i0 * vs);
        let block = &mut rest[..LANES * vs];
        if i0 > 0 {
            gemm(
                isa,
                Part::Full,
                LANES,
                vs,
                i0,
                Mat {
                    data: &neg_a[i0 * cp..],
                    ld: cp,
                },
                Mat { data: done, ld: vs },
                block,
                vs,
                true,
            );
        }
        for r in 1..LANES {
            let (above, row) = block.split_at_mut(r * vs);
            let row = &mut row[..vs];
            for j in 0..r {
                let a = neg_a[(i0 + r) * cp + i0 + j];
                for (x, &y) in row.iter_mut().zip(&above[j * vs..(j + 1) * vs]) {
                    *x += a * y;
                }
            }
        }
        i0 += LANES;
    }
}

/// `O = diag(exp γ) Q S₀ + P V'`: the read of the state at the chunk's start plus what
/// the chunk's own earlier tokens wrote.
#[inline(always)]
fn read_outputs(isa: Isa, ws: &mut Workspace) {
    let (cp, vs) = (ws.cp, ws.vs);
    for i in 0..cp {
        let d = ws.decay_in[i];
        for (o, &s) in ws.o[i * vs..(i + 1) * vs]
            .iter_mut()
            .zip(&ws.qks[i * vs..(i + 1) * vs])
        {
            *o = d * s;
        }
    }
    gemm(
        isa,
        Part::LowerDepth,
        cp,
        vs,
        cp,
        Mat {
            data: &ws.gram,
            ld: cp,
        },
        Mat {
            data: &ws.x,
            ld: vs,
        },
        &mut ws.o,
        vs,
        true,
    );
}

/// `S ← exp(γ_last) S + (diag(exp(γ_last − γ)) K)ᵀ V'`: decay the state across the
/// chunk and write every token's corrected value into it along its key.
#[inline(always)]
pub(crate) fn write_state(isa: Isa, ws: &mut Workspace) {
    let (cp, kp, vs) = (ws.cp, ws.kp, ws.vs);
    for row in ws.kt.chunks_exact_mut(cp) {
        for (x, &d) in row.iter_mut().zip(&ws.decay_out) {
            *x *= d;
        }
    }
    let total = ws.decay_in[cp - 1];
    for x in ws.s.iter_mut() {
        *x *= total;
    }
    gemm(
        isa,
        Part::Full,
        kp,
        vs,
        cp,
        Mat {
            data: &ws.kt,
            ld: cp,
        },
        Mat {
            data: &ws.x,
            ld: vs,
        },
        &mut ws.s,
        vs,
        true,
    );
}
