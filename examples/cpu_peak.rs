//! Measures this CPU's peak f32 FMA rate on every core, the ceiling the arithmetic
//! floors of docs/benchmarks.md and docs/language-models.md are computed from.
//! `cargo run --release --example cpu_peak`

use std::time::Instant;

fn main() {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let iters = 200_000_000u64;
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| std::thread::spawn(move || fma_loop(iters)))
        .collect();
    let flops: f64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{threads} threads: {:.1} GFLOP/s f32 FMA peak",
        flops / secs / 1e9
    );
}

/// 12 independent accumulators of 16 (AVX-512) or 8 (AVX2) lanes hide the FMA latency
/// on two ports.
fn fma_loop(iters: u64) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512F was just detected.
        let sink = unsafe { fma_avx512(iters / 12) };
        std::hint::black_box(sink);
        return (iters / 12 * 12 * 16 * 12 * 2) as f64 / 12.0;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: AVX2 and FMA were just detected.
        let sink = unsafe { fma_avx2(iters / 12) };
        std::hint::black_box(sink);
        return (iters / 12 * 8 * 12 * 2) as f64;
    }
    let mut acc = [1.0f32; 8];
    for _ in 0..iters / 8 {
        for a in acc.iter_mut() {
            *a = a.mul_add(0.999_999, 1e-7);
        }
    }
    std::hint::black_box(acc);
    iters as f64 * 2.0
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_avx512(n: u64) -> f32 {
    use std::arch::x86_64::*;
    let m = _mm512_set1_ps(0.999_999);
    let c = _mm512_set1_ps(1e-7);
    let mut acc = [_mm512_set1_ps(1.0); 12];
    for _ in 0..n {
        for a in acc.iter_mut() {
            *a = _mm512_fmadd_ps(*a, m, c);
        }
    }
    let mut s = _mm512_setzero_ps();
    for a in acc {
        s = _mm512_add_ps(s, a);
    }
    _mm512_reduce_add_ps(s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_avx2(n: u64) -> f32 {
    use std::arch::x86_64::*;
    let m = _mm256_set1_ps(0.999_999);
    let c = _mm256_set1_ps(1e-7);
    let mut acc = [_mm256_set1_ps(1.0); 12];
    for _ in 0..n {
        for a in acc.iter_mut() {
            *a = _mm256_fmadd_ps(*a, m, c);
        }
    }
    let mut s = _mm256_setzero_ps();
    for a in acc {
        s = _mm256_add_ps(s, a);
    }
    let mut lanes = [0.0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), s);
    lanes.iter().sum()
}
