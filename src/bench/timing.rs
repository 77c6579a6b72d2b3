//! Timing: warm-up runs, then the median of timed runs, so that one run disturbed by
//! another process on a shared machine does not move the result. Each run is timed
//! on the wall clock and on this process's CPU clock; other processes competing for
//! the cores stretch the first but not the second.

use std::str::FromStr;
use std::time::Instant;

use serde::Serialize;

use crate::error::{Error, Result};

/// Which clock a measurement is read on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Clock {
    /// Elapsed time.
    Wall,
    /// CPU time of this process, all threads summed (user + system): what the work
    /// cost, whatever else runs on the machine.
    Cpu,
}

impl FromStr for Clock {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "wall" => Ok(Clock::Wall),
            "cpu" => Ok(Clock::Cpu),
            _ => Err(Error::Config(format!(
                "unknown clock `{s}` (expected wall or cpu)"
            ))),
        }
    }
}

/// CPU time this process has used so far, all threads; `None` where the system
/// does not say.
pub fn process_cpu_seconds() -> Option<f64> {
    #[cfg(unix)]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec for the call to fill.
        if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) } == 0 {
            return Some(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9);
        }
    }
    None
}

/// The timed runs of one measurement, in seconds per call.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Timing {
    /// The median on `clock`.
    pub median_s: f64,
    /// Every timed run on `clock`.
    pub runs_s: Vec<f64>,
    /// The clock `median_s` and `runs_s` read.
    pub clock: Clock,
    /// The median on the wall clock (always recorded).
    pub wall_median_s: f64,
    /// The median in process CPU time, all threads summed, where the platform reports it.
    pub cpu_median_s: Option<f64>,
    /// Calls per timed run (short calls are timed in batches).
    pub calls_per_run: usize,
}

/// How many runs to make.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Runs {
    /// Untimed runs first (caches, page faults, thread start-up).
    pub warmup: usize,
    /// Timed runs; their median is the result.
    pub timed: usize,
    /// Timed runs instead of `timed` when one warm-up call took over `long_call_s`.
    pub timed_if_long: usize,
    /// Seconds a warm-up call must exceed for `timed_if_long` to apply.
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
/// `min_run_s` of wall time (calibrated on the warm-up), and reports seconds per
/// call. Long calls get `runs.timed_if_long` timed runs. Fails if `clock` is the CPU
/// clock and this system has none.
pub fn time_per_call(
    runs: Runs,
    min_run_s: f64,
    clock: Clock,
    mut f: impl FnMut() -> Result<()>,
) -> Result<Timing> {
    if clock == Clock::Cpu && process_cpu_seconds().is_none() {
        return Err(Error::Config(
            "this system does not report process CPU time; use the wall clock".into(),
        ));
    }
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
    let mut wall = Vec::with_capacity(timed.max(1));
    let mut cpu = Vec::with_capacity(timed.max(1));
    for _ in 0..timed.max(1) {
        let cpu0 = process_cpu_seconds();
        let start = Instant::now();
        for _ in 0..calls {
            f()?;
        }
        wall.push(start.elapsed().as_secs_f64() / calls as f64);
        if let (Some(a), Some(b)) = (cpu0, process_cpu_seconds()) {
            cpu.push((b - a) / calls as f64);
        }
    }
    let cpu_median_s = (!cpu.is_empty()).then(|| median(&cpu));
    let runs_s = match clock {
        Clock::Wall => wall.clone(),
        Clock::Cpu => cpu,
    };
    Ok(Timing {
        median_s: median(&runs_s),
        runs_s,
        clock,
        wall_median_s: median(&wall),
        cpu_median_s,
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
        let t = time_per_call(Runs::fixed(2, 3), 0.0, Clock::Wall, || {
            calls += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!((calls, t.runs_s.len()), (5, 3));
        let failing = time_per_call(Runs::fixed(0, 3), 0.0, Clock::Wall, || {
            Err(crate::Error::Config("no".into()))
        });
        assert!(failing.is_err());
    }

    #[test]
    fn short_calls_are_batched() {
        let mut calls = 0u64;
        let t = time_per_call(Runs::fixed(1, 3), 1e-3, Clock::Wall, || {
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
        let t = time_per_call(runs, 0.0, Clock::Wall, || {
            calls += 1;
            std::thread::sleep(std::time::Duration::from_micros(50));
            Ok(())
        })
        .unwrap();
        assert_eq!((t.runs_s.len(), t.calls_per_run, calls), (2, 1, 3));
    }
}
