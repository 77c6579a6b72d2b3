//! The results of a bench run, what is derived from them (fits, crossover,
//! extrapolation), and their text table.

use std::fmt::Write;

use serde::Serialize;

use super::fit::{crossover, fit_power_law, PowerFit};
use super::meminfo::MemInfo;
use super::timing::Timing;
use super::{BenchConfig, Clock};

/// One measurement of the table: measured, or why not and the fit's estimate instead.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Cell {
    Measured(Timing),
    /// Not run within this bench's limits (time budget, memory limit); the estimate
    /// is extrapolated from the fit.
    Skipped {
        reason: String,
        extrapolated_s: Option<f64>,
    },
    /// Would not fit in this machine's RAM; the estimate is what it would take if it did.
    OutOfMemory {
        needs_bytes: u64,
        extrapolated_s: Option<f64>,
    },
}

impl Cell {
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
    pub memory_forward: Option<PowerFit>,
    pub attention_prefill: Option<PowerFit>,
    pub memory_decode: Option<PowerFit>,
    pub attention_decode: Option<PowerFit>,
}

/// Where the run was made.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Machine {
    pub memory_backend: String,
    pub attention_backend: String,
    pub ram: Option<MemInfo>,
}

/// Both at the target length, from the fits: extrapolated, not measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Extrapolation {
    pub tokens: f64,
    pub memory_forward_s: Option<f64>,
    pub attention_prefill_s: Option<f64>,
    pub memory_decode_s: Option<f64>,
    pub attention_decode_s: Option<f64>,
    pub state_bytes: u64,
    pub kv_cache_bytes: f64,
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
    pub config: BenchConfig,
    pub machine: Machine,
    pub points: Vec<Point>,
    pub fits: Fits,
    /// The smallest measured length from which the memory's forward beats attention's
    /// prefill at every measured length.
    pub crossover_measured_tokens: Option<usize>,
    /// Where the two fits cross.
    pub crossover_fitted_tokens: Option<f64>,
    pub state_bytes: u64,
    /// Buffers of the memory's streamed windows: fixed, whatever the length.
    pub memory_window_bytes: u64,
    pub kv_cache_bytes_per_token: u64,
    /// What attention's prefill holds per token: inputs, outputs and KV cache.
    pub attention_prefill_bytes_per_token: u64,
    /// The length from which attention's prefill buffers exceed this machine's RAM.
    pub attention_prefill_oom_tokens: Option<f64>,
    /// The length from which the KV cache alone exceeds this machine's RAM.
    pub kv_cache_oom_tokens: Option<f64>,
    pub at_target: Extrapolation,
}

