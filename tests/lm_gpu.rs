//! Language models on CUDA: the matrix products through cuBLAS against a float64
//! product on the host, for every weight type. Every test needs a GPU and is
//! `#[ignore]`d (`scripts/gpu-check.sh` runs them); without one each fails.

use ltm_engine::backend::cuda::{CudaBackend, GemmShape};
use ltm_engine::DType;

fn gpu() -> CudaBackend {
    match CudaBackend::new(0) {
        Ok(b) => b.with_checks(true),
        Err(e) => panic!("this GPU test needs a usable CUDA device: {e}"),
    }
}

fn wave(n: usize, f: f64) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as f64 * f).sin() * 0.9) as f32)
        .collect()
}

/// `x · wᵀ` in float64 from the values as the device holds them (rounded to `dtype`).
fn reference(x: &[f32], w: &[f32], s: GemmShape, dtype: DType) -> Vec<f64> {
    let round = |v: f32| -> f64 {
        match dtype {
            DType::F32 => v as f64,
            DType::F16 => half::f16::from_f32(v).to_f64(),
            DType::BF16 => half::bf16::from_f32(v).to_f64(),
        }
    };
    let mut y = vec![0.0; s.tokens * s.out_dim];
    for t in 0..s.tokens {
        for o in 0..s.out_dim {
            y[t * s.out_dim + o] = (0..s.in_dim)
                .map(|i| round(x[t * s.in_dim + i]) * round(w[o * s.in_dim + i]))
                .sum();
        }
    }
    y
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn cublas_projections_match_a_float64_product() {
    let gpu = gpu();
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for (tokens, in_dim, out_dim) in [(1, 64, 96), (37, 256, 130), (512, 1024, 384)] {
            let s = GemmShape {
                tokens,
                in_dim,
                out_dim,
            };
            let (x, w) = (wave(tokens * in_dim, 0.37), wave(out_dim * in_dim, 0.113));
            let got = gpu.linear_on_device(&x, &w, dtype, s).unwrap();
            let want = reference(&x, &w, s, dtype);
            let scale = want.iter().fold(1e-30f64, |m, v| m.max(v.abs()));
            let err = got
                .iter()
                .zip(&want)
                .map(|(g, w)| (*g as f64 - w).abs())
                .fold(
                    0.0f64,
                    |m, e| if e.is_nan() { f64::INFINITY } else { m.max(e) },
                )
                / scale;
            eprintln!("gemm {dtype:?} {s:?}: error {err:.2e} of the largest");
            // f32 accumulation of exactly representable products: only the sums round
            // (f32 inputs may go through TF32 only if a math mode asked; none does).
            assert!(err < 1e-5, "{dtype:?} {s:?}: {err:.2e}");
        }
    }
}
