//! Launch geometry of the language-model kernels: pure functions from a shape and the
//! device addresses of the buffers to a [`LmLaunch`] (entry point, grid, block, dynamic
//! shared memory, parameter block). No device is touched here, so the host session and
//! the emulator's case writer run the same arithmetic.

use crate::error::{Error, Result};
use crate::lm::config::{GateActivation, GdnConfig};
use crate::lm::sample::Sampling;
use crate::tensor::DType;

use super::params::*;

/// Threads of the row kernels (`LTM_LM_ROW_THREADS` of `kernels/lm_common.cuh`).
pub const ROW_THREADS: u32 = 256;
/// Widest short convolution (`LTM_LM_CONV_MAX`).
pub const CONV_MAX: usize = 8;
/// Threads of `ltm_lm_sample` (`LTM_LM_SAMPLE_THREADS`).
pub const SAMPLE_THREADS: u32 = 1024;
/// Largest `top_k` the device sampler takes (`LTM_LM_SAMPLE_KMAX`); other settings
/// (`top_k` 0, i.e. the whole vocabulary, or larger) sample on the host.
pub const SAMPLE_KMAX: usize = 1024;
/// Dynamic shared memory a block may use without the opt-in attribute.
pub const SMEM_NO_OPT_IN: usize = 48 * 1024;

/// One kernel launch, ready to go to a stream.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LmLaunch<P> {
    /// Entry point in the module of its `.cu` file ([`LmLaunch::module`]).
    pub entry: &'static str,
    /// Grid (x, y, z).
    pub grid: (u32, u32, u32),
    /// Block (x, 1, 1).
    pub block: (u32, u32, u32),
    /// Dynamic shared memory, bytes.
    pub shared_mem_bytes: u32,
    /// The parameter block, passed by value.
    pub params: P,
}

impl<P> LmLaunch<P> {
    /// The embedded module (`.cu` file stem) that holds the entry point.
    pub fn module(&self) -> &'static str {
        module_of(self.entry)
    }

    /// Grid, block and shared memory as cudarc takes them.
    #[cfg(feature = "cuda")]
    pub fn launch_config(&self) -> cudarc::driver::LaunchConfig {
        cudarc::driver::LaunchConfig {
            grid_dim: self.grid,
            block_dim: self.block,
            shared_mem_bytes: self.shared_mem_bytes,
        }
    }
}

/// The `.cu` file stem of an `ltm_lm_*` entry point.
pub fn module_of(entry: &str) -> &'static str {
    if entry.starts_with("ltm_lm_conv") {
        "lm_conv"
    } else if entry.starts_with("ltm_lm_nll")
        || entry.starts_with("ltm_lm_argmax")
        || entry.starts_with("ltm_lm_sample")
    {
        "lm_head"
    } else {
        "lm_norm"
    }
}

/// The shape of a model as the kernels see it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LmDims {
    /// `D`.
    pub hidden: usize,
    /// `H`.
    pub heads: usize,
    /// `HV`.
    pub value_heads: usize,
    /// `K`.
    pub head_dim: usize,
    /// `V`.
    pub value_dim: usize,
    /// `W`.
    pub conv_size: usize,
    /// `I`.
    pub intermediate: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// `use_gate`.
    pub use_gate: bool,
    /// The output gate is `sigmoid` (else `silu`).
    pub gate_sigmoid: bool,
    /// `allow_neg_eigval`.
    pub allow_neg_eigval: bool,
    /// `norm_eps`.
    pub eps: f32,
}