/// The sizes of things, fixed by the configuration.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    pub state_bytes: u64,
    pub memory_window_bytes: u64,
    pub kv_cache_bytes_per_token: u64,
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

    /// The text table with its notes.
    pub fn table(&self) -> String {
        let c = &self.config;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "memory (gated delta rule, K = V = {d}) vs causal softmax attention (D = {d}), H = {h}, batch 1, f32",
            d = c.head_dim,
            h = c.heads
        );
        let _ = writeln!(
            s,
            "memory: {}; attention: {}",
            self.machine.memory_backend, self.machine.attention_backend
        );
        let _ = writeln!(
            s,
            "{}; median of {} timed runs after {} warm-up ({} when a call takes over {} s); \
             ~ = extrapolated from the fit, not measured; OOM = would not fit in this machine's RAM",
            clock_note(c.clock),
            c.timed_runs,
            c.warmup_runs,
            c.timed_runs_if_long,
            c.long_call_s
        );
        let _ = writeln!(s);
        let rate_name = rate_label(c.clock);
        let header = [
            "tokens",
            "memory fwd",
            rate_name,
            "attn prefill",
            rate_name,
            "speedup",
            "memory decode/tok",
            "attn decode/tok",
            "speedup",
            "state",
            "KV cache",
        ];
        let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
        for p in &self.points {
            let n = p.tokens as f64;
            rows.push(vec![
                fmt_count(n),
                fmt_cell(&p.memory_forward, fmt_seconds),
                fmt_cell(&p.memory_forward, |t| fmt_count(n / t)),
                fmt_cell(&p.attention_prefill, fmt_seconds),
                fmt_cell(&p.attention_prefill, |t| fmt_count(n / t)),
                fmt_ratio(&p.attention_prefill, &p.memory_forward),
                fmt_cell(&p.memory_decode, fmt_seconds),
                fmt_cell(&p.attention_decode, fmt_seconds),
                fmt_ratio(&p.attention_decode, &p.memory_decode),
                fmt_bytes(p.state_bytes as f64),
                fmt_bytes(p.kv_cache_bytes as f64),
            ]);
        }
        let t = &self.at_target;
        let est = |x: Option<f64>| x.map_or("-".into(), |v| format!("~{}", fmt_seconds(v)));
        let rate =
            |x: Option<f64>| x.map_or("-".into(), |v| format!("~{}", fmt_count(t.tokens / v)));
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => format!("~{}", fmt_times(a / b)),
            _ => "-".into(),
        };
        rows.push(vec![
            format!("{} (extrapolated)", fmt_count(t.tokens)),
            est(t.memory_forward_s),
            rate(t.memory_forward_s),
            est(t.attention_prefill_s)
                + if t.attention_fits_in_ram == Some(false) {
                    " OOM"
                } else {
                    ""
                },
            rate(t.attention_prefill_s),
            ratio(t.attention_prefill_s, t.memory_forward_s),
            est(t.memory_decode_s),
            est(t.attention_decode_s),
            ratio(t.attention_decode_s, t.memory_decode_s),
            fmt_bytes(t.state_bytes as f64),
            fmt_bytes(t.kv_cache_bytes),
        ]);
        s.push_str(&align(&rows));
        if let Some(why) = &t.not_extrapolated {
            let _ = writeln!(
                s,
                "{}: times not extrapolated where they come from {why}",
                fmt_count(t.tokens)
            );
        }
        let _ = writeln!(s);
        let fit_line = |name: &str, f: &Option<PowerFit>| match f {
            Some(f) => format!(
                "  {name:<28} time ∝ n^{:.2}  (R² = {:.4}, {} lengths from {} to {})\n",
                f.exponent,
                f.r_squared,
                f.points,
                fmt_count(f.from),
                fmt_count(f.to)
            ),
            None => format!("  {name:<28} too few measurements to fit\n"),
        };
        for (name, get) in [
            (
                "attention prefill",
                (|p| &p.attention_prefill) as fn(&Point) -> &Cell,
            ),
            ("attention decode", |p| &p.attention_decode),
        ] {
            let first_skip = self.points.iter().find_map(|p| match get(p) {
                Cell::Skipped { reason, .. } => Some((p.tokens, reason)),
                _ => None,
            });
            if let Some((n, reason)) = first_skip {
                let _ = writeln!(
                    s,
                    "{name} not run from {} tokens: {reason}",
                    fmt_count(n as f64)
                );
            }
            let first_oom = self.points.iter().find_map(|p| match get(p) {
                Cell::OutOfMemory { needs_bytes, .. } => Some((p.tokens, *needs_bytes)),
                _ => None,
            });
            if let Some((n, bytes)) = first_oom {
                let _ = writeln!(
                    s,
                    "{name} not run from {} tokens: needs {}, more than this machine's RAM",
                    fmt_count(n as f64),
                    fmt_bytes(bytes as f64)
                );
            }
        }
        s.push_str("fits (least squares on log time vs log length):\n");
        s.push_str(&fit_line("memory forward", &self.fits.memory_forward));
        s.push_str(&fit_line("attention prefill", &self.fits.attention_prefill));
        s.push_str(&fit_line(
            "memory decode, per token",
            &self.fits.memory_decode,
        ));
        s.push_str(&fit_line(
            "attention decode, per token",
            &self.fits.attention_decode,
        ));
        match self.crossover_measured_tokens {
            Some(n) if Some(n) == self.points.first().map(|p| p.tokens) => {
                let _ = writeln!(
                    s,
                    "crossover: the memory's forward is faster at every measured length (from {})",
                    fmt_count(n as f64)
                );
            }
            Some(n) => {
                let _ = writeln!(
                    s,
                    "crossover: the memory's forward is faster from {} tokens on (measured)",
                    fmt_count(n as f64)
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "crossover: attention's prefill was faster at the longest measured length"
                );
            }
        }
        if let Some(n) = self.crossover_fitted_tokens {
            let _ = writeln!(s, "           the fits cross at ~{} tokens", fmt_count(n));
        }
        let _ = writeln!(
            s,
            "memory kept: state {} at any length (+ {} of window buffers, also fixed); attention: KV cache {} per token, {} per token during prefill",
            fmt_bytes(self.state_bytes as f64),
            fmt_bytes(self.memory_window_bytes as f64),
            fmt_bytes(self.kv_cache_bytes_per_token as f64),
            fmt_bytes(self.attention_prefill_bytes_per_token as f64),
        );
        if let (Some(ram), Some(n_prefill), Some(n_kv)) = (
            self.machine.ram,
            self.attention_prefill_oom_tokens,
            self.kv_cache_oom_tokens,
        ) {
            let _ = writeln!(
                s,
                "out of memory: with {} of RAM, attention's prefill runs out at ~{} tokens and its KV cache alone at ~{}",
                fmt_bytes(ram.total_bytes as f64),
                fmt_count(n_prefill),
                fmt_count(n_kv)
            );
        }
        s
    }
}

