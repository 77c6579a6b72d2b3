//! The bench's CPU clock counts work, not waiting. Process CPU time counts every thread
//! of the process, so this lives in a test binary of its own: beside the library's unit
//! tests, whatever they compute while this one sleeps would be charged to the sleep.

use std::time::{Duration, Instant};

use ltm_engine::bench::timing::{process_cpu_seconds, time_per_call, Runs};
use ltm_engine::bench::Clock;

#[test]
fn cpu_clock_counts_work_not_waiting() {
    assert!(
        process_cpu_seconds().is_some() || !cfg!(target_os = "linux"),
        "no process CPU clock on Linux"
    );
    if process_cpu_seconds().is_none() {
        eprintln!("skipped: this platform has no process CPU clock");
        return;
    }
    let sleep = time_per_call(Runs::fixed(0, 3), 0.0, Clock::Cpu, || {
        std::thread::sleep(Duration::from_millis(20));
        Ok(())
    })
    .unwrap();
    assert_eq!(sleep.clock, Clock::Cpu);
    assert!(sleep.wall_median_s >= 0.02);
    assert!(
        sleep.median_s < 0.01,
        "sleeping cost {} s of CPU",
        sleep.median_s
    );
    let spin = time_per_call(Runs::fixed(0, 3), 0.0, Clock::Cpu, || {
        let start = Instant::now();
        while start.elapsed().as_secs_f64() < 0.02 {
            std::hint::black_box(0);
        }
        Ok(())
    })
    .unwrap();
    assert!(
        spin.median_s > 0.005,
        "spinning cost only {} s of CPU",
        spin.median_s
    );
    assert_eq!("cpu".parse::<Clock>().unwrap(), Clock::Cpu);
    assert!("sundial".parse::<Clock>().is_err());
}
