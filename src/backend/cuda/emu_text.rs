//! The launch plans written out as text for the kernel emulator
//! (`kernels/emu/check.cpp`, via `examples/emu_plans.rs`): per case its buffers, then
//! per window every launch with its parameter values, from the same plan functions the
//! backend executes.

use std::fmt::Write as _;

use super::params::Field;
use super::plan::{
    forced_segments, window_plan, window_spans, Buf, Params, PlanOptions, ScanLayout,
};
use super::window::{Shape, CHUNK};
use crate::tensor::DType;

/// A case for the kernel emulator (`kernels/emu/check.cpp`): the shape and options of
/// a forward, and how the emulator draws its random inputs.
#[doc(hidden)]
#[derive(Clone, Debug)]
pub struct EmuCase {
    /// One word (no spaces).
    pub name: &'static str,
    pub batch: usize,
    pub heads: usize,
    pub key_dim: usize,
    pub value_dim: usize,
    pub dtype: DType,
    pub bf16_fast: bool,
    pub tokens: usize,
    /// Tokens per window: the call runs as windows of this many tokens (the last one
    /// shorter) in buffers sized for it rounded up to the chunk, as consecutive calls of
    /// that many tokens run (1: decode steps); `None`: one window for the call.
    pub window_tokens: Option<usize>,
    pub segments: usize,
    /// Inputs only: a random state to start from (else zeros).
    pub with_state: bool,
    /// Inputs only: g = logsigmoid(z) · gate_scale.
    pub gate_scale: f64,
    /// Inputs only: β = beta_min + (beta_max − beta_min) · sigmoid(z).
    pub beta_min: f64,
    pub beta_max: f64,
}

fn params_text(out: &mut String, params: &Params) {
    let fields = match params {
        Params::Prep(p) => p.fields(),
        Params::Scan(p) => p.fields(),
        Params::Combine(p) => p.fields(),
        Params::Step(p) => p.fields(),
    };
    for (name, value) in fields {
        let _ = match value {
            Field::Ptr(p) => writeln!(out, "param {name} {}", p.map_or("null", Buf::ident)),
            Field::Int(i) => writeln!(out, "param {name} {i}"),
            Field::Float(x) => writeln!(out, "param {name} f{}", x.to_bits()),
        };
    }
}

/// The window shape a forward of `case` runs with, as `CudaBackend::forward_into`
/// sizes it when the window tokens and segments are forced.
fn emu_shape(case: &EmuCase) -> Shape {
    let want = case.tokens.max(1).div_ceil(CHUNK) * CHUNK;
    let t_cap = case
        .window_tokens
        .map_or(want, |t| (t.max(1).div_ceil(CHUNK) * CHUNK).min(want));
    Shape {
        batch: case.batch,
        heads: case.heads,
        key_dim: case.key_dim,
        value_dim: case.value_dim,
        kp: case.key_dim.div_ceil(16) * 16,
        dtype: case.dtype,
        t_cap,
        g_cap: forced_segments(case.segments, t_cap / CHUNK),
    }
}

