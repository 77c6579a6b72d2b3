//! `ltm-engine bench`: the memory and the attention baseline side by side at the same
//! heads and dimensions, over context lengths in powers of two — time of a whole
//! context (the memory's forward, attention's prefill), time per generated token after
//! it (one state read and write, attention over the whole KV cache), and the bytes
//! each keeps. Scaling exponents are fitted and both are extrapolated to a target
//! length, labelled as extrapolated.

pub mod fit;
/// This machine's RAM (kept at its old path; it lives at the crate's root so that
/// `limits` can use it without importing `bench`).
pub use crate::meminfo;
pub mod report;
mod sweep;
pub mod timing;
pub mod workload;

use serde::Serialize;

use crate::error::{Error, Result};

pub use timing::Clock;

pub use report::{BenchReport, Cell, Point};
pub use sweep::run_sweep;

/// What to measure and the limits that keep a run short and within memory.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BenchConfig {
    /// Heads of both the memory and attention.
    pub heads: usize,
    /// Head dimension of attention; the memory uses `K = V = head_dim`.
    pub head_dim: usize,
    /// Context lengths are the powers of two from `min_tokens` to `max_tokens`.
    pub min_tokens: usize,
    /// The longest context length of the sweep.
    pub max_tokens: usize,
    /// Untimed runs before each measurement.
    pub warmup_runs: usize,
    /// Timed runs per measurement; the median is reported.
    pub timed_runs: usize,
    /// Timed runs when one call takes longer than `long_call_s`.
    pub timed_runs_if_long: usize,
    /// Seconds a warm-up call must exceed for `timed_runs_if_long` to apply.
    pub long_call_s: f64,
    /// A timed run repeats a short call until it lasts this long.
    pub min_run_s: f64,
    /// Attention prefill is not timed at lengths where one run is predicted to take
    /// longer than this; it is extrapolated there instead.
    pub prefill_budget_s: f64,
    /// Attention is not run where its buffers would exceed this many bytes.
    pub memory_limit_bytes: u64,
    /// Fits use the measured lengths from here up (the asymptotic regime); with fewer
    /// than two such lengths, the last three measured.
    pub fit_from_tokens: usize,
    /// The memory streams its context in windows of at most this many tokens, so its
    /// buffers do not grow with the context.
    pub window_tokens: usize,
    /// The length both are extrapolated to.
    pub target_tokens: f64,
    /// The clock the table, fits and chart read (both are always recorded).
    pub clock: Clock,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            heads: 4,
            head_dim: 64,
            min_tokens: 64,
            max_tokens: 1 << 20,
            warmup_runs: 1,
            timed_runs: 5,
            timed_runs_if_long: 3,
            long_call_s: 2.0,
            min_run_s: 0.05,
            prefill_budget_s: 30.0,
            memory_limit_bytes: 5 << 29, // 2.5 GiB
            fit_from_tokens: 4096,
            window_tokens: 1 << 16,
            target_tokens: 1e8,
            clock: Clock::Wall,
        }
    }
}

impl BenchConfig {
    /// Checks that counts are positive, the lengths hold a power of two, and times and the
    /// target are finite and non-negative.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("heads", self.heads),
            ("head_dim", self.head_dim),
            ("min_tokens", self.min_tokens),
            ("max_tokens", self.max_tokens),
            ("timed_runs", self.timed_runs),
            ("timed_runs_if_long", self.timed_runs_if_long),
            ("window_tokens", self.window_tokens),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(Error::Config(format!("{name} must be at least 1, found 0")));
            }
        }
        // The memory's state and one window of inputs and outputs are allocated before
        // any length is tried: sizes that cannot be are errors, not aborts.
        let (h, d) = (self.heads as u64, self.head_dim as u64);
        let window = self.window_tokens.min(self.max_tokens) as u64;
        let hd = h.checked_mul(d);
        let state = hd
            .and_then(|x| x.checked_mul(d))
            .and_then(|x| x.checked_mul(4));
        let buffers = hd
            .and_then(|x| x.checked_mul(window))
            .and_then(|x| x.checked_mul(4 * 4 + 8));
        let fixed = state.zip(buffers).and_then(|(a, b)| a.checked_add(b));
        let what = format!(
            "--heads {} --head-dim {} (the memory's state and window buffers)",
            self.heads, self.head_dim
        );
        crate::limits::check_alloc(&what, fixed)?;
        if self
            .min_tokens
            .checked_next_power_of_two()
            .is_none_or(|p| p > self.max_tokens)
        {
            return Err(Error::Config(format!(
                "no power of two between min_tokens {} and max_tokens {}",
                self.min_tokens, self.max_tokens
            )));
        }
        for (name, value) in [
            ("prefill_budget_s", self.prefill_budget_s),
            ("min_run_s", self.min_run_s),
            ("long_call_s", self.long_call_s),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(Error::Config(format!(
                    "{name} must be a non-negative number of seconds, found {value}"
                )));
            }
        }
        if !(self.target_tokens.is_finite() && self.target_tokens >= 1.0) {
            return Err(Error::Config(format!(
                "target_tokens must be at least 1, found {}",
                self.target_tokens
            )));
        }
        Ok(())
    }

    /// The context lengths of the sweep: powers of two in `[min_tokens, max_tokens]`.
    pub fn lengths(&self) -> Vec<usize> {
        let mut n = self.min_tokens.next_power_of_two();
        let mut out = Vec::new();
        while n <= self.max_tokens {
            out.push(n);
            match n.checked_mul(2) {
                Some(next) => n = next,
                None => break,
            }
        }
        out
    }
}
