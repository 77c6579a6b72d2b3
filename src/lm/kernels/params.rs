//! Parameter blocks of the language-model kernels, field for field the structs of
//! `kernels/lm_*.cu` (pointers as `u64` device addresses first, then 32-bit fields, with
//! explicit padding: `#[repr(C)]` gives the C++ layout, and `bytemuck::Pod` holds because
//! there are no implicit padding bytes). `tests` checks each against the kernel source.

use bytemuck::{Pod, Zeroable};
#[cfg(feature = "cuda")]
use cudarc::driver::DeviceRepr;

/// `LmEmbedParams` of `kernels/lm_norm.cu`: embedding gather.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LmEmbedParams {
    /// `[rows]` u32 token ids.
    pub ids: u64,
    /// `[vocab, dim]` in the table's dtype.
    pub table: u64,
    /// `[rows, dim]` f32: the residual stream.
    pub x: u64,
    /// Token rows.
    pub rows: i32,
    /// Hidden size.
    pub dim: i32,
    /// Rows of the table (ids at or past it give NaN rows).
    pub vocab: i32,
    /// Padding.
    pub pad: i32,
}

/// `LmAddNormParams` of `kernels/lm_norm.cu`: `x += delta`, then RMSNorm into the next
/// GEMM's input.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LmAddNormParams {
    /// `[rows, dim]` f32 residual stream (updated in place when `delta` is set).
    pub x: u64,
    /// `[rows, dim]` f32 to add first, or 0.
    pub delta: u64,
    /// `[dim]` f32 norm weight.
    pub weight: u64,
    /// `[rows, out_stride]` in the output dtype.
    pub out: u64,
    /// Token rows.
    pub rows: i32,
    /// Hidden size.
    pub dim: i32,
    /// Elements between output rows.
    pub out_stride: i32,
    /// The norm's epsilon (inside the square root).
    pub eps: f32,
}

/// `LmConvParams` of `kernels/lm_conv.cu`: short convolution, l2-norm, gates.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LmConvParams {
    /// `[rows, proj_stride]` f32 in_proj output.
    pub proj: u64,
    /// `[conv_size, channels]` f32 taps (`LayerWeights::conv`).
    pub taps: u64,
    /// `[channels, conv_size]` f32 conv cache (read only by this kernel).
    pub cache: u64,
    /// `[value_heads]` f32 `−exp(A_log)` (`LayerWeights::decay_rate`).
    pub decay_rate: u64,
    /// `[value_heads]` f32 `dt_bias`.
    pub dt_bias: u64,
    /// `[rows, value_heads, head_dim]` memory input dtype.
    pub q: u64,
    /// `[rows, value_heads, head_dim]` memory input dtype.
    pub k: u64,
    /// `[rows, value_heads · value_dim]` memory input dtype.
    pub v: u64,
    /// `[rows, value_heads]` f32.
    pub beta: u64,
    /// `[rows, value_heads]` f32.
    pub g: u64,
    /// Token rows.
    pub rows: i32,
    /// Elements between rows of `proj`.
    pub proj_stride: i32,
    /// Query/key heads.
    pub heads: i32,
    /// Value heads.
    pub value_heads: i32,
    /// Query/key width per head.
    pub head_dim: i32,
    /// Value width per head.
    pub value_dim: i32,
    /// Taps of the convolution.
    pub conv_size: i32,
    /// First column of `a_proj`'s output in `proj`.
    pub col_a: i32,
    /// First column of `b_proj`'s output in `proj`.
    pub col_b: i32,
    /// 1: β = 2·sigmoid(b).
    pub allow_neg_eigval: i32,
}

/// `LmConvCacheParams` of `kernels/lm_conv.cu`: the conv cache after a window.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LmConvCacheParams {
    /// `[rows, proj_stride]` f32 in_proj output of the window.
    pub proj: u64,
    /// `[channels, conv_size]` f32, updated in place.
    pub cache: u64,
    /// Token rows (0 keeps the cache).
    pub rows: i32,
    /// Elements between rows of `proj`.
    pub proj_stride: i32,
    /// `2·H·K + HV·V`.
    pub channels: i32,
    /// Taps of the convolution.
    pub conv_size: i32,
}

/// `LmGatedNormParams` of `kernels/lm_norm.cu`: per-head RMSNorm × weight × gate.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LmGatedNormParams {
    /// `[rows, value_heads · value_dim]` f32 memory output.
    pub o: u64,
    /// `[rows, proj_stride]` f32 in_proj output (the gate's columns).
    pub proj: u64,
    /// `[value_dim]` f32 `o_norm` weight.
    pub weight: u64,
    /// `[rows, value_heads · value_dim]` in the output dtype.
    pub out: u64,
    /// Token rows.
    pub rows: i32,
    /// Value heads.
    pub value_heads: i32,
    /// Value width per head.
    pub value_dim: i32,
    /// Elements between rows of `proj`.
    pub proj_stride: i32,
    /// First column of `g_proj`'s output in `proj`; −1 without a gate.
    pub gate_col: i32,
    /// 1: `· sigmoid(gate)`; 0: `· silu(gate)`.
    pub gate_sigmoid: i32,
    /// The norm's epsilon.
    pub eps: f32,
    /// Padding.
    pub pad: i32,
}

/// `LmSwigluParams` of `kernels/lm_norm.cu`: `silu(gate) · up`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LmSwigluParams {
    /// `[rows, 2·inter]` f32: gate_proj then up_proj outputs.
    pub mlp: u64,
    /// `[rows, inter]` in the output dtype.
    pub out: u64,
    /// Token rows.
    pub rows: i32,
    /// Intermediate size.
    pub inter: i32,
}

