//! Writes the language-model kernels' emulator cases (`kernels/emu/lm_check.cpp` runs
//! them): for each fixture model, the CPU forward over a window of a real prompt (after
//! a prefix, so the conv cache is not zero) and one decode step, with every stage's
//! input and output recorded per layer (`ModelSession::set_trace`); each kernel's launch
//! comes from the same geometry functions the CUDA session calls
//! (`ltm_engine::lm::kernels`), with buffer handles as addresses.
//!
//!   cargo run --release --example emu_lm_cases -- target/emu-lm-cases.bin [MODEL_DIR...]
//!
//! Format: text lines, with raw little-endian data after `fill` and `expect` lines:
//!   step NAME
//!   buffer NAME BYTES                       (NaN-filled before each run)
//!   fill NAME f32|u32 COUNT \n <bytes> \n    (from offset 0)
//!   launch ENTRY grid X Y Z block X Y Z smem BYTES
//!   param FIELD VALUE                       (p:NAME+OFFSET, null, i:N, f:BITS, u:N)
//!   expect NAME f32|bf16|f16|u32|f64 TOL COUNT \n <bytes> \n
//!   endstep
//! An f32/bf16/f16 expectation compares max |got − want| / max |want| with TOL; u32 is
//! exact; f64 data is the CPU's f64 (`next_token_nll`).

use std::collections::HashMap;
use std::io::Write as _;

use ltm_engine::lm::kernels::{self as k, LmDims, LmLaunch};
use ltm_engine::lm::sample::argmax;
use ltm_engine::lm::session::TraceStage as S;
use ltm_engine::lm::{LanguageModel, Logits, Sampler, Sampling};
use ltm_engine::{DType, Device};

/// Tolerances: f32 kernels against the CPU's f32 forward (different summation order,
/// fused multiply-adds, libm vs the engine's exp), relative to the largest |value|;
/// bf16/f16 outputs add their rounding (half an ulp: 2⁻⁸, 2⁻¹¹ of a value at most),
/// allowed twice over.
const TOL_F32: f64 = 1e-5;
const TOL_BF16: f64 = 8e-3;
const TOL_F16: f64 = 1e-3;
const PREFIX: usize = 30;
const WINDOW: usize = 37;

enum Val {
    Ptr(u64),
    Int(i32),
    Flt(f32),
    U64(u64),
}

trait Fields {
    fn fields(&self) -> Vec<(&'static str, Val)>;
}

macro_rules! fields {
    ($t:ty; ptr: $($p:ident),*; int: $($i:ident),*; flt: $($f:ident),*; u64: $($u:ident),*) => {
        impl Fields for $t {
            fn fields(&self) -> Vec<(&'static str, Val)> {
                vec![$((stringify!($p), Val::Ptr(self.$p)),)*
                     $((stringify!($i), Val::Int(self.$i)),)*
                     $((stringify!($f), Val::Flt(self.$f)),)*
                     $((stringify!($u), Val::U64(self.$u)),)*]
            }
        }
    };
}
fields!(k::LmEmbedParams; ptr: ids, table, x; int: rows, dim, vocab, pad; flt: ; u64: );
fields!(k::LmAddNormParams; ptr: x, delta, weight, out; int: rows, dim, out_stride; flt: eps; u64: );
fields!(k::LmConvParams; ptr: proj, taps, cache, decay_rate, dt_bias, q, k, v, beta, g;
    int: rows, proj_stride, heads, value_heads, head_dim, value_dim, conv_size, col_a, col_b,
    allow_neg_eigval; flt: ; u64: );
fields!(k::LmConvCacheParams; ptr: proj, cache; int: rows, proj_stride, channels, conv_size; flt: ; u64: );
fields!(k::LmGatedNormParams; ptr: o, proj, weight, out;
    int: rows, value_heads, value_dim, proj_stride, gate_col, gate_sigmoid, pad; flt: eps; u64: );
fields!(k::LmSwigluParams; ptr: mlp, out; int: rows, inter; flt: ; u64: );
fields!(k::LmNllParams; ptr: logits, targets, nll; int: rows, vocab; flt: ; u64: );
fields!(k::LmSampleParams; ptr: logits, out; int: rows, vocab, top_k, pad; flt: temperature, top_p;
    u64: seed, draw);

/// One step: buffers, fills, launches, expectations.
struct Step<'a> {
    out: &'a mut Vec<u8>,
    names: Vec<String>,
}

