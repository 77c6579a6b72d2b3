//! Language-model checkpoints of configurations no fixture has, written with random
//! weights, and an independent float64 implementation of SEMANTICS.md that reads their
//! tensors by name (`tests/lm_configs.rs`, `tests/lm_suite.rs`).

use std::collections::BTreeMap;
use std::path::Path;

use half::{bf16, f16};
use ltm_engine::lm::{LanguageModel, Logits};
use ltm_engine::Device;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde_json::{json, Value};

#[derive(Clone, Copy, PartialEq)]
pub enum Wt {
    F32,
    F16,
    Bf16,
}

pub struct Shapes {
    pub d: usize,
    pub layers: usize,
    pub h: usize,
    pub hv: usize,
    pub k: usize,
    pub v: usize,
    pub w: usize,
    pub i: usize,
    pub vocab: usize,
    pub tied: bool,
    pub gate: bool,
}

/// The shapes a config implies, worked out here from the JSON (not by the library).
pub fn shapes(c: &Value) -> Shapes {
    let d = c["hidden_size"].as_u64().unwrap() as usize;
    let h = c["num_heads"].as_u64().unwrap() as usize;
    let k = c["head_dim"].as_u64().unwrap() as usize;
    let i = match c["intermediate_size"].as_u64() {
        Some(i) => i as usize,
        None => {
            let r = c["hidden_ratio"].as_f64().unwrap_or(4.0);
            ((d as f64 * r * 2.0 / 3.0) as usize).div_ceil(256) * 256
        }
    };
    Shapes {
        d,
        layers: c["num_hidden_layers"].as_u64().unwrap() as usize,
        h,
        hv: c["num_v_heads"].as_u64().map_or(h, |x| x as usize),
        k,
        v: (k as f64 * c["expand_v"].as_f64().unwrap_or(2.0)) as usize,
        w: c["conv_size"].as_u64().unwrap_or(4) as usize,
        i,
        vocab: c["vocab_size"].as_u64().unwrap() as usize,
        tied: c["tie_word_embeddings"].as_bool().unwrap_or(false),
        gate: c["use_gate"].as_bool().unwrap_or(true),
    }
}

pub fn tensor_list(s: &Shapes) -> Vec<(String, Vec<usize>)> {
    let (dk, dv) = (s.h * s.k, s.hv * s.v);
    let mut t = vec![("model.embeddings.weight".to_string(), vec![s.vocab, s.d])];
    for l in 0..s.layers {
        let p = |n: &str| format!("model.layers.{l}.{n}");
        t.push((p("attn_norm.weight"), vec![s.d]));
        t.push((p("attn.q_proj.weight"), vec![dk, s.d]));
        t.push((p("attn.k_proj.weight"), vec![dk, s.d]));
        t.push((p("attn.v_proj.weight"), vec![dv, s.d]));
        if s.gate {
            t.push((p("attn.g_proj.weight"), vec![dv, s.d]));
        }
        t.push((p("attn.a_proj.weight"), vec![s.hv, s.d]));
        t.push((p("attn.b_proj.weight"), vec![s.hv, s.d]));
        t.push((p("attn.q_conv1d.weight"), vec![dk, 1, s.w]));
        t.push((p("attn.k_conv1d.weight"), vec![dk, 1, s.w]));
        t.push((p("attn.v_conv1d.weight"), vec![dv, 1, s.w]));
        t.push((p("attn.A_log"), vec![s.hv]));
        t.push((p("attn.dt_bias"), vec![s.hv]));
        t.push((p("attn.o_norm.weight"), vec![s.v]));
        t.push((p("attn.o_proj.weight"), vec![s.d, dv]));
        t.push((p("mlp_norm.weight"), vec![s.d]));
        t.push((p("mlp.gate_proj.weight"), vec![s.i, s.d]));
        t.push((p("mlp.up_proj.weight"), vec![s.i, s.d]));
        t.push((p("mlp.down_proj.weight"), vec![s.d, s.i]));
    }
    t.push(("model.norm.weight".into(), vec![s.d]));
    if !s.tied {
        t.push(("lm_head.weight".into(), vec![s.vocab, s.d]));
    }
    t
}

