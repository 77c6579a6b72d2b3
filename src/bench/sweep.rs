//! The sweep: at each context length, the memory and attention in the same process,
//! one after the other, on the same inputs.

use super::fit::fit_power_law;
use super::report::{fmt_bytes, fmt_seconds, BenchReport, Cell, Machine, Point, Sizes};
use super::timing::{time_per_call, Runs, Timing};
use super::workload::Workload;
use super::BenchConfig;
use crate::backend::cpu::gemm::LANES;
use crate::backend::Backend;
use crate::baseline::{AttentionBackend, AttentionConfig, KvCache};
use crate::config::MemoryConfig;
use crate::error::Result;
use crate::meminfo::MemInfo;
use crate::state::State;

/// Runs the sweep. `ram` (this machine's, from [`MemInfo::read`]) marks where
/// attention would run out of memory; `progress` sees each length as it is done.
pub fn run_sweep(
    memory: &dyn Backend,
    attention: &dyn AttentionBackend,
    config: &BenchConfig,
    ram: Option<MemInfo>,
    progress: &mut dyn FnMut(&Point),
) -> Result<BenchReport> {
    config.validate()?;
    let (h, d) = (config.heads, config.head_dim);
    let memory_config = MemoryConfig::new(h, d, d);
    let attention_config = AttentionConfig::new(h, d);
    let lengths = config.lengths();
    let window_tokens = config.window_tokens.min(config.max_tokens);
    let window = Workload::new(window_tokens, h, d, 0x5EED);
    let mut memory_out = vec![0.0f32; window_tokens * h * d];

    let padded = d.div_ceil(LANES) * LANES;
    let sizes = Sizes {
        state_bytes: (memory_config.state_len() * 4) as u64,
        memory_window_bytes: window.bytes() + (memory_out.len() * 4) as u64,
        kv_cache_bytes_per_token: attention_config.kv_bytes_per_token(4),
        // q, k, v and o of every token, and its key and value in the cache (rows
        // padded to 16 values).
        attention_prefill_bytes_per_token: (4 * h * d * 4 + 2 * h * padded * 4) as u64,
    };
    let cache_bytes_per_token = (2 * h * padded * 4) as u64;
    let ram_bytes = ram.map(|r| r.total_bytes);
    let exceeds = |bytes: u64| -> Option<Cell> {
        if ram_bytes.is_some_and(|r| bytes > r) {
            Some(Cell::OutOfMemory {
                needs_bytes: bytes,
                extrapolated_s: None,
            })
        } else if bytes > config.memory_limit_bytes {
            Some(Cell::Skipped {
                reason: format!(
                    "needs {}, over the bench's memory limit of {}",
                    fmt_bytes(bytes as f64),
                    fmt_bytes(config.memory_limit_bytes as f64)
                ),
                extrapolated_s: None,
            })
        } else {
            None
        }
    };
    let runs = Runs {
        warmup: config.warmup_runs,
        timed: config.timed_runs,
        timed_if_long: config.timed_runs_if_long,
        long_call_s: config.long_call_s,
    };
    let time = |f: &mut dyn FnMut() -> Result<()>| -> Result<Timing> {
        time_per_call(runs, config.min_run_s, config.clock, &mut *f)
    };

    let mut decode_cache = KvCache::new(&attention_config, 1)?;
    let mut prefill_timed: Vec<(f64, f64)> = Vec::new();
    let mut prefill_stopped: Option<String> = None;
    let mut points = Vec::with_capacity(lengths.len());
    for &n in &lengths {
        // The memory: stream n tokens through the state window by window, then one
        // more token with the state that n tokens left.
        let mut state = State::zeros(&memory_config, 1);
        let memory_forward = time(&mut || {
            state = State::zeros(&memory_config, 1);
            let mut done = 0;
            while done < n {
                let t = window_tokens.min(n - done);
                memory.forward_into(
                    &memory_config,
                    &window.memory_inputs(0, t),
                    &mut state,
                    &mut memory_out[..t * h * d],
                )?;
                done += t;
            }
            Ok(())
        })?;
        let one = window.memory_inputs(0, 1);
        let memory_decode = time(&mut || {
            memory.decode_into(&memory_config, &one, &mut state, &mut memory_out[..h * d])
        })?;

        // Attention's prefill of n tokens, within the time budget and memory limits.
        let prefill_bytes = n as u64 * sizes.attention_prefill_bytes_per_token;
        let predicted = predict_prefill(&prefill_timed, config.fit_from_tokens, n);
        if prefill_stopped.is_none() && predicted > config.prefill_budget_s {
            prefill_stopped = Some(format!(
                "one run would take ~{} (from the shorter lengths), over the {} budget; extrapolated from the fit",
                fmt_seconds(predicted),
                fmt_seconds(config.prefill_budget_s)
            ));
        }
        let attention_prefill = if let Some(cell) = exceeds(prefill_bytes) {
            cell
        } else if let Some(reason) = &prefill_stopped {
            Cell::Skipped {
                reason: reason.clone(),
                extrapolated_s: None,
            }
        } else {
            let fresh;
            let source = if n <= window_tokens {
                &window
            } else {
                fresh = Workload::new(n, h, d, 0xA77E ^ n as u64);
                &fresh
            };
            let inputs = source.attention_inputs(0, n);
            let mut cache = KvCache::with_capacity(&attention_config, 1, n)?;
            let mut out = vec![0.0f32; n * h * d];
            let t = time(&mut || {
                cache.clear();
                attention.attend_into(&attention_config, &inputs, &mut cache, &mut out)
            })?;
            prefill_timed.push((n as f64, t.median_s));
            Cell::Measured(t)
        };

        // One generated token after n cached ones: the cache is grown to n from the
        // window's keys and values and cut back to n after each step.
        let attention_decode = if let Some(cell) = exceeds((n + 1) as u64 * cache_bytes_per_token) {
            cell
        } else {
            decode_cache.reserve(n + 1 - decode_cache.len())?;
            while decode_cache.len() < n {
                let t = (n - decode_cache.len()).min(window_tokens);
                decode_cache.append(&attention_config, &window.attention_inputs(0, t))?;
            }
            let step = window.attention_inputs(0, 1);
            let mut out = vec![0.0f32; h * d];
            Cell::Measured(time(&mut || {
                decode_cache.truncate(n);
                attention.attend_into(&attention_config, &step, &mut decode_cache, &mut out)
            })?)
        };

        let point = Point {
            tokens: n,
            memory_forward: Cell::Measured(memory_forward),
            attention_prefill,
            memory_decode: Cell::Measured(memory_decode),
            attention_decode,
            state_bytes: sizes.state_bytes,
            kv_cache_bytes: n as u64 * sizes.kv_cache_bytes_per_token,
        };
        progress(&point);
        points.push(point);
    }
    let machine = Machine {
        memory_backend: memory.name(),
        attention_backend: attention.name(),
        ram,
    };
    Ok(BenchReport::finish(config.clone(), machine, points, sizes))
}