impl<'a> Step<'a> {
    fn new(out: &'a mut Vec<u8>, name: &str) -> Self {
        writeln!(out, "step {name}").unwrap();
        Step {
            out,
            names: Vec::new(),
        }
    }
    /// A buffer of `bytes`; its address for the geometry functions.
    fn buffer(&mut self, name: &str, bytes: usize) -> u64 {
        writeln!(self.out, "buffer {name} {bytes}").unwrap();
        self.names.push(name.to_string());
        (self.names.len() as u64) << 40
    }
    fn with_f32(&mut self, name: &str, data: &[f32]) -> u64 {
        let a = self.buffer(name, 4 * data.len());
        self.fill(name, "f32", bytemuck::cast_slice(data), data.len());
        a
    }
    fn with_u32(&mut self, name: &str, data: &[u32]) -> u64 {
        let a = self.buffer(name, 4 * data.len());
        self.fill(name, "u32", bytemuck::cast_slice(data), data.len());
        a
    }
    fn with_dtype(&mut self, name: &str, data: &[f32], dtype: DType) -> u64 {
        match dtype {
            DType::F32 => self.with_f32(name, data),
            _ => {
                let bits: Vec<u16> = data
                    .iter()
                    .map(|&x| match dtype {
                        DType::BF16 => half::bf16::from_f32(x).to_bits(),
                        _ => half::f16::from_f32(x).to_bits(),
                    })
                    .collect();
                let a = self.buffer(name, 2 * data.len());
                let kind = if dtype == DType::BF16 { "bf16" } else { "f16" };
                self.fill(name, kind, bytemuck::cast_slice(&bits), data.len());
                a
            }
        }
    }
    fn fill(&mut self, name: &str, kind: &str, bytes: &[u8], count: usize) {
        writeln!(self.out, "fill {name} {kind} {count}").unwrap();
        self.out.extend_from_slice(bytes);
        self.out.push(b'\n');
    }
    fn launch<P: Fields>(&mut self, l: &LmLaunch<P>) {
        writeln!(
            self.out,
            "launch {} grid {} {} {} block {} {} {} smem {}",
            l.entry,
            l.grid.0,
            l.grid.1,
            l.grid.2,
            l.block.0,
            l.block.1,
            l.block.2,
            l.shared_mem_bytes
        )
        .unwrap();
        for (name, v) in l.params.fields() {
            let text = match v {
                Val::Ptr(0) => "null".to_string(),
                Val::Ptr(a) => {
                    let id = (a >> 40) as usize;
                    format!("p:{}+{}", self.names[id - 1], a & ((1 << 40) - 1))
                }
                Val::Int(i) => format!("i:{i}"),
                Val::Flt(f) => format!("f:{}", f.to_bits()),
                Val::U64(u) => format!("u:{u}"),
            };
            writeln!(self.out, "param {name} {text}").unwrap();
        }
    }
    fn expect_f32(&mut self, name: &str, dtype: DType, want: &[f32]) {
        let (kind, tol) = match dtype {
            DType::F32 => ("f32", TOL_F32),
            DType::BF16 => ("bf16", TOL_BF16),
            DType::F16 => ("f16", TOL_F16),
        };
        writeln!(self.out, "expect {name} {kind} {tol:e} {}", want.len()).unwrap();
        self.out.extend_from_slice(bytemuck::cast_slice(want));
        self.out.push(b'\n');
    }
    fn expect_u32(&mut self, name: &str, want: &[u32]) {
        writeln!(self.out, "expect {name} u32 0 {}", want.len()).unwrap();
        self.out.extend_from_slice(bytemuck::cast_slice(want));
        self.out.push(b'\n');
    }
    fn expect_f64(&mut self, name: &str, want: &[f64]) {
        writeln!(self.out, "expect {name} f64 {TOL_F32:e} {}", want.len()).unwrap();
        self.out.extend_from_slice(bytemuck::cast_slice(want));
        self.out.push(b'\n');
    }
}

