//! The launches of a forward as data: which kernel, grid, block, shared memory and
//! parameter values, with buffers named instead of addressed. `launch.rs` executes a
//! plan on a GPU; `emu_text.rs` writes plans out for the host emulator
//! (`kernels/emu/check.cpp`), so the emulator checks this arithmetic, not a copy of it.

use super::params::{CombineParams, PrepParams, ScanParams, StepParams};
use super::window::{elem_bytes, Shape, CHUNK};
use crate::backend::split::segment_split;
use crate::error::{Error, Result};
use crate::tensor::DType;

/// Layout constants the kernels report (`ltm_scan_layout` of `kernels/scan.cu`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ScanLayout {
    pub chunk: usize,
    pub kmax: usize,
    pub slice: usize,
    pub threads: u32,
    pub smem_bytes: u32,
    pub combine_threads: u32,
    /// The wide kernels (`*_k256`): largest key dim and dynamic shared memory bytes.
    pub kmax_wide: usize,
    pub smem_bytes_wide: u32,
}

impl ScanLayout {
    /// What `kernels/scan.cu` says today. A GPU run uses the numbers the module reports;
    /// plans written for the emulator use these, and the emulator rejects them if the
    /// sources changed.
    pub const OF_SOURCES: ScanLayout = ScanLayout {
        chunk: 64,
        kmax: 128,
        slice: 32,
        threads: 256,
        smem_bytes: 159_232,
        combine_threads: 256,
        kmax_wide: 256,
        smem_bytes_wide: 210_432,
    };

    /// Whether a memory whose keys pad to `kp` columns needs the wide kernels.
    pub fn wide(&self, kp: usize) -> bool {
        kp > self.kmax
    }

    /// Fails, saying why, unless the scan kernels take keys of `key_dim` on a GPU that
    /// allows `optin_smem` bytes of shared memory per block.
    pub fn check_key_dim(&self, key_dim: usize, optin_smem: u32) -> Result<()> {
        if key_dim > self.kmax_wide {
            return Err(Error::Config(format!(
                "the CUDA kernels take key_dim up to {}, found {key_dim}; use --device cpu",
                self.kmax_wide
            )));
        }
        if self.wide(key_dim.div_ceil(16) * 16) && optin_smem < self.smem_bytes_wide {
            return Err(Error::Config(format!(
                "key_dim {key_dim} needs the wide scan kernels and {} bytes of shared memory per \
                 block; this GPU allows {optin_smem} (key_dim up to {} runs here); use --device cpu",
                self.smem_bytes_wide, self.kmax
            )));
        }
        Ok(())
    }

    /// Dynamic shared memory of a scan block for keys of `kp` columns.
    pub fn scan_smem(&self, kp: usize) -> u32 {
        self.smem_of(self.wide(kp))
    }

    /// Dynamic shared memory of a block of the wide or the narrow scan kernels.
    pub fn smem_of(&self, wide: bool) -> u32 {
        if wide {
            self.smem_bytes_wide
        } else {
            self.smem_bytes
        }
    }
}

/// Threads of `ltm_chunk_prep_*` (`prep::THREADS` in column_write.cu, which
/// `__launch_bounds__` enforces: a mismatch fails the launch, it cannot go unnoticed).
pub(crate) const PREP_THREADS: u32 = 128;

/// Windows of at most this many tokens run token by token (`ltm_step_*`, kernels/step.cu)
/// instead of stage 1 + the scan. Up to 64 tokens the chunked path costs about the same
/// whatever the count: two launches and one padded 64-token chunk, whose stage 1 solves
/// 64 rows and whose scan loads 64-row tiles. The step kernel costs one block barrier
/// and ~K/4 dependent FMAs a thread per token, in sequence, so its cost grows with the
/// tokens while the chunked path's does not. 16 covers decode (1 token a layer) and
/// short speculative or chat-turn windows while keeping the step path's chain at a
/// quarter of a chunk's rows; not yet measured on a GPU (tune with a benchmark there).
/// All such windows are one chunk, so segments never apply to them.
pub(crate) const STEP_MAX_TOKENS: usize = 16;