/// Random values of the kind trained weights have, by tensor role.
pub fn random_tensor(name: &str, dims: &[usize], rng: &mut StdRng) -> Vec<f32> {
    let n: usize = dims.iter().product();
    let fan_in = *dims.last().unwrap() as f32;
    (0..n)
        .map(|_| {
            let u: f32 = rng.random_range(-1.0..1.0);
            if name.ends_with("A_log") {
                rng.random_range(0.0f32..2.5)
            } else if name.ends_with("dt_bias") {
                rng.random_range(-3.0f32..1.0)
            } else if name.contains("norm") {
                1.0 + 0.2 * u
            } else if name.contains("conv1d") {
                0.6 * u
            } else if name.contains("embeddings") {
                u * 1.7
            } else {
                u * 1.7 / fan_in.sqrt()
            }
        })
        .collect()
}

pub fn encode(values: &[f32], wt: Wt) -> (Dtype, Vec<u8>) {
    match wt {
        Wt::F32 => (
            Dtype::F32,
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        Wt::F16 => (
            Dtype::F16,
            values
                .iter()
                .flat_map(|v| f16::from_f32(*v).to_le_bytes())
                .collect(),
        ),
        Wt::Bf16 => (
            Dtype::BF16,
            values
                .iter()
                .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
                .collect(),
        ),
    }
}

pub fn write_tensors(path: &Path, tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, dt, dims, bytes)| {
            (
                n.clone(),
                TensorView::new(*dt, dims.clone(), bytes).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// A model directory with random weights for `config`.
pub fn write_model(dir: &Path, config: &Value, wt: Wt, seed: u64) {
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let tensors: Vec<_> = tensor_list(&shapes(config))
        .into_iter()
        .map(|(name, dims)| {
            let values = random_tensor(&name, &dims, &mut rng);
            let (dt, bytes) = encode(&values, wt);
            (name, dt, dims, bytes)
        })
        .collect();
    write_tensors(&dir.join("model.safetensors"), &tensors);
}

pub fn base_config() -> Value {
    json!({
        "model_type": "gated_deltanet", "hidden_size": 48, "num_hidden_layers": 2,
        "num_heads": 2, "head_dim": 16, "expand_v": 2.0, "conv_size": 4, "norm_eps": 1e-6,
        "hidden_ratio": 4, "intermediate_size": null, "vocab_size": 97, "use_gate": true,
        "output_gate_activation": "swish", "hidden_act": "swish", "allow_neg_eigval": false,
        "tie_word_embeddings": false, "use_short_conv": true, "attn": null, "num_v_heads": null
    })
}

/// The float64 forward of SEMANTICS.md, token by token, reading tensors by name.
pub fn reference_logits(dir: &Path, ids: &[u32]) -> Vec<f64> {
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let s = shapes(&config);
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let get = |name: &str| -> Vec<f64> {
        let t = st.tensor(name).unwrap();
        let b = t.data();
        match t.dtype() {
            Dtype::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            Dtype::F16 => b
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f64())
                .collect(),
            Dtype::BF16 => b
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f64())
                .collect(),
            _ => unreachable!(),
        }
    };
    let eps = config["norm_eps"].as_f64().unwrap();
    let neg = config["allow_neg_eigval"].as_bool().unwrap_or(false);
    let sigmoid_gate = config["output_gate_activation"] == "sigmoid";
    let rms = |x: &[f64], w: &[f64]| -> Vec<f64> {
        let r = 1.0 / (x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64 + eps).sqrt();
        x.iter().zip(w).map(|(a, b)| a * r * b).collect()
    };
    let lin = |w: &[f64], x: &[f64]| -> Vec<f64> {
        w.chunks(x.len())
            .map(|row| row.iter().zip(x).map(|(a, b)| a * b).sum())
            .collect()
    };
    let silu = |x: f64| x / (1.0 + (-x).exp());
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    let l2n = |x: &[f64]| -> Vec<f64> {
        let r = 1.0 / (x.iter().map(|v| v * v).sum::<f64>() + 1e-6).sqrt();
        x.iter().map(|v| v * r).collect()
    };
    let (dk, dv) = (s.h * s.k, s.hv * s.v);
    let emb = get("model.embeddings.weight");
    let head = if s.tied {
        emb.clone()
    } else {
        get("lm_head.weight")
    };
    let norm = get("model.norm.weight");
    struct L {
        w: BTreeMap<&'static str, Vec<f64>>,
        hist: Vec<Vec<f64>>,
        state: Vec<f64>,
    }
    let names = [
        "attn_norm.weight",
        "attn.q_proj.weight",
        "attn.k_proj.weight",
        "attn.v_proj.weight",
        "attn.g_proj.weight",
        "attn.a_proj.weight",
        "attn.b_proj.weight",
        "attn.q_conv1d.weight",
        "attn.k_conv1d.weight",
        "attn.v_conv1d.weight",
        "attn.A_log",
        "attn.dt_bias",
        "attn.o_norm.weight",
        "attn.o_proj.weight",
        "mlp_norm.weight",
        "mlp.gate_proj.weight",
        "mlp.up_proj.weight",
        "mlp.down_proj.weight",
    ];
    let mut layers: Vec<L> = (0..s.layers)
        .map(|l| L {
            w: names
                .iter()
                .filter(|n| s.gate || **n != "attn.g_proj.weight")
                .map(|n| (*n, get(&format!("model.layers.{l}.{n}"))))
                .collect(),
            hist: vec![vec![0.0; 2 * dk + dv]; s.w],
            state: vec![0.0; s.hv * s.k * s.v],
        })
        .collect();
    let mut out = Vec::new();
    for &id in ids {
        let mut x: Vec<f64> = emb[id as usize * s.d..(id as usize + 1) * s.d].to_vec();
        for layer in layers.iter_mut() {
            let w = &layer.w;
            let h = rms(&x, &w["attn_norm.weight"]);
            let mut pre = lin(&w["attn.q_proj.weight"], &h);
            pre.extend(lin(&w["attn.k_proj.weight"], &h));
            pre.extend(lin(&w["attn.v_proj.weight"], &h));
            layer.hist.remove(0);
            layer.hist.push(pre);
            let taps: Vec<f64> = [
                &w["attn.q_conv1d.weight"],
                &w["attn.k_conv1d.weight"],
                &w["attn.v_conv1d.weight"],
            ]
            .iter()
            .flat_map(|t| t.iter().copied())
            .collect();
            let conv: Vec<f64> = (0..2 * dk + dv)
                .map(|c| silu((0..s.w).map(|j| taps[c * s.w + j] * layer.hist[j][c]).sum()))
                .collect();
            let a = lin(&w["attn.a_proj.weight"], &h);
            let b = lin(&w["attn.b_proj.weight"], &h);
            let gp = if s.gate {
                lin(&w["attn.g_proj.weight"], &h)
            } else {
                vec![]
            };
            let mut o = vec![0.0; dv];
            for i in 0..s.hv {
                let qk = i / (s.hv / s.h);
                let q: Vec<f64> = l2n(&conv[qk * s.k..(qk + 1) * s.k])
                    .iter()
                    .map(|v| v / (s.k as f64).sqrt())
                    .collect();
                let k = l2n(&conv[dk + qk * s.k..dk + (qk + 1) * s.k]);
                let v = &conv[2 * dk + i * s.v..2 * dk + (i + 1) * s.v];
                let beta = sig(b[i]) * if neg { 2.0 } else { 1.0 };
                let sp = a[i] + w["attn.dt_bias"][i];
                let sp = if sp > 20.0 { sp } else { sp.exp().ln_1p() };
                let g = -w["attn.A_log"][i].exp() * sp;
                let st = &mut layer.state[i * s.k * s.v..(i + 1) * s.k * s.v]; // [K, V]
                st.iter_mut().for_each(|x| *x *= g.exp());
                for vv in 0..s.v {
                    let sk: f64 = (0..s.k).map(|kk| st[kk * s.v + vv] * k[kk]).sum();
                    let u = beta * (v[vv] - sk);
                    for kk in 0..s.k {
                        st[kk * s.v + vv] += k[kk] * u;
                    }
                }
                let oh: Vec<f64> = (0..s.v)
                    .map(|vv| (0..s.k).map(|kk| st[kk * s.v + vv] * q[kk]).sum())
                    .collect();
                let on = rms(&oh, &w["attn.o_norm.weight"]);
                for vv in 0..s.v {
                    let gate = if !s.gate {
                        1.0
                    } else if sigmoid_gate {
                        sig(gp[i * s.v + vv])
                    } else {
                        silu(gp[i * s.v + vv])
                    };
                    o[i * s.v + vv] = on[vv] * gate;
                }
            }
            let y = lin(&w["attn.o_proj.weight"], &o);
            x.iter_mut().zip(&y).for_each(|(a, b)| *a += b);
            let h2 = rms(&x, &w["mlp_norm.weight"]);
            let gate = lin(&w["mlp.gate_proj.weight"], &h2);
            let up = lin(&w["mlp.up_proj.weight"], &h2);
            let act: Vec<f64> = gate.iter().zip(&up).map(|(g, u)| silu(*g) * u).collect();
            let y = lin(&w["mlp.down_proj.weight"], &act);
            x.iter_mut().zip(&y).for_each(|(a, b)| *a += b);
        }
        out.extend(lin(&head, &rms(&x, &norm)));
    }
    out
}

/// The model of `config` with random weights in `wt`, loaded by `load`, against the
/// float64 reference: 100 tokens of prefill, then 50 decode steps.
/// `tol` bounds the error relative to the largest reference logit.
pub fn check_with(
    config: Value,
    wt: Wt,
    label: &str,
    load: &dyn Fn(&Path) -> LanguageModel,
    tol: f64,
) {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), &config, wt, 11);
    let model = load(dir.path());
    let vocab = shapes(&config).vocab;
    let mut rng = StdRng::seed_from_u64(5);
    let ids: Vec<u32> = (0..150)
        .map(|_| rng.random_range(0..vocab as u32))
        .collect();
    let want = reference_logits(dir.path(), &ids);
    let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let err = |got: &[f32], want: &[f64]| {
        got.iter()
            .zip(want)
            .map(|(g, w)| {
                assert!(g.is_finite(), "{label}: non-finite logit");
                (*g as f64 - w).abs()
            })
            .fold(0.0f64, f64::max)
            / scale
    };
    let mut s = model.session().unwrap();
    let got = s.feed(&ids[..100], Logits::All).unwrap();
    let e = err(&got, &want[..100 * vocab]);
    assert!(e < tol, "{label}: prefill logits error {e:.2e}");
    // Then token by token.
    for (j, &id) in ids[100..].iter().enumerate() {
        let got = s.step(id).unwrap().to_vec();
        let t = 100 + j;
        let e = err(&got, &want[t * vocab..(t + 1) * vocab]);
        assert!(e < tol, "{label}: decode token {t} error {e:.2e}");
    }
    eprintln!("{label}: ok");
}