impl Drop for Step<'_> {
    fn drop(&mut self) {
        writeln!(self.out, "endstep").unwrap();
    }
}

type Trace = HashMap<(S, usize), Vec<f32>>;

fn es(d: DType) -> usize {
    if d == DType::F32 {
        4
    } else {
        2
    }
}

fn sub(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x - y).collect()
}

/// The steps of one traced window of `rows` tokens.
#[allow(clippy::too_many_arguments)]
fn window_steps(
    out: &mut Vec<u8>,
    tag: &str,
    model: &LanguageModel,
    tr: &Trace,
    ids: &[u32],
    rows: usize,
    logits: &[f32],
    targets: &[u32],
) -> ltm_engine::Result<()> {
    let c = model.config();
    let dims = LmDims::of(c);
    let w = model.weights().ok_or_else(|| {
        ltm_engine::Error::Config("the emulator cases need the CPU model's host weights".into())
    })?;
    let layers = c.layers;
    let get = |s: S, l: usize| -> &Vec<f32> {
        tr.get(&(s, l))
            .unwrap_or_else(|| panic!("stage {s:?} of layer {l} was not traced"))
    };
    let d = dims.hidden;
    let on_disk = if tag.contains("gva") {
        DType::F16
    } else {
        DType::F32
    };

    // Embedding: the table in f32 and in the checkpoint's dtype (exact either way).
    for table_dtype in [DType::F32, on_disk] {
        let mut s = Step::new(out, &format!("{tag}/embed_{table_dtype:?}"));
        let ids_a = s.with_u32("ids", ids);
        let table = s.with_dtype("table", &w.embeddings, table_dtype);
        let x = s.buffer("x", 4 * rows * d);
        s.launch(&k::embed(&dims, table_dtype, rows, ids_a, table, x)?);
        s.expect_f32("x", DType::F32, get(S::Residual, 0));
    }
    let all = [DType::F32, DType::BF16, DType::F16];
    for l in 0..layers {
        let lw = &w.layers[l];
        for &dt in &all {
            // attn_norm: layer 0 straight from the embedding; later layers add the
            // previous MLP's output first.
            let before = (l > 0).then(|| get(S::ResidualMid, l - 1).as_slice());
            add_norm_step(
                out,
                &format!("{tag}/L{l}/attn_add_norm_{dt:?}"),
                (&dims, dt, rows),
                before,
                get(S::Residual, l),
                &lw.attn_norm,
                get(S::AttnNorm, l),
            )?;
        }
        for &dt in &all {
            let mut s = Step::new(out, &format!("{tag}/L{l}/conv_{dt:?}"));
            let proj = s.with_f32("proj", get(S::Proj, l));
            let taps = s.with_f32("taps", &lw.conv);
            let cache = s.with_f32("cache", get(S::ConvCacheBefore, l));
            let decay_rate = s.with_f32("decay_rate", &lw.decay_rate);
            let dt_bias = s.with_f32("dt_bias", &lw.dt_bias);
            let (hv, kd, vw) = (dims.value_heads, dims.head_dim, dims.value_width());
            let q = s.buffer("q", es(dt) * rows * hv * kd);
            let kk = s.buffer("k", es(dt) * rows * hv * kd);
            let v = s.buffer("v", es(dt) * rows * vw);
            let beta = s.buffer("beta", 4 * rows * hv);
            let g = s.buffer("g", 4 * rows * hv);
            let bufs = k::ConvBufs {
                proj,
                taps,
                cache,
                decay_rate,
                dt_bias,
                q,
                k: kk,
                v,
                beta,
                g,
            };
            s.launch(&k::conv(&dims, dt, rows, bufs)?);
            s.launch(&k::conv_cache(&dims, rows, proj, cache)?);
            s.expect_f32("q", dt, get(S::MemQ, l));
            s.expect_f32("k", dt, get(S::MemK, l));
            s.expect_f32("v", dt, get(S::MemV, l));
            s.expect_f32("beta", DType::F32, get(S::Beta, l));
            s.expect_f32("g", DType::F32, get(S::Gate, l));
            s.expect_f32("cache", DType::F32, get(S::ConvCacheAfter, l));
        }
        for &dt in &all {
            let mut s = Step::new(out, &format!("{tag}/L{l}/gated_norm_{dt:?}"));
            let o = s.with_f32("o", get(S::MemOut, l));
            let proj = s.with_f32("proj", get(S::Proj, l));
            let weight = s.with_f32("weight", &lw.o_norm);
            let y = s.buffer("out", es(dt) * rows * dims.value_width());
            s.launch(&k::gated_norm(&dims, dt, rows, o, proj, weight, y)?);
            s.expect_f32("out", dt, get(S::GatedNorm, l));
        }
        for &dt in &all {
            add_norm_step(
                out,
                &format!("{tag}/L{l}/mlp_add_norm_{dt:?}"),
                (&dims, dt, rows),
                Some(get(S::Residual, l)),
                get(S::ResidualMid, l),
                &lw.mlp_norm,
                get(S::MlpNorm, l),
            )?;
        }
        for &dt in &all {
            let mut s = Step::new(out, &format!("{tag}/L{l}/swiglu_{dt:?}"));
            let mlp = s.with_f32("mlp", get(S::Mlp, l));
            let y = s.buffer("out", es(dt) * rows * dims.intermediate);
            s.launch(&k::swiglu(&dims, dt, rows, mlp, y)?);
            s.expect_f32("out", dt, get(S::Act, l));
        }
    }
    // The final norm after the last MLP's add, on the rows whose logits were computed
    // (all of a prefill window, the last of a decode step).
    let final_rows = get(S::FinalNorm, layers).len() / d;
    let skip = (rows - final_rows) * d;
    for &dt in &all {
        add_norm_step(
            out,
            &format!("{tag}/final_norm_{dt:?}"),
            (&dims, dt, final_rows),
            Some(&get(S::ResidualMid, layers - 1)[skip..]),
            &get(S::ResidualOut, layers)[skip..],
            &w.norm,
            get(S::FinalNorm, layers),
        )?;
    }
    head_steps(out, tag, &dims, logits, targets)
}

