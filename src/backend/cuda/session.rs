//! A memory resident on the device: the state is uploaded once at open and stays in
//! device memory while windows stream through it; only each window's inputs and
//! outputs cross the bus. The host sees the state again only through a snapshot or
//! the hand-back, and each of those (and the upload at open) counts as a whole-state
//! copy for `backend::session::state_copies`.

use crate::backend::session::{count_state_copy, MemorySession};
use crate::config::MemoryConfig;
use crate::error::{Error, Result};
use crate::inputs::{ForwardInputs, InputRows};
use crate::state::{Source, State};
use crate::tensor::check_output_len;

use super::buffers::DeviceBuffer;
use super::{CudaBackend, Resident};

/// One batch of sequences' states held on a CUDA device between calls.
pub(crate) struct CudaSession<'a> {
    backend: &'a CudaBackend,
    config: MemoryConfig,
    batch: usize,
    tokens_seen: u64,
    /// The context the opened state was streamed from: snapshots keep it.
    source: Source,
    state: DeviceBuffer,
}

impl<'a> CudaSession<'a> {
    /// Uploads `state` (checked against `config`) to the device of `backend`.
    pub fn open(backend: &'a CudaBackend, config: &MemoryConfig, state: State) -> Result<Self> {
        config.validate()?;
        let batch = state.batch();
        state.check_matches(config, batch)?;
        backend.check_supported(config, batch)?;
        backend.bind()?;
        let bytes = std::mem::size_of_val(state.values());
        let mut buf = DeviceBuffer::new(&backend.stream, "session state", bytes)?;
        buf.upload(&backend.stream, 0, bytemuck::cast_slice(state.values()))?;
        count_state_copy();
        Ok(CudaSession {
            backend,
            config: config.clone(),
            batch,
            tokens_seen: state.tokens_seen(),
            source: state.source(),
            state: buf,
        })
    }

    fn run(&mut self, inputs: &ForwardInputs<'_>, out: &mut [f32]) -> Result<()> {
        if inputs.batch != self.batch {
            return Err(Error::Query(format!(
                "the session holds {} sequence(s), the window has {}",
                self.batch, inputs.batch
            )));
        }
        // The checks of a plain forward; the state's were made at open.
        inputs.check(&self.config)?;
        check_output_len(out, inputs.output_len(&self.config))?;
        let after = self.tokens_seen.saturating_add(inputs.tokens as u64);
        if after > crate::state::MAX_TOKENS {
            return Err(Error::StateMismatch(format!(
                "the session has seen {} tokens; {} more would pass the limit of {}",
                self.tokens_seen,
                inputs.tokens,
                crate::state::MAX_TOKENS
            )));
        }
        self.backend
            .forward_on(&self.config, inputs, Resident::Device(&self.state), out)?;
        self.tokens_seen = after;
        Ok(())
    }

    /// One window whose inputs a model writes on the device (see
    /// [`CudaBackend::forward_device`]); the state stays resident.
    pub fn feed_device(
        &mut self,
        dtype: crate::tensor::DType,
        tokens: usize,
        fill: &mut dyn FnMut(&super::WindowIo) -> Result<()>,
        read: &mut dyn FnMut(&super::WindowIo) -> Result<()>,
    ) -> Result<()> {
        if self.batch != 1 {
            return Err(Error::Query(format!(
                "a model's memory holds one sequence, this session {}",
                self.batch
            )));
        }
        let after = self.tokens_seen.saturating_add(tokens as u64);
        if after > crate::state::MAX_TOKENS {
            return Err(Error::StateMismatch(format!(
                "the session has seen {} tokens; {tokens} more would pass the limit of {}",
                self.tokens_seen,
                crate::state::MAX_TOKENS
            )));
        }
        self.backend
            .forward_device(&self.config, dtype, tokens, &self.state, fill, read)?;
        self.tokens_seen = after;
        Ok(())
    }

    /// A copy of the state on the host (counted); the session goes on.
    pub fn snapshot_state(&self) -> Result<State> {
        self.download()
    }

    fn download(&self) -> Result<State> {
        self.backend.bind()?;
        let mut state = State::try_zeros(&self.config, self.batch, "a session snapshot")?;
        self.state.download(
            &self.backend.stream,
            0,
            bytemuck::cast_slice_mut(state.values_mut()),
        )?;
        count_state_copy();
        state.set_source(self.source);
        state.set_tokens_seen(self.tokens_seen);
        Ok(state)
    }
}

impl MemorySession for CudaSession<'_> {
    fn config(&self) -> &MemoryConfig {
        &self.config
    }

    fn tokens_seen(&self) -> u64 {
        self.tokens_seen
    }

    /// Rows (a model's features) are written out on the host, then uploaded like
    /// tensors.
    fn feed(&mut self, rows: &dyn InputRows, out: &mut [f32]) -> Result<()> {
        let backend = self.backend;
        let mut staged = backend.staged.lock().unwrap_or_else(|p| p.into_inner());
        staged.fill(rows, &self.config)?;
        self.run(&staged.inputs(), out)
    }

    /// The same path as `feed`: a window of a few tokens already runs token by token
    /// on the resident state (`kernels/step.cu`, chosen by the launch plan).
    fn decode(&mut self, inputs: &ForwardInputs<'_>, out: &mut [f32]) -> Result<()> {
        self.run(inputs, out)
    }

    fn snapshot(&self) -> Result<State> {
        self.download()
    }

    fn into_state(self: Box<Self>) -> Result<State> {
        self.download()
    }
}