/// Layout of `ltm_step_*` (namespace `step` of kernels/step.cu, which a test here reads):
/// value columns per block, threads (`__launch_bounds__`; the kernel maps rows to warps
/// assuming exactly this many, and the emulator rejects any other block), and the
/// largest key dimension.
pub(crate) const STEP_SLICE: usize = 32;
pub(crate) const STEP_THREADS: u32 = 256;
pub(crate) const STEP_KMAX: usize = 256;

/// A buffer of a window (`window.rs`), named where a kernel parameter points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Buf {
    Q,
    K,
    V,
    Beta,
    G,
    W,
    U,
    P,
    Gamma,
    O,
    State,
    Starts,
    Maps,
}

impl Buf {
    pub const ALL: [Buf; 13] = [
        Buf::Q,
        Buf::K,
        Buf::V,
        Buf::Beta,
        Buf::G,
        Buf::W,
        Buf::U,
        Buf::P,
        Buf::Gamma,
        Buf::O,
        Buf::State,
        Buf::Starts,
        Buf::Maps,
    ];

    /// One word, as plan files spell it.
    pub fn ident(self) -> &'static str {
        match self {
            Buf::Q => "q",
            Buf::K => "k",
            Buf::V => "v",
            Buf::Beta => "beta",
            Buf::G => "g",
            Buf::W => "w",
            Buf::U => "u",
            Buf::P => "p",
            Buf::Gamma => "gamma",
            Buf::O => "o",
            Buf::State => "state",
            Buf::Starts => "starts",
            Buf::Maps => "maps",
        }
    }

    /// Bytes of this buffer in a window sized for `s`; `Window::new` allocates exactly
    /// this, and the emulator too, so an undersized buffer shows there.
    pub fn bytes(self, s: &Shape) -> usize {
        let (b, h, k, v, t) = (s.batch, s.heads, s.key_dim, s.value_dim, s.t_cap);
        let rows = b * h * s.chunks() * CHUNK;
        let es = elem_bytes(s.dtype);
        let f = 4;
        match self {
            Buf::Q | Buf::K => b * t * h * k * es,
            Buf::V => b * t * h * v * es,
            Buf::Beta | Buf::G => b * t * h * f,
            Buf::W => rows * s.kp * f,
            Buf::U => rows * v * f,
            Buf::P => rows * CHUNK * f,
            Buf::Gamma => rows * f,
            Buf::O => b * t * h * v * f,
            Buf::State => b * h * k * v * f,
            Buf::Starts => s.g_cap * b * h * k * v * f,
            Buf::Maps => s.g_cap * b * h * k * (k + v) * f,
        }
    }
}

/// A kernel parameter that points into a window: a buffer, or null.
pub(crate) type Ptr = Option<Buf>;

/// What a kernel computes; with the input type it names the entry point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    Prep,
    Maps,
    Combine,
    Scan,
    Step,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Kernel {
    pub stage: Stage,
    pub dtype: DType,
    /// The FAST bf16 variant (only with bf16 inputs).
    pub fast: bool,
    /// The `_k256` variant of the scan, the maps and the combine (key_dim > 128).
    pub wide: bool,
}

impl Kernel {
    /// The entry point in the PTX.
    pub fn entry(&self) -> String {
        let stem = match self.stage {
            Stage::Prep => "ltm_chunk_prep",
            Stage::Maps => "ltm_segment_maps",
            Stage::Scan => "ltm_scan",
            Stage::Step => "ltm_step",
            Stage::Combine => return format!("ltm_segment_combine{}", self.wide_suffix()),
        };
        let ty = match self.dtype {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
        };
        format!("{stem}_{ty}{}{}", self.fast_suffix(), self.wide_suffix())
    }

