//! Wall-clock timing: warm-up runs, then the median of timed runs, so that one run
//! disturbed by another process on a shared machine does not move the result.

use std::time::Instant;

use serde::Serialize;

use crate::error::Result;

/// The timed runs of one measurement, each in seconds per call.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Timing {
    pub median_s: f64,
    pub runs_s: Vec<f64>,
    /// Calls per timed run (short calls are timed in batches).
    pub calls_per_run: usize,
}

/// How many runs to make.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Runs {
    pub warmup: usize,
    pub timed: usize,
    /// Timed runs instead of `timed` when one warm-up call took over `long_call_s`.
    pub timed_if_long: usize,
    pub long_call_s: f64,
}

impl Runs {
    /// `timed` runs, whatever a call takes.
    pub fn fixed(warmup: usize, timed: usize) -> Runs {
        Runs {
            warmup,
            timed,
            timed_if_long: timed,
            long_call_s: f64::INFINITY,
        }
    }
}

/// The median of a non-empty list (mean of the two middle values for an even count).
pub fn median(values: &[f64]) -> f64 {
    assert!(!values.is_empty(), "median of nothing");
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        0.5 * (v[mid - 1] + v[mid])
    }
}

/// Times a call: each timed run repeats it enough times to last at least
/// `min_run_s` (calibrated on the warm-up), and reports seconds per call. Long calls
/// get `runs.timed_if_long` timed runs.
pub fn time_per_call(
    runs: Runs,
    min_run_s: f64,
    mut f: impl FnMut() -> Result<()>,
) -> Result<Timing> {
    let mut calls = 1usize;
    let start = Instant::now();
    for _ in 0..runs.warmup.max(1) {
        f()?;
    }
    let one = start.elapsed().as_secs_f64() / runs.warmup.max(1) as f64;
    if one > 0.0 {
        calls = ((min_run_s / one).ceil() as usize).clamp(1, 1_000_000);
    }
    let timed = if one > runs.long_call_s {
        runs.timed_if_long
    } else {
        runs.timed
    };
    let mut times = Vec::with_capacity(timed.max(1));
    for _ in 0..timed.max(1) {
        let start = Instant::now();
        for _ in 0..calls {
            f()?;
        }
        times.push(start.elapsed().as_secs_f64() / calls as f64);
    }
    Ok(Timing {
        median_s: median(&times),
        runs_s: times,
        calls_per_run: calls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[5.0]), 5.0);
    }

    #[test]
    fn runs_are_counted_and_errors_stop_the_timing() {
        let mut calls = 0;
        let t = time_per_call(Runs::fixed(2, 3), 0.0, || {
            calls += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!((calls, t.runs_s.len()), (5, 3));
        let failing = time_per_call(Runs::fixed(0, 3), 0.0, || {
            Err(crate::Error::Config("no".into()))
        });
        assert!(failing.is_err());
    }

    #[test]
    fn short_calls_are_batched() {
        let mut calls = 0u64;
        let t = time_per_call(Runs::fixed(1, 3), 1e-3, || {
            calls += 1;
            std::hint::black_box(calls);
            Ok(())
        })
        .unwrap();
        assert!(t.calls_per_run > 1, "a trivial call was not batched");
        assert_eq!(calls, 1 + 3 * t.calls_per_run as u64);
    }

    #[test]
    fn long_calls_get_fewer_runs() {
        let runs = Runs {
            warmup: 1,
            timed: 5,
            timed_if_long: 2,
            long_call_s: 0.0,
        };
        let mut calls = 0;
        let t = time_per_call(runs, 0.0, || {
            calls += 1;
            std::thread::sleep(std::time::Duration::from_micros(50));
            Ok(())
        })
        .unwrap();
        assert_eq!((t.runs_s.len(), t.calls_per_run, calls), (2, 1, 3));
    }
}
