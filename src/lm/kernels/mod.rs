//! The language model's CUDA kernels (`kernels/lm_norm.cu`, `lm_conv.cu`, `lm_head.cu`)
//! as data the host launches: per kernel its entry point per dtype, its `#[repr(C)]`
//! parameter block ([`params`], checked field by field against the kernel source), and a
//! pure launch-geometry function ([`geometry`]: shape and device addresses → grid,
//! block, shared memory, parameters). The CUDA model session launches what these
//! functions return; `examples/emu_lm_cases.rs` calls the same functions (with buffer
//! handles as addresses) for the host emulator (`kernels/emu/lm_check.cpp`), which runs
//! the kernels on the CPU forward's stage inputs of the fixture models.
//!
//! Conventions the host side relies on:
//! - GEMM outputs are f32 (cuBLAS with f32 accumulation and an f32 C/D), whatever the
//!   weights' dtype; every kernel here reads them as f32.
//! - The norms and SwiGLU write the next GEMM's input (A operand) in the GEMM's dtype:
//!   f32 for f32 checkpoints, bf16 or f16 for bf16/f16 ones.
//! - The small per-layer vectors are f32 on the device, exactly as
//!   [`crate::lm::weights::LayerWeights`] holds them: norm weights, `conv` taps
//!   `[W, channels]`, `decay_rate` (`−exp(A_log)`), `dt_bias`, `o_norm`.
//! - The conv cache is `[channels, W]` f32 per layer, oldest input first, as
//!   [`crate::lm::LayerState::conv`]: a checkpoint copies it as it is.
//! - `ltm_lm_conv_*` writes q, k, v, β, g for one sequence in the window layout of the
//!   memory kernels (`[t_cap, HV, K]`, `[t_cap, HV, V]` in the window's dtype,
//!   `[t_cap, HV]` f32): point it at the window's buffers. The memory's output `o`
//!   (`[t_cap, HV, V]` f32) is what `ltm_lm_gated_norm_*` reads. q is l2-normalised but
//!   not scaled: the memory kernels apply `K^-0.5` (`MemoryConfig::scale`).
//! - The embedding table is in the checkpoint's dtype (`ltm_lm_embed_{f32,bf16,f16}`).
//! - NLL rows are f64; sampled ids u32.

pub mod geometry;
pub mod params;

pub use geometry::*;
pub use params::*;
