//! A language model described in code (no reader, no `config.json`), and a float64
//! forward of SEMANTICS.md over any description's f32 weights as the host holds them
//! (stacked projections, conv taps `[W, C]`, decay rates `-exp(A_log)`).

use ltm_engine::lm::desc::{
    Block, ChannelMixer, GateActivation, GatedDeltaNet, ModelDesc, Norm, NormForm, TokenMixer,
};
use ltm_engine::lm::weights::Weights;

/// Two blocks of grouped value heads (2 per query/key head), a sigmoid output gate, β
/// up to 2, a conv of width 3 and a tied head: options the fixtures do not have together.
pub fn described() -> ModelDesc {
    let norm = Norm {
        form: NormForm::Weight,
        eps: 1e-5,
    };
    let block = Block {
        mixer_norm: norm,
        token_mixer: TokenMixer::GatedDeltaNet(GatedDeltaNet {
            heads: 2,
            value_heads: 4,
            head_dim: 16,
            value_dim: 24,
            conv_width: 3,
            beta_scale: 2.0,
            output_gate: Some(GateActivation::Sigmoid),
            out_norm: norm,
        }),
        channel_norm: norm,
        channel_mixer: ChannelMixer::SwiGlu { intermediate: 80 },
    };
    ModelDesc {
        vocab_size: 97,
        hidden_size: 48,
        blocks: vec![block; 2],
        final_norm: norm,
        tied_head: true,
    }
}

/// The logits `[ids, vocab]` of `desc` with weights `w`, token by token in float64.
pub fn reference_over_weights(desc: &ModelDesc, w: &Weights, ids: &[u32]) -> Vec<f64> {
    let f = |v: &[f32]| -> Vec<f64> { v.iter().map(|&x| x as f64).collect() };
    let rms = |x: &[f64], w: &[f32], eps: f32| -> Vec<f64> {
        let r = 1.0 / (x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64 + eps as f64).sqrt();
        x.iter().zip(w).map(|(a, b)| a * r * *b as f64).collect()
    };
    let lin = |w: &[f32], x: &[f64]| -> Vec<f64> {
        w.chunks(x.len())
            .map(|row| row.iter().zip(x).map(|(a, b)| *a as f64 * b).sum())
            .collect()
    };
    let silu = |x: f64| x / (1.0 + (-x).exp());
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    let l2n = |x: &[f64]| -> Vec<f64> {
        let r = 1.0 / (x.iter().map(|v| v * v).sum::<f64>() + 1e-6).sqrt();
        x.iter().map(|v| v * r).collect()
    };
    let d = desc.hidden_size;
    // Per block: the conv inputs of the last W tokens, and the memory [HV, K, V].
    let mut hist: Vec<Vec<Vec<f64>>> = Vec::new();
    let mut state: Vec<Vec<f64>> = Vec::new();
    for b in &desc.blocks {
        let TokenMixer::GatedDeltaNet(m) = &b.token_mixer;
        hist.push(vec![vec![0.0; m.conv_channels()]; m.conv_width]);
        state.push(vec![0.0; m.value_heads * m.head_dim * m.value_dim]);
    }
    let mut out = Vec::new();
    for &id in ids {
        let mut x = f(&w.embeddings[id as usize * d..(id as usize + 1) * d]);
        for (l, b) in desc.blocks.iter().enumerate() {
            let lw = &w.layers[l];
            let TokenMixer::GatedDeltaNet(m) = &b.token_mixer;
            let ChannelMixer::SwiGlu { intermediate } = b.channel_mixer;
            let (h_n, hv, k, v) = (m.heads, m.value_heads, m.head_dim, m.value_dim);
            let (dk, dv, c) = (m.key_width(), m.value_width(), m.conv_channels());
            let h = rms(&x, &lw.attn_norm, b.mixer_norm.eps);
            let proj = lin(&lw.in_proj, &h);
            hist[l].remove(0);
            hist[l].push(proj[..c].to_vec());
            let conv: Vec<f64> = (0..c)
                .map(|ch| {
                    silu(
                        (0..m.conv_width)
                            .map(|j| lw.conv[j * c + ch] as f64 * hist[l][j][ch])
                            .sum(),
                    )
                })
                .collect();
            let gate_cols = if m.output_gate.is_some() { dv } else { 0 };
            let (gp, a, bp) = (
                &proj[c..c + gate_cols],
                &proj[c + gate_cols..c + gate_cols + hv],
                &proj[c + gate_cols + hv..],
            );
            let mut o = vec![0.0; dv];
            for i in 0..hv {
                let qk = i / (hv / h_n);
                let q: Vec<f64> = l2n(&conv[qk * k..(qk + 1) * k])
                    .iter()
                    .map(|x| x / (k as f64).sqrt())
                    .collect();
                let kk_ = l2n(&conv[dk + qk * k..dk + (qk + 1) * k]);
                let vv_ = &conv[2 * dk + i * v..2 * dk + (i + 1) * v];
                let beta = m.beta_scale as f64 * sig(bp[i]);
                let sp = a[i] + lw.dt_bias[i] as f64;
                let sp = if sp > 20.0 { sp } else { sp.exp().ln_1p() };
                let g = lw.decay_rate[i] as f64 * sp;
                let st = &mut state[l][i * k * v..(i + 1) * k * v];
                st.iter_mut().for_each(|s| *s *= g.exp());
                for col in 0..v {
                    let sk: f64 = (0..k).map(|r| st[r * v + col] * kk_[r]).sum();
                    let u = beta * (vv_[col] - sk);
                    for r in 0..k {
                        st[r * v + col] += kk_[r] * u;
                    }
                }
                let oh: Vec<f64> = (0..v)
                    .map(|col| (0..k).map(|r| st[r * v + col] * q[r]).sum())
                    .collect();
                let on = rms(&oh, &lw.o_norm, m.out_norm.eps);
                for col in 0..v {
                    let gate = match m.output_gate {
                        None => 1.0,
                        Some(GateActivation::Sigmoid) => sig(gp[i * v + col]),
                        Some(GateActivation::Swish) => silu(gp[i * v + col]),
                    };
                    o[i * v + col] = on[col] * gate;
                }
            }
            let y = lin(&lw.o_proj, &o);
            x.iter_mut().zip(&y).for_each(|(a, b)| *a += b);
            let h2 = rms(&x, &lw.mlp_norm, b.channel_norm.eps);
            let gu = lin(&lw.gate_up, &h2);
            let act: Vec<f64> = (0..intermediate)
                .map(|j| silu(gu[j]) * gu[intermediate + j])
                .collect();
            let y = lin(&lw.down, &act);
            x.iter_mut().zip(&y).for_each(|(a, b)| *a += b);
        }
        out.extend(lin(w.head(), &rms(&x, &w.norm, desc.final_norm.eps)));
    }
    out
}
