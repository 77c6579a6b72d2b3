//! Products with a checkpoint's weight matrices, `y = x · Wᵀ` for `W: [out, in]` as
//! `nn.Linear` stores it, through the `gemm` crate (multithreaded, AVX-512/AVX2 packed
//! kernels). The engine's own micro-kernels are specialised to the chunk algorithm's
//! padded workspaces (column counts a multiple of 16, no packing of large operands).

/// `y[rows × out] = x[rows × inner] · w[out × inner]ᵀ`, or `y +=` with `accumulate`.
///
/// # Panics
/// If a slice is shorter than its shape says (a bug in the caller, never input data).
pub fn matmul_t(
    x: &[f32],
    rows: usize,
    inner: usize,
    w: &[f32],
    out: usize,
    y: &mut [f32],
    accumulate: bool,
) {
    assert!(x.len() >= rows * inner, "matmul_t: x too short");
    assert!(w.len() >= out * inner, "matmul_t: w too short");
    assert!(y.len() >= rows * out, "matmul_t: y too short");
    if rows == 0 || out == 0 {
        return;
    }
    if inner == 0 {
        if !accumulate {
            y[..rows * out].fill(0.0);
        }
        return;
    }
    let threads = rayon::current_num_threads();
    // Small products (and one row, decode, unless the matrix is large) cost more to
    // hand to threads than to compute.
    let work = rows * out * inner;
    let parallelism = if threads == 1 || work < 1 << 15 || (rows == 1 && work < 1 << 20) {
        gemm::Parallelism::None
    } else {
        gemm::Parallelism::Rayon(threads)
    };
    // SAFETY: the asserts above keep every index the strides reach inside the slices:
    // x is rows × inner row-major, w is out × inner row-major (read as its transpose:
    // column j of the right operand is row j of w), y is rows × out row-major.
    unsafe {
        gemm::gemm(
            rows,
            out,
            inner,
            y.as_mut_ptr(),
            1,
            out as isize,
            accumulate,
            x.as_ptr(),
            1,
            inner as isize,
            w.as_ptr(),
            inner as isize,
            1,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_plain_loop_and_accumulates() {
        let (rows, inner, out) = (7, 37, 19);
        let x: Vec<f32> = (0..rows * inner)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0)
            .collect();
        let w: Vec<f32> = (0..out * inner)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 3.0)
            .collect();
        let mut want = vec![0.0f64; rows * out];
        for r in 0..rows {
            for o in 0..out {
                want[r * out + o] = (0..inner)
                    .map(|i| x[r * inner + i] as f64 * w[o * inner + i] as f64)
                    .sum();
            }
        }
        let mut y = vec![f32::NAN; rows * out];
        matmul_t(&x, rows, inner, &w, out, &mut y, false);
        for (a, b) in y.iter().zip(&want) {
            assert!((*a as f64 - b).abs() < 1e-4, "{a} vs {b}");
        }
        matmul_t(&x, rows, inner, &w, out, &mut y, true);
        for (a, b) in y.iter().zip(&want) {
            assert!((*a as f64 - 2.0 * b).abs() < 2e-4, "{a} vs {}", 2.0 * b);
        }
    }
}