/// [`check_with`] on the CPU.
pub fn check(config: Value, wt: Wt, label: &str) {
    let load = |dir: &Path| LanguageModel::load(dir, Device::Cpu).unwrap();
    check_with(config, wt, label, &load, 1e-4);
}

/// The configurations no fixture has (tied head, β up to 2, no gate, grouped value
/// heads, conv width 3, a sigmoid gate, f16 and bf16 weights), each checked by `check`.
pub fn every_configuration(check: &dyn Fn(Value, Wt, &str)) {
    check(base_config(), Wt::F32, "base");
    let mut c = base_config();
    c["tie_word_embeddings"] = json!(true);
    c["allow_neg_eigval"] = json!(true);
    check(c, Wt::Bf16, "tied, β up to 2, bf16");
    let mut c = base_config();
    c["use_gate"] = json!(false);
    c["num_v_heads"] = json!(6);
    c["conv_size"] = json!(3);
    c["intermediate_size"] = json!(40);
    check(
        c,
        Wt::F16,
        "no gate, 3 value heads per q/k head, conv 3, I = 40, f16",
    );
    let mut c = base_config();
    c["output_gate_activation"] = json!("sigmoid");
    c["expand_v"] = json!(1.5);
    c["hidden_act"] = json!("silu");
    check(c, Wt::F32, "sigmoid gate, expand_v 1.5");
}