/// One add + RMSNorm step: the residual `before` (none: `after` itself, nothing added)
/// plus the delta that makes it `after`, normalised with `weight` into `want` in `dt`;
/// the residual must come out as `after`.
fn add_norm_step(
    out: &mut Vec<u8>,
    name: &str,
    (dims, dt, rows): (&LmDims, DType, usize),
    before: Option<&[f32]>,
    after: &[f32],
    weight: &[f32],
    want: &[f32],
) -> ltm_engine::Result<()> {
    let mut s = Step::new(out, name);
    let (x, delta) = match before {
        None => (s.with_f32("x", after), 0),
        Some(before) => {
            let x = s.with_f32("x", before);
            (x, s.with_f32("delta", &sub(after, before)))
        }
    };
    let weight = s.with_f32("weight", weight);
    let h = s.buffer("out", es(dt) * rows * dims.hidden);
    s.launch(&k::add_rms_norm(
        dims,
        dt,
        rows,
        k::AddNormBufs {
            x,
            delta,
            weight,
            out: h,
        },
    )?);
    s.expect_f32("x", DType::F32, after);
    s.expect_f32("out", dt, want);
    Ok(())
}

/// NLL and sampling on logits rows.
fn head_steps(
    out: &mut Vec<u8>,
    tag: &str,
    dims: &LmDims,
    logits: &[f32],
    targets: &[u32],
) -> ltm_engine::Result<()> {
    let vocab = dims.vocab;
    let rows = logits.len() / vocab;
    if !targets.is_empty() {
        let mut s = Step::new(out, &format!("{tag}/nll"));
        let la = s.with_f32("logits", logits);
        let ta = s.with_u32("targets", targets);
        let na = s.buffer("nll", 8 * rows);
        s.launch(&k::nll(dims, rows, la, ta, na)?);
        let mut want = Vec::new();
        ltm_engine::lm::ops::next_token_nll(logits, vocab, targets, &mut want);
        s.expect_f64("nll", &want);
    }
    let configs = [
        Sampling::default(),
        Sampling {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.9,
            seed: 3,
        },
        Sampling {
            temperature: 1.0,
            top_k: 1024,
            top_p: 1.0,
            seed: 7,
        },
        Sampling {
            temperature: 1.7,
            top_k: 300,
            top_p: 0.95,
            seed: 11,
        },
        Sampling {
            temperature: 0.5,
            top_k: 5,
            top_p: 0.5,
            seed: 12345,
        },
        Sampling {
            temperature: 1.0,
            top_k: 1,
            top_p: 1.0,
            seed: 1,
        },
        // logits/T overflows to +inf: both samplers fall back to greedy.
        Sampling {
            temperature: 1e-38,
            top_k: 40,
            top_p: 0.9,
            seed: 9,
        },
    ];
    let warm = 5u64; // draws the sampler made before these rows
    for (i, cfg) in configs.iter().enumerate() {
        let mut s = Step::new(out, &format!("{tag}/sample{i}"));
        let la = s.with_f32("logits", logits);
        let oa = s.buffer("out", 4 * rows);
        s.launch(&k::sample(dims, cfg, warm, rows, la, oa)?);
        let mut sampler = Sampler::new(cfg.clone())?;
        let greedy = cfg.temperature == 0.0 || cfg.top_k == 1;
        let overflows = cfg.temperature > 0.0 && cfg.temperature < 1e-30;
        if !greedy {
            for _ in 0..warm {
                sampler.pick(&logits[..vocab]);
            }
        }
        let want: Vec<u32> = logits.chunks(vocab).map(|r| sampler.pick(r)).collect();
        if greedy || overflows {
            assert!(want
                .iter()
                .zip(logits.chunks(vocab))
                .all(|(&w, r)| w == argmax(r)));
        }
        s.expect_u32("out", &want);
    }
    Ok(())
}

