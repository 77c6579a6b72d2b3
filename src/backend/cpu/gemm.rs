//! Small dense matrix products for the chunk algorithm, with register-blocked
//! micro-kernels: AVX-512 where the CPU has it, a portable one elsewhere.
//!
//! All matrices are row-major f32 with a leading dimension. The column count `n` of
//! the result is a multiple of [`LANES`]: the chunk workspaces are padded to it, so
//! no kernel needs a masked tail.

use std::sync::OnceLock;

/// Width of one vector register in f32 and the padding unit of every workspace matrix.
pub const LANES: usize = 16;
/// Rows of the result held in registers at once.
const MR: usize = 6;
/// Vector registers of columns held at once (64 columns).
const NV: usize = 4;

/// Which instruction set the CPU kernels use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512F micro-kernels, 16 f32 lanes (chosen only where the CPU reports it).
    Avx512,
    /// The portable code compiled for AVX2 and FMA, 8 lanes (CPUs without AVX-512,
    /// e.g. AMD's before Zen 4): the same operations in the same order as `Portable`.
    Avx2,
    /// Plain Rust that the compiler vectorises for the build's target; runs everywhere.
    Portable,
}

impl Isa {
    /// The best the running CPU supports; `LTM_CPU_ISA=portable` forces the fallback,
    /// `LTM_CPU_ISA=avx2` the AVX2 kernels on a CPU that also has AVX-512 (so both
    /// paths can be tested on one machine).
    pub fn detect() -> Isa {
        static DETECTED: OnceLock<Isa> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            let forced = std::env::var("LTM_CPU_ISA").ok();
            if forced.as_deref() == Some("portable") {
                return Isa::Portable;
            }
            #[cfg(target_arch = "x86_64")]
            if forced.as_deref() == Some("avx2")
                && std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx2;
            }
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx2;
            }
            Isa::Portable
        })
    }

    /// Lower-case name as printed by `info` and backend names: `avx512`, `avx2` or
    /// `portable`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Portable => "portable",
        }
    }
}

/// Which part of the product is needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// Every entry of the product.
    Full,
    /// Row `i` only needs columns `j ≤ i` (a lower-triangular result); columns past
    /// the row block's last row, rounded up to [`LANES`], are skipped and left stale.
    LowerColumns,
    /// `a` is lower-triangular, so row `i` only needs depth `p ≤ i`.
    LowerDepth,
}

/// A row-major matrix operand.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    /// The values, row after row; row `i` starts at `i * ld`.
    pub data: &'a [f32],
    /// Leading dimension: f32 values from one row's start to the next (≥ the columns used).
    pub ld: usize,
}

/// `c[m×n] = a[m×k] · b[k×n]`, or `c += a · b` with `accumulate`.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    isa: Isa,
    part: Part,
    m: usize,
    n: usize,
    k: usize,
    a: Mat<'_>,
    b: Mat<'_>,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    assert!(
        n.is_multiple_of(LANES),
        "gemm: n = {n} is not a multiple of {LANES}"
    );
    if m == 0 || n == 0 {
        return;
    }
    assert!(a.data.len() >= (m - 1) * a.ld + k, "gemm: a too short");
    assert!(
        k == 0 || b.data.len() >= (k - 1) * b.ld + n,
        "gemm: b too short"
    );
    assert!(c.len() >= (m - 1) * ldc + n, "gemm: c too short");
    let mut i0 = 0;
    while i0 < m {
        let mr = MR.min(m - i0);
        let last_row = i0 + mr; // exclusive
        let (n_blk, k_blk) = match part {
            Part::Full => (n, k),
            Part::LowerColumns => (n.min(last_row.div_ceil(LANES) * LANES), k),
            Part::LowerDepth => (n, k.min(last_row)),
        };
        let mut j0 = 0;
        while j0 < n_blk {
            let nv = NV.min((n_blk - j0) / LANES);
            // SAFETY: the asserts above bound every row `i0..i0+mr`, depth `0..k_blk`
            // and column `j0..j0+16·nv` the kernel touches.
            unsafe {
                micro(
                    isa,
                    mr,
                    nv,
                    k_blk,
                    a.data.as_ptr().add(i0 * a.ld),
                    a.ld,
                    b.data.as_ptr().add(j0),
                    b.ld,
                    c.as_mut_ptr().add(i0 * ldc + j0),
                    ldc,
                    accumulate,
                );
            }
            j0 += nv * LANES;
        }
        i0 += mr;
    }
}