/// `LmNllParams` of `kernels/lm_head.cu`: negative log-likelihood per row.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LmNllParams {
    /// `[rows, vocab]` f32 logits.
    pub logits: u64,
    /// `[rows]` u32 next-token ids.
    pub targets: u64,
    /// `[rows]` f64 nats.
    pub nll: u64,
    /// Rows.
    pub rows: i32,
    /// Vocabulary size.
    pub vocab: i32,
}

/// `LmSampleParams` of `kernels/lm_head.cu`: greedy or sampled next token.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LmSampleParams {
    /// `[rows, vocab]` f32 logits.
    pub logits: u64,
    /// `[rows]` u32 chosen ids.
    pub out: u64,
    /// `Sampling::seed`.
    pub seed: u64,
    /// Draws the CPU sampler would have made before row 0's (row `r` uses `draw + r`).
    pub draw: u64,
    /// Rows.
    pub rows: i32,
    /// Vocabulary size.
    pub vocab: i32,
    /// 1..=[`super::SAMPLE_KMAX`] (the sampling kernel; unused by argmax).
    pub top_k: i32,
    /// > 0 (the sampling kernel; unused by argmax).
    pub temperature: f32,
    /// (0, 1].
    pub top_p: f32,
    /// Padding.
    pub pad: i32,
}

macro_rules! pod {
    ($($t:ty),*) => {$(
        // SAFETY: #[repr(C)] structs of u64, i32 and f32 fields laid out with no
        // implicit padding (the tests check size = sum of fields and the C layout);
        // every bit pattern is a valid value; passed to kernels by value.
        unsafe impl Zeroable for $t {}
        // SAFETY: as above: no padding, every bit pattern valid.
        unsafe impl Pod for $t {}
        // SAFETY: as above: the kernel's C layout, passed by value.
        #[cfg(feature = "cuda")]
        unsafe impl DeviceRepr for $t {}
    )*};
}
pod!(
    LmEmbedParams,
    LmAddNormParams,
    LmConvParams,
    LmConvCacheParams,
    LmGatedNormParams,
    LmSwigluParams,
    LmNllParams,
    LmSampleParams
);

#[cfg(all(test, feature = "cuda"))]
mod tests {
    use super::*;
    use crate::backend::cuda::c_layout::c_layout;
    use std::mem::{offset_of, size_of};

    macro_rules! rust_layout {
        ($t:ty: $($f:ident),* $(,)?) => {{
            let d = <$t>::default();
            let fields = vec![$((stringify!($f).to_string(), offset_of!($t, $f),
                std::mem::size_of_val(&d.$f))),*];
            let sum: usize = fields.iter().map(|f| f.2).sum();
            assert_eq!(sum, size_of::<$t>(), "{}: implicit padding", stringify!($t));
            (fields, size_of::<$t>())
        }};
    }

    fn check(source: &str, name: &str, rust: (Vec<(String, usize, usize)>, usize)) {
        let c = c_layout(source, name);
        assert_eq!(rust.0, c.0, "{name}: fields (name, offset, size) differ");
        assert_eq!(rust.1, c.1, "{name}: sizes differ (Rust vs C++)");
    }

    /// Field for field against `kernels/lm_*.cu`: a field added, removed, renamed,
    /// moved or retyped on one side fails here, not as garbage on a GPU.
    #[test]
    fn layouts_match_the_kernels() {
        let norm = include_str!("../../../kernels/lm_norm.cu");
        let conv = include_str!("../../../kernels/lm_conv.cu");
        let head = include_str!("../../../kernels/lm_head.cu");
        check(
            norm,
            "LmEmbedParams",
            rust_layout!(LmEmbedParams: ids, table, x, rows, dim, vocab, pad),
        );
        check(
            norm,
            "LmAddNormParams",
            rust_layout!(LmAddNormParams: x, delta, weight, out, rows, dim, out_stride, eps),
        );
        check(
            norm,
            "LmGatedNormParams",
            rust_layout!(LmGatedNormParams: o, proj, weight, out, rows, value_heads,
                value_dim, proj_stride, gate_col, gate_sigmoid, eps, pad),
        );
        check(
            norm,
            "LmSwigluParams",
            rust_layout!(LmSwigluParams: mlp, out, rows, inter),
        );
        check(
            conv,
            "LmConvParams",
            rust_layout!(LmConvParams: proj, taps, cache, decay_rate, dt_bias, q, k, v, beta,
                g, rows, proj_stride, heads, value_heads, head_dim, value_dim, conv_size,
                col_a, col_b, allow_neg_eigval),
        );
        check(
            conv,
            "LmConvCacheParams",
            rust_layout!(LmConvCacheParams: proj, cache, rows, proj_stride, channels,
                conv_size),
        );
        check(
            head,
            "LmNllParams",
            rust_layout!(LmNllParams: logits, targets, nll, rows, vocab),
        );
        check(
            head,
            "LmSampleParams",
            rust_layout!(LmSampleParams: logits, out, seed, draw, rows, vocab, top_k,
                temperature, top_p, pad),
        );
    }

    #[test]
    fn the_layout_reader_sees_order_and_types() {
        let a = "struct X {\n const float* p; // c\n u64 s;\n int a, b_;\n float f;\n};";
        let (fa, sa) = c_layout(a, "X");
        assert_eq!(
            fa,
            vec![
                ("p".into(), 0, 8),
                ("s".into(), 8, 8),
                ("a".into(), 16, 4),
                ("b".into(), 20, 4),
                ("f".into(), 24, 4)
            ]
        );
        assert_eq!(sa, 32);
        let b = "struct X {\n const float* p;\n u64 s;\n int b, a;\n float f;\n};";
        assert_ne!(fa, c_layout(b, "X").0);
    }
}