/// A fixture model directory with its prompt (`generation.json`).
fn fixture_model(dir: &str, out: &mut Vec<u8>) -> ltm_engine::Result<()> {
    let model = LanguageModel::load(dir, Device::Cpu)?;
    let tag = std::path::Path::new(dir)
        .file_name()
        .map_or_else(|| dir.to_string(), |n| n.to_string_lossy().into_owned());
    let gen: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{dir}/generation.json")).map_err(|source| {
            ltm_engine::Error::Io {
                path: format!("{dir}/generation.json").into(),
                source,
            }
        })?,
    )
    .map_err(|e| ltm_engine::Error::Config(format!("{dir}/generation.json: {e}")))?;
    let prompt: Vec<u32> = gen["prompt_ids"]
        .as_array()
        .expect("prompt_ids")
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    traced_model(&model, &tag, &prompt, out)
}

/// fla-hub's 1.3B head shape (6 heads of K = 256, V = 512 there; 2 here, one layer,
/// hidden 256) with random weights: the kernels at the widths of the benchmark model.
fn wide_model(out: &mut Vec<u8>) -> ltm_engine::Result<()> {
    let config = ltm_engine::lm::GdnConfig::fla_defaults(256, 1, 2, 256, 2000)
        .map_err(ltm_engine::Error::Config)?;
    let model = LanguageModel::random(config, 11, Device::Cpu)?;
    let prompt: Vec<u32> = (0..PREFIX as u32 + WINDOW as u32 + 2)
        .map(|i| (i * 7919 + 13) % 2000)
        .collect();
    traced_model(&model, "random-k256", &prompt, out)
}