macro_rules! dispatch {
    ($f:ident, $mr:expr, $nv:expr, $args:tt) => {
        match ($mr, $nv) {
            (1, 1) => dispatch!(@call $f, 1, 1, $args),
            (1, 2) => dispatch!(@call $f, 1, 2, $args),
            (1, 3) => dispatch!(@call $f, 1, 3, $args),
            (1, 4) => dispatch!(@call $f, 1, 4, $args),
            (2, 1) => dispatch!(@call $f, 2, 1, $args),
            (2, 2) => dispatch!(@call $f, 2, 2, $args),
            (2, 3) => dispatch!(@call $f, 2, 3, $args),
            (2, 4) => dispatch!(@call $f, 2, 4, $args),
            (3, 1) => dispatch!(@call $f, 3, 1, $args),
            (3, 2) => dispatch!(@call $f, 3, 2, $args),
            (3, 3) => dispatch!(@call $f, 3, 3, $args),
            (3, 4) => dispatch!(@call $f, 3, 4, $args),
            (4, 1) => dispatch!(@call $f, 4, 1, $args),
            (4, 2) => dispatch!(@call $f, 4, 2, $args),
            (4, 3) => dispatch!(@call $f, 4, 3, $args),
            (4, 4) => dispatch!(@call $f, 4, 4, $args),
            (5, 1) => dispatch!(@call $f, 5, 1, $args),
            (5, 2) => dispatch!(@call $f, 5, 2, $args),
            (5, 3) => dispatch!(@call $f, 5, 3, $args),
            (5, 4) => dispatch!(@call $f, 5, 4, $args),
            (6, 1) => dispatch!(@call $f, 6, 1, $args),
            (6, 2) => dispatch!(@call $f, 6, 2, $args),
            (6, 3) => dispatch!(@call $f, 6, 3, $args),
            (6, 4) => dispatch!(@call $f, 6, 4, $args),
            _ => unreachable!("micro-kernel block {}x{}", $mr, $nv),
        }
    };
    (@call $f:ident, $m:literal, $v:literal, ($($arg:expr),*)) => {
        $f::<$m, $v>($($arg),*)
    };
}

/// # Safety
/// `a` must be readable for rows `0..mr` (stride `lda`) and depth `0..k`; `b` for rows
/// `0..k` (stride `ldb`) and columns `0..16·nv`; `c` writable likewise for `mr` rows.
#[allow(clippy::too_many_arguments)]
#[inline]
unsafe fn micro(
    isa: Isa,
    mr: usize,
    nv: usize,
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => dispatch!(
            micro_avx512,
            mr,
            nv,
            (k, a, lda, b, ldb, c, ldc, accumulate)
        ),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => dispatch!(micro_avx2, mr, nv, (k, a, lda, b, ldb, c, ldc, accumulate)),
        _ => dispatch!(
            micro_portable,
            mr,
            nv,
            (k, a, lda, b, ldb, c, ldc, accumulate)
        ),
    }
}

