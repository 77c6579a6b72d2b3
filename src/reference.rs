//! The gated delta rule token by token in float64: the definition every backend is
//! checked against (DESIGN.md §1), slow on purpose.

use crate::config::MemoryConfig;
use crate::error::Result;
use crate::inputs::ForwardInputs;

/// Runs the recurrence
///
/// ```text
/// S ← exp(g_t) S;  u_t = β_t (v_t − Sᵀ k_t);  S ← S + k_t u_tᵀ;  o_t = Sᵀ (scale · q_t)
/// ```
///
/// over every sequence and head, starting from `initial_state` (`[B, H, K, V]`, zeros
/// if `None`), which is updated in place. Returns `o: [B, T, H, V]`.
pub fn recurrent_forward(
    config: &MemoryConfig,
    inputs: &ForwardInputs<'_>,
    state: &mut [f64],
) -> Result<Vec<f64>> {
    inputs.validate(config)?;
    let (bsz, t_len, heads) = (inputs.batch, inputs.tokens, config.heads);
    let (kd, vd) = (config.key_dim, config.value_dim);
    assert_eq!(
        state.len(),
        bsz * config.state_len(),
        "reference state length"
    );
    let scale = config.effective_scale() as f64;
    let (q, k, v) = (
        inputs.q.to_f64_vec(),
        inputs.k.to_f64_vec(),
        inputs.v.to_f64_vec(),
    );
    let (beta, g) = (inputs.beta.to_f64_vec(), inputs.g.to_f64_vec());
    let mut out = vec![0.0; bsz * t_len * heads * vd];
    let mut u = vec![0.0; vd];
    for b in 0..bsz {
        for h in 0..heads {
            let s = &mut state[(b * heads + h) * kd * vd..][..kd * vd];
            for t in 0..t_len {
                let gate = (b * t_len + t) * heads + h;
                let kt = &k[gate * kd..][..kd];
                let qt = &q[gate * kd..][..kd];
                let vt = &v[gate * vd..][..vd];
                let decay = g[gate].exp();
                s.iter_mut().for_each(|x| *x *= decay);
                for (j, uj) in u.iter_mut().enumerate() {
                    let held: f64 = (0..kd).map(|a| s[a * vd + j] * kt[a]).sum();
                    *uj = beta[gate] * (vt[j] - held);
                }
                for a in 0..kd {
                    for j in 0..vd {
                        s[a * vd + j] += kt[a] * u[j];
                    }
                }
                let o = &mut out[gate * vd..][..vd];
                for (j, oj) in o.iter_mut().enumerate() {
                    *oj = scale * (0..kd).map(|a| s[a * vd + j] * qt[a]).sum::<f64>();
                }
            }
        }
    }
    Ok(out)
}
