//! The CUDA backend: the kernels of `kernels/*.cu` (embedded as PTX by build.rs),
//! loaded with cudarc, behind the same [`Backend`] trait as the CPU backend.
//!
//! A forward copies the inputs window by window (a window is a multiple of 64 tokens of
//! every sequence) into device buffers allocated once, runs stage 1 (`column_write.cu`)
//! and the scan (`scan.cu`) on them, or for a window of at most 16 tokens the
//! token-by-token kernel (`step.cu`), and copies the outputs back; the state stays on
//! the device from the first window to the last. Chunks are always 64 tokens on the GPU:
//! `MemoryConfig::chunk_size` only changes rounding, and only on the CPU.

pub(crate) mod buffers;
#[cfg(test)]
pub(crate) mod c_layout;
pub(crate) mod emu_text;
pub(crate) mod gemm;
mod launch;
pub(crate) mod module;
mod params;
pub(crate) mod plan;
pub(crate) mod session;
mod window;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use cudarc::driver::{CudaContext, CudaStream, DriverError};

use crate::backend::device::{self, CudaDeviceInfo};
use crate::backend::Backend;
use crate::config::MemoryConfig;
use crate::error::{Error, Result};
use crate::inputs::{check_forward_call, ForwardInputs, InputRows, MaterializedRows};
use crate::state::State;
use crate::tensor::DType;

#[doc(hidden)]
pub use emu_text::{emu_plan_text, EmuCase};
pub use gemm::GemmShape;
use module::Kernels;
pub use module::{driver_version, PTX_DRIVER};
use window::{Shape, Window, CHUNK};

/// Maps a driver error to [`Error::Cuda`] naming the operation.
pub(crate) fn cuda_err(op: &str) -> impl Fn(DriverError) -> Error + '_ {
    move |e| Error::cuda(op, e)
}

/// Runs the memory on one CUDA device.
pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    kernels: Kernels,
    info: CudaDeviceInfo,
    sm_count: usize,
    /// Buffers of the last forward, reused while the shape allows.
    window: Mutex<Option<Window>>,
    window_tokens: Option<usize>,
    segments: Option<usize>,
    bf16_fast: bool,
    checks: bool,
    /// Host staging for inputs that come as rows (a model's features), reused.
    staged: Mutex<MaterializedRows>,
}

/// What [`CudaBackend::time_resident`] times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimedStages {
    /// The whole forward: stage 1 and the scan.
    All,
    /// Stage 1 (`column_write.cu`) alone.
    PrepOnly,
    /// Stage 1 and the scan even where the plan would run the window token by token
    /// (`step.cu`, windows of at most 16 tokens): the path a short window would take
    /// otherwise, so that a benchmark can compare the two and place the threshold.
    Chunked,
}

/// Stage-1 outputs of a whole input, as the GPU computed them (for tests): per
/// (sequence, head, chunk) `W [64 × kp]`, `U [64 × V]`, `P [64 × 64]`, `γ [64]`.
#[derive(Clone, Debug)]
pub struct PrepOutputs {
    /// Key dimension padded to the kernels' tile width: the row length of `w`.
    pub kp: usize,
    /// Chunks of 64 tokens per sequence.
    pub num_chunks: usize,
    /// `W`, `[B, H, chunks, 64, kp]`: the factor of the start state in the chunk's
    /// corrected values (`V' = U − W S₀`).
    pub w: Vec<f32>,
    /// `U`, `[B, H, chunks, 64, V]`: the chunk's values after the in-chunk solve, before
    /// the start state's share is taken off.
    pub u: Vec<f32>,
    /// `P`, `[B, H, chunks, 64, 64]`: the masked, decayed query–key products.
    pub p: Vec<f32>,
    /// `γ`, `[B, H, chunks, 64]`: cumulative log-decay within the chunk.
    pub gamma: Vec<f32>,
}

