//! Matrix products through cuBLAS (loaded at run time like the driver, so a machine
//! without it still runs everything on the CPU): the language models' projections,
//! `y[T, out] = x[T, in] · w[out, in]ᵀ`, with x and w in f32, f16 or bf16 and f32
//! accumulation (`cublasGemmEx`, compute type 32F), y in f32 or in the inputs' type.
//!
//! cuBLAS is column-major; a row-major `[r, c]` matrix is a column-major `[c, r]` one.
//! So the product is computed as `yᵀ[out, T] = w[out, in] · xᵀ[in, T]` with `w` read
//! transposed from its column-major `[in, out]` view: [`blas_args`] is that mapping,
//! pure and unit-tested against a column-major product written the way BLAS defines it.

use std::ffi::{c_int, c_void};
use std::sync::Arc;

use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType};
use cudarc::cublas::{result as blas, CudaBlas};
use cudarc::driver::CudaStream;

use crate::error::{Error, Result};
use crate::tensor::DType;

/// One projection: `tokens` rows of `in_dim` through a `[out_dim, in_dim]` weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmShape {
    /// Rows of the activations (`T`).
    pub tokens: usize,
    /// Input features (the weight's row length).
    pub in_dim: usize,
    /// Output features (the weight's rows).
    pub out_dim: usize,
}

/// The column-major arguments of one `gemm` call (names as in the BLAS reference).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BlasArgs {
    pub trans_a: bool,
    pub trans_b: bool,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub lda: usize,
    pub ldb: usize,
    pub ldc: usize,
}

/// `C[m, n] = op(A)[m, k] · op(B)[k, n]` with A = the weight, B = the activations,
/// C = the outputs, all as the row-major buffers the model keeps.
pub(crate) fn blas_args(s: GemmShape) -> BlasArgs {
    BlasArgs {
        trans_a: true,
        trans_b: false,
        m: s.out_dim,
        n: s.tokens,
        k: s.in_dim,
        lda: s.in_dim,
        ldb: s.in_dim,
        ldc: s.out_dim,
    }
}

fn data_type(d: DType) -> cudaDataType {
    match d {
        DType::F32 => cudaDataType::CUDA_R_32F,
        DType::F16 => cudaDataType::CUDA_R_16F,
        DType::BF16 => cudaDataType::CUDA_R_16BF,
    }
}

fn blas_err(op: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::cuda(op, e)
}

/// Device addresses of one product's operands: `x` `[T, in]` and `w` `[out, in]` in
/// the inputs' type, `y` `[T, out]`.
#[derive(Clone, Copy, Debug)]
pub struct Operands {
    /// Activations.
    pub x: u64,
    /// Weight.
    pub w: u64,
    /// Output.
    pub y: u64,
}

/// Whether libcublas can be opened on this machine.
pub fn cublas_present() -> bool {
    // SAFETY: only tries to open the shared library; no cuBLAS call is made.
    unsafe { cudarc::cublas::sys::is_culib_present() }
}

/// A cuBLAS handle bound to one stream.
pub struct Blas {
    blas: CudaBlas,
}

impl Blas {
    /// A handle on `stream`; a clear error (not a panic) when libcublas is missing.
    pub fn new(stream: &Arc<CudaStream>) -> Result<Self> {
        if !cublas_present() {
            return Err(Error::Device(
                "cuBLAS (libcublas.so) was not found: the language models' matrix products \
                 on CUDA need it (install the CUDA toolkit's cuBLAS, or set LD_LIBRARY_PATH); \
                 --device cpu runs on the CPU"
                    .into(),
            ));
        }
        let blas =
            CudaBlas::new(stream.clone()).map_err(|e| blas_err("creating a cuBLAS handle", e))?;
        Ok(Blas { blas })
    }