impl LmDims {
    /// The dims of a checked config.
    pub fn of(c: &GdnConfig) -> Self {
        LmDims {
            hidden: c.hidden_size,
            heads: c.heads,
            value_heads: c.value_heads,
            head_dim: c.head_dim,
            value_dim: c.value_dim,
            conv_size: c.conv_size,
            intermediate: c.intermediate_size,
            vocab: c.vocab_size,
            use_gate: c.use_gate,
            gate_sigmoid: c.gate_activation == GateActivation::Sigmoid,
            allow_neg_eigval: c.allow_neg_eigval,
            eps: c.norm_eps,
        }
    }
    /// `H·K`.
    pub fn key_width(&self) -> usize {
        self.heads * self.head_dim
    }
    /// `HV·V`.
    pub fn value_width(&self) -> usize {
        self.value_heads * self.value_dim
    }
    /// Channels of the short convolution: `2·H·K + HV·V`.
    pub fn channels(&self) -> usize {
        2 * self.key_width() + self.value_width()
    }
    /// First column of `g_proj` in the in_proj output, if the model has the gate.
    pub fn gate_col(&self) -> Option<usize> {
        self.use_gate.then(|| self.channels())
    }
    /// First column of `a_proj`.
    pub fn col_a(&self) -> usize {
        self.channels() + if self.use_gate { self.value_width() } else { 0 }
    }
    /// First column of `b_proj`.
    pub fn col_b(&self) -> usize {
        self.col_a() + self.value_heads
    }
    /// Width of the in_proj output (`LayerWeights::in_proj` rows).
    pub fn in_proj_width(&self) -> usize {
        self.col_b() + self.value_heads
    }
    /// Dynamic shared memory of `ltm_lm_conv_*`: the row's conv outputs and the q/k
    /// heads' inverse norms.
    pub fn conv_smem_bytes(&self) -> usize {
        4 * (self.channels() + 2 * self.heads)
    }
    /// Whether the kernels can run this shape; the error names what they cannot.
    pub fn check(&self) -> Result<()> {
        let unsupported = |what: String| Err(Error::Config(format!("CUDA LM kernels: {what}")));
        if self.conv_size == 0 || self.conv_size > CONV_MAX {
            return unsupported(format!("conv_size {} (1..={CONV_MAX})", self.conv_size));
        }
        if self.heads == 0 || !self.value_heads.is_multiple_of(self.heads) {
            return unsupported(format!(
                "{} value heads over {} query/key heads",
                self.value_heads, self.heads
            ));
        }
        if self.conv_smem_bytes() > SMEM_NO_OPT_IN {
            return unsupported(format!(
                "{} conv channels need {} bytes of shared memory a row (at most {SMEM_NO_OPT_IN})",
                self.channels(),
                self.conv_smem_bytes()
            ));
        }
        let dims = [
            self.hidden,
            self.in_proj_width(),
            self.intermediate,
            self.vocab,
            self.value_width(),
        ];
        if dims.iter().any(|&d| d == 0 || d > i32::MAX as usize / 2) {
            return unsupported(format!("dimensions {dims:?}"));
        }
        Ok(())
    }
}

fn rows_i32(rows: usize) -> Result<i32> {
    if rows == 0 || rows > i32::MAX as usize {
        return Err(Error::Config(format!(
            "CUDA LM kernels: a launch over {rows} rows (1..=2^31-1)"
        )));
    }
    Ok(rows as i32)
}