impl CudaBackend {
    /// Opens device `ordinal` and loads the kernels; errors say what is missing.
    pub fn new(ordinal: usize) -> Result<Self> {
        if let Some(missing) = device::cuda_missing(ordinal) {
            return Err(device::cuda_unavailable(ordinal, &missing));
        }
        let ctx = CudaContext::new(ordinal).map_err(cuda_err("creating a context"))?;
        // One stream orders every copy and launch; cudarc's per-buffer events would
        // only add work (DESIGN.md §4).
        // SAFETY: no other stream of this context touches these buffers.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.default_stream();
        let kernels = Kernels::load(&ctx, &stream)?;
        let attr = |a| ctx.attribute(a).map_err(cuda_err("querying the device"));
        use cudarc::driver::sys::CUdevice_attribute::*;
        let info = CudaDeviceInfo {
            ordinal,
            name: ctx.name().map_err(cuda_err("querying the device name"))?,
            compute_capability: (
                attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
                attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
            ),
            memory_bytes: ctx.total_mem().map_err(cuda_err("querying memory"))?,
        };
        let sm_count = attr(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?.max(1) as usize;
        Ok(CudaBackend {
            ctx,
            stream,
            kernels,
            info,
            sm_count,
            window: Mutex::new(None),
            window_tokens: None,
            segments: None,
            bf16_fast: false,
            checks: false,
            staged: Mutex::new(MaterializedRows::default()),
        })
    }

    /// Tokens per sequence per window (rounded up to the chunk); default: what fits a
    /// quarter of the free device memory, at most 4 GiB.
    pub fn with_window_tokens(mut self, tokens: usize) -> Self {
        self.window_tokens = Some(tokens.max(1).div_ceil(CHUNK) * CHUNK);
        self
    }

    /// Forces the number of scan segments per window (1: the plain scan); default: what
    /// the cost model of `segments_for` picks.
    pub fn with_segments(mut self, segments: usize) -> Self {
        self.segments = Some(segments.max(1));
        self
    }

    /// bf16 inputs only: run the FAST kernels. Stage 1 stores W, U, P as bf16 (half its
    /// output bytes, and half of what the scan reads back), and the scan gives the tensor
    /// cores every operand (W, the state, P, V') as one bf16 value instead of an
    /// f32-accurate hi/lo pair: one MMA per product instead of two or three. Errors of
    /// 2e-3 to 8e-3 of the largest output instead of ~1e-5 (kernels/emu measures both;
    /// docs/gpu-notes.md). Default: off.
    pub fn with_bf16_fast(mut self, on: bool) -> Self {
        self.bf16_fast = on;
        self
    }

    fn run_options(&self, segments: usize) -> launch::RunOptions {
        launch::RunOptions {
            plan: plan::PlanOptions {
                segments,
                bf16_fast: self.bf16_fast,
            },
            sync_each: self.checks,
        }
    }

    /// [`CudaBackend::run_options`] with the exact kernels, whatever
    /// [`CudaBackend::with_bf16_fast`] says.
    fn exact_options(&self, segments: usize) -> launch::RunOptions {
        let mut opts = self.run_options(segments);
        opts.plan.bf16_fast = false;
        opts
    }

    /// Test mode: poison every device output with NaN before each window, and check the
    /// guard bytes around every device buffer after each forward.
    pub fn with_checks(mut self, on: bool) -> Self {
        self.checks = on;
        self
    }

    /// The device this backend runs on, as the driver reported it at start.
    pub fn device_info(&self) -> &CudaDeviceInfo {
        &self.info
    }

    /// Free and total device memory in bytes, as the driver reports them now.
    pub fn memory_info(&self) -> Result<(usize, usize)> {
        self.bind()?;
        self.ctx
            .mem_get_info()
            .map_err(cuda_err("querying free memory"))
    }

    /// How the kernels were loaded (PTX, or NVRTC for an older driver).
    pub fn kernels_loaded_from(&self) -> &str {
        &self.kernels.loaded_from
    }

    /// Fails, saying why, unless the kernels can run a memory of `config` for `batch`
    /// sequences.
    pub fn check_supported(&self, config: &MemoryConfig, batch: usize) -> Result<()> {
        self.kernels.check_key_dim(config.key_dim)?;
        if config.heads > 65_535 || batch > 65_535 {
            return Err(Error::Config(format!(
                "the CUDA kernels take at most 65535 heads and sequences, found {} and {batch}",
                config.heads
            )));
        }
        Ok(())
    }

    fn shape(
        &self,
        config: &MemoryConfig,
        batch: usize,
        dtype: DType,
        tokens: usize,
    ) -> Result<Shape> {
        let mut shape = Shape {
            batch,
            heads: config.heads,
            key_dim: config.key_dim,
            value_dim: config.value_dim,
            kp: config.key_dim.div_ceil(16) * 16,
            dtype,
            t_cap: CHUNK,
            g_cap: 1,
        };
        let want = tokens.max(1).div_ceil(CHUNK) * CHUNK;
        shape.t_cap = match self.window_tokens {
            Some(t) => t.min(want),
            None => {
                let (free, _) = self
                    .ctx
                    .mem_get_info()
                    .map_err(cuda_err("querying free memory"))?;
                let budget = (free / 4).clamp(256 << 20, 4 << 30);
                let fit = (budget / shape.bytes_per_token().max(1)) / CHUNK * CHUNK;
                fit.max(CHUNK).min(want)
            }
        };
        if shape.t_cap > i32::MAX as usize / 2 {
            shape.t_cap = (i32::MAX as usize / 2) / CHUNK * CHUNK;
        }
        shape.g_cap = self.segments_for(&shape, shape.chunks());
        Ok(shape)
    }

    /// Segments for a window of `nc` chunks, from a cost model in units of one block
    /// doing one chunk: a pass of N blocks (one block per multiprocessor fits, the scan
    /// takes 156 KB of shared memory) costs ceil(N / SMs) waves × the chunks each block
    /// walks. Plain: `slices·B·H` blocks × `nc` chunks. Segmented with G: the map pass,
    /// `(K+V)/32·B·H·(G−1)` blocks × nc/G chunks at ~0.7 (no queries, no outputs), plus the
    /// output pass, `slices·B·H·G` blocks × nc/G. Segments pay only when the plain scan
    /// leaves most multiprocessors idle (one sequence, few heads); each is ≥ 16 chunks.
    fn segments_for(&self, shape: &Shape, nc: usize) -> usize {
        match self.segments {
            Some(g) => plan::forced_segments(g, nc),
            None => choose_segments(shape, nc, self.sm_count, self.kernels.layout.slice),
        }
    }

    /// The window for `shape`, reusing the last one when it holds that shape: calls of
    /// other lengths (a stream's last window, split calls) allocate nothing.
    fn window_for<'a>(&self, slot: &'a mut Option<Window>, shape: Shape) -> Result<&'a mut Window> {
        if slot.as_ref().is_none_or(|w| !w.shape.holds(&shape)) {
            *slot = None; // free the old buffers before allocating new ones
            *slot = Some(Window::new(&self.stream, shape)?);
        }
        Ok(slot.as_mut().expect("just set"))
    }

    fn sync(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(cuda_err("running the kernels"))
    }

    /// Times the forward with inputs already on the device, for benchmarks: the inputs
    /// (one window, all of `inputs.tokens`) are copied once, then `windows` windows run
    /// back to back carrying the state, as a stream of `windows × tokens` tokens whose
    /// windows repeat the same values (the kernels' cost does not depend on values).
    /// Returns the seconds of each of `repeats` timed runs after one warm-up run.
    /// `stages` = [`TimedStages::PrepOnly`] times stage 1 alone, so that a benchmark can
    /// tell the two stages' shares apart.
    pub fn time_resident(
        &self,
        config: &MemoryConfig,
        inputs: &ForwardInputs<'_>,
        state: &State,
        windows: usize,
        repeats: usize,
        stages: TimedStages,
    ) -> Result<Vec<f64>> {
        inputs.validate(config)?;
        state.check_matches(config, inputs.batch)?;
        self.check_supported(config, inputs.batch)?;
        let dtype = device_dtype(inputs);
        let shape = Shape {
            t_cap: inputs.tokens.max(1).div_ceil(CHUNK) * CHUNK,
            ..self.shape(config, inputs.batch, dtype, inputs.tokens)?
        };
        let shape = Shape {
            g_cap: self.segments_for(&shape, shape.chunks()),
            ..shape
        };
        let mut slot = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let win = self.window_for(&mut slot, shape)?;
        win.upload_inputs(&self.stream, inputs, 0, inputs.tokens)?;
        let segments = self.segments_for(&shape, inputs.tokens.div_ceil(CHUNK));
        let mut times = Vec::with_capacity(repeats);
        let scale = config.effective_scale();
        let opts = self.run_options(segments);
        for run in 0..=repeats {
            win.state
                .upload(&self.stream, 0, bytemuck::cast_slice(state.values()))?;
            self.sync()?;
            let t = Instant::now();
            // The warm-up (run 0) loads and JIT-compiles the kernels: one window does it.
            let n = if run == 0 { windows.min(1) } else { windows };
            for _ in 0..n {
                match stages {
                    TimedStages::All => launch::run_window(
                        &self.kernels,
                        &self.stream,
                        win,
                        &win.state,
                        inputs.tokens,
                        scale,
                        opts,
                    )?,
                    TimedStages::PrepOnly => {
                        launch::prep(&self.kernels, &self.stream, win, inputs.tokens, scale, opts)?
                    }
                    TimedStages::Chunked => {
                        launch::prep(&self.kernels, &self.stream, win, inputs.tokens, scale, opts)?;
                        launch::scan(&self.kernels, &self.stream, win, inputs.tokens, scale, opts)?
                    }
                }
            }
            self.sync()?;
            if run > 0 {
                times.push(t.elapsed().as_secs_f64());
            }
        }
        Ok(times)
    }

    /// Stage 1 alone over all of `inputs` (one window), for tests. Always the exact
    /// stage 1 (f32 outputs), whatever [`CudaBackend::with_bf16_fast`] says.
    pub fn chunk_prep(
        &self,
        config: &MemoryConfig,
        inputs: &ForwardInputs<'_>,
    ) -> Result<PrepOutputs> {
        inputs.validate(config)?;
        self.check_supported(config, inputs.batch)?;
        let win = self.whole_window(config, inputs, 1)?;
        launch::prep(
            &self.kernels,
            &self.stream,
            &win,
            inputs.tokens,
            config.effective_scale(),
            self.exact_options(1),
        )?;
        let s = win.shape;
        let rows = s.batch * s.heads * inputs.tokens.div_ceil(CHUNK) * CHUNK;
        let read = |buf: &buffers::DeviceBuffer, per_row: usize| -> Result<Vec<f32>> {
            let mut v = vec![0.0f32; rows * per_row];
            // Stage-1 outputs are packed by chunk; the window holds exactly `rows` rows
            // only when t_cap is the rounded token count, which whole_window ensures.
            buf.download(&self.stream, 0, bytemuck::cast_slice_mut(&mut v))?;
            Ok(v)
        };
        let out = PrepOutputs {
            kp: s.kp,
            num_chunks: inputs.tokens.div_ceil(CHUNK),
            w: read(&win.w, s.kp)?,
            u: read(&win.u, s.value_dim)?,
            p: read(&win.p, CHUNK)?,
            gamma: read(&win.gamma, 1)?,
        };
        self.finish_checks(&win)?;
        Ok(out)
    }

    /// The scan alone, from given stage-1 outputs, over all of `inputs` (one window)
    /// with `segments` segments; updates `state` and returns the outputs. For tests.
    /// Always the exact scan: `prep` holds f32 stage-1 outputs.
    pub fn scan_prepared(
        &self,
        config: &MemoryConfig,
        inputs: &ForwardInputs<'_>,
        prep: &PrepOutputs,
        state: &mut State,
        segments: usize,
    ) -> Result<Vec<f32>> {
        inputs.validate(config)?;
        state.check_matches(config, inputs.batch)?;
        self.check_supported(config, inputs.batch)?;
        let mut win = self.whole_window(config, inputs, segments)?;
        for (buf, data) in [
            (&mut win.w, &prep.w),
            (&mut win.u, &prep.u),
            (&mut win.p, &prep.p),
            (&mut win.gamma, &prep.gamma),
        ] {
            buf.upload(&self.stream, 0, bytemuck::cast_slice(data))?;
        }
        win.state
            .upload(&self.stream, 0, bytemuck::cast_slice(state.values()))?;
        launch::scan(
            &self.kernels,
            &self.stream,
            &win,
            inputs.tokens,
            config.effective_scale(),
            self.exact_options(segments),
        )?;
        let mut out = vec![0.0f32; inputs.output_len(config)];
        win.download_outputs(&self.stream, &mut out, inputs.tokens, 0, inputs.tokens)?;
        win.state.download(
            &self.stream,
            0,
            bytemuck::cast_slice_mut(state.values_mut()),
        )?;
        self.finish_checks(&win)?;
        state.set_tokens_seen(state.tokens_after(inputs.tokens as u64)?);
        Ok(out)
    }

    /// A fresh window holding all of `inputs`, inputs copied, outputs poisoned.
    fn whole_window(
        &self,
        config: &MemoryConfig,
        inputs: &ForwardInputs<'_>,
        segments: usize,
    ) -> Result<Window> {
        let shape = Shape {
            t_cap: inputs.tokens.max(1).div_ceil(CHUNK) * CHUNK,
            g_cap: segments.max(1),
            ..self.shape(config, inputs.batch, device_dtype(inputs), inputs.tokens)?
        };
        let mut win = Window::new(&self.stream, shape)?;
        win.upload_inputs(&self.stream, inputs, 0, inputs.tokens)?;
        win.poison_outputs(&self.stream)?;
        Ok(win)
    }

    /// Streams `inputs` window by window through a state on the device: the window's
    /// own (uploaded from the host first and downloaded after: a plain forward) or a
    /// session's resident one, which stays where it is. Only inputs and outputs cross
    /// the bus for a session.
    fn forward_on(
        &self,
        config: &MemoryConfig,
        inputs: &ForwardInputs<'_>,
        mut state: Resident<'_>,
        out: &mut [f32],
    ) -> Result<()> {
        self.check_supported(config, inputs.batch)?;
        let tokens = inputs.tokens;
        // No sequences: nothing to launch (a grid dimension of 0 is a launch error).
        if tokens == 0 || inputs.batch == 0 {
            return Ok(());
        }
        self.bind()?;
        let shape = self.shape(config, inputs.batch, device_dtype(inputs), tokens)?;
        let mut slot = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let win = self.window_for(&mut slot, shape)?;
        if let Resident::Host(host) = &state {
            win.state
                .upload(&self.stream, 0, bytemuck::cast_slice(host.values()))?;
        }
        for (t0, len) in plan::window_spans(tokens, shape.t_cap) {
            win.upload_inputs(&self.stream, inputs, t0, len)?;
            if self.checks {
                win.poison_outputs(&self.stream)?;
            }
            let segments = self.segments_for(&shape, len.div_ceil(CHUNK));
            let state_buf = match &state {
                Resident::Host(_) => &win.state,
                Resident::Device(buf) => *buf,
            };
            if state_buf.len() != plan::Buf::State.bytes(&shape) {
                return Err(Error::StateMismatch(format!(
                    "the device state holds {} bytes, the window's shape needs {}",
                    state_buf.len(),
                    plan::Buf::State.bytes(&shape)
                )));
            }
            launch::run_window(
                &self.kernels,
                &self.stream,
                win,
                state_buf,
                len,
                config.effective_scale(),
                self.run_options(segments),
            )?;
            win.download_outputs(&self.stream, out, tokens, t0, len)?;
        }
        if let Resident::Host(host) = &mut state {
            win.state
                .download(&self.stream, 0, bytemuck::cast_slice_mut(host.values_mut()))?;
        }
        self.finish_checks(win)
    }

    /// Runs one window of a memory whose inputs are written on the device: `fill`
    /// gets the window's input addresses (q, k, v in `dtype`, β, g; layout
    /// `[t_cap, H, ·]` of one sequence) and launches what writes them, the memory runs
    /// on the resident `state`, and `read` gets the outputs' address (`o`,
    /// `[t_cap, H, V]` f32) to launch what reads them. Everything goes to this
    /// backend's stream in order; nothing is copied to or from the host.
    pub(crate) fn forward_device(
        &self,
        config: &MemoryConfig,
        dtype: DType,
        tokens: usize,
        state: &buffers::DeviceBuffer,
        fill: &mut dyn FnMut(&WindowIo) -> Result<()>,
        read: &mut dyn FnMut(&WindowIo) -> Result<()>,
    ) -> Result<()> {
        self.check_supported(config, 1)?;
        if tokens == 0 {
            return Ok(());
        }
        let shape = Shape {
            t_cap: tokens.div_ceil(CHUNK) * CHUNK,
            ..self.shape(config, 1, dtype, tokens)?
        };
        let shape = Shape {
            g_cap: self.segments_for(&shape, shape.chunks()),
            ..shape
        };
        if state.len() != plan::Buf::State.bytes(&shape) {
            return Err(Error::StateMismatch(format!(
                "the device state holds {} bytes, the memory needs {}",
                state.len(),
                plan::Buf::State.bytes(&shape)
            )));
        }
        let mut slot = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let win = self.window_for(&mut slot, shape)?;
        if self.checks {
            win.poison_outputs(&self.stream)?;
        }
        let io = WindowIo {
            t_cap: win.shape.t_cap,
            q: win.q.ptr(&self.stream),
            k: win.k.ptr(&self.stream),
            v: win.v.ptr(&self.stream),
            beta: win.beta.ptr(&self.stream),
            g: win.g.ptr(&self.stream),
            o: win.o.ptr(&self.stream),
        };
        fill(&io)?;
        let segments = self.segments_for(&win.shape, tokens.div_ceil(CHUNK));
        launch::run_window(
            &self.kernels,
            &self.stream,
            win,
            state,
            tokens,
            config.effective_scale(),
            self.run_options(segments),
        )?;
        read(&io)?;
        if self.checks {
            self.finish_checks(win)?;
        }
        Ok(())
    }

    /// The stream every copy and launch of this backend goes to.
    pub(crate) fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The device context.
    pub(crate) fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// Whether test mode (poisoned outputs, guard checks) is on.
    pub(crate) fn checks(&self) -> bool {
        self.checks
    }

    /// Waits for everything queued on the stream; errors of earlier launches show here.
    pub(crate) fn synchronize(&self) -> Result<()> {
        self.sync()
    }

    /// Makes this backend's context current on the calling thread (sessions may move
    /// between threads).
    pub(crate) fn bind(&self) -> Result<()> {
        self.ctx
            .bind_to_thread()
            .map_err(cuda_err("binding the context"))
    }

    /// Guard checks (in test mode) of buffers outside a window.
    fn finish_checks_on(&self, bufs: &[&buffers::DeviceBuffer]) -> Result<()> {
        self.sync()?;
        if self.checks {
            bufs.iter().try_for_each(|b| b.check_guards(&self.stream))?;
        }
        Ok(())
    }

    fn finish_checks(&self, win: &Window) -> Result<()> {
        self.sync()?;
        if self.checks {
            win.check_guards(&self.stream)?;
        }
        Ok(())
    }
}

