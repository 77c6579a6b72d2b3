//! Writes the launch plans of the CUDA backend for the kernel emulator's cases
//! (`kernels/emu/check.cpp` replays them): the launches come from the same function the
//! backend executes (`src/backend/cuda/plan.rs`), so the emulator checks the real grid,
//! block, shared memory and parameter arithmetic.
//!
//!   cargo run --release --example emu_plans -- target/emu-plans.txt

use ltm_engine::backend::cuda::{emu_plan_text, EmuCase};
use ltm_engine::DType;

/// (name, batch, heads, key_dim, value_dim, tokens, dtype, segments, with_state,
/// gate_scale, beta_min, beta_max, bf16_fast, window_tokens)
type Row = (
    &'static str,
    usize,
    usize,
    usize,
    usize,
    usize,
    DType,
    usize,
    bool,
    f64,
    f64,
    f64,
    bool,
    Option<usize>,
);

const F32: DType = DType::F32;
const F16: DType = DType::F16;
const BF16: DType = DType::BF16;
const G: f64 = 1.0 / 16.0;

#[rustfmt::skip]
const CASES: &[Row] = &[
    ("f32_plain", 1, 1, 32, 32, 100, F32, 1, false, G, 0.0, 1.0, false, None),
    ("f32_odd_dims_state", 2, 2, 7, 5, 70, F32, 1, true, G, 0.0, 1.0, false, None),
    ("f32_one_token", 1, 2, 16, 16, 1, F32, 1, true, G, 0.0, 1.0, false, None),
    ("f32_exactly_one_chunk", 1, 1, 48, 40, 64, F32, 1, true, G, 0.0, 1.0, false, None),
    ("f32_K=V=128", 1, 1, 128, 128, 130, F32, 1, true, G, 0.0, 1.0, false, None),
    ("bf16_inputs", 1, 2, 64, 48, 129, BF16, 1, true, G, 0.0, 1.0, false, None),
    ("f16_inputs", 1, 1, 33, 40, 65, F16, 1, true, G, 0.0, 1.0, false, None),
    ("strong_decay_beta_near_1", 1, 1, 32, 32, 150, F32, 1, true, 5.0, 0.999, 1.0, false, None),
    ("segments=3", 1, 1, 32, 64, 583, F32, 3, true, G, 0.0, 1.0, false, None),
    ("segments=4_bf16_K=40_V=20", 1, 1, 40, 20, 300, BF16, 4, true, G, 0.0, 1.0, false, None),
    ("batch_heads_segments=2", 2, 3, 16, 40, 200, F32, 2, true, G, 0.0, 1.0, false, None),
    ("bf16_K=128_V=100", 1, 1, 128, 100, 70, BF16, 1, true, G, 0.0, 1.0, false, None),
    ("no_decay", 1, 2, 32, 32, 257, F32, 1, true, 0.0, 0.0, 1.0, false, None),
    ("empty", 1, 1, 16, 16, 0, F32, 1, true, G, 0.0, 1.0, false, None),
    ("bf16_fast", 1, 2, 64, 48, 129, BF16, 1, true, G, 0.0, 1.0, true, None),
    ("bf16_fast_K=V=128_long", 1, 1, 128, 128, 1500, BF16, 1, true, 1.0 / 64.0, 0.0, 1.0, true, None),
    ("bf16_fast_segments=4", 1, 1, 64, 64, 1000, BF16, 4, true, G, 0.0, 1.0, true, None),
    ("bf16_fast_no_decay_beta_near_1", 1, 1, 32, 32, 600, BF16, 2, true, 0.0, 0.9, 1.0, true, None),
    // The segment scan where the state carried into a segment still matters at its end:
    // no decay and small writes (β ≤ 0.2), so a combine that drops M·S is far off.
    ("segments=1_no_decay_low_beta", 1, 1, 32, 32, 1024, F32, 1, true, 0.0, 0.02, 0.2, false, None),
    ("segments=2_no_decay_low_beta", 1, 1, 32, 32, 1024, F32, 2, true, 0.0, 0.02, 0.2, false, None),
    ("segments=4_no_decay_low_beta", 1, 1, 32, 32, 1024, F32, 4, true, 0.0, 0.02, 0.2, false, None),
    ("segments=16_no_decay_low_beta", 1, 1, 32, 32, 1024, F32, 16, true, 0.0, 0.02, 0.2, false, None),
    ("segments=4_bf16_batch_no_decay", 2, 1, 40, 20, 600, BF16, 4, true, 0.0, 0.02, 0.2, false, None),
    // The wide kernels (key_dim > 128: two state stripes a warp, Q and W in two halves),
    // fla-hub's 1.3B head shape among them.
    ("f32_K=256_V=80", 1, 2, 256, 80, 130, F32, 1, true, G, 0.0, 1.0, false, None),
    ("bf16_K=256_V=512", 1, 1, 256, 512, 70, BF16, 1, true, G, 0.0, 1.0, false, None),
    ("f16_K=200_V=40", 2, 1, 200, 40, 100, F16, 1, true, G, 0.0, 1.0, false, None),
    ("bf16_fast_K=256", 1, 1, 256, 64, 200, BF16, 1, true, 1.0 / 64.0, 0.0, 1.0, true, None),
    ("segments=3_bf16_K=144_V=24", 1, 1, 144, 24, 400, BF16, 3, true, G, 0.0, 1.0, false, None),
    ("segments=4_K=256_no_decay_low_beta", 1, 1, 256, 32, 512, F32, 4, true, 0.0, 0.02, 0.2, false, None),
    // Several windows a call: the state carried from window to window on the device,
    // the last window shorter, each cut into segments.
    ("windows_of_192_segments=2", 1, 2, 32, 48, 500, F32, 2, true, G, 0.0, 1.0, false, Some(192)),
    // Short windows token by token (step.cu, ≤ 16 tokens): K from 7 to 256, V not a
    // multiple of the 32-column slice, every input type, two sequences; 9 to 16 tokens
    // stage their inputs in two batches of 8.
    ("step_f32_K=7_V=5_1tok", 2, 3, 7, 5, 1, F32, 1, true, G, 0.0, 1.0, false, None),
    ("step_f32_K=64_V=40_3tok", 2, 2, 64, 40, 3, F32, 1, true, G, 0.0, 1.0, false, None),
    ("step_bf16_K=128_V=100_16tok", 2, 2, 128, 100, 16, BF16, 1, true, G, 0.0, 1.0, false, None),
    ("step_f16_K=256_V=70_5tok", 2, 1, 256, 70, 5, F16, 1, true, G, 0.0, 1.0, false, None),
    ("step_f32_K=256_V=33_16tok", 2, 2, 256, 33, 16, F32, 1, true, G, 0.0, 1.0, false, None),
    ("step_bf16_fast_ignored_K=32_12tok", 2, 1, 32, 64, 12, BF16, 1, true, G, 0.0, 1.0, true, None),
    ("step_strong_decay_beta_near_1", 2, 1, 64, 48, 9, F32, 1, true, 5.0, 0.999, 1.0, false, None),
    // After earlier windows: a chunked window of 64, then 6 tokens token by token on the
    // state it left; decode steps (windows of 1 token each, as successive calls); with
    // no decay and β ≤ 0.2, the state carried in dominates every output.
    ("step_after_a_chunked_window", 2, 2, 64, 48, 70, F32, 1, true, G, 0.0, 1.0, false, Some(64)),
    ("step_decode_K=128_V=96_bf16", 2, 2, 128, 96, 12, BF16, 1, true, G, 0.0, 1.0, false, Some(1)),
    ("step_decode_K=256_f32", 2, 1, 256, 40, 6, F32, 1, true, G, 0.0, 1.0, false, Some(1)),
    ("step_decode_no_decay_low_beta", 2, 1, 7, 40, 20, F32, 1, true, 0.0, 0.02, 0.2, false, Some(1)),
    ("step_windows_of_10_f16", 2, 1, 48, 36, 37, F16, 1, true, G, 0.0, 1.0, false, Some(10)),
];

fn main() -> std::io::Result<()> {
    let cases: Vec<EmuCase> = CASES
        .iter()
        .map(
            |&(
                name,
                batch,
                heads,
                key_dim,
                value_dim,
                tokens,
                dtype,
                segments,
                with_state,
                gate_scale,
                beta_min,
                beta_max,
                bf16_fast,
                window_tokens,
            )| EmuCase {
                name,
                batch,
                heads,
                key_dim,
                value_dim,
                dtype,
                bf16_fast,
                tokens,
                window_tokens,
                segments,
                with_state,
                gate_scale,
                beta_min,
                beta_max,
            },
        )
        .collect();
    let text = emu_plan_text(&cases);
    match std::env::args().nth(1) {
        Some(path) => std::fs::write(path, text),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}
