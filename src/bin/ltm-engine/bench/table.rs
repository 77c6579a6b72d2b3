//! The bench report as a text table with its notes: the CLI's, so that the library
//! keeps the measurements and leaves their presentation to its callers.

use std::fmt::Write;

use ltm_engine::bench::fit::PowerFit;
use ltm_engine::bench::report::{fmt_bytes, fmt_count, fmt_seconds};
use ltm_engine::bench::{BenchReport, Cell, Clock, Point};

/// The text table of `report` with its notes.
pub fn table(report: &BenchReport) -> String {
    let c = &report.config;
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
        report.machine.memory_backend, report.machine.attention_backend
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
    for p in &report.points {
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
    let t = &report.at_target;
    let est = |x: Option<f64>| x.map_or("-".into(), |v| format!("~{}", fmt_seconds(v)));
    let rate = |x: Option<f64>| x.map_or("-".into(), |v| format!("~{}", fmt_count(t.tokens / v)));
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
        let first_skip = report.points.iter().find_map(|p| match get(p) {
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
        let first_oom = report.points.iter().find_map(|p| match get(p) {
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
    s.push_str(&fit_line("memory forward", &report.fits.memory_forward));
    s.push_str(&fit_line(
        "attention prefill",
        &report.fits.attention_prefill,
    ));
    s.push_str(&fit_line(
        "memory decode, per token",
        &report.fits.memory_decode,
    ));
    s.push_str(&fit_line(
        "attention decode, per token",
        &report.fits.attention_decode,
    ));
    match report.crossover_measured_tokens {
        Some(n) if Some(n) == report.points.first().map(|p| p.tokens) => {
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
    if let Some(n) = report.crossover_fitted_tokens {
        let _ = writeln!(s, "           the fits cross at ~{} tokens", fmt_count(n));
    }
    let _ = writeln!(
        s,
        "memory kept: state {} at any length (+ {} of window buffers, also fixed); attention: KV cache {} per token, {} per token during prefill",
        fmt_bytes(report.state_bytes as f64),
        fmt_bytes(report.memory_window_bytes as f64),
        fmt_bytes(report.kv_cache_bytes_per_token as f64),
        fmt_bytes(report.attention_prefill_bytes_per_token as f64),
    );
    if let (Some(ram), Some(n_prefill), Some(n_kv)) = (
        report.machine.ram,
        report.attention_prefill_oom_tokens,
        report.kv_cache_oom_tokens,
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
    use ltm_engine::bench::meminfo::MemInfo;
    use ltm_engine::bench::report::{Machine, Sizes};
    use ltm_engine::bench::timing::Timing;
    use ltm_engine::bench::BenchConfig;

    fn timed(s: f64) -> Cell {
        Cell::Measured(Timing {
            median_s: s,
            runs_s: vec![s],
            clock: Clock::Wall,
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
        let table = table(&synthetic_report());
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
}
