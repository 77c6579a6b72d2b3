//! Borrowed input tensors of any supported element type.

use half::{bf16, f16};

use crate::error::{Error, Result};

/// A borrowed, contiguous slice of f32, f16 or bf16 values. Kernels read through it and
/// accumulate in f32 whatever the storage type.
#[derive(Clone, Copy, Debug)]
pub enum Data<'a> {
    /// 32-bit floats.
    F32(&'a [f32]),
    /// IEEE half precision, widened to f32 on read.
    F16(&'a [f16]),
    /// bfloat16, widened to f32 on read.
    BF16(&'a [bf16]),
}

impl<'a> Data<'a> {
    /// Number of values, whatever their type.
    pub fn len(&self) -> usize {
        match self {
            Data::F32(s) => s.len(),
            Data::F16(s) => s.len(),
            Data::BF16(s) => s.len(),
        }
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            Data::F32(_) => DType::F32,
            Data::F16(_) => DType::F16,
            Data::BF16(_) => DType::BF16,
        }
    }

    /// Value `i` as f32 (exact for every type); panics past the end.
    #[inline(always)]
    pub fn get(&self, i: usize) -> f32 {
        match self {
            Data::F32(s) => s[i],
            Data::F16(s) => s[i].to_f32(),
            Data::BF16(s) => s[i].to_f32(),
        }
    }

    /// Converts `src.len()` values starting at `start` into `dst`, scaled by `scale`.
    #[inline(always)]
    pub fn read_scaled(&self, start: usize, dst: &mut [f32], scale: f32) {
        let n = dst.len();
        match self {
            Data::F32(s) => {
                for (d, &x) in dst.iter_mut().zip(&s[start..start + n]) {
                    *d = x * scale;
                }
            }
            Data::F16(s) => {
                for (d, x) in dst.iter_mut().zip(&s[start..start + n]) {
                    *d = x.to_f32() * scale;
                }
            }
            Data::BF16(s) => {
                for (d, x) in dst.iter_mut().zip(&s[start..start + n]) {
                    *d = x.to_f32() * scale;
                }
            }
        }
    }

    /// All values as f64, for references and checks.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        (0..self.len()).map(|i| self.get(i) as f64).collect()
    }
}

impl<'a> From<&'a [f32]> for Data<'a> {
    fn from(s: &'a [f32]) -> Self {
        Data::F32(s)
    }
}
impl<'a> From<&'a [f16]> for Data<'a> {
    fn from(s: &'a [f16]) -> Self {
        Data::F16(s)
    }
}
impl<'a> From<&'a [bf16]> for Data<'a> {
    fn from(s: &'a [bf16]) -> Self {
        Data::BF16(s)
    }
}
impl<'a> From<&'a Vec<f32>> for Data<'a> {
    fn from(s: &'a Vec<f32>) -> Self {
        Data::F32(s)
    }
}
impl<'a> From<&'a Vec<f16>> for Data<'a> {
    fn from(s: &'a Vec<f16>) -> Self {
        Data::F16(s)
    }
}
impl<'a> From<&'a Vec<bf16>> for Data<'a> {
    fn from(s: &'a Vec<bf16>) -> Self {
        Data::BF16(s)
    }
}

/// Element types accepted for inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    /// 32-bit IEEE float.
    F32,
    /// 16-bit IEEE float.
    F16,
    /// bfloat16: f32's exponent with 8 bits of mantissa.
    BF16,
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
        })
    }
}

pub(crate) fn shape_string(dims: &[usize]) -> String {
    let parts: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

/// Fails unless `len` values fill `dims` exactly, naming `tensor`, the shape it should
/// have and the length it has.
pub(crate) fn check_len(tensor: impl Into<String>, len: usize, dims: &[usize]) -> Result<()> {
    let want: usize = dims.iter().product();
    if len != want {
        return Err(Error::Shape {
            tensor: tensor.into(),
            expected: format!("{} ({want} values)", shape_string(dims)),
            found: format!("{len} values"),
        });
    }
    Ok(())
}

/// Fails unless the output buffer `o` holds exactly `want` values.
pub(crate) fn check_output_len(out: &[f32], want: usize) -> Result<()> {
    if out.len() != want {
        return Err(Error::Shape {
            tensor: "o".into(),
            expected: format!("{want} values"),
            found: format!("{} values", out.len()),
        });
    }
    Ok(())
}