/// The portable micro-kernel compiled for AVX2 and FMA.
///
/// # Safety
/// As [`micro_portable`], and the CPU must have AVX2 and FMA (`Isa::Avx2`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn micro_avx2<const R: usize, const V: usize>(
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    // SAFETY: the caller's contract is micro_portable's.
    unsafe { micro_portable::<R, V>(k, a, lda, b, ldb, c, ldc, accumulate) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn micro_avx512<const R: usize, const V: usize>(
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); V]; R];
    if accumulate {
        for (r, row) in acc.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(c.add(r * ldc + j * LANES));
            }
        }
    }
    for p in 0..k {
        let bp = b.add(p * ldb);
        let mut bv = [_mm512_setzero_ps(); V];
        for (j, v) in bv.iter_mut().enumerate() {
            *v = _mm512_loadu_ps(bp.add(j * LANES));
        }
        for (r, row) in acc.iter_mut().enumerate() {
            let av = _mm512_set1_ps(*a.add(r * lda + p));
            for (j, v) in row.iter_mut().enumerate() {
                *v = _mm512_fmadd_ps(av, bv[j], *v);
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            _mm512_storeu_ps(c.add(r * ldc + j * LANES), *v);
        }
    }
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn micro_portable<const R: usize, const V: usize>(
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    let mut acc = [[[0.0f32; LANES]; V]; R];
    if accumulate {
        for (r, row) in acc.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                for (l, x) in v.iter_mut().enumerate() {
                    *x = *c.add(r * ldc + j * LANES + l);
                }
            }
        }
    }
    for p in 0..k {
        let bp = b.add(p * ldb);
        for (r, row) in acc.iter_mut().enumerate() {
            let av = *a.add(r * lda + p);
            for (j, v) in row.iter_mut().enumerate() {
                for (l, x) in v.iter_mut().enumerate() {
                    *x += av * *bp.add(j * LANES + l);
                }
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            for (l, x) in v.iter().enumerate() {
                *c.add(r * ldc + j * LANES + l) = *x;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f64> {
        let mut c = vec![0.0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                for p in 0..k {
                    c[i * n + j] += a[i * k + p] as f64 * b[p * n + j] as f64;
                }
            }
        }
        c
    }

    fn pseudo(len: usize, seed: u32) -> Vec<f32> {
        let mut x = seed.wrapping_mul(2_654_435_761).max(1);
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x as f32 / u32::MAX as f32) - 0.5
            })
            .collect()
    }

    #[test]
    fn every_block_shape_matches_naive_product() {
        for isa in [Isa::detect(), Isa::Portable] {
            for (m, n, k) in [
                (1, 16, 1),
                (5, 48, 7),
                (13, 80, 33),
                (64, 64, 64),
                (7, 128, 0),
            ] {
                let a = pseudo(m * k, 1 + m as u32);
                let b = pseudo(k * n, 2 + n as u32);
                let want = naive(m, n, k, &a, &b);
                let mut c = vec![f32::NAN; m * n];
                gemm(
                    isa,
                    Part::Full,
                    m,
                    n,
                    k,
                    Mat { data: &a, ld: k },
                    Mat { data: &b, ld: n },
                    &mut c,
                    n,
                    false,
                );
                for (x, w) in c.iter().zip(&want) {
                    assert!(
                        (*x as f64 - w).abs() < 1e-5,
                        "{isa:?} {m}x{n}x{k}: {x} vs {w}"
                    );
                }
                // accumulate adds onto what is there
                gemm(
                    isa,
                    Part::Full,
                    m,
                    n,
                    k,
                    Mat { data: &a, ld: k },
                    Mat { data: &b, ld: n },
                    &mut c,
                    n,
                    true,
                );
                for (x, w) in c.iter().zip(&want) {
                    assert!((*x as f64 - 2.0 * w).abs() < 2e-5, "{isa:?} accumulate");
                }
            }
        }
    }

    #[test]
    fn lower_parts_compute_the_lower_triangle() {
        let (m, n) = (40, 48);
        let k = n;
        let mut a = pseudo(m * k, 9);
        let b = pseudo(k * n, 10);
        let full = naive(m, n, k, &a, &b);
        let mut c = vec![0.0; m * n];
        gemm(
            Isa::detect(),
            Part::LowerColumns,
            m,
            n,
            k,
            Mat { data: &a, ld: k },
            Mat { data: &b, ld: n },
            &mut c,
            n,
            false,
        );
        for i in 0..m {
            for j in 0..=i.min(n - 1) {
                assert!((c[i * n + j] as f64 - full[i * n + j]).abs() < 1e-5);
            }
        }
        for i in 0..m {
            for p in i + 1..k {
                a[i * k + p] = 0.0;
            }
        }
        let want = naive(m, n, k, &a, &b);
        gemm(
            Isa::detect(),
            Part::LowerDepth,
            m,
            n,
            k,
            Mat { data: &a, ld: k },
            Mat { data: &b, ld: n },
            &mut c,
            n,
            false,
        );
        for (x, w) in c.iter().zip(&want) {
            assert!((*x as f64 - w).abs() < 1e-5);
        }
    }
}
