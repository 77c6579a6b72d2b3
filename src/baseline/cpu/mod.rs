//! The CPU twin of `attention.cu`: causal attention with FlashAttention's tiling on
//! the crate's AVX-512 matrix micro-kernels, parallel over sequences, heads and query
//! tiles (prefill) or key ranges (a decode step).

mod decode;
mod tiles;

pub(crate) use decode::PARALLEL_FROM;

use super::{check_output_len, AttentionBackend, AttentionConfig, AttentionInputs, KvCache};
use crate::backend::cpu::Isa;
use crate::error::{Error, Result};

/// Runs attention on the CPU with rayon threads.
pub struct CpuAttention {
    isa: Isa,
    pool: Option<rayon::ThreadPool>,
}

impl Default for CpuAttention {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuAttention {
    /// Uses the best instruction set of this CPU and rayon's global thread pool.
    pub fn new() -> Self {
        CpuAttention {
            isa: Isa::detect(),
            pool: None,
        }
    }

    /// Forces an instruction set (the portable kernels run everywhere).
    pub fn with_isa(mut self, isa: Isa) -> Self {
        if isa == Isa::Avx512 && Isa::detect() != Isa::Avx512 {
            return self;
        }
        self.isa = isa;
        self
    }

    /// Runs on a pool of its own with `threads` threads.
    pub fn with_threads(mut self, threads: usize) -> Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| Error::Device(format!("cannot start {threads} CPU threads: {e}")))?;
        self.pool = Some(pool);
        Ok(self)
    }

    pub fn isa(&self) -> Isa {
        self.isa
    }

    fn threads(&self) -> usize {
        self.pool
            .as_ref()
            .map_or_else(rayon::current_num_threads, |p| p.current_num_threads())
    }
}

impl AttentionBackend for CpuAttention {
    fn name(&self) -> String {
        format!(
            "cpu attention ({}, {} threads)",
            self.isa.name(),
            self.threads()
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
        let mut run = || -> Result<()> {
            cache.append(config, inputs)?;
            // One query per head leaves too few query tiles to fill the threads, so a
            // decode step splits the keys instead and merges the partial softmaxes.
            if inputs.tokens == 1 {
                decode::run(self.isa, config, inputs, cache, out);
            } else {
                tiles::run(self.isa, config, inputs, cache, out);
            }
            Ok(())
        };
        match &self.pool {
            Some(pool) => pool.install(run),
            None => run(),
        }
    }
}
