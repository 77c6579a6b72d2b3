//! Causal attention on the CPU, with FlashAttention's tiling on
//! the crate's AVX-512 matrix micro-kernels, parallel over sequences, heads and query
//! tiles (prefill) or key ranges (a decode step).

mod decode;
mod tiles;

pub(crate) use decode::PARALLEL_FROM;

use super::{AttentionBackend, AttentionConfig, AttentionInputs, KvCache};
use crate::backend::cpu::{CpuExec, Isa};
use crate::error::Result;
use crate::tensor::check_output_len;

/// Runs attention on the CPU with rayon threads.
#[derive(Default)]
pub struct CpuAttention {
    exec: CpuExec,
}

impl CpuAttention {
    /// Uses the best instruction set of this CPU and rayon's global thread pool.
    pub fn new() -> Self {
        CpuAttention {
            exec: CpuExec::new(),
        }
    }

    /// Forces an instruction set (the portable kernels run everywhere).
    pub fn with_isa(self, isa: Isa) -> Self {
        CpuAttention {
            exec: self.exec.with_isa(isa),
        }
    }

    /// Runs on a pool of its own with `threads` threads.
    pub fn with_threads(self, threads: usize) -> Result<Self> {
        Ok(CpuAttention {
            exec: self.exec.with_threads(threads)?,
        })
    }

    /// The instruction set the attention kernels use.
    pub fn isa(&self) -> Isa {
        self.exec.isa()
    }
}

impl AttentionBackend for CpuAttention {
    fn name(&self) -> String {
        format!(
            "cpu attention ({}, {} threads)",
            self.exec.isa().name(),
            self.exec.threads()
        )
    }

    fn attend_into(
        &self,
        config: &AttentionConfig,
        inputs: &AttentionInputs<'_>,
        cache: &mut KvCache,
        out: &mut [f32],
    ) -> Result<()> {
        inputs.validate(config)?;
        cache.check_matches(config, inputs.batch)?;
        check_output_len(out, inputs.output_len(config))?;
        if inputs.tokens == 0 {
            return Ok(());
        }
        let isa = self.exec.isa();
        self.exec.install(|| -> Result<()> {
            cache.append(config, inputs)?;
            // One query per head leaves too few query tiles to fill the threads, so a
            // decode step splits the keys instead and merges the partial softmaxes.
            if inputs.tokens == 1 {
                decode::run(isa, config, inputs, cache, out);
            } else {
                tiles::run(isa, config, inputs, cache, out);
            }
            Ok(())
        })
    }
}