/// The plan file `kernels/emu/check.cpp` replays: per case its buffers (bytes as a
/// window allocates them), then per window the token range and every launch with its
/// parameter values. Line-oriented, one `key value…` record a line.
#[doc(hidden)]
pub fn emu_plan_text(cases: &[EmuCase]) -> String {
    let lay = ScanLayout::OF_SOURCES;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# launch plans of ltm-engine's CUDA backend (src/backend/cuda/plan.rs)\n\
         layout {} {} {} {} {} {} {} {}",
        lay.chunk,
        lay.kmax,
        lay.slice,
        lay.threads,
        lay.smem_bytes,
        lay.combine_threads,
        lay.kmax_wide,
        lay.smem_bytes_wide
    );
    for case in cases {
        let s = emu_shape(case);
        let scale = 1.0 / (case.key_dim as f32).sqrt();
        let dtype = match case.dtype {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
        };
        let _ = writeln!(
            out,
            "case {} batch {} heads {} key_dim {} value_dim {} dtype {dtype} fast {} tokens {} \
             t_cap {} scale f{} with_state {} gate_scale {} beta_min {} beta_max {}",
            case.name,
            s.batch,
            s.heads,
            s.key_dim,
            s.value_dim,
            u8::from(case.bf16_fast && case.dtype == DType::BF16),
            case.tokens,
            s.t_cap,
            scale.to_bits(),
            u8::from(case.with_state),
            case.gate_scale,
            case.beta_min,
            case.beta_max
        );
        for b in Buf::ALL {
            let _ = writeln!(out, "buffer {} {}", b.ident(), b.bytes(&s));
        }
        let span = case.window_tokens.map_or(s.t_cap, |t| t.clamp(1, s.t_cap));
        for (t0, len) in window_spans(case.tokens, span) {
            let opts = PlanOptions {
                segments: forced_segments(case.segments, len.div_ceil(CHUNK)),
                bf16_fast: case.bf16_fast,
            };
            let _ = writeln!(out, "window {t0} {len}");
            for l in window_plan(&s, len, scale, opts, &lay) {
                let _ = writeln!(
                    out,
                    "launch {} grid {} {} {} block {} {} {} smem {}",
                    l.kernel.entry(),
                    l.grid.0,
                    l.grid.1,
                    l.grid.2,
                    l.block.0,
                    l.block.1,
                    l.block.2,
                    l.shared_mem_bytes
                );
                params_text(&mut out, &l.params);
                out.push_str("end\n");
            }
        }
        out.push_str("endcase\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_steps_in_plan_text_are_windows_of_one_token() {
        let case = EmuCase {
            name: "d",
            batch: 2,
            heads: 1,
            key_dim: 16,
            value_dim: 40,
            dtype: DType::BF16,
            bf16_fast: false,
            tokens: 5,
            window_tokens: Some(1),
            segments: 1,
            with_state: true,
            gate_scale: 0.0,
            beta_min: 0.0,
            beta_max: 1.0,
        };
        let text = emu_plan_text(&[case]);
        assert_eq!(text.matches("\nwindow ").count(), 5);
        assert!(text.contains("\nwindow 4 1\n"), "{text}");
        assert!(text.contains("t_cap 64 "), "{text}");
        assert_eq!(
            text.matches("\nlaunch ltm_step_bf16 grid 2 1 2 block 256 1 1 smem 0\n")
                .count(),
            5
        );
        let fields = text
            .split("launch ltm_step_bf16")
            .nth(1)
            .unwrap()
            .split("end\n")
            .next()
            .unwrap()
            .matches("param ")
            .count();
        assert_eq!(fields, 15);
    }

    #[test]
    fn plan_text_names_every_field_and_buffer() {
        let case = EmuCase {
            name: "t",
            batch: 1,
            heads: 2,
            key_dim: 32,
            value_dim: 32,
            dtype: DType::F32,
            bf16_fast: false,
            tokens: 300,
            window_tokens: Some(128),
            segments: 2,
            with_state: true,
            gate_scale: 0.0,
            beta_min: 0.0,
            beta_max: 0.2,
        };
        let text = emu_plan_text(&[case]);
        assert_eq!(text.matches("\nwindow ").count(), 3);
        // Two windows of two chunks get two segments each; the last window has one chunk.
        assert_eq!(text.matches("launch ltm_segment_combine").count(), 2);
        assert_eq!(text.matches("\nbuffer ").count(), 13);
        assert!(text.contains("buffer starts 16384\n"), "{text}");
        let scan_fields = text
            .split("launch ltm_scan_f32")
            .nth(1)
            .unwrap()
            .split("end\n")
            .next()
            .unwrap()
            .matches("param ")
            .count();
        assert_eq!(scan_fields, 21);
    }
}
