//! The CPU backend: the chunked gated delta rule in two stages (column write, scan),
//! parallel across sequences, heads and value slices.

mod column_write;
pub mod exec;
pub(crate) mod exp;
pub mod gemm;
mod scan;
mod segments;
mod sparse;
mod step;
mod workspace;

use std::marker::PhantomData;

use rayon::prelude::*;

use crate::backend::Backend;
use crate::config::MemoryConfig;
use crate::error::Result;
use crate::inputs::{check_forward_call, ForwardInputs, InputRows};
use crate::state::State;

pub use exec::CpuExec;
pub use gemm::Isa;
use gemm::LANES;
use workspace::Workspace;

/// Runs the memory on the CPU with rayon threads.
#[derive(Default)]
pub struct CpuBackend {
    exec: CpuExec,
}

impl CpuBackend {
    /// Uses the best instruction set of this CPU and rayon's global thread pool.
    pub fn new() -> Self {
        CpuBackend {
            exec: CpuExec::new(),
        }
    }

    /// Forces an instruction set (the portable kernels run everywhere).
    pub fn with_isa(self, isa: Isa) -> Self {
        CpuBackend {
            exec: self.exec.with_isa(isa),
        }
    }

    /// Runs on a pool of its own with `threads` threads.
    pub fn with_threads(self, threads: usize) -> Result<Self> {
        Ok(CpuBackend {
            exec: self.exec.with_threads(threads)?,
        })
    }

    /// The instruction set this backend's kernels use.
    pub fn isa(&self) -> Isa {
        self.exec.isa()
    }

    fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.exec.install(f)
    }

    fn threads(&self) -> usize {
        self.exec.threads()
    }
}

impl Backend for CpuBackend {
    fn open<'a>(
        &'a self,
        config: &MemoryConfig,
        state: State,
    ) -> Result<Box<dyn crate::backend::MemorySession + 'a>> {
        Ok(Box::new(crate::backend::HostSession::new(
            self, config, state,
        )?))
    }

    fn name(&self) -> String {
        format!("cpu ({}, {} threads)", self.isa().name(), self.threads())
    }

    fn forward_rows(
        &self,
        config: &MemoryConfig,
        inputs: &dyn InputRows,
        state: &mut State,
        out: &mut [f32],
    ) -> Result<()> {
        self.forward_generic(config, inputs, state, out)
    }

    /// Tensors in memory get their own instance of the loop, with the row reads
    /// inlined instead of called through the trait object.
    fn forward_into(
        &self,
        config: &MemoryConfig,
        inputs: &ForwardInputs<'_>,
        state: &mut State,
        out: &mut [f32],
    ) -> Result<()> {
        self.forward_generic(config, inputs, state, out)
    }

    /// One read and one write of the state per token (generation), instead of a padded
    /// chunk.
    fn decode_into(
        &self,
        config: &MemoryConfig,
        inputs: &ForwardInputs<'_>,
        state: &mut State,
        out: &mut [f32],
    ) -> Result<()> {
        check_forward_call(config, inputs, state, out)?;
        let tokens_seen = state.tokens_after(inputs.tokens as u64)?;
        if inputs.tokens > 0 {
            let isa = self.isa();
            self.install(|| step::run(isa, config, inputs, state.values_mut(), out));
        }
        state.set_tokens_seen(tokens_seen);
        Ok(())
    }
}

impl CpuBackend {
    fn forward_generic<R: InputRows + ?Sized>(
        &self,
        config: &MemoryConfig,
        inputs: &R,
        state: &mut State,
        out: &mut [f32],
    ) -> Result<()> {
        check_forward_call(config, inputs, state, out)?;
        let (batch, tokens) = (inputs.batch(), inputs.tokens());
        let tokens_seen = state.tokens_after(tokens as u64)?;
        if tokens > 0 {
            let tasks = split_tasks(config, batch, self.threads());
            let out = SharedMut::new(out);
            let state_values = SharedMut::new(state.values_mut());
            let isa = self.isa();
            self.install(|| {
                tasks.par_iter().for_each(|task| {
                    run_task(isa, config, inputs, task, &state_values, &out);
                })
            });
        }
        state.set_tokens_seen(tokens_seen);
        Ok(())
    }
}

/// One unit of parallel work: a sequence, a head and a slice of value columns.
/// Value columns of the delta rule never mix, so slices are independent.
struct Task {
    b: usize,
    h: usize,
    v0: usize,
    v1: usize,
}