    fn fast_suffix(&self) -> &'static str {
        if self.fast {
            "_fast"
        } else {
            ""
        }
    }

    fn wide_suffix(&self) -> &'static str {
        if self.wide {
            "_k256"
        } else {
            ""
        }
    }

    /// Every entry point the memory's kernels export, as the backend loads them.
    pub fn all() -> Vec<Kernel> {
        let mut all = Vec::new();
        for stage in [
            Stage::Prep,
            Stage::Maps,
            Stage::Scan,
            Stage::Combine,
            Stage::Step,
        ] {
            for wide in [false, true] {
                if wide && matches!(stage, Stage::Prep | Stage::Step) {
                    continue; // they loop over key tiles or rows: one kernel serves every K
                }
                for dtype in [DType::F32, DType::F16, DType::BF16] {
                    for fast in [false, true] {
                        if fast
                            && (dtype != DType::BF16
                                || matches!(stage, Stage::Combine | Stage::Step))
                        {
                            continue;
                        }
                        if stage == Stage::Combine && dtype != DType::F32 {
                            continue; // the combine reads f32 maps whatever the inputs
                        }
                        all.push(Kernel {
                            stage,
                            dtype,
                            fast,
                            wide,
                        });
                    }
                }
            }
        }
        all
    }
}

/// The parameter block of a launch, pointers as buffer names.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Params {
    Prep(PrepParams<Ptr>),
    Scan(ScanParams<Ptr>),
    Combine(CombineParams<Ptr>),
    Step(StepParams<Ptr>),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Launch {
    pub kernel: Kernel,
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    pub shared_mem_bytes: u32,
    pub params: Params,
}

/// How a window's kernels run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PlanOptions {
    /// Segments per window (≤ 1: the plain scan); the window's `g_cap` caps it.
    pub segments: usize,
    /// bf16 inputs only: the FAST kernels, stage-1 outputs and every MMA operand in
    /// bf16. Stage 1 and the scan must agree on it: it decides how W, U, P are stored.
    pub bf16_fast: bool,
}

fn fast(shape: &Shape, opts: PlanOptions) -> bool {
    opts.bf16_fast && shape.dtype == DType::BF16
}

/// The token ranges `(t0, len)` of the windows a call of `tokens` tokens runs as.
pub(crate) fn window_spans(tokens: usize, t_cap: usize) -> impl Iterator<Item = (usize, usize)> {
    let step = t_cap.max(1);
    (0..tokens)
        .step_by(step)
        .map(move |t0| (t0, step.min(tokens - t0)))
}

/// Stage 1 over `tokens` tokens of every sequence; nothing for no tokens.
pub(crate) fn prep_plan(
    shape: &Shape,
    tokens: usize,
    scale: f32,
    opts: PlanOptions,
) -> Vec<Launch> {
    let s = shape;
    let nc = tokens.div_ceil(CHUNK);
    if nc == 0 || s.batch == 0 {
        return Vec::new();
    }
    let params = PrepParams {
        q: Some(Buf::Q),
        k: Some(Buf::K),
        v: Some(Buf::V),
        beta: Some(Buf::Beta),
        g: Some(Buf::G),
        w: Some(Buf::W),
        u: Some(Buf::U),
        p: Some(Buf::P),
        gamma: Some(Buf::Gamma),
        batch: s.batch as i32,
        heads: s.heads as i32,
        key_dim: s.key_dim as i32,
        value_dim: s.value_dim as i32,
        kp: s.kp as i32,
        t_stride: s.t_cap as i32,
        tokens: tokens as i32,
        num_chunks: nc as i32,
        scale,
        pad: 0,
    };
    vec![Launch {
        kernel: Kernel {
            stage: Stage::Prep,
            dtype: s.dtype,
            fast: fast(s, opts),
            wide: false,
        },
        grid: (nc as u32, s.heads as u32, s.batch as u32),
        block: (PREP_THREADS, 1, 1),
        shared_mem_bytes: 0,
        params: Params::Prep(params),
    }]
}

