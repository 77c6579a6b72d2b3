//! Causal softmax attention in float64, query by query with the whole row of scores:
//! the definition the tiled kernels are checked against, slow on purpose.

use super::{AttentionConfig, AttentionInputs};
use crate::error::Result;

/// `o_t = Σ_{j ≤ t} softmax_j(scale · q_t·k_j) v_j` for every sequence, head and
/// position of `inputs` (`[B, T, H, D]`, whole sequences from their first token).
/// Returns `o: [B, T, H, D]`.
pub fn causal_attention(
    config: &AttentionConfig,
    inputs: &AttentionInputs<'_>,
) -> Result<Vec<f64>> {
    inputs.validate(config)?;
    let (bsz, t_len, heads, d) = (inputs.batch, inputs.tokens, config.heads, config.head_dim);
    let scale = config.effective_scale() as f64;
    let (q, k, v) = (
        inputs.q.to_f64_vec(),
        inputs.k.to_f64_vec(),
        inputs.v.to_f64_vec(),
    );
    let row = |b: usize, t: usize, h: usize| ((b * t_len + t) * heads + h) * d;
    let mut out = vec![0.0; q.len()];
    let mut scores = vec![0.0; t_len];
    for b in 0..bsz {
        for h in 0..heads {
            for t in 0..t_len {
                let qt = &q[row(b, t, h)..][..d];
                for (j, s) in scores[..=t].iter_mut().enumerate() {
                    let kj = &k[row(b, j, h)..][..d];
                    *s = scale * qt.iter().zip(kj).map(|(a, b)| a * b).sum::<f64>();
                }
                let top = scores[..=t]
                    .iter()
                    .copied()
                    .fold(f64::NEG_INFINITY, f64::max);
                let mut total = 0.0;
                let o = &mut out[row(b, t, h)..][..d];
                for (j, &s) in scores[..=t].iter().enumerate() {
                    let w = (s - top).exp();
                    total += w;
                    for (x, &vj) in o.iter_mut().zip(&v[row(b, j, h)..][..d]) {
                        *x += w * vj;
                    }
                }
                o.iter_mut().for_each(|x| *x /= total);
            }
        }
    }
    Ok(out)
}
