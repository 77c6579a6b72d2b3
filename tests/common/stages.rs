//! Float64 definition of stage 1 (chunk preparation, kernels/column_write.cu), for the
//! GPU stage tests: per (sequence, head, chunk of 64) γ, P, and the solves W and U.
#![allow(dead_code)]

use ltm_engine::{ForwardInputs, MemoryConfig};

pub const CHUNK: usize = 64;

/// Same layout as `ltm_engine::backend::cuda::PrepOutputs`.
pub struct RefPrep {
    pub kp: usize,
    pub num_chunks: usize,
    pub w: Vec<f64>,
    pub u: Vec<f64>,
    pub p: Vec<f64>,
    pub gamma: Vec<f64>,
}

pub fn chunk_prep_reference(config: &MemoryConfig, x: &ForwardInputs<'_>) -> RefPrep {
    let (h_n, kd, vd) = (config.heads, config.key_dim, config.value_dim);
    let kp = kd.div_ceil(16) * 16;
    let nc = x.tokens.div_ceil(CHUNK);
    let scale = config.effective_scale() as f64;
    let (q, k, v) = (x.q.to_f64_vec(), x.k.to_f64_vec(), x.v.to_f64_vec());
    let (beta, g) = (x.beta.to_f64_vec(), x.g.to_f64_vec());
    let rows = x.batch * h_n * nc * CHUNK;
    let mut out = RefPrep {
        kp,
        num_chunks: nc,
        w: vec![0.0; rows * kp],
        u: vec![0.0; rows * vd],
        p: vec![0.0; rows * CHUNK],
        gamma: vec![0.0; rows],
    };
    for b in 0..x.batch {
        for h in 0..h_n {
            for c in 0..nc {
                let base = ((b * h_n + h) * nc + c) * CHUNK;
                let tok = |i: usize| {
                    let t = c * CHUNK + i;
                    (t < x.tokens).then(|| (b * x.tokens + t) * h_n + h)
                };
                let mut gam = [0.0f64; CHUNK];
                let mut bet = [0.0f64; CHUNK];
                let mut acc = 0.0;
                for i in 0..CHUNK {
                    if let Some(r) = tok(i) {
                        acc += g[r];
                        bet[i] = beta[r];
                    }
                    gam[i] = acc;
                    out.gamma[base + i] = acc;
                }
                let dot = |a: &[f64], ra: Option<usize>, rb: Option<usize>| -> f64 {
                    match (ra, rb) {
                        (Some(i), Some(j)) => (0..kd).map(|d| a[i * kd + d] * k[j * kd + d]).sum(),
                        _ => 0.0,
                    }
                };
                let mut a = vec![0.0f64; CHUNK * CHUNK];
                for i in 0..CHUNK {
                    for j in 0..=i {
                        let decay = (gam[i] - gam[j]).exp();
                        if j < i {
                            a[i * CHUNK + j] = bet[i] * dot(&k, tok(i), tok(j)) * decay;
                        }
                        out.p[(base + i) * CHUNK + j] = scale * dot(&q, tok(i), tok(j)) * decay;
                    }
                }
                // (I + A) X = R, row by row.
                let width = kp + vd;
                let mut xs = vec![0.0f64; CHUNK * width];
                for i in 0..CHUNK {
                    if let Some(r) = tok(i) {
                        for d in 0..kd {
                            xs[i * width + d] = bet[i] * gam[i].exp() * k[r * kd + d];
                        }
                        for d in 0..vd {
                            xs[i * width + kp + d] = bet[i] * v[r * vd + d];
                        }
                    }
                    for j in 0..i {
                        let aij = a[i * CHUNK + j];
                        for col in 0..width {
                            xs[i * width + col] -= aij * xs[j * width + col];
                        }
                    }
                }
                for i in 0..CHUNK {
                    out.w[(base + i) * kp..(base + i + 1) * kp]
                        .copy_from_slice(&xs[i * width..i * width + kp]);
                    out.u[(base + i) * vd..(base + i + 1) * vd]
                        .copy_from_slice(&xs[i * width + kp..(i + 1) * width]);
                }
            }
        }
    }
    out
}