/// What the times of the table mean.
pub fn clock_note(clock: Clock) -> &'static str {
    match clock {
        Clock::Wall => "times are wall-clock",
        Clock::Cpu => {
            "times are CPU time of the process, all threads summed (tok/CPU-s = tokens per CPU-second), \
             which other processes on the machine do not inflate"
        }
    }
}

/// Column name of a throughput on `clock`.
pub fn rate_label(clock: Clock) -> &'static str {
    match clock {
        Clock::Wall => "tok/s",
        Clock::Cpu => "tok/CPU-s",
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

fn fmt_cell(cell: &Cell, f: impl Fn(f64) -> String) -> String {
    match cell {
        Cell::Measured(t) => f(t.median_s),
        Cell::Skipped { extrapolated_s, .. } => {
            extrapolated_s.map_or("skipped".into(), |x| format!("~{}", f(x)))
        }
        Cell::OutOfMemory { extrapolated_s, .. } => {
            extrapolated_s.map_or("OOM".into(), |x| format!("~{} OOM", f(x)))
        }
    }
}

fn fmt_ratio(slow: &Cell, fast: &Cell) -> String {
    match (slow, fast) {
        (Cell::Measured(a), Cell::Measured(b)) => fmt_times(a.median_s / b.median_s),
        _ => match (slow.seconds(), fast.seconds()) {
            (Some(a), Some(b)) => format!("~{}", fmt_times(a / b)),
            _ => "-".into(),
        },
    }
}

fn fmt_times(r: f64) -> String {
    if r >= 100.0 {
        format!("{}×", fmt_count(r))
    } else {
        format!("{r:.2}×")
    }
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

/// Right-aligned columns separated by two spaces, the first row a header.
fn align(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let width: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |x| x.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut s = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, x)| format!("{}{x}", " ".repeat(width[c] - x.chars().count())))
            .collect();
        s.push_str(cells.join("  ").trim_end());
        s.push('\n');
    }
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn timed(s: f64) -> Cell {
        Cell::Measured(Timing {
            median_s: s,
            runs_s: vec![s],
            clock: super::super::Clock::Wall,
            wall_median_s: s,
            cpu_median_s: None,
            calls_per_run: 1,
        })
    }

    /// A report from synthetic measurements: linear memory, quadratic attention that
    /// stops being timed at 64K and runs out of memory at 1M.
    pub(crate) fn synthetic_report() -> BenchReport {
        let config = BenchConfig::default();
        let points = config
            .lengths()
            .into_iter()
            .map(|n| {
                let x = n as f64;
                let prefill = if n <= 65_536 {
                    timed(1e-10 * x * x)
                } else if n < 1 << 20 {
                    Cell::Skipped {
                        reason: "over the time budget".into(),
                        extrapolated_s: None,
                    }
                } else {
                    Cell::OutOfMemory {
                        needs_bytes: 6144 * n as u64,
                        extrapolated_s: None,
                    }
                };
                Point {
                    tokens: n,
                    memory_forward: timed(1.5e-6 * x),
                    attention_prefill: prefill,
                    memory_decode: timed(2e-5),
                    attention_decode: timed(4e-9 * x),
                    state_bytes: 65_536,
                    kv_cache_bytes: 2048 * n as u64,
                }
            })
            .collect();
        let machine = Machine {
            memory_backend: "cpu".into(),
            attention_backend: "cpu attention".into(),
            ram: Some(MemInfo {
                total_bytes: 4 << 30,
                available_bytes: 3 << 30,
            }),
        };
        let sizes = Sizes {
            state_bytes: 65_536,
            memory_window_bytes: 1 << 28,
            kv_cache_bytes_per_token: 2048,
            attention_prefill_bytes_per_token: 6144,
        };
        BenchReport::finish(config, machine, points, sizes)
    }

    #[test]
    fn finish_fits_extrapolates_and_finds_the_crossover() {
        let r = synthetic_report();
        let mf = r.fits.memory_forward.as_ref().unwrap();
        let ap = r.fits.attention_prefill.as_ref().unwrap();
        assert!((mf.exponent - 1.0).abs() < 1e-9 && (ap.exponent - 2.0).abs() < 1e-9);
        assert_eq!(
            ap.to, 65_536.0,
            "the fit used a length that was not measured"
        );
        // 1.5e-6 n = 1e-10 n² at n = 15,000: memory faster from 16,384 on.
        assert_eq!(r.crossover_measured_tokens, Some(16_384));
        assert!((r.crossover_fitted_tokens.unwrap() - 15_000.0).abs() < 1e-6);
        let skipped = r.points.iter().find(|p| p.tokens == 1 << 17).unwrap();
        let est = skipped.attention_prefill.seconds().unwrap();
        assert!((est / (1e-10 * (1u64 << 34) as f64) - 1.0).abs() < 1e-9);
        assert_eq!(skipped.attention_prefill.measured_s(), None);
        let t = &r.at_target;
        assert!((t.attention_prefill_s.unwrap() / 1e6 - 1.0).abs() < 1e-9); // 1e-10 · 1e16
        assert_eq!(t.attention_fits_in_ram, Some(false));
        assert!((r.speedup_at(65_536).unwrap() - 1e-10 * 65_536.0 / 1.5e-6).abs() < 1e-9);
    }

    #[test]
    fn table_labels_estimates_and_out_of_memory() {
        let table = synthetic_report().table();
        let row = |n: &str| {
            table
                .lines()
                .find(|l| l.trim_start().starts_with(n))
                .unwrap()
                .to_string()
        };
        assert!(
            !row("65.5K").contains('~'),
            "a measured row shows an estimate: {}",
            row("65.5K")
        );
        assert!(row("131K").contains('~'));
        assert!(row("1.05M").contains("OOM"));
        assert!(row("100M (extrapolated)").contains("OOM"));
        assert!(table.contains("n^1.00") && table.contains("n^2.00"));
        assert!(table.contains("faster from 16.4K tokens on"));
        assert!(table.contains("attention prefill not run from 131K tokens: over the time budget"));
        assert!(table.contains("attention prefill not run from 1.05M tokens: needs 6.00 GiB"));
    }

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