fn by_dtype(d: DType, f32: &'static str, bf16: &'static str, f16: &'static str) -> &'static str {
    match d {
        DType::F32 => f32,
        DType::BF16 => bf16,
        DType::F16 => f16,
    }
}

fn row_launch<P>(entry: &'static str, rows: usize, smem: usize, params: P) -> LmLaunch<P> {
    LmLaunch {
        entry,
        grid: (rows as u32, 1, 1),
        block: (ROW_THREADS, 1, 1),
        shared_mem_bytes: smem as u32,
        params,
    }
}

/// Embedding gather: `x[r] = table[ids[r]]` as f32; `table_dtype` is the checkpoint's.
pub fn embed(
    dims: &LmDims,
    table_dtype: DType,
    rows: usize,
    ids: u64,
    table: u64,
    x: u64,
) -> Result<LmLaunch<LmEmbedParams>> {
    let params = LmEmbedParams {
        ids,
        table,
        x,
        rows: rows_i32(rows)?,
        dim: dims.hidden as i32,
        vocab: dims.vocab as i32,
        pad: 0,
    };
    let entry = by_dtype(
        table_dtype,
        "ltm_lm_embed_f32",
        "ltm_lm_embed_bf16",
        "ltm_lm_embed_f16",
    );
    Ok(row_launch(entry, rows, 0, params))
}

/// Buffers of [`add_rms_norm`].
#[derive(Clone, Copy, Debug)]
pub struct AddNormBufs {
    /// `[rows, D]` f32 residual stream.
    pub x: u64,
    /// `[rows, D]` f32 GEMM output to add into `x` first; 0: none.
    pub delta: u64,
    /// `[D]` f32 norm weight (`attn_norm`, `mlp_norm` or the final `norm`).
    pub weight: u64,
    /// `[rows, D]` next GEMM's input in `out_dtype`.
    pub out: u64,
}

/// RMSNorm fused with the residual add: `x += delta` (if set), `out = RMSNorm_w(x)` in
/// `out_dtype`. The final norm is this with the model's `norm` weight. For the last
/// row only (logits of the last token), offset the addresses and pass `rows = 1`.
pub fn add_rms_norm(
    dims: &LmDims,
    out_dtype: DType,
    rows: usize,
    b: AddNormBufs,
) -> Result<LmLaunch<LmAddNormParams>> {
    let params = LmAddNormParams {
        x: b.x,
        delta: b.delta,
        weight: b.weight,
        out: b.out,
        rows: rows_i32(rows)?,
        dim: dims.hidden as i32,
        out_stride: dims.hidden as i32,
        eps: dims.eps,
    };
    let entry = by_dtype(
        out_dtype,
        "ltm_lm_add_rms_norm_f32",
        "ltm_lm_add_rms_norm_bf16",
        "ltm_lm_add_rms_norm_f16",
    );
    Ok(row_launch(entry, rows, 0, params))
}

/// Buffers of [`conv`].
#[derive(Clone, Copy, Debug)]
pub struct ConvBufs {
    /// `[rows, in_proj_width]` f32 in_proj output.
    pub proj: u64,
    /// `[W, channels]` f32 taps.
    pub taps: u64,
    /// `[channels, W]` f32 conv cache of the layer (before the window).
    pub cache: u64,
    /// `[HV]` f32 `−exp(A_log)`.
    pub decay_rate: u64,
    /// `[HV]` f32.
    pub dt_bias: u64,
    /// The window's q buffer (`[t_cap, HV, K]`, `mem_dtype`).
    pub q: u64,
    /// The window's k buffer.
    pub k: u64,
    /// The window's v buffer (`[t_cap, HV, V]`).
    pub v: u64,
    /// The window's β (`[t_cap, HV]` f32).
    pub beta: u64,
    /// The window's g (`[t_cap, HV]` f32).
    pub g: u64,
}

/// The short convolution with SiLU, l2-norm of q and k per head (repeated per value
/// head), β and g, into the memory window's inputs in `mem_dtype`. Launch
/// [`conv_cache`] after it (same `proj`, same cache) to move the cache on.
pub fn conv(
    dims: &LmDims,
    mem_dtype: DType,
    rows: usize,
    b: ConvBufs,
) -> Result<LmLaunch<LmConvParams>> {
    dims.check()?;
    let params = LmConvParams {
        proj: b.proj,
        taps: b.taps,
        cache: b.cache,
        decay_rate: b.decay_rate,
        dt_bias: b.dt_bias,
        q: b.q,
        k: b.k,
        v: b.v,
        beta: b.beta,
        g: b.g,
        rows: rows_i32(rows)?,
        proj_stride: dims.in_proj_width() as i32,
        heads: dims.heads as i32,
        value_heads: dims.value_heads as i32,
        head_dim: dims.head_dim as i32,
        value_dim: dims.value_dim as i32,
        conv_size: dims.conv_size as i32,
        col_a: dims.col_a() as i32,
        col_b: dims.col_b() as i32,
        allow_neg_eigval: dims.allow_neg_eigval as i32,
    };
    let entry = by_dtype(
        mem_dtype,
        "ltm_lm_conv_f32",
        "ltm_lm_conv_bf16",
        "ltm_lm_conv_f16",
    );
    Ok(row_launch(entry, rows, dims.conv_smem_bytes(), params))
}

/// The conv cache after a window of `rows` tokens: its last `W` inputs (in place).
pub fn conv_cache(
    dims: &LmDims,
    rows: usize,
    proj: u64,
    cache: u64,
) -> Result<LmLaunch<LmConvCacheParams>> {
    dims.check()?;
    let channels = dims.channels();
    Ok(LmLaunch {
        entry: "ltm_lm_conv_cache",
        grid: (channels.div_ceil(ROW_THREADS as usize) as u32, 1, 1),
        block: (ROW_THREADS, 1, 1),
        shared_mem_bytes: 0,
        params: LmConvCacheParams {
            proj,
            cache,
            rows: rows_i32(rows)?,
            proj_stride: dims.in_proj_width() as i32,
            channels: channels as i32,
            conv_size: dims.conv_size as i32,
        },
    })
}

/// The gated RMSNorm per value head (`o_norm`, × silu/sigmoid of g_proj's output when
/// the model has the gate) into o_proj's input in `out_dtype`.
pub fn gated_norm(
    dims: &LmDims,
    out_dtype: DType,
    rows: usize,
    o: u64,
    proj: u64,
    weight: u64,
    out: u64,
) -> Result<LmLaunch<LmGatedNormParams>> {
    let params = LmGatedNormParams {
        o,
        proj,
        weight,
        out,
        rows: rows_i32(rows)?,
        value_heads: dims.value_heads as i32,
        value_dim: dims.value_dim as i32,
        proj_stride: dims.in_proj_width() as i32,
        gate_col: dims.gate_col().map_or(-1, |c| c as i32),
        gate_sigmoid: dims.gate_sigmoid as i32,
        eps: dims.eps,
        pad: 0,
    };
    let entry = by_dtype(
        out_dtype,
        "ltm_lm_gated_norm_f32",
        "ltm_lm_gated_norm_bf16",
        "ltm_lm_gated_norm_f16",
    );
    Ok(row_launch(entry, rows, 0, params))
}

/// SwiGLU: `out = silu(mlp[:, :I]) · mlp[:, I:]` in `out_dtype` (down_proj's input).
pub fn swiglu(
    dims: &LmDims,
    out_dtype: DType,
    rows: usize,
    mlp: u64,
    out: u64,
) -> Result<LmLaunch<LmSwigluParams>> {
    let inter = dims.intermediate;
    let entry = by_dtype(
        out_dtype,
        "ltm_lm_swiglu_f32",
        "ltm_lm_swiglu_bf16",
        "ltm_lm_swiglu_f16",
    );
    Ok(LmLaunch {
        entry,
        grid: (
            rows_i32(rows)? as u32,
            inter.div_ceil(ROW_THREADS as usize) as u32,
            1,
        ),
        block: (ROW_THREADS, 1, 1),
        shared_mem_bytes: 0,
        params: LmSwigluParams {
            mlp,
            out,
            rows: rows as i32,
            inter: inter as i32,
        },
    })
}

/// Negative log-likelihood (nats, f64) of `targets[r]` under logits row `r`.
pub fn nll(
    dims: &LmDims,
    rows: usize,
    logits: u64,
    targets: u64,
    nll: u64,
) -> Result<LmLaunch<LmNllParams>> {
    let params = LmNllParams {
        logits,
        targets,
        nll,
        rows: rows_i32(rows)?,
        vocab: dims.vocab as i32,
    };
    Ok(row_launch("ltm_lm_nll", rows, 0, params))
}

/// Whether the device sampler takes `s`: greedy (temperature 0 or top-k 1), or top-k
/// in 1..=[`SAMPLE_KMAX`]. Otherwise pick on the host (`Sampler::pick` on the copied
/// logits row).
pub fn samples_on_device(s: &Sampling) -> bool {
    s.temperature == 0.0 || (1..=SAMPLE_KMAX).contains(&s.top_k)
}

/// The next token of each logits row as `Sampler::pick` chooses it: `ltm_lm_argmax`
/// when greedy, else `ltm_lm_sample` with the draw counter `draw` (the number of
/// non-greedy picks the sampler made before; row `r` uses `draw + r`).
pub fn sample(
    dims: &LmDims,
    s: &Sampling,
    draw: u64,
    rows: usize,
    logits: u64,
    out: u64,
) -> Result<LmLaunch<LmSampleParams>> {
    s.validate()?;
    if !samples_on_device(s) {
        return Err(Error::Config(format!(
            "the device sampler takes greedy or top-k 1..={SAMPLE_KMAX}, not top-k {}",
            s.top_k
        )));
    }
    let greedy = s.temperature == 0.0 || s.top_k == 1;
    let params = LmSampleParams {
        logits,
        out,
        seed: s.seed,
        draw,
        rows: rows_i32(rows)?,
        vocab: dims.vocab as i32,
        top_k: if greedy { 1 } else { s.top_k as i32 },
        temperature: if greedy { 1.0 } else { s.temperature },
        top_p: s.top_p,
        pad: 0,
    };
    Ok(LmLaunch {
        entry: if greedy {
            "ltm_lm_argmax"
        } else {
            "ltm_lm_sample"
        },
        grid: (rows as u32, 1, 1),
        block: (if greedy { ROW_THREADS } else { SAMPLE_THREADS }, 1, 1),
        shared_mem_bytes: 0,
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims(use_gate: bool) -> LmDims {
        LmDims {
            hidden: 128,
            heads: 2,
            value_heads: 4,
            head_dim: 32,
            value_dim: 64,
            conv_size: 4,
            intermediate: 384,
            vocab: 4096,
            use_gate,
            gate_sigmoid: true,
            allow_neg_eigval: false,
            eps: 1e-6,
        }
    }

    #[test]
    fn in_proj_columns_follow_the_stacking_of_the_weights() {
        let d = dims(true);
        // q 64 | k 64 | v 256 | g 256 | a 4 | b 4
        assert_eq!(d.channels(), 384);
        assert_eq!(d.gate_col(), Some(384));
        assert_eq!((d.col_a(), d.col_b(), d.in_proj_width()), (640, 644, 648));
        let n = dims(false);
        assert_eq!(n.gate_col(), None);
        assert_eq!((n.col_a(), n.col_b(), n.in_proj_width()), (384, 388, 392));
    }

    #[test]
    fn conv_launch_is_one_block_a_row_with_the_row_in_shared_memory() {
        let d = dims(true);
        let b = ConvBufs {
            proj: 1,
            taps: 2,
            cache: 3,
            decay_rate: 4,
            dt_bias: 5,
            q: 6,
            k: 7,
            v: 8,
            beta: 9,
            g: 10,
        };
        let l = conv(&d, DType::BF16, 37, b).unwrap();
        assert_eq!(l.entry, "ltm_lm_conv_bf16");
        assert_eq!(l.module(), "lm_conv");
        assert_eq!((l.grid, l.block), ((37, 1, 1), (256, 1, 1)));
        assert_eq!(l.shared_mem_bytes as usize, 4 * (384 + 4));
        #[cfg(feature = "cuda")]
        {
            let lc = l.launch_config();
            assert_eq!(
                (lc.grid_dim, lc.block_dim, lc.shared_mem_bytes),
                (l.grid, l.block, l.shared_mem_bytes)
            );
        }
        let p = l.params;
        assert_eq!((p.proj, p.q, p.g), (1, 6, 10));
        assert_eq!(
            (p.proj_stride, p.col_a, p.col_b, p.rows),
            (648, 640, 644, 37)
        );
        let c = conv_cache(&d, 37, 1, 3).unwrap();
        assert_eq!(c.grid, (2, 1, 1));
        assert_eq!(c.params.channels, 384);
        assert!(conv(&d, DType::F32, 0, b).is_err());
        let wide = LmDims { conv_size: 9, ..d };
        assert!(conv(&wide, DType::F32, 1, b).is_err());
        let huge = LmDims {
            heads: 64,
            value_heads: 64,
            head_dim: 128,
            ..d
        };
        assert!(huge.check().is_err(), "{} bytes", huge.conv_smem_bytes());
    }

    #[test]
    fn entries_follow_the_dtype_and_modules_the_file() {
        let d = dims(true);
        for (dt, sfx) in [
            (DType::F32, "f32"),
            (DType::BF16, "bf16"),
            (DType::F16, "f16"),
        ] {
            let bufs = AddNormBufs {
                x: 1,
                delta: 0,
                weight: 2,
                out: 3,
            };
            let n = add_rms_norm(&d, dt, 5, bufs).unwrap();
            assert_eq!(n.entry, format!("ltm_lm_add_rms_norm_{sfx}"));
            assert_eq!(n.params.out_stride, 128);
            assert_eq!(
                embed(&d, dt, 5, 1, 2, 3).unwrap().entry,
                format!("ltm_lm_embed_{sfx}")
            );
            let g = gated_norm(&d, dt, 5, 1, 2, 3, 4).unwrap();
            assert_eq!(g.entry, format!("ltm_lm_gated_norm_{sfx}"));
            assert_eq!((g.params.gate_col, g.params.gate_sigmoid), (384, 1));
            let s = swiglu(&d, dt, 5, 1, 2).unwrap();
            assert_eq!(s.entry, format!("ltm_lm_swiglu_{sfx}"));
            assert_eq!(s.grid, (5, 2, 1));
            assert_eq!(s.module(), "lm_norm");
        }
        assert_eq!(nll(&d, 3, 1, 2, 3).unwrap().module(), "lm_head");
    }

    #[test]
    fn greedy_and_sampled_picks_choose_their_kernel() {
        let d = dims(true);
        let greedy = sample(&d, &Sampling::default(), 0, 1, 1, 2).unwrap();
        assert_eq!(
            (greedy.entry, greedy.block.0),
            ("ltm_lm_argmax", ROW_THREADS)
        );
        let s = Sampling {
            temperature: 0.7,
            top_k: 40,
            top_p: 0.9,
            seed: 11,
        };
        let l = sample(&d, &s, 5, 1, 1, 2).unwrap();
        assert_eq!((l.entry, l.block.0), ("ltm_lm_sample", SAMPLE_THREADS));
        assert_eq!((l.params.seed, l.params.draw, l.params.top_k), (11, 5, 40));
        let all = Sampling {
            top_k: 0,
            ..s.clone()
        };
        assert!(!samples_on_device(&all));
        assert!(sample(&d, &all, 0, 1, 1, 2).is_err());
        let one = Sampling { top_k: 1, ..s };
        assert_eq!(sample(&d, &one, 0, 1, 1, 2).unwrap().entry, "ltm_lm_argmax");
    }
}