/// Seconds one attention prefill of `n` tokens should take, from the lengths timed so
/// far: their power-law fit (from `fit_from` up when there are two such lengths),
/// quadratic growth from a single one, 0 with none.
fn predict_prefill(timed: &[(f64, f64)], fit_from: usize, n: usize) -> f64 {
    let upper: Vec<(f64, f64)> = timed
        .iter()
        .copied()
        .filter(|(m, _)| *m >= fit_from as f64)
        .collect();
    let pts = if upper.len() >= 2 { &upper[..] } else { timed };
    if pts.len() >= 2 {
        if let Some(fit) = fit_power_law(pts) {
            // Never predict less than quadratic growth from the last length: small
            // lengths are overhead-bound and fit flatter than the work grows.
            let (m, s) = pts[pts.len() - 1];
            return fit.predict(n as f64).max(s * (n as f64 / m).powi(2));
        }
    }
    match timed.last() {
        Some(&(m, s)) => s * (n as f64 / m).powi(2),
        None => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prediction_grows_at_least_quadratically() {
        assert_eq!(predict_prefill(&[], 4096, 1024), 0.0);
        assert_eq!(predict_prefill(&[(1024.0, 0.5)], 4096, 2048), 2.0);
        let flat = [(1024.0, 1.0), (2048.0, 1.0)];
        assert_eq!(predict_prefill(&flat, 4096, 4096), 4.0);
        let cubic: Vec<(f64, f64)> = (10..14)
            .map(|k| ((1u64 << k) as f64, 1e-9 * ((1u64 << k) as f64).powi(3)))
            .collect();
        let n = 1 << 14;
        let p = predict_prefill(&cubic, 0, n);
        assert!((p / (1e-9 * (n as f64).powi(3)) - 1.0).abs() < 1e-6);
    }
}
