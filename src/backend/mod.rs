//! Backends compute the memory's forward; the CPU one runs everywhere.

pub mod cpu;
pub mod device;

use crate::config::MemoryConfig;
use crate::error::Result;
use crate::inputs::ForwardInputs;
use crate::state::State;

pub use device::Device;

/// A place to run the memory. Implementations give the same results up to f32
/// rounding, whatever the chunking or the split of a sequence into calls.
pub trait Backend: Send + Sync {
    /// Human-readable description, e.g. `cpu (avx512, 2 threads)`.
    fn name(&self) -> String;

    /// Streams `inputs` through `state` (updated in place) and writes the reads
    /// `o: [B, T, H, V]` into `out`.
    fn forward_into(
        &self,
        config: &MemoryConfig,
        inputs: &ForwardInputs<'_>,
        state: &mut State,
        out: &mut [f32],
    ) -> Result<()>;

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

/// The backend for a device choice: `auto` falls back to the CPU.
pub fn backend_for(device: Device) -> Result<Box<dyn Backend>> {
    match device {
        Device::Cpu | Device::Auto => Ok(Box::new(cpu::CpuBackend::new())),
        Device::Cuda(ordinal) => Err(device::cuda_unavailable(ordinal)),
    }
}

/// A CUDA kernel module compiled to PTX at build time.
#[derive(Clone, Copy, Debug)]
pub struct EmbeddedKernel {
    pub name: &'static str,
    /// The virtual or real architecture it was compiled for, e.g. `compute_80`.
    pub target: &'static str,
    pub ptx: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/kernels.rs"));