/// The scan from stage-1 outputs already in the window: the plain scan in place, or
/// maps → combine → scan with outputs when the window is cut into segments.
pub(crate) fn scan_plan(
    shape: &Shape,
    tokens: usize,
    scale: f32,
    opts: PlanOptions,
    lay: &ScanLayout,
) -> Vec<Launch> {
    let s = shape;
    let nc = tokens.div_ceil(CHUNK);
    if nc == 0 || s.batch == 0 {
        return Vec::new();
    }
    let (per_seg, g) = segment_split(nc, opts.segments, s.g_cap);
    let slices = s.value_dim.div_ceil(lay.slice);
    let base = ScanParams {
        q: Some(Buf::Q),
        k: Some(Buf::K),
        w: Some(Buf::W),
        u: Some(Buf::U),
        p: Some(Buf::P),
        gamma: Some(Buf::Gamma),
        starts: Some(Buf::State),
        state_out: Some(Buf::State),
        out: Some(Buf::O),
        batch: s.batch as i32,
        heads: s.heads as i32,
        key_dim: s.key_dim as i32,
        value_dim: s.value_dim as i32,
        kp: s.kp as i32,
        t_stride: s.t_cap as i32,
        tokens: tokens as i32,
        num_chunks: nc as i32,
        chunks_per_segment: per_seg as i32,
        num_segments: g as i32,
        slices: slices as i32,
        scale,
    };
    let kernel = |stage| Kernel {
        stage,
        dtype: s.dtype,
        fast: stage != Stage::Combine && fast(s, opts),
        wide: lay.wide(s.kp),
    };
    let scan = |x_blocks: usize, stage, params| Launch {
        kernel: kernel(stage),
        grid: (x_blocks as u32, s.heads as u32, s.batch as u32),
        block: (lay.threads, 1, 1),
        shared_mem_bytes: lay.scan_smem(s.kp),
        params: Params::Scan(params),
    };
    if g == 1 {
        // In place: each block reads its own state slice first and writes it last.
        return vec![scan(slices, Stage::Scan, base)];
    }
    // 1. the affine map of every segment but the last (nothing follows it), on the
    //    augmented state [M | B]
    let aug_slices = (s.key_dim + s.value_dim).div_ceil(lay.slice);
    let maps = ScanParams {
        starts: None,
        out: None,
        state_out: Some(Buf::Maps),
        slices: aug_slices as i32,
        ..base
    };
    // 2. the state at every segment's start
    let combine = CombineParams {
        state: Some(Buf::State),
        maps: Some(Buf::Maps),
        starts: Some(Buf::Starts),
        batch: s.batch as i32,
        heads: s.heads as i32,
        key_dim: s.key_dim as i32,
        value_dim: s.value_dim as i32,
        num_segments: g as i32,
        pad: 0,
    };
    // 3. every segment from its start, with outputs; the last writes the state
    let outputs = ScanParams {
        starts: Some(Buf::Starts),
        ..base
    };
    vec![
        scan(aug_slices * (g - 1), Stage::Maps, maps),
        Launch {
            kernel: kernel(Stage::Combine),
            grid: (slices as u32, s.heads as u32, s.batch as u32),
            block: (lay.combine_threads, 1, 1),
            shared_mem_bytes: 0,
            params: Params::Combine(combine),
        },
        scan(slices * g, Stage::Scan, outputs),
    ]
}

/// Whether a window of `tokens` tokens runs token by token ([`step_plan`]).
pub(crate) fn uses_step(shape: &Shape, tokens: usize) -> bool {
    tokens <= STEP_MAX_TOKENS && shape.key_dim <= STEP_KMAX
}

