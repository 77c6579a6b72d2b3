//! The forward's operations on the CPU: f32 on all cores (rayon), the products through
//! `gemm`, the memory through the model's backend.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::inputs::ForwardInputs;

use super::super::desc::{GateActivation, GatedDeltaNet, Norm};
use super::super::forward::{Act, Matrix, NormAt, Ops, Product, Rows};
use super::super::linear::matmul_t;
use super::super::ops::{
    l2_normalize, rms_norm, rms_norm_rows, short_conv, sigmoid, silu, softplus,
};
use super::super::trace::TraceStage;
use super::{sized, CpuRunner};

impl CpuRunner<'_> {
    /// The values of `act` the last operation that wrote it left.
    fn values(&self, act: Act) -> &[f32] {
        let ws = &self.ws;
        let buf = match act {
            Act::Residual => &ws.x,
            Act::Normed => &ws.h,
            Act::Proj => &ws.proj,
            Act::Mixed => &ws.o,
            Act::Mlp => &ws.mlp,
            Act::Act => &ws.act,
        };
        &buf[..ws.lens[act as usize]]
    }
}

impl Ops for CpuRunner<'_> {
    fn embed(&mut self, ids: &[u32]) -> Result<()> {
        let d = self.desc.hidden_size;
        let e = &self.weights.embeddings;
        let x = sized(&mut self.ws.x, ids.len() * d);
        for (row, &id) in x.chunks_mut(d).zip(ids) {
            row.copy_from_slice(&e[id as usize * d..][..d]);
        }
        self.ws.rows = ids.len();
        self.ws.lens[Act::Residual as usize] = ids.len() * d;
        Ok(())
    }

    fn norm(&mut self, at: NormAt, norm: &Norm, rows: Rows) -> Result<()> {
        let weights = self.weights;
        let w = match at {
            NormAt::Mixer(l) => &weights.layers[l].attn_norm,
            NormAt::Channel(l) => &weights.layers[l].mlp_norm,
            NormAt::Final => &weights.norm,
        };
        let (t, d) = (self.ws.rows, self.desc.hidden_size);
        let ws = &mut self.ws;
        let n = match rows {
            Rows::All | Rows::Leading(_) => {
                let n = if let Rows::Leading(n) = rows { n } else { t };
                rms_norm_rows(&ws.x[..n * d], w, norm.eps, sized(&mut ws.h, n * d));
                n
            }
            Rows::Last => {
                rms_norm(&ws.x[(t - 1) * d..t * d], w, norm.eps, sized(&mut ws.h, d));
                1
            }
            Rows::LastHidden => {
                let hidden = self.last_hidden.as_deref().unwrap_or(&[]);
                rms_norm(hidden, w, norm.eps, sized(&mut ws.h, d));
                1
            }
        };
        ws.lens[Act::Normed as usize] = n * d;
        ws.head_rows = n;
        Ok(())
    }

    fn linear(&mut self, p: Product) -> Result<()> {
        let weights = self.weights;
        let lw = &weights.layers[p.layer];
        let w = match p.matrix {
            Matrix::InProj => &lw.in_proj,
            Matrix::OProj => &lw.o_proj,
            Matrix::GateUp => &lw.gate_up,
            Matrix::Down => &lw.down,
        };
        let t = self.ws.rows;
        let ws = &mut self.ws;
        // Inputs and outputs are distinct buffers in every product of the forward.
        let (x, y): (&[f32], &mut [f32]) = match (p.from, p.to) {
            (Act::Normed, Act::Proj) => (&ws.h, sized(&mut ws.proj, t * p.out_dim)),
            (Act::Normed, Act::Mlp) => (&ws.h, sized(&mut ws.mlp, t * p.out_dim)),
            (Act::Mixed, Act::Residual) => (&ws.o, &mut ws.x[..t * p.out_dim]),
            (Act::Act, Act::Residual) => (&ws.act, &mut ws.x[..t * p.out_dim]),
            (from, to) => {
                return Err(Error::Config(format!(
                    "the CPU has no product from {from:?} to {to:?}"
                )))
            }
        };
        matmul_t(
            &x[..t * p.in_dim],
            t,
            p.in_dim,
            w,
            p.out_dim,
            y,
            p.accumulate,
        );
        ws.lens[p.to as usize] = t * p.out_dim;
        Ok(())
    }

    fn gated_delta_rule(&mut self, l: usize, m: &GatedDeltaNet, decode: bool) -> Result<()> {
        let t = self.ws.rows;
        let weights = self.weights;
        let lw = &weights.layers[l];
        let (dk, dv, hv, kd, vd) = (
            m.key_width(),
            m.value_width(),
            m.value_heads,
            m.head_dim,
            m.value_dim,
        );
        let channels = m.conv_channels();
        let gate_cols = if m.output_gate.is_some() { dv } else { 0 };
        let n_in = m.in_proj_width();
        let (off_g, off_a, off_b) = (channels, channels + gate_cols, channels + gate_cols + hv);
        let group = m.group();
        let heads = m.heads;
        let beta_scale = m.beta_scale;
        if let Some(hook) = self.trace.as_mut() {
            hook(TraceStage::ConvCacheBefore, l, &self.conv[l]);
        }
        let ws = &mut self.ws;
        let proj: &[f32] = &ws.proj[..t * n_in];
        let conv_out = sized(&mut ws.conv_out, t * channels);
        short_conv(
            proj,
            n_in,
            t,
            &lw.conv,
            &mut self.conv[l],
            m.conv_width,
            &mut ws.conv_ext,
            conv_out,
        );
        if let Some(hook) = self.trace.as_mut() {
            hook(TraceStage::ConvCacheAfter, l, &self.conv[l]);
        }

        // Heads for the memory: q, k l2-normalised per query/key head and repeated
        // for each value head that reads them; β and g from their projections.
        let q = sized(&mut ws.q, t * hv * kd);
        let k = sized(&mut ws.k, t * hv * kd);
        let v = sized(&mut ws.v, t * dv);
        let beta = sized(&mut ws.beta, t * hv);
        let g = sized(&mut ws.g, t * hv);
        let conv_ro: &[f32] = conv_out;
        q.par_chunks_mut(hv * kd)
            .zip(k.par_chunks_mut(hv * kd))
            .zip(v.par_chunks_mut(dv))
            .zip(beta.par_chunks_mut(hv).zip(g.par_chunks_mut(hv)))
            .enumerate()
            .with_min_len(8)
            .for_each(|(ti, (((q, k), v), (beta, g)))| {
                let row = &conv_ro[ti * channels..(ti + 1) * channels];
                for head in 0..heads {
                    let first = head * group;
                    let (qs, ks) = (first * kd, first * kd);
                    q[qs..qs + kd].copy_from_slice(&row[head * kd..(head + 1) * kd]);
                    l2_normalize(&mut q[qs..qs + kd]);
                    k[ks..ks + kd].copy_from_slice(&row[dk + head * kd..dk + (head + 1) * kd]);
                    l2_normalize(&mut k[ks..ks + kd]);
                    for j in 1..group {
                        let to = (first + j) * kd;
                        q.copy_within(qs..qs + kd, to);
                        k.copy_within(ks..ks + kd, to);
                    }
                }
                v.copy_from_slice(&row[2 * dk..]);
                let prow = &proj[ti * n_in..(ti + 1) * n_in];
                for i in 0..hv {
                    let b = sigmoid(prow[off_b + i]);
                    beta[i] = beta_scale * b;
                    g[i] = lw.decay_rate[i] * softplus(prow[off_a + i] + lw.dt_bias[i]);
                }
            });
        if let Some(hook) = self.trace.as_mut() {
            hook(TraceStage::MemQ, l, q);
            hook(TraceStage::MemK, l, k);
            hook(TraceStage::MemV, l, v);
            hook(TraceStage::Beta, l, beta);
            hook(TraceStage::Gate, l, g);
        }
        let inputs = ForwardInputs {
            batch: 1,
            tokens: t,
            q: (&*q).into(),
            k: (&*k).into(),
            v: (&*v).into(),
            beta: (&*beta).into(),
            g: (&*g).into(),
        };
        let o = sized(&mut ws.o, t * dv);
        if decode {
            self.memories[l].decode(&inputs, o)?;
        } else {
            self.memories[l].feed(&inputs, o)?;
        }
        if let Some(hook) = self.trace.as_mut() {
            hook(TraceStage::MemOut, l, o);
        }

        // Gated RMSNorm per value head.
        let eps = m.out_norm.eps;
        let gate = m.output_gate;
        o.par_chunks_mut(dv)
            .enumerate()
            .with_min_len(8)
            .for_each(|(ti, row)| {
                let prow = &proj[ti * n_in..(ti + 1) * n_in];
                for i in 0..hv {
                    let head = &mut row[i * vd..(i + 1) * vd];
                    let mean = head.iter().map(|x| x * x).sum::<f32>() / vd as f32;
                    let r = 1.0 / (mean + eps).sqrt();
                    for (j, x) in head.iter_mut().enumerate() {
                        *x = *x * r * lw.o_norm[j];
                        if let Some(kind) = gate {
                            let gv = prow[off_g + i * vd + j];
                            *x *= match kind {
                                GateActivation::Swish => silu(gv),
                                GateActivation::Sigmoid => sigmoid(gv),
                            };
                        }
                    }
                }
            });
        ws.lens[Act::Mixed as usize] = t * dv;
        Ok(())
    }

    fn swiglu(&mut self, inter: usize) -> Result<()> {
        let t = self.ws.rows;
        let ws = &mut self.ws;
        let act = sized(&mut ws.act, t * inter);
        let mlp: &[f32] = &ws.mlp[..t * 2 * inter];
        act.par_chunks_mut(inter)
            .zip(mlp.par_chunks(2 * inter))
            .with_min_len(8)
            .for_each(|(a, m)| {
                let (gate, up) = m.split_at(inter);
                for ((a, g), u) in a.iter_mut().zip(gate).zip(up) {
                    *a = silu(*g) * u;
                }
            });
        ws.lens[Act::Act as usize] = t * inter;
        Ok(())
    }

    fn end_window(&mut self) -> Result<()> {
        let (t, d) = (self.ws.rows, self.desc.hidden_size);
        self.last_hidden = Some(self.ws.x[(t - 1) * d..t * d].to_vec());
        self.tokens += t as u64;
        Ok(())
    }

    fn head(&mut self, _rows: Rows) -> Result<()> {
        let (d, vocab) = (self.desc.hidden_size, self.desc.vocab_size);
        let n = self.ws.head_rows;
        let weights = self.weights;
        let ws = &mut self.ws;
        let logits = sized(&mut ws.logits, n * vocab);
        matmul_t(&ws.h[..n * d], n, d, weights.head(), vocab, logits, false);
        ws.logits_len = n * vocab;
        Ok(())
    }

    fn trace(&mut self, stage: TraceStage, layer: usize, act: Act) {
        if self.trace.is_none() {
            return;
        }
        let mut hook = self.trace.take().expect("tested just above");
        hook(stage, layer, self.values(act));
        self.trace = Some(hook);
    }
}
