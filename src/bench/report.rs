//! The results of a bench run, what is derived from them (fits, crossover,
//! extrapolation), and the number formats its reports share. The text table and the
//! chart are the CLI's (`src/bin/ltm-engine/bench/`).

use serde::Serialize;

use super::fit::{crossover, fit_power_law, PowerFit};
use super::timing::Timing;
use super::BenchConfig;
use crate::meminfo::MemInfo;

/// One measurement of the table: measured, or why not and the fit's estimate instead.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Cell {
    /// Timed: the median and every run.
    Measured(Timing),
    /// Not run within this bench's limits (time budget, memory limit); the estimate
    /// is extrapolated from the fit.
    Skipped {
        /// Which limit stopped it, for the table's notes.
        reason: String,
        /// Seconds predicted by the fit at this length, if there is a fit.
        extrapolated_s: Option<f64>,
    },
    /// Would not fit in this machine's RAM; the estimate is what it would take if it did.
    OutOfMemory {
        /// Bytes its buffers would need.
        needs_bytes: u64,
        /// Seconds predicted by the fit at this length, if there is a fit.
        extrapolated_s: Option<f64>,
    },
}

impl Cell {
    /// The measured median, if measured.
    pub fn measured_s(&self) -> Option<f64> {
        match self {
            Cell::Measured(t) => Some(t.median_s),
            _ => None,
        }
    }

    /// The measured median, or else the extrapolated estimate.
    pub fn seconds(&self) -> Option<f64> {
        match self {
            Cell::Measured(t) => Some(t.median_s),
            Cell::Skipped { extrapolated_s, .. } | Cell::OutOfMemory { extrapolated_s, .. } => {
                *extrapolated_s
            }
        }
    }

    fn extrapolate(&mut self, fit: Option<&PowerFit>, tokens: usize) {
        if let Cell::Skipped { extrapolated_s, .. } | Cell::OutOfMemory { extrapolated_s, .. } =
            self
        {
            *extrapolated_s = fit.map(|f| f.predict(tokens as f64));
        }
    }
}

/// One context length.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Point {
    /// Context length in tokens.
    pub tokens: usize,
    /// Seconds for the memory's forward over the whole context.
    pub memory_forward: Cell,
    /// Seconds for attention's prefill of the whole context.
    pub attention_prefill: Cell,
    /// Seconds per generated token after the context: the memory's one-token forward.
    pub memory_decode: Cell,
    /// Seconds per generated token after the context: attention over the KV cache.
    pub attention_decode: Cell,
    /// The memory's state: the same at every length.
    pub state_bytes: u64,
    /// Keys and values of every token, f32 as this run stores them.
    pub kv_cache_bytes: u64,
}

/// The fitted `time ∝ n^p` of each measurement.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Fits {
    /// The memory's forward over the whole context, in seconds against tokens.
    pub memory_forward: Option<PowerFit>,
    /// Attention's prefill of the whole context.
    pub attention_prefill: Option<PowerFit>,
    /// The memory's decode step, per generated token.
    pub memory_decode: Option<PowerFit>,
    /// Attention's decode step over the KV cache, per generated token.
    pub attention_decode: Option<PowerFit>,
}

/// Where the run was made.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Machine {
    /// Description of the memory's backend.
    pub memory_backend: String,
    /// Description of attention's backend.
    pub attention_backend: String,
    /// This machine's RAM, where `/proc/meminfo` is readable.
    pub ram: Option<MemInfo>,
}

/// Both at the target length, from the fits: extrapolated, not measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Extrapolation {
    /// The target length, in tokens.
    pub tokens: f64,
    /// Seconds of the memory's forward over the whole target length.
    pub memory_forward_s: Option<f64>,
    /// Seconds of attention's prefill of the whole target length.
    pub attention_prefill_s: Option<f64>,
    /// Seconds per generated token of the memory after the target length.
    pub memory_decode_s: Option<f64>,
    /// Seconds per generated token of attention after the target length.
    pub attention_decode_s: Option<f64>,
    /// The memory's state in bytes (the same at every length).
    pub state_bytes: u64,
    /// Bytes of attention's KV cache at the target length.
    pub kv_cache_bytes: f64,
    /// Bytes attention's prefill holds at the target length: inputs, outputs and KV cache.
    pub attention_prefill_bytes: f64,
    /// Whether attention's prefill buffers would fit in this machine's RAM.
    pub attention_fits_in_ram: Option<bool>,
    /// Why a time above was not extrapolated, when one was not.
    pub not_extrapolated: Option<String>,
}

/// Fewest fitted lengths a time is extrapolated from: two points always lie on some
/// power law, so a fit of two says nothing about how well the law holds.
pub const MIN_EXTRAPOLATION_POINTS: usize = 3;