/// A window of a few tokens token by token on the state in place: one launch of
/// `ltm_step_*`, a block per (32 value columns, head, sequence); nothing for no tokens.
/// Exact f32 whatever `bf16_fast` says (nothing here goes through tensor cores).
pub(crate) fn step_plan(shape: &Shape, tokens: usize, scale: f32) -> Vec<Launch> {
    let s = shape;
    if tokens == 0 || s.batch == 0 {
        return Vec::new();
    }
    let slices = s.value_dim.div_ceil(STEP_SLICE);
    let params = StepParams {
        q: Some(Buf::Q),
        k: Some(Buf::K),
        v: Some(Buf::V),
        beta: Some(Buf::Beta),
        g: Some(Buf::G),
        state: Some(Buf::State),
        out: Some(Buf::O),
        batch: s.batch as i32,
        heads: s.heads as i32,
        key_dim: s.key_dim as i32,
        value_dim: s.value_dim as i32,
        t_stride: s.t_cap as i32,
        tokens: tokens as i32,
        slices: slices as i32,
        scale,
    };
    vec![Launch {
        kernel: Kernel {
            stage: Stage::Step,
            dtype: s.dtype,
            fast: false,
            wide: false,
        },
        grid: (slices as u32, s.heads as u32, s.batch as u32),
        block: (STEP_THREADS, 1, 1),
        shared_mem_bytes: 0,
        params: Params::Step(params),
    }]
}

/// One window of `tokens` tokens per sequence: token by token when it is short
/// ([`uses_step`]), else stage 1, then the scan.
pub(crate) fn window_plan(
    shape: &Shape,
    tokens: usize,
    scale: f32,
    opts: PlanOptions,
    lay: &ScanLayout,
) -> Vec<Launch> {
    if uses_step(shape, tokens) {
        return step_plan(shape, tokens, scale);
    }
    let mut plan = prep_plan(shape, tokens, scale, opts);
    plan.extend(scan_plan(shape, tokens, scale, opts, lay));
    plan
}