    /// `y = x · wᵀ (+ y when accumulate)`: `x` `[T, in]` and `w` `[out, in]` in
    /// `ab`, `y` `[T, out]` in `y_type` (f32, or `ab`), f32 accumulation.
    ///
    /// # Safety
    /// `x`, `w` and `y` must be device addresses of live buffers of at least
    /// `T·in`, `out·in` and `T·out` elements of their types, on this handle's
    /// context, not written by another stream meanwhile.
    pub unsafe fn linear(
        &self,
        ops: Operands,
        ab: DType,
        y_type: DType,
        shape: GemmShape,
        accumulate: bool,
    ) -> Result<()> {
        if y_type != DType::F32 && y_type != ab {
            return Err(Error::Config(format!(
                "a matrix product of {ab:?} inputs writes f32 or {ab:?}, not {y_type:?}"
            )));
        }
        let Operands { x, w, y } = ops;
        let a = blas_args(shape);
        let int = |v: usize| {
            c_int::try_from(v).map_err(|_| {
                Error::Config(format!(
                    "a matrix product of {shape:?} has a dimension past cuBLAS's 2^31 − 1"
                ))
            })
        };
        let (m, n, k) = (int(a.m)?, int(a.n)?, int(a.k)?);
        let (lda, ldb, ldc) = (int(a.lda)?, int(a.ldb)?, int(a.ldc)?);
        if m == 0 || n == 0 {
            return Ok(());
        }
        let op = |t: bool| {
            if t {
                cublasOperation_t::CUBLAS_OP_T
            } else {
                cublasOperation_t::CUBLAS_OP_N
            }
        };
        let alpha = 1.0f32;
        let beta = if accumulate { 1.0f32 } else { 0.0f32 };
        // SAFETY: the caller vouches for the buffers (see above); alpha and beta are
        // f32 host scalars, as compute type 32F wants, alive for the call.
        unsafe {
            blas::gemm_ex(
                *self.blas.handle(),
                op(a.trans_a),
                op(a.trans_b),
                m,
                n,
                k,
                (&alpha) as *const f32 as *const c_void,
                w as *const c_void,
                data_type(ab),
                lda,
                x as *const c_void,
                data_type(ab),
                ldb,
                (&beta) as *const f32 as *const c_void,
                y as *mut c_void,
                data_type(y_type),
                ldc,
                cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cublasGemmAlgo_t::CUBLAS_GEMM_DFALT,
            )
        }
        .map_err(|e| blas_err(&format!("cublasGemmEx {shape:?} ({ab:?} → {y_type:?})"), e))
    }
}

impl super::CudaBackend {
    /// `x · wᵀ` on the device from host operands rounded to `dtype` (for tests):
    /// `x` `[T, in]`, `w` `[out, in]`, result `[T, out]` in f32.
    pub fn linear_on_device(
        &self,
        x: &[f32],
        w: &[f32],
        dtype: DType,
        shape: GemmShape,
    ) -> Result<Vec<f32>> {
        use super::buffers::DeviceBuffer;
        if x.len() != shape.tokens * shape.in_dim || w.len() != shape.out_dim * shape.in_dim {
            return Err(Error::Config(format!(
                "{shape:?} needs x of {} and w of {} values, found {} and {}",
                shape.tokens * shape.in_dim,
                shape.out_dim * shape.in_dim,
                x.len(),
                w.len()
            )));
        }
        self.bind()?;
        let blas = Blas::new(&self.stream)?;
        let to_bytes = |v: &[f32]| -> Vec<u8> {
            match dtype {
                DType::F32 => bytemuck::cast_slice(v).to_vec(),
                DType::F16 => v
                    .iter()
                    .flat_map(|&f| half::f16::from_f32(f).to_le_bytes())
                    .collect(),
                DType::BF16 => v
                    .iter()
                    .flat_map(|&f| half::bf16::from_f32(f).to_le_bytes())
                    .collect(),
            }
        };
        let (xb, wb) = (to_bytes(x), to_bytes(w));
        let mut dx = DeviceBuffer::new(&self.stream, "gemm x", xb.len())?;
        let mut dw = DeviceBuffer::new(&self.stream, "gemm w", wb.len())?;
        let mut dy = DeviceBuffer::new(&self.stream, "gemm y", shape.tokens * shape.out_dim * 4)?;
        dx.upload(&self.stream, 0, &xb)?;
        dw.upload(&self.stream, 0, &wb)?;
        dy.fill(&self.stream, 0xFF)?;
        // SAFETY: the buffers hold exactly the operands of `shape` (checked above).
        unsafe {
            blas.linear(
                Operands {
                    x: dx.ptr(&self.stream),
                    w: dw.ptr(&self.stream),
                    y: dy.ptr(&self.stream),
                },
                dtype,
                DType::F32,
                shape,
                false,
            )?
        };
        let mut y = vec![0.0f32; shape.tokens * shape.out_dim];
        dy.download(&self.stream, 0, bytemuck::cast_slice_mut(&mut y))?;
        self.finish_checks_on(&[&dx, &dw, &dy])?;
        Ok(y)
    }

