//! Executes launch plans (`plan.rs`) on a window: buffer names become device addresses,
//! kernels are looked up by entry point, and each launch goes to the stream in order.

use std::sync::Arc;

use cudarc::driver::{CudaFunction, CudaStream, LaunchConfig, PushKernelArg};

use super::buffers::DeviceBuffer;
use super::module::Kernels;
use super::plan::{self, Buf, Launch, Params, PlanOptions, Ptr};
use super::window::Window;
use crate::error::{Error, Result};

/// How a window's kernels run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RunOptions {
    pub plan: PlanOptions,
    /// Wait for each kernel and report its failure under its own name (test mode);
    /// otherwise a fault surfaces at the next synchronisation, named after that.
    pub sync_each: bool,
}

/// One window of `tokens` tokens per sequence: the state in `state` (the window's own,
/// or a session's resident one) is read at the start and replaced by the state after
/// the window; outputs land in `win.o`. A short window runs token by token
/// (`plan::uses_step`), a longer one as stage 1 and the scan.
pub(crate) fn run_window(
    kernels: &Kernels,
    stream: &Arc<CudaStream>,
    win: &Window,
    state: &DeviceBuffer,
    tokens: usize,
    scale: f32,
    opts: RunOptions,
) -> Result<()> {
    let plan = plan::window_plan(&win.shape, tokens, scale, opts.plan, &kernels.layout);
    execute(kernels, stream, win, state, &plan, opts)
}

/// Stage 1; with `opts.plan.bf16_fast` (bf16 inputs only) W, U, P are stored as bf16
/// for the FAST scan.
pub(crate) fn prep(
    kernels: &Kernels,
    stream: &Arc<CudaStream>,
    win: &Window,
    tokens: usize,
    scale: f32,
    opts: RunOptions,
) -> Result<()> {
    let plan = plan::prep_plan(&win.shape, tokens, scale, opts.plan);
    execute(kernels, stream, win, &win.state, &plan, opts)
}

/// The scan from stage-1 outputs already in the window.
pub(crate) fn scan(
    kernels: &Kernels,
    stream: &Arc<CudaStream>,
    win: &Window,
    tokens: usize,
    scale: f32,
    opts: RunOptions,
) -> Result<()> {
    let plan = plan::scan_plan(&win.shape, tokens, scale, opts.plan, &kernels.layout);
    execute(kernels, stream, win, &win.state, &plan, opts)
}

fn execute(
    kernels: &Kernels,
    stream: &Arc<CudaStream>,
    win: &Window,
    state: &DeviceBuffer,
    plan: &[Launch],
    opts: RunOptions,
) -> Result<()> {
    // `state` has the bytes `Buf::State` names for this shape (the session checks it
    // at open), so the plan's bounds hold for it as for the window's own.
    let addr = |p: Ptr| match p {
        None => 0,
        Some(Buf::State) => state.ptr(stream),
        Some(b) => win.buffer(b).ptr(stream),
    };
    for l in plan {
        let f = kernels.function(&l.kernel)?;
        let cfg = LaunchConfig {
            grid_dim: l.grid,
            block_dim: l.block,
            shared_mem_bytes: l.shared_mem_bytes,
        };
        let name = l.kernel.entry();
        match &l.params {
            Params::Prep(p) => launch(stream, f, cfg, &p.resolve(addr), &name, opts)?,
            Params::Scan(p) => launch(stream, f, cfg, &p.resolve(addr), &name, opts)?,
            Params::Combine(p) => launch(stream, f, cfg, &p.resolve(addr), &name, opts)?,
            Params::Step(p) => launch(stream, f, cfg, &p.resolve(addr), &name, opts)?,
        }
    }
    Ok(())
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
    // every pointer in it addresses a live window buffer sized for the grid (plan.rs
    // sizes both, and its tests and the emulator check them), and the kernels bound
    // every access by the sizes passed alongside.
    unsafe { builder.launch(cfg) }.map_err(|e| {
        Error::cuda(
            format!(
                "launching {name} (grid {:?}, block {:?})",
                cfg.grid_dim, cfg.block_dim
            ),
            e,
        )
    })?;
    if opts.sync_each {
        stream
            .synchronize()
            .map_err(|e| Error::cuda(format!("running {name}"), e))?;
    }
    Ok(())
}