/// Enough tasks to keep every thread busy; value slices only when sequences × heads
/// are too few, since each slice repeats the chunk preparation.
fn split_tasks(config: &MemoryConfig, batch: usize, threads: usize) -> Vec<Task> {
    let heads = batch * config.heads;
    // Nothing to do, and the split below would divide by zero.
    if heads == 0 || config.value_dim == 0 {
        return Vec::new();
    }
    let max_slices = config.value_dim.div_ceil(LANES);
    let slices = threads.div_ceil(heads).clamp(1, max_slices);
    let width = config.value_dim.div_ceil(slices).div_ceil(LANES) * LANES;
    let mut tasks = Vec::new();
    for b in 0..batch {
        for h in 0..config.heads {
            let mut v0 = 0;
            while v0 < config.value_dim {
                let v1 = (v0 + width).min(config.value_dim);
                tasks.push(Task { b, h, v0, v1 });
                v0 = v1;
            }
        }
    }
    tasks
}

fn run_task<R: InputRows + ?Sized>(
    isa: Isa,
    config: &MemoryConfig,
    inputs: &R,
    task: &Task,
    state: &SharedMut<'_>,
    out: &SharedMut<'_>,
) {
    let seq = SequenceView {
        config,
        rows: inputs,
        tokens: inputs.tokens(),
        v_cols: task.v1 - task.v0,
        scale: config.effective_scale(),
        b: task.b,
        h: task.h,
        v0: task.v0,
    };
    let mut ws = Workspace::new(config.chunk_size, config.key_dim, seq.v_cols);
    let head_start = (task.b * config.heads + task.h) * config.key_dim * config.value_dim;
    for a in 0..config.key_dim {
        let row = head_start + a * config.value_dim + task.v0;
        state.read(row, &mut ws.s[a * ws.vs..a * ws.vs + seq.v_cols]);
    }
    scan::run_sequence(isa, &mut ws, &seq, config.chunk_size, out);
    for a in 0..config.key_dim {
        let row = head_start + a * config.value_dim + task.v0;
        state.write(row, &ws.s[a * ws.vs..a * ws.vs + seq.v_cols]);
    }
}

/// One task's view of the `[B, T, H, *]` inputs and outputs.
pub(crate) struct SequenceView<'a, R: InputRows + ?Sized> {
    pub config: &'a MemoryConfig,
    pub rows: &'a R,
    pub tokens: usize,
    /// Value columns of this task's slice.
    pub v_cols: usize,
    pub scale: f32,
    pub b: usize,
    pub h: usize,
    pub v0: usize,
}

impl<R: InputRows + ?Sized> SequenceView<'_, R> {
    /// Where row `t` of this task's value slice goes in `o: [B, T, H, V]`.
    #[inline(always)]
    pub(crate) fn out_offset(&self, t: usize) -> usize {
        let c = self.config;
        ((self.b * self.tokens + t) * c.heads + self.h) * c.value_dim + self.v0
    }
}

/// A mutable buffer that parallel tasks write in disjoint ranges.
pub(crate) struct SharedMut<'a> {
    ptr: *mut f32,
    len: usize,
    _buf: PhantomData<&'a mut [f32]>,
}

// SAFETY: every task reads and writes only ranges that no other task touches (its own
// sequence, head and value slice here; its own query rows in the attention baseline),
// and the buffer outlives the tasks.
unsafe impl Send for SharedMut<'_> {}
// SAFETY: as for Send: shared references hand out only disjoint ranges.
unsafe impl Sync for SharedMut<'_> {}

impl<'a> SharedMut<'a> {
    pub(crate) fn new(buf: &'a mut [f32]) -> Self {
        SharedMut {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
            _buf: PhantomData,
        }
    }

    #[inline(always)]
    pub(crate) fn write(&self, start: usize, values: &[f32]) {
        assert!(start + values.len() <= self.len, "write out of range");
        // SAFETY: in bounds by the assert; the range belongs to the calling task.
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), self.ptr.add(start), values.len()) }
    }

    fn read(&self, start: usize, dst: &mut [f32]) {
        assert!(start + dst.len() <= self.len, "read out of range");
        // SAFETY: as for `write`.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(start), dst.as_mut_ptr(), dst.len()) }
    }
}