    /// Times `y = x · wᵀ` with random-free (constant) device operands of `dtype` and
    /// f32 outputs, for benchmarks: the seconds of each of `repeats` runs of
    /// `calls` back-to-back products, after one warm-up call. The card's matrix rate is
    /// `2·T·in·out·calls / seconds`.
    pub fn time_gemm(
        &self,
        shape: GemmShape,
        dtype: DType,
        calls: usize,
        repeats: usize,
    ) -> Result<Vec<f64>> {
        use super::buffers::DeviceBuffer;
        use super::window::elem_bytes;
        self.bind()?;
        let blas = Blas::new(&self.stream)?;
        let bytes = |rows: usize, cols: usize, es: usize| {
            rows.checked_mul(cols)
                .and_then(|n| n.checked_mul(es))
                .ok_or_else(|| Error::Config(format!("{shape:?} overflows")))
        };
        let es = elem_bytes(dtype);
        let mut x = DeviceBuffer::new(
            &self.stream,
            "gemm x",
            bytes(shape.tokens, shape.in_dim, es)?,
        )?;
        let mut w = DeviceBuffer::new(
            &self.stream,
            "gemm w",
            bytes(shape.out_dim, shape.in_dim, es)?,
        )?;
        let y = DeviceBuffer::new(
            &self.stream,
            "gemm y",
            bytes(shape.tokens, shape.out_dim, 4)?,
        )?;
        // 0x3C bytes are small finite values in every type (no NaN or overflow).
        x.fill(&self.stream, 0x3C)?;
        w.fill(&self.stream, 0x3C)?;
        let (px, pw, py) = (
            x.ptr(&self.stream),
            w.ptr(&self.stream),
            y.ptr(&self.stream),
        );
        let mut times = Vec::with_capacity(repeats);
        for run in 0..=repeats {
            self.sync()?;
            let t = std::time::Instant::now();
            for _ in 0..if run == 0 { 1 } else { calls } {
                // SAFETY: the three buffers were sized for `shape` just above, live on
                // this backend's stream, and nothing else uses them.
                unsafe {
                    blas.linear(
                        Operands {
                            x: px,
                            w: pw,
                            y: py,
                        },
                        dtype,
                        DType::F32,
                        shape,
                        false,
                    )?
                };
            }
            self.sync()?;
            if run > 0 {
                times.push(t.elapsed().as_secs_f64());
            }
        }
        self.finish_checks_on(&[&x, &w, &y])?;
        Ok(times)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `C = op(A) · op(B)` exactly as the BLAS reference reads column-major operands.
    fn colmajor_gemm(a: &BlasArgs, am: &[f64], bm: &[f64], cm: &mut [f64]) {
        let at = |i: usize, p: usize| {
            if a.trans_a {
                am[p + i * a.lda]
            } else {
                am[i + p * a.lda]
            }
        };
        let bt = |p: usize, j: usize| {
            if a.trans_b {
                bm[j + p * a.ldb]
            } else {
                bm[p + j * a.ldb]
            }
        };
        for j in 0..a.n {
            for i in 0..a.m {
                cm[i + j * a.ldc] = (0..a.k).map(|p| at(i, p) * bt(p, j)).sum();
            }
        }
    }

    #[test]
    fn the_column_major_call_computes_x_times_w_transposed() {
        for (tokens, in_dim, out_dim) in [(1, 1, 1), (3, 5, 7), (8, 4, 2), (1, 16, 33)] {
            let shape = GemmShape {
                tokens,
                in_dim,
                out_dim,
            };
            let x: Vec<f64> = (0..tokens * in_dim)
                .map(|i| (i as f64 * 0.37).sin())
                .collect();
            let w: Vec<f64> = (0..out_dim * in_dim)
                .map(|i| (i as f64 * 0.11).cos())
                .collect();
            let args = blas_args(shape);
            assert!(args.lda >= if args.trans_a { args.k } else { args.m });
            assert!(args.ldb >= if args.trans_b { args.n } else { args.k });
            assert!(args.ldc >= args.m);
            let mut y = vec![f64::NAN; tokens * out_dim];
            colmajor_gemm(&args, &w, &x, &mut y);
            for t in 0..tokens {
                for o in 0..out_dim {
                    let want: f64 = (0..in_dim)
                        .map(|i| x[t * in_dim + i] * w[o * in_dim + i])
                        .sum();
                    let got = y[t * out_dim + o];
                    assert!(
                        (got - want).abs() < 1e-12,
                        "{shape:?} [{t}, {o}]: {got} vs {want}"
                    );
                }
            }
        }
    }
}