/// Everything a bench run found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BenchReport {
    /// What was asked for.
    pub config: BenchConfig,
    /// Where it ran.
    pub machine: Machine,
    /// Every context length, shortest first.
    pub points: Vec<Point>,
    /// The power law of each measurement.
    pub fits: Fits,
    /// The smallest measured length from which the memory's forward beats attention's
    /// prefill at every measured length.
    pub crossover_measured_tokens: Option<usize>,
    /// Where the two fits cross.
    pub crossover_fitted_tokens: Option<f64>,
    /// The memory's state in bytes, the same at every length.
    pub state_bytes: u64,
    /// Buffers of the memory's streamed windows: fixed, whatever the length.
    pub memory_window_bytes: u64,
    /// Bytes the KV cache grows by per token (keys and values of every head, f32).
    pub kv_cache_bytes_per_token: u64,
    /// What attention's prefill holds per token: inputs, outputs and KV cache.
    pub attention_prefill_bytes_per_token: u64,
    /// The length from which attention's prefill buffers exceed this machine's RAM.
    pub attention_prefill_oom_tokens: Option<f64>,
    /// The length from which the KV cache alone exceeds this machine's RAM.
    pub kv_cache_oom_tokens: Option<f64>,
    /// Both extrapolated to `config.target_tokens`.
    pub at_target: Extrapolation,
}

/// The sizes of things, fixed by the configuration.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    /// The memory's state in bytes.
    pub state_bytes: u64,
    /// Buffers of the memory's streamed windows in bytes.
    pub memory_window_bytes: u64,
    /// Bytes the KV cache grows by per token.
    pub kv_cache_bytes_per_token: u64,
    /// Bytes attention's prefill holds per token: inputs, outputs and KV cache.
    pub attention_prefill_bytes_per_token: u64,
}

impl BenchReport {
    /// Fits each measurement, fills the estimates of cells not measured, and derives
    /// the crossover and the values at the target length.
    pub fn finish(
        config: BenchConfig,
        machine: Machine,
        mut points: Vec<Point>,
        sizes: Sizes,
    ) -> Self {
        let fit_of = |get: fn(&Point) -> &Cell| -> Option<PowerFit> {
            let measured: Vec<(f64, f64)> = points
                .iter()
                .filter_map(|p| get(p).measured_s().map(|s| (p.tokens as f64, s)))
                .collect();
            let upper: Vec<(f64, f64)> = measured
                .iter()
                .copied()
                .filter(|(n, _)| *n >= config.fit_from_tokens as f64)
                .collect();
            if upper.len() >= 2 {
                fit_power_law(&upper)
            } else {
                fit_power_law(&measured[measured.len().saturating_sub(3)..])
            }
        };
        let fits = Fits {
            memory_forward: fit_of(|p| &p.memory_forward),
            attention_prefill: fit_of(|p| &p.attention_prefill),
            memory_decode: fit_of(|p| &p.memory_decode),
            attention_decode: fit_of(|p| &p.attention_decode),
        };
        for p in &mut points {
            p.memory_forward
                .extrapolate(fits.memory_forward.as_ref(), p.tokens);
            p.attention_prefill
                .extrapolate(fits.attention_prefill.as_ref(), p.tokens);
            p.memory_decode
                .extrapolate(fits.memory_decode.as_ref(), p.tokens);
            p.attention_decode
                .extrapolate(fits.attention_decode.as_ref(), p.tokens);
        }
        let crossover_measured_tokens = measured_crossover(&points);
        let crossover_fitted_tokens = match (&fits.memory_forward, &fits.attention_prefill) {
            (Some(m), Some(a)) => crossover(m, a),
            _ => None,
        };
        let ram = machine.ram.map(|r| r.total_bytes as f64);
        let target = config.target_tokens;
        let predict = |f: &Option<PowerFit>| {
            f.as_ref()
                .filter(|f| f.points >= MIN_EXTRAPOLATION_POINTS)
                .map(|f| f.predict(target))
        };
        let fitted = [
            &fits.memory_forward,
            &fits.attention_prefill,
            &fits.memory_decode,
            &fits.attention_decode,
        ];
        let fewest = fitted
            .iter()
            .map(|f| f.as_ref().map_or(0, |f| f.points))
            .min();
        let not_extrapolated = fewest.filter(|&n| n < MIN_EXTRAPOLATION_POINTS).map(|n| {
            format!(
                "a fit of {n} measured length{} (at least {MIN_EXTRAPOLATION_POINTS} are needed \
                     to extrapolate; raise --max-tokens or lower --min-tokens)",
                if n == 1 { "" } else { "s" }
            )
        });
        let attention_prefill_bytes = target * sizes.attention_prefill_bytes_per_token as f64;
        let at_target = Extrapolation {
            tokens: target,
            memory_forward_s: predict(&fits.memory_forward),
            attention_prefill_s: predict(&fits.attention_prefill),
            memory_decode_s: predict(&fits.memory_decode),
            attention_decode_s: predict(&fits.attention_decode),
            state_bytes: sizes.state_bytes,
            kv_cache_bytes: target * sizes.kv_cache_bytes_per_token as f64,
            attention_prefill_bytes,
            attention_fits_in_ram: ram.map(|r| attention_prefill_bytes <= r),
            not_extrapolated,
        };
        BenchReport {
            machine,
            points,
            fits,
            crossover_measured_tokens,
            crossover_fitted_tokens,
            state_bytes: sizes.state_bytes,
            memory_window_bytes: sizes.memory_window_bytes,
            kv_cache_bytes_per_token: sizes.kv_cache_bytes_per_token,
            attention_prefill_bytes_per_token: sizes.attention_prefill_bytes_per_token,
            attention_prefill_oom_tokens: ram
                .map(|r| r / sizes.attention_prefill_bytes_per_token as f64),
            kv_cache_oom_tokens: ram.map(|r| r / sizes.kv_cache_bytes_per_token as f64),
            at_target,
            config,
        }
    }

