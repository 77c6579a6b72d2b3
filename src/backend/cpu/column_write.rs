//! Stage 1, the column write: everything about a chunk that does not depend on the
//! state it starts from (gates, masked Gram matrices). As in CUDA's `column_write.cu`,
//! the state itself is written by the scan (`scan.rs`).

use super::exp::exp;
use super::gemm::{gemm, Isa, Mat, Part};
use super::workspace::Workspace;
use super::SequenceView;
use crate::inputs::InputRows;

/// Loads chunk rows `t0..t0+len` of one (sequence, head, value slice) into the
/// workspace, converting to f32 and folding the read scale into the queries. Rows past
/// `len` become padding.
#[inline(always)]
pub(crate) fn gather<R: InputRows + ?Sized>(
    ws: &mut Workspace,
    seq: &SequenceView<'_, R>,
    t0: usize,
    len: usize,
) {
    let (cp, kp, vs) = (ws.cp, ws.kp, ws.vs);
    let (kd, vw) = (seq.config.key_dim, seq.v_cols);
    for i in 0..cp {
        let (q_row, k_row) = {
            let (q, k) = ws.qk.split_at_mut(cp * kp);
            (&mut q[i * kp..i * kp + kd], &mut k[i * kp..i * kp + kd])
        };
        let x_row = &mut ws.x[i * vs..i * vs + vw];
        if i < len {
            let (beta, g) = seq.rows.row(
                seq.config,
                seq.b,
                t0 + i,
                seq.h,
                seq.scale,
                q_row,
                k_row,
                seq.v0,
                x_row,
            );
            ws.beta[i] = beta;
            ws.gamma[i] = g;
        } else {
            q_row.fill(0.0);
            k_row.fill(0.0);
            x_row.fill(0.0);
            ws.beta[i] = 0.0;
            ws.gamma[i] = 0.0;
        }
    }
}

/// Turns the gates into cumulative decays and builds, from the Gram matrices,
/// `P = (Q Kᵀ) ⊙ exp(γ_i − γ_j)` for `j ≤ i` and `−A = −β_i (K Kᵀ) ⊙ exp(γ_i − γ_j)` for
/// `j < i`; both zero above their diagonals.
#[inline(always)]
pub(crate) fn prepare(isa: Isa, ws: &mut Workspace) {
    let (cp, kp) = (ws.cp, ws.kp);
    // Summed in f64: γ of a chunk is a sum of up to `cp` gates and drives every decay.
    let mut acc = 0.0f64;
    for gi in ws.gamma.iter_mut() {
        acc += *gi as f64;
        *gi = acc as f32;
    }
    let last = ws.gamma[cp - 1];
    for i in 0..cp {
        ws.decay_in[i] = exp(ws.gamma[i]);
        ws.decay_out[i] = exp(last - ws.gamma[i]);
    }
    for (a, row) in ws.qk[cp * kp..].chunks_exact(kp).enumerate() {
        for (p, &v) in row.iter().enumerate() {
            ws.kt[p * cp + a] = v;
        }
    }
    let kt = Mat {
        data: &ws.kt,
        ld: cp,
    };
    gemm(
        isa,
        Part::LowerColumns,
        cp,
        cp,
        kp,
        Mat {
            data: &ws.qk,
            ld: kp,
        },
        kt,
        &mut ws.gram,
        cp,
        false,
    );
    let (qkt, kkt) = ws.gram.split_at_mut(cp * cp);
    gemm(
        isa,
        Part::LowerColumns,
        cp,
        cp,
        kp,
        Mat {
            data: &ws.qk[cp * kp..],
            ld: kp,
        },
        kt,
        kkt,
        cp,
        false,
    );
    for i in 0..cp {
        let gi = ws.gamma[i];
        let pd = &mut ws.pair_decay[..=i];
        for (d, &gj) in pd.iter_mut().zip(&ws.gamma[..=i]) {
            *d = exp(gi - gj);
        }
        let p_row = &mut qkt[i * cp..(i + 1) * cp];
        for (p, &d) in p_row[..=i].iter_mut().zip(pd.iter()) {
            *p *= d;
        }
        p_row[i + 1..].fill(0.0);
        let nb = -ws.beta[i];
        let a_row = &mut kkt[i * cp..(i + 1) * cp];
        for (a, &d) in a_row[..i].iter_mut().zip(pd.iter()) {
            *a *= nb * d;
        }
        a_row[i..].fill(0.0);
    }
}
