//! Where CPU work runs: an instruction set and a thread pool. Shared by the memory's
//! backend and the attention baseline, so both are configured the same way.

use super::gemm::Isa;
use crate::error::{Error, Result};

/// An instruction set and a thread pool: where and how the CPU kernels run.
pub struct CpuExec {
    isa: Isa,
    /// A pool of its own, or rayon's global one when `None`.
    pool: Option<rayon::ThreadPool>,
}

impl Default for CpuExec {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuExec {
    /// The best instruction set of this CPU and rayon's global thread pool.
    pub fn new() -> Self {
        CpuExec {
            isa: Isa::detect(),
            pool: None,
        }
    }

    /// Forces an instruction set; asking for one the CPU lacks changes nothing.
    pub fn with_isa(mut self, isa: Isa) -> Self {
        let detected = Isa::detect();
        let available = match isa {
            Isa::Portable => true,
            Isa::Avx2 => detected != Isa::Portable,
            Isa::Avx512 => detected == Isa::Avx512,
        };
        if !available {
            return self;
        }
        self.isa = isa;
        self
    }

    /// A pool of its own with `threads` threads.
    pub fn with_threads(mut self, threads: usize) -> Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| Error::Device(format!("cannot start {threads} CPU threads: {e}")))?;
        self.pool = Some(pool);
        Ok(self)
    }

    /// The instruction set the kernels use.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Threads the work is split across: the own pool's, else rayon's global pool's.
    pub fn threads(&self) -> usize {
        self.pool
            .as_ref()
            .map_or_else(rayon::current_num_threads, |p| p.current_num_threads())
    }

    /// Runs `f` on this pool.
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(pool) => pool.install(f),
            None => f(),
        }
    }
}
