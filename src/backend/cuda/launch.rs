//! Launches of the two stages on a window: chunk preparation, then the scan (plain, or
//! the two-level segment scan when too few blocks would run).

use std::sync::Arc;

use cudarc::driver::{CudaFunction, CudaStream, LaunchConfig, PushKernelArg};

use super::module::{dtype_index, Kernels, PREP_THREADS};
use super::params::{CombineParams, PrepParams, ScanParams};
use super::window::{Window, CHUNK};
use crate::error::{Error, Result};
use crate::tensor::DType;

/// One window of `tokens` tokens per sequence: the state in `win.state` is read at the
/// start and replaced by the state after the window; outputs land in `win.o`.
pub(crate) fn run_window(
    kernels: &Kernels,
    stream: &Arc<CudaStream>,
    win: &Window,
    tokens: usize,
    scale: f32,
    opts: RunOptions,
) -> Result<()> {
    if tokens == 0 {
        return Ok(());
    }
    prep(kernels, stream, win, tokens, scale, opts)?;
    scan(kernels, stream, win, tokens, scale, opts)
}

/// How a window's kernels run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RunOptions {
    /// Segments per window (≤ 1: the plain scan).
    pub segments: usize,
    /// bf16 inputs only: the FAST kernels, stage-1 outputs and every MMA operand in
    /// bf16. Stage 1 must have run with the same flag: it decides how W, U, P are stored.
    pub bf16_fast: bool,
    /// Wait for each kernel and report its failure under its own name (test mode);
    /// otherwise a fault surfaces at the next synchronisation, named after that.
    pub sync_each: bool,
}

/// Stage 1; with `opts.bf16_fast` (bf16 inputs only) W, U, P are stored as bf16 for the
/// FAST scan.
pub(crate) fn prep(
    kernels: &Kernels,
    stream: &Arc<CudaStream>,
    win: &Window,
    tokens: usize,
    scale: f32,
    opts: RunOptions,
) -> Result<()> {
    let s = win.shape;
    let nc = tokens.div_ceil(CHUNK);
    let params = PrepParams {
        q: win.q.ptr(stream),
        k: win.k.ptr(stream),
        v: win.v.ptr(stream),
        beta: win.beta.ptr(stream),
        g: win.g.ptr(stream),
        w: win.w.ptr(stream),
        u: win.u.ptr(stream),
        p: win.p.ptr(stream),
        gamma: win.gamma.ptr(stream),
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
    let cfg = LaunchConfig {
        grid_dim: (nc as u32, s.heads as u32, s.batch as u32),
        block_dim: (PREP_THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let f = if opts.bf16_fast && s.dtype == DType::BF16 {
        &kernels.prep_bf16_fast
    } else {
        &kernels.prep[dtype_index(s.dtype)]
    };
    launch(stream, f, cfg, &params, "ltm_chunk_prep", opts)
}

/// The scan from stage-1 outputs already in the window. `segments` ≤ 1 runs the plain
/// scan; more runs maps → combine → scan with outputs.
pub(crate) fn scan(
    kernels: &Kernels,
    stream: &Arc<CudaStream>,
    win: &Window,
    tokens: usize,
    scale: f32,
    opts: RunOptions,
) -> Result<()> {
    let s = win.shape;
    let lay = kernels.layout;
    let nc = tokens.div_ceil(CHUNK);
    let g = opts.segments.clamp(1, nc.max(1)).min(s.g_cap);
    let per_seg = nc.div_ceil(g);
    let g = nc.div_ceil(per_seg); // no empty segments
    let slices = s.value_dim.div_ceil(lay.slice);
    let base = ScanParams {
        q: win.q.ptr(stream),
        k: win.k.ptr(stream),
        w: win.w.ptr(stream),
        u: win.u.ptr(stream),
        p: win.p.ptr(stream),
        gamma: win.gamma.ptr(stream),
        starts: win.state.ptr(stream),
        state_out: win.state.ptr(stream),
        out: win.o.ptr(stream),
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
    let dtype = dtype_index(s.dtype);
    let fast = opts.bf16_fast && s.dtype == DType::BF16;
    let (scan_fn, maps_fn) = if fast {
        (&kernels.scan_bf16_fast, &kernels.maps_bf16_fast)
    } else {
        (&kernels.scan[dtype], &kernels.maps[dtype])
    };
    let cfg = |x_blocks: usize| LaunchConfig {
        grid_dim: (x_blocks as u32, s.heads as u32, s.batch as u32),
        block_dim: (lay.threads, 1, 1),
        shared_mem_bytes: lay.smem_bytes,
    };
    if g > 1 {
        // 1. the affine map of every segment but the last (nothing follows it), on the
        //    augmented state [M | B]
        let aug_slices = (s.key_dim + s.value_dim).div_ceil(lay.slice);
        let maps = ScanParams {
            starts: 0,
            out: 0,
            state_out: win.maps.ptr(stream),
            slices: aug_slices as i32,
            ..base
        };
        launch(
            stream,
            maps_fn,
            cfg(aug_slices * (g - 1)),
            &maps,
            "ltm_segment_maps",
            opts,
        )?;
        // 2. the state at every segment's start
        let combine = CombineParams {
            state: win.state.ptr(stream),
            maps: win.maps.ptr(stream),
            starts: win.starts.ptr(stream),
            batch: s.batch as i32,
            heads: s.heads as i32,
            key_dim: s.key_dim as i32,
            value_dim: s.value_dim as i32,
            num_segments: g as i32,
            pad: 0,
        };
        let ccfg = LaunchConfig {
            grid_dim: (slices as u32, s.heads as u32, s.batch as u32),
            block_dim: (lay.combine_threads, 1, 1),
            shared_mem_bytes: 0,
        };
        launch(
            stream,
            &kernels.combine,
            ccfg,
            &combine,
            "ltm_segment_combine",
            opts,
        )?;
        // 3. every segment from its start, with outputs; the last writes the state
        let outputs = ScanParams {
            starts: win.starts.ptr(stream),
            ..base
        };
        launch(stream, scan_fn, cfg(slices * g), &outputs, "ltm_scan", opts)
    } else {
        // In place: each block reads its own state slice first and writes it last.
        launch(stream, scan_fn, cfg(slices), &base, "ltm_scan", opts)
    }
}

fn launch<P: cudarc::driver::DeviceRepr>(
    stream: &Arc<CudaStream>,
    func: &CudaFunction,
    cfg: LaunchConfig,
    params: &P,
    name: &str,
    opts: RunOptions,
) -> Result<()> {
    let mut builder = stream.launch_builder(func);
    builder.arg(params);
    // SAFETY: `params` matches the kernel's parameter struct field for field (params.rs);
    // every pointer in it addresses a live window buffer sized for the grid, and the
    // kernels bound every access by the sizes passed alongside.
    unsafe { builder.launch(cfg) }.map_err(|e| Error::Cuda {
        op: format!(
            "launching {name} (grid {:?}, block {:?})",
            cfg.grid_dim, cfg.block_dim
        ),
        detail: e.to_string(),
    })?;
    if opts.sync_each {
        stream.synchronize().map_err(|e| Error::Cuda {
            op: format!("running {name}"),
            detail: e.to_string(),
        })?;
    }
    Ok(())
}