fn traced_model(
    model: &LanguageModel,
    tag: &str,
    prompt: &[u32],
    out: &mut Vec<u8>,
) -> ltm_engine::Result<()> {
    assert!(prompt.len() > PREFIX + WINDOW + 1);
    let mut session = model.session()?;
    session.feed(&prompt[..PREFIX], Logits::None)?;

    let trace = std::rc::Rc::new(std::cell::RefCell::new(Trace::new()));
    let sink = trace.clone();
    session.set_trace(Some(Box::new(move |stage, layer, values| {
        sink.borrow_mut().insert((stage, layer), values.to_vec());
    })));
    let ids = &prompt[PREFIX..PREFIX + WINDOW];
    let logits = session.feed(ids, Logits::All)?;
    let targets = &prompt[PREFIX + 1..PREFIX + WINDOW + 1];
    let tr = std::mem::take(&mut *trace.borrow_mut());
    window_steps(
        out,
        &format!("{tag}/prefill{WINDOW}"),
        model,
        &tr,
        ids,
        WINDOW,
        &logits,
        targets,
    )?;

    // One decode step: a window shorter than the convolution.
    let next = prompt[PREFIX + WINDOW];
    let step_logits = session.step(next)?.to_vec();
    let tr = std::mem::take(&mut *trace.borrow_mut());
    window_steps(
        out,
        &format!("{tag}/decode"),
        model,
        &tr,
        &[next],
        1,
        &step_logits,
        &[prompt[PREFIX + WINDOW + 1]],
    )?;

    // Rows built for the head's edge cases: ties for the maximum (the first wins), a row
    // of NaNs only (id 0, and still one draw, so the next row's draw number agrees),
    // NaN logits (never chosen), a row whose only finite values are −inf but one.
    let vocab = model.config().vocab_size;
    let mut edge = logits[..4 * vocab].to_vec();
    let m = edge[..vocab].iter().copied().fold(f32::MIN, f32::max);
    edge[17] = m + 1.0;
    edge[vocab - 3] = m + 1.0;
    edge[vocab..2 * vocab].fill(f32::NAN);
    for i in (0..vocab).step_by(7) {
        edge[2 * vocab + i] = f32::NAN;
    }
    edge[3 * vocab..].fill(f32::NEG_INFINITY);
    edge[3 * vocab + 1234] = 0.5;
    head_steps(
        out,
        &format!("{tag}/edge"),
        &LmDims::of(model.config()),
        &edge,
        &[],
    )
}

fn main() -> ltm_engine::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .unwrap_or_else(|| "target/emu-lm-cases.bin".into());
    let mut dirs: Vec<String> = args.collect();
    if dirs.is_empty() {
        dirs = vec![
            "tests/fixtures/gdn-tiny".into(),
            "tests/fixtures/gdn-gva".into(),
        ];
    }
    let mut out = Vec::new();
    writeln!(
        out,
        "# ltm-engine LM kernel cases (examples/emu_lm_cases.rs)"
    )
    .unwrap();
    for dir in &dirs {
        fixture_model(dir, &mut out)?;
    }
    wide_model(&mut out)?;
    std::fs::write(&path, &out).map_err(|source| ltm_engine::Error::Io {
        path: path.clone().into(),
        source,
    })?;
    eprintln!(
        "wrote {} ({} bytes) for {} models",
        path,
        out.len(),
        dirs.len() + 1
    );
    Ok(())
}
