//! The sparse-key delta rule on the CPU: one thread per (sequence, head), tokens in
//! order, each write touching only its key's `s` rows.
//!
//! In a state of many GiB every row is a cache miss, so the loop prefetches the rows
//! of the key a few tokens ahead while it works on the current one: the time per write
//! is then bounded by memory bandwidth rather than by one miss after another.

use rayon::prelude::*;

use super::{CpuBackend, Isa};
use crate::backend::sparse::{check_read, SparseBackend, SparseKeys, SparseWrites};
use crate::config::MemoryConfig;
use crate::error::Result;
use crate::state::State;

/// How many tokens ahead the rows are prefetched: enough to cover a DRAM miss
/// (~100 ns) with a write taking tens of ns, few enough to stay in L1/L2.
const PREFETCH_AHEAD: usize = 8;

impl SparseBackend for CpuBackend {
    fn sparse_name(&self) -> String {
        crate::backend::Backend::name(self)
    }

    fn sparse_write(
        &self,
        config: &MemoryConfig,
        writes: &SparseWrites<'_>,
        state: &mut State,
    ) -> Result<()> {
        writes.validate(config)?;
        let keys = &writes.keys;
        state.check_matches(config, keys.batch)?;
        let tokens_seen = state.tokens_after(keys.tokens as u64)?;
        if keys.tokens > 0 {
            let head_len = config.key_dim * config.value_dim;
            let isa = self.isa();
            let run = || {
                state
                    .values_mut()
                    .par_chunks_mut(head_len)
                    .enumerate()
                    .for_each(|(bh, s)| {
                        let (b, h) = (bh / config.heads, bh % config.heads);
                        write_head(isa, config, writes, b, h, s);
                    })
            };
            self.install(run);
        }
        state.set_tokens_seen(tokens_seen);
        Ok(())
    }

    fn sparse_read_into(
        &self,
        config: &MemoryConfig,
        queries: &SparseKeys<'_>,
        state: &State,
        out: &mut [f32],
    ) -> Result<()> {
        check_read(config, queries, state, out)?;
        let (v_dim, heads, s) = (config.value_dim, config.heads, queries.active);
        let scale = config.effective_scale();
        let run = || {
            // One output row per (sequence, token, head): rows are independent reads.
            out.par_chunks_mut(v_dim).enumerate().for_each(|(i, o)| {
                let b = i / (queries.tokens * heads);
                let h = i % heads;
                let head = state.head(b, h);
                o.fill(0.0);
                for a in 0..s {
                    let (r, w) = (queries.rows[i * s + a] as usize, queries.weights[i * s + a]);
                    let row = &head[r * v_dim..(r + 1) * v_dim];
                    let w = w * scale;
                    for (x, &y) in o.iter_mut().zip(row) {
                        *x += w * y;
                    }
                }
            })
        };
        self.install(run);
        Ok(())
    }
}

fn write_head(
    isa: Isa,
    config: &MemoryConfig,
    writes: &SparseWrites<'_>,
    b: usize,
    h: usize,
    s: &mut [f32],
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx512` is only chosen after the CPU reported AVX-512F.
        Isa::Avx512 => unsafe { write_head_avx512(config, writes, b, h, s) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2` is only chosen after the CPU reported AVX2 and FMA.
        Isa::Avx2 => unsafe { write_head_avx2(config, writes, b, h, s) },
        _ => write_head_impl(config, writes, b, h, s),
    }
}

simd_twin! {
    /// The same loop compiled for AVX-512 so the row updates run 16 wide.
    features = "avx512f,avx512vl,avx2,fma",
    fn write_head_avx512(
        config: &MemoryConfig,
        writes: &SparseWrites<'_>,
        b: usize,
        h: usize,
        s: &mut [f32],
    ) = write_head_impl
}

simd_twin! {
    /// The same code compiled for AVX2 and FMA (8 lanes).
    features = "avx2,fma",
    fn write_head_avx2(
        config: &MemoryConfig,
        writes: &SparseWrites<'_>,
        b: usize,
        h: usize,
        s: &mut [f32],
    ) = write_head_impl
}

#[inline(always)]
fn write_head_impl(
    config: &MemoryConfig,
    writes: &SparseWrites<'_>,
    b: usize,
    h: usize,
    s: &mut [f32],
) {
    let keys = &writes.keys;
    let (v_dim, heads, act, tokens) = (config.value_dim, config.heads, keys.active, keys.tokens);
    let key_at = |t: usize| ((b * tokens + t) * heads + h) * act;
    let mut u = vec![0.0f32; v_dim];
    for t in 0..tokens {
        let ahead = t + PREFETCH_AHEAD;
        // Only rows that will be written: a β = 0 slot's rows may be anything.
        if ahead < tokens && writes.beta.get((b * tokens + ahead) * heads + h) != 0.0 {
            let k = key_at(ahead);
            for &r in &keys.rows[k..k + act] {
                prefetch_row(&s[r as usize * v_dim..(r as usize + 1) * v_dim]);
            }
        }
        let gate = (b * tokens + t) * heads + h;
        let beta = writes.beta.get(gate);
        if beta == 0.0 {
            continue;
        }
        let k = key_at(t);
        let (rows, weights) = (&keys.rows[k..k + act], &keys.weights[k..k + act]);
        // u = β (v − Sᵀk): what the memory does not yet hold for this key.
        writes.v.read_scaled(gate * v_dim, &mut u, 1.0);
        for (&r, &w) in rows.iter().zip(weights) {
            let row = &s[r as usize * v_dim..(r as usize + 1) * v_dim];
            for (x, &y) in u.iter_mut().zip(row) {
                *x -= w * y;
            }
        }
        // S += k uᵀ; a row listed twice gets both weights, as the dense key would.
        for (&r, &w) in rows.iter().zip(weights) {
            let wb = w * beta;
            let row = &mut s[r as usize * v_dim..(r as usize + 1) * v_dim];
            for (x, &y) in row.iter_mut().zip(&u) {
                *x += wb * y;
            }
        }
    }
}

/// Asks the cache for every line of `row`; a hint only, never a fault.
#[inline(always)]
fn prefetch_row(row: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        const LINE_FLOATS: usize = 16;
        let mut i = 0;
        while i < row.len() {
            // SAFETY: `i < row.len()`, so the address is inside the slice; prefetch
            // never faults and does not change memory.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(row.as_ptr().add(i) as *const i8) };
            i += LINE_FLOATS;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = row;
}