    /// The measured length closest to 64K (or the largest) with both forwards
    /// measured, and the memory's speedup there.
    pub fn speedup_at(&self, tokens: usize) -> Option<f64> {
        let p = self.points.iter().find(|p| p.tokens == tokens)?;
        Some(p.attention_prefill.measured_s()? / p.memory_forward.measured_s()?)
    }
}

/// The smallest measured length from which the memory's forward is faster at every
/// measured length with both timed.
fn measured_crossover(points: &[Point]) -> Option<usize> {
    let both: Vec<(usize, bool)> = points
        .iter()
        .filter_map(|p| {
            let m = p.memory_forward.measured_s()?;
            let a = p.attention_prefill.measured_s()?;
            Some((p.tokens, m < a))
        })
        .collect();
    let mut from = None;
    for &(n, memory_faster) in both.iter().rev() {
        if !memory_faster {
            break;
        }
        from = Some(n);
    }
    from
}

/// `1.23 s`, `45.6 ms`, `7.89 µs`; hours and days for extrapolations.
pub fn fmt_seconds(s: f64) -> String {
    if !s.is_finite() {
        return format!("{s}");
    }
    let (v, unit) = if s >= 86_400.0 * 365.0 {
        (s / (86_400.0 * 365.0), "years")
    } else if s >= 86_400.0 {
        (s / 86_400.0, "days")
    } else if s >= 3600.0 {
        (s / 3600.0, "h")
    } else if s >= 1.0 {
        (s, "s")
    } else if s >= 1e-3 {
        (s * 1e3, "ms")
    } else if s >= 1e-6 {
        (s * 1e6, "µs")
    } else {
        (s * 1e9, "ns")
    };
    format!("{} {unit}", three_digits(v))
}

/// `512`, `65.5K`, `1.05M`, `100M`, `2.1G`.
pub fn fmt_count(n: f64) -> String {
    let (v, unit) = if n >= 1e12 {
        (n / 1e12, "T")
    } else if n >= 1e9 {
        (n / 1e9, "G")
    } else if n >= 1e6 {
        (n / 1e6, "M")
    } else if n >= 1e4 {
        (n / 1e3, "K")
    } else if n >= 10.0 || n == 0.0 {
        return format!("{}", n.round());
    } else {
        return format!("{n:.2}");
    };
    format!("{}{unit}", three_digits(v))
}

/// `64 KiB`, `1.50 GiB`, `205 GB` style: binary units.
pub fn fmt_bytes(b: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{} B", v.round())
    } else {
        format!("{} {}", three_digits(v), units[i])
    }
}

fn three_digits(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(fmt_seconds(0.0123), "12.3 ms");
        assert_eq!(fmt_seconds(2.5e-6), "2.50 µs");
        assert_eq!(fmt_seconds(7200.0), "2.00 h");
        assert_eq!(fmt_count(65_536.0), "65.5K");
        assert_eq!(fmt_count(1e8), "100M");
        assert_eq!(fmt_count(512.0), "512");
        assert_eq!(fmt_count(0.0712), "0.07");
        assert_eq!(fmt_bytes(65_536.0), "64.0 KiB");
        assert_eq!(fmt_bytes(2.0 * 1e8 * 2048.0 / 2.0), "191 GiB");
    }
}
