//! Backends compute the memory's forward; the CPU one runs everywhere.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod device;
pub mod session;
pub mod sparse;
pub(crate) mod split;

use crate::config::MemoryConfig;
use crate::error::Result;
use crate::inputs::{ForwardInputs, InputRows};
use crate::state::State;

pub use device::Device;
pub use session::{HostSession, MemorySession};
pub use sparse::{SparseBackend, SparseKeys, SparseWrites};

/// A place to run the memory. Implementations give the same results up to f32
/// rounding, whatever the chunking or the split of a sequence into calls.
pub trait Backend: Send + Sync {
    /// Human-readable description, e.g. `cpu (avx512, 2 threads)`.
    fn name(&self) -> String;

    /// Streams the inputs `rows` gives through `state` (updated in place) and writes
    /// the reads `o: [B, T, H, V]` into `out`.
    fn forward_rows(
        &self,
        config: &MemoryConfig,
        rows: &dyn InputRows,
        state: &mut State,
        out: &mut [f32],
    ) -> Result<()>;

    /// [`Backend::forward_rows`] over tensors in memory.
    fn forward_into(
        &self,
        config: &MemoryConfig,
        inputs: &ForwardInputs<'_>,
        state: &mut State,
        out: &mut [f32],
    ) -> Result<()> {
        self.forward_rows(config, inputs, state, out)
    }

    /// The same as [`Backend::forward_into`] for a few tokens per call (generation):
    /// token by token through the recurrence, one read and one write of the state
    /// each, instead of a padded chunk. Agrees with `forward_into` within f32
    /// rounding, not bit for bit. Backends without such a path run `forward_into`.
    fn decode_into(
        &self,
        config: &MemoryConfig,
        inputs: &ForwardInputs<'_>,
        state: &mut State,
        out: &mut [f32],
    ) -> Result<()> {
        self.forward_into(config, inputs, state, out)
    }

    /// Opens a session on `state`: the memory stays with the backend between calls
    /// (on the host for the CPU) until [`MemorySession::snapshot`] or
    /// [`MemorySession::into_state`] hands it back. On CUDA the state lives in device
    /// memory from here on: windows move only their inputs and outputs.
    fn open<'a>(
        &'a self,
        config: &MemoryConfig,
        state: State,
    ) -> Result<Box<dyn MemorySession + 'a>>;

    /// The CUDA backend behind this trait object, if it is one (a language model on
    /// CUDA runs its whole forward on that device, not only the memories).
    #[doc(hidden)]
    #[cfg(feature = "cuda")]
    fn as_cuda(&self) -> Option<&cuda::CudaBackend> {
        None
    }

    /// [`Backend::forward_into`] into a new buffer.
    fn forward(
        &self,
        config: &MemoryConfig,
        inputs: &ForwardInputs<'_>,
        state: &mut State,
    ) -> Result<Vec<f32>> {
        let mut out = vec![0.0; inputs.output_len(config)];
        self.forward_into(config, inputs, state, &mut out)?;
        Ok(out)
    }
}

/// The backend for a device choice. `auto` takes CUDA device 0 when this build has
/// kernels and the machine a driver and a device, else the CPU; a device that is there
/// but fails to start is an error, not a silent fallback.
pub fn backend_for(device: Device) -> Result<Box<dyn Backend>> {
    match device {
        Device::Cpu => Ok(Box::new(cpu::CpuBackend::new())),
        #[cfg(feature = "cuda")]
        Device::Cuda(ordinal) => Ok(Box::new(cuda::CudaBackend::new(ordinal)?)),
        #[cfg(feature = "cuda")]
        Device::Auto => match device::cuda_missing(0) {
            None => Ok(Box::new(cuda::CudaBackend::new(0)?)),
            Some(_) => Ok(Box::new(cpu::CpuBackend::new())),
        },
        #[cfg(not(feature = "cuda"))]
        Device::Cuda(ordinal) => Err(device::cuda_unavailable(
            ordinal,
            &device::CudaMissing::Kernels,
        )),
        #[cfg(not(feature = "cuda"))]
        Device::Auto => Ok(Box::new(cpu::CpuBackend::new())),
    }
}

/// The sparse-key backend for a device choice. Only the CPU implements it so far, so
/// `auto` means the CPU and `cuda` is an error that says so.
pub fn sparse_backend_for(device: Device) -> Result<Box<dyn SparseBackend>> {
    match device {
        Device::Cpu | Device::Auto => Ok(Box::new(cpu::CpuBackend::new())),
        Device::Cuda(ordinal) => Err(crate::error::Error::Device(format!(
            "cuda:{ordinal} requested, but the sparse-key memory (the built-in memory model) \
             has no CUDA implementation yet: use --device cpu or --device auto"
        ))),
    }
}

/// A CUDA kernel module compiled to PTX at build time.
#[derive(Clone, Copy, Debug)]
pub struct EmbeddedKernel {
    /// The module's name, its `.cu` file's stem (e.g. `scan`).
    pub name: &'static str,
    /// The virtual or real architecture it was compiled for, e.g. `compute_80`.
    pub target: &'static str,
    /// The PTX text nvcc made, loaded by the driver (which JIT-compiles it for the device).
    pub ptx: &'static str,
    /// The `.cu` source with its local headers inlined, for NVRTC when the driver is
    /// too old for the PTX.
    pub source: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/kernels.rs"));