/// Segments when the caller forces a count: at most one a chunk.
pub(crate) fn forced_segments(segments: usize, nc: usize) -> usize {
    segments.clamp(1, nc.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(k: usize, v: usize, t_cap: usize, g_cap: usize) -> Shape {
        Shape {
            batch: 2,
            heads: 3,
            key_dim: k,
            value_dim: v,
            kp: k.div_ceil(16) * 16,
            dtype: DType::F32,
            t_cap,
            g_cap,
        }
    }

    const LAY: ScanLayout = ScanLayout::OF_SOURCES;

    fn opts(segments: usize) -> PlanOptions {
        PlanOptions {
            segments,
            bf16_fast: false,
        }
    }

    #[test]
    fn keys_past_128_take_the_wide_kernels_with_their_shared_memory() {
        for (k, wide) in [
            (7, false),
            (128, false),
            (129, true),
            (200, true),
            (256, true),
        ] {
            let s = shape(k, 40, 4 * CHUNK, 4);
            let plan = window_plan(&s, 4 * CHUNK, 0.1, opts(2), &LAY);
            let names: Vec<_> = plan.iter().map(|l| l.kernel.entry()).collect();
            let suffix = if wide { "_k256" } else { "" };
            assert_eq!(
                names,
                vec![
                    "ltm_chunk_prep_f32".to_string(),
                    format!("ltm_segment_maps_f32{suffix}"),
                    format!("ltm_segment_combine{suffix}"),
                    format!("ltm_scan_f32{suffix}"),
                ],
                "K = {k}"
            );
            let want = if wide { 210_432 } else { 159_232 };
            for l in &plan {
                if matches!(l.kernel.stage, Stage::Scan | Stage::Maps) {
                    assert_eq!(l.shared_mem_bytes, want, "K = {k}");
                }
            }
        }
    }

    #[test]
    fn key_dims_past_the_kernels_or_the_gpus_shared_memory_are_refused_by_name() {
        let h200 = 232_448;
        let a100 = 166_912;
        assert!(LAY.check_key_dim(256, h200).is_ok());
        assert!(LAY.check_key_dim(128, a100).is_ok());
        let e = LAY.check_key_dim(257, h200).unwrap_err().to_string();
        assert!(e.contains("key_dim up to 256, found 257"), "{e}");
        let e = LAY.check_key_dim(256, a100).unwrap_err().to_string();
        assert!(e.contains("210432") && e.contains("166912"), "{e}");
    }

    #[test]
    fn every_entry_the_backend_loads_is_exported_by_the_sources() {
        let sources = [
            include_str!("../../../kernels/column_write.cu"),
            include_str!("../../../kernels/scan.cu"),
            include_str!("../../../kernels/step.cu"),
        ]
        .concat();
        let all = Kernel::all();
        // 4 prep, 2 × (4 scan + 4 maps), 2 combine, 3 step
        assert_eq!(all.len(), 25);
        for k in all {
            let name = k.entry();
            let exported = sources.contains(&format!("({name}, "))
                || sources.contains(&format!("\n{name}(const"));
            assert!(exported, "{name} is not an entry point of the kernels");
        }
    }

    #[test]
    fn segments_are_never_empty() {
        assert_eq!(segment_split(0, 4, 4), (0, 0));
        assert_eq!(segment_split(10, 1, 4), (10, 1));
        assert_eq!(segment_split(10, 4, 4), (3, 4));
        // 10 chunks in 4-chunk segments would leave none for a fourth segment.
        assert_eq!(segment_split(10, 3, 4), (4, 3));
        assert_eq!(segment_split(18, 16, 16), (2, 9));
        assert_eq!(segment_split(16, 16, 16), (1, 16));
        // The window's capacity caps the request.
        assert_eq!(segment_split(16, 16, 2), (8, 2));
        for nc in 1..70 {
            for g in 1..20 {
                let (per, got) = segment_split(nc, g, 64);
                assert!(got <= g && (got - 1) * per < nc && got * per >= nc);
            }
        }
    }

    #[test]
    fn windows_cover_the_call_in_order() {
        let spans: Vec<_> = window_spans(300, 128).collect();
        assert_eq!(spans, vec![(0, 128), (128, 128), (256, 44)]);
        assert_eq!(window_spans(0, 64).count(), 0);
        assert_eq!(window_spans(64, 64).collect::<Vec<_>>(), vec![(0, 64)]);
    }

    #[test]
    fn the_plain_scan_runs_in_place() {
        let s = shape(40, 70, 256, 1);
        let plan = window_plan(&s, 200, 0.5, opts(1), &LAY);
        assert_eq!(plan.len(), 2);
        let (prep, scan) = (&plan[0], &plan[1]);
        assert_eq!(prep.kernel.entry(), "ltm_chunk_prep_f32");
        assert_eq!(prep.grid, (4, 3, 2));
        assert_eq!(prep.block, (128, 1, 1));
        let Params::Prep(pp) = prep.params else {
            panic!("{prep:?}")
        };
        assert_eq!(
            (pp.kp, pp.t_stride, pp.tokens, pp.num_chunks),
            (48, 256, 200, 4)
        );
        assert_eq!(scan.kernel.entry(), "ltm_scan_f32");
        // 70 value columns: three 32-column slices.
        assert_eq!(scan.grid, (3, 3, 2));
        assert_eq!(scan.block, (256, 1, 1));
        assert_eq!(scan.shared_mem_bytes, 159_232);
        let Params::Scan(sp) = scan.params else {
            panic!("{scan:?}")
        };
        assert_eq!(sp.starts, Some(Buf::State));
        assert_eq!(sp.state_out, Some(Buf::State));
        assert_eq!(
            (sp.chunks_per_segment, sp.num_segments, sp.slices),
            (4, 1, 3)
        );
    }

    #[test]
    fn segments_run_maps_combine_then_outputs() {
        let s = shape(40, 70, 1024, 4);
        let plan = scan_plan(&s, 1000, 0.5, opts(4), &LAY);
        let stages: Vec<_> = plan.iter().map(|l| l.kernel.entry()).collect();
        assert_eq!(
            stages,
            [
                "ltm_segment_maps_f32",
                "ltm_segment_combine",
                "ltm_scan_f32"
            ]
        );
        // 16 chunks, 4 a segment; maps of the first three, on 110 augmented columns.
        let Params::Scan(m) = plan[0].params else {
            panic!()
        };
        assert_eq!(plan[0].grid, (4 * 3, 3, 2));
        assert_eq!((m.slices, m.chunks_per_segment, m.num_segments), (4, 4, 4));
        assert_eq!(
            (m.starts, m.out, m.state_out),
            (None, None, Some(Buf::Maps))
        );
        let Params::Combine(c) = plan[1].params else {
            panic!()
        };
        assert_eq!(plan[1].grid, (3, 3, 2));
        assert_eq!(plan[1].shared_mem_bytes, 0);
        assert_eq!(c.num_segments, 4);
        let Params::Scan(o) = plan[2].params else {
            panic!()
        };
        assert_eq!(plan[2].grid, (3 * 4, 3, 2));
        assert_eq!(
            (o.starts, o.state_out, o.slices),
            (Some(Buf::Starts), Some(Buf::State), 3)
        );
    }

    #[test]
    fn fast_only_for_bf16_and_never_for_combine() {
        let mut s = shape(64, 64, 1024, 2);
        let fast = PlanOptions {
            segments: 2,
            bf16_fast: true,
        };
        assert!(window_plan(&s, 1024, 1.0, fast, &LAY)
            .iter()
            .all(|l| !l.kernel.fast));
        s.dtype = DType::BF16;
        let names: Vec<_> = window_plan(&s, 1024, 1.0, fast, &LAY)
            .iter()
            .map(|l| l.kernel.entry())
            .collect();
        assert_eq!(
            names,
            [
                "ltm_chunk_prep_bf16_fast",
                "ltm_segment_maps_bf16_fast",
                "ltm_segment_combine",
                "ltm_scan_bf16_fast"
            ]
        );
    }

    #[test]
    fn no_tokens_no_launches() {
        let s = shape(16, 16, 64, 1);
        assert!(window_plan(&s, 0, 1.0, opts(1), &LAY).is_empty());
        let empty = Shape { batch: 0, ..s };
        assert!(window_plan(&empty, 10, 1.0, opts(1), &LAY).is_empty());
    }

    /// Every launch stays inside the buffers a window of that shape holds: the grid
    /// never asks for more chunks, segments or slices than were allocated.
    #[test]
    fn launches_fit_the_window() {
        for (k, v) in [(7, 5), (32, 64), (128, 128), (40, 20)] {
            for segments in [1, 2, 3, 4, 16] {
                let s = shape(k, v, 1024, forced_segments(segments, 16));
                for tokens in [1, 63, 64, 65, 500, 1024] {
                    for l in window_plan(&s, tokens, 1.0, opts(segments), &LAY) {
                        match l.params {
                            Params::Prep(p) => {
                                assert!((p.num_chunks as usize) * CHUNK <= s.t_cap);
                                assert_eq!(l.grid.0 as i32, p.num_chunks);
                            }
                            Params::Scan(p) => {
                                let g = p.num_segments as usize;
                                assert!(g <= s.g_cap);
                                assert!(
                                    (p.chunks_per_segment * (p.num_segments - 1)) < p.num_chunks
                                );
                                assert!(l.grid.0 as i32 <= p.slices * p.num_segments);
                                assert!((l.grid.0 as usize).is_multiple_of(p.slices as usize));
                            }
                            Params::Combine(p) => {
                                assert!(p.num_segments as usize <= s.g_cap);
                            }
                            Params::Step(p) => {
                                assert!(p.tokens as usize <= s.t_cap);
                                assert_eq!(p.t_stride as usize, s.t_cap);
                                assert_eq!(l.grid.0 as i32, p.slices);
                                let cols = l.grid.0 as usize * STEP_SLICE;
                                assert!(cols >= v && cols - STEP_SLICE < v);
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn short_windows_run_token_by_token() {
        let s = shape(40, 70, 64, 1);
        assert!(window_plan(&s, 0, 0.5, opts(1), &LAY).is_empty());
        for n in 1..=STEP_MAX_TOKENS {
            let plan = window_plan(&s, n, 0.5, opts(1), &LAY);
            assert_eq!(plan.len(), 1, "{n} tokens");
            let l = &plan[0];
            assert_eq!(l.kernel.entry(), "ltm_step_f32");
            // 70 value columns: three 32-column slices, one block each per head and sequence.
            assert_eq!(l.grid, (3, 3, 2));
            assert_eq!(l.block, (256, 1, 1));
            assert_eq!(l.shared_mem_bytes, 0);
            let Params::Step(p) = l.params else {
                panic!("{l:?}")
            };
            let want = StepParams {
                q: Some(Buf::Q),
                k: Some(Buf::K),
                v: Some(Buf::V),
                beta: Some(Buf::Beta),
                g: Some(Buf::G),
                state: Some(Buf::State),
                out: Some(Buf::O),
                batch: 2,
                heads: 3,
                key_dim: 40,
                value_dim: 70,
                t_stride: 64,
                tokens: n as i32,
                slices: 3,
                scale: 0.5,
            };
            assert_eq!(p, want);
        }
        let names: Vec<_> = window_plan(&s, STEP_MAX_TOKENS + 1, 0.5, opts(1), &LAY)
            .iter()
            .map(|l| l.kernel.entry())
            .collect();
        assert_eq!(names, ["ltm_chunk_prep_f32", "ltm_scan_f32"]);
    }

    #[test]
    fn the_step_takes_every_type_and_ignores_fast_and_segments() {
        for (dtype, name) in [
            (DType::F32, "ltm_step_f32"),
            (DType::F16, "ltm_step_f16"),
            (DType::BF16, "ltm_step_bf16"),
        ] {
            let s = Shape {
                dtype,
                ..shape(64, 64, 64, 4)
            };
            let fast = PlanOptions {
                segments: 4,
                bf16_fast: true,
            };
            let plan = window_plan(&s, 1, 1.0, fast, &LAY);
            assert_eq!(plan.len(), 1);
            assert_eq!(plan[0].kernel.entry(), name);
            assert!(!plan[0].kernel.fast);
        }
        // Up to 256 key rows; beyond, the chunked path (which refuses what it cannot run).
        assert_eq!(
            window_plan(&shape(256, 33, 64, 1), 3, 1.0, opts(1), &LAY)[0].grid,
            (2, 3, 2)
        );
        assert!(!uses_step(&shape(257, 33, 64, 1), 3));
        assert!(uses_step(&shape(256, 33, 64, 1), STEP_MAX_TOKENS));
    }

    /// The step's layout constants against the `step` namespace of the kernel source.
    #[test]
    fn step_constants_match_the_kernel() {
        let src = include_str!("../../../kernels/step.cu");
        let ns = &src[src.find("namespace step {").expect("namespace step")..];
        let constant = |name: &str| -> usize {
            let at = ns
                .find(&format!("constexpr int {name} = "))
                .unwrap_or_else(|| panic!("step::{name} not found"));
            let rest = &ns[at..];
            let value = &rest[rest.find('=').unwrap() + 1..rest.find(';').unwrap()];
            value
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("step::{name} = {value}"))
        };
        assert_eq!(constant("DV"), STEP_SLICE);
        assert_eq!(constant("THREADS"), STEP_THREADS as usize);
        assert_eq!(constant("KMAX"), STEP_KMAX);
    }
}