/// Device addresses of one window's memory inputs and outputs (one sequence).
#[derive(Clone, Copy, Debug)]
pub(crate) struct WindowIo {
    /// Tokens the window holds (rows of every buffer below).
    pub t_cap: usize,
    pub q: u64,
    pub k: u64,
    pub v: u64,
    pub beta: u64,
    pub g: u64,
    pub o: u64,
}

/// Where a forward's state lives while the windows run.
enum Resident<'s> {
    /// On the host: copied into the window before and back after (a plain forward).
    Host(&'s mut State),
    /// On the device, a session's: left there.
    Device(&'s buffers::DeviceBuffer),
}

/// The segment count with the lowest modelled cost (see `CudaBackend::segments_for`).
fn choose_segments(shape: &Shape, nc: usize, sms: usize, slice: usize) -> usize {
    let rows = shape.batch * shape.heads;
    let slices = shape.value_dim.div_ceil(slice) * rows;
    let aug = (shape.key_dim + shape.value_dim).div_ceil(slice) * rows;
    let waves = |blocks: usize| blocks.div_ceil(sms.max(1)) as f64;
    let cost = |g: usize| {
        let per = nc.div_ceil(g) as f64;
        if g == 1 {
            waves(slices) * per
        } else {
            0.7 * waves(aug * (g - 1)) * per + waves(slices * g) * per
        }
    };
    (1..=(nc / 16).clamp(1, 4 * sms.max(1)))
        .min_by(|&a, &b| cost(a).total_cmp(&cost(b)))
        .unwrap_or(1)
}

/// q, k, v go to the device in their own type when they share one, else as f32.
fn device_dtype(inputs: &ForwardInputs<'_>) -> DType {
    let d = inputs.q.dtype();
    if inputs.k.dtype() == d && inputs.v.dtype() == d {
        d
    } else {
        DType::F32
    }
}

impl Backend for CudaBackend {
    fn as_cuda(&self) -> Option<&CudaBackend> {
        Some(self)
    }

    fn open<'a>(
        &'a self,
        config: &MemoryConfig,
        state: State,
    ) -> Result<Box<dyn crate::backend::MemorySession + 'a>> {
        Ok(Box::new(session::CudaSession::open(self, config, state)?))
    }

    /// Rows (a model's features) are written out on the host, then uploaded like
    /// tensors; computing them on the device is future work.
    fn forward_rows(
        &self,
        config: &MemoryConfig,
        rows: &dyn InputRows,
        state: &mut State,
        out: &mut [f32],
    ) -> Result<()> {
        let mut staged = self.staged.lock().unwrap_or_else(|p| p.into_inner());
        staged.fill(rows, config)?;
        self.forward_into(config, &staged.inputs(), state, out)
    }

    fn name(&self) -> String {
        let (major, minor) = self.info.compute_capability;
        format!(
            "cuda:{} ({}, compute {major}.{minor})",
            self.info.ordinal, self.info.name
        )
    }

    fn forward_into(
        &self,
        config: &MemoryConfig,
        inputs: &ForwardInputs<'_>,
        state: &mut State,
        out: &mut [f32],
    ) -> Result<()> {
        check_forward_call(config, inputs, state, out)?;
        self.forward_on(config, inputs, Resident::Host(state), out)?;
        state.set_tokens_seen(state.tokens_after(inputs.tokens as u64)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(batch: usize, heads: usize, dim: usize) -> Shape {
        Shape {
            batch,
            heads,
            key_dim: dim,
            value_dim: dim,
            kp: dim,
            dtype: DType::BF16,
            t_cap: 65_536,
            g_cap: 1,
        }
    }

    #[test]
    fn segments_only_where_the_plain_scan_leaves_the_gpu_idle() {
        // H200: 132 multiprocessors, 32-column slices, windows of 1024 chunks.
        let g = |b, h, d| choose_segments(&shape(b, h, d), 1024, 132, 32);
        // 64 blocks: two segments (plain 1024 units; G = 2: a map pass of 128 blocks for
        // the first segment, 0.7 × 512, then 128 blocks × 512 = 870); three would need
        // two waves in each pass.
        assert_eq!(g(1, 16, 128), 2);
        // 512 blocks fill the GPU: plain.
        assert_eq!(g(8, 16, 128), 1);
        // 4 blocks: segments, each at least 16 chunks.
        let one_head = g(1, 1, 128);
        assert!((2..=64).contains(&one_head), "{one_head}");
        // Short windows cannot be cut below 16 chunks a segment.
        assert_eq!(choose_segments(&shape(1, 1, 128), 20, 132, 32), 1);
    }
}
