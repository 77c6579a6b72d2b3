//! The large matrices of a model (embeddings, the stacked projections, the MLP, the
//! output head) as bytes in one element type, the form a device holds them in: the
//! checkpoint's own dtype when every matrix has the same one (bf16 weights stay bf16),
//! else f32. The CPU forward uses the f32 [`super::weights::Weights`]; this is what the
//! CUDA model uploads once.
//!
//! A stacked matrix is a list of parts, each borrowed from the memory-mapped files
//! where the tensor already has the common dtype (converted, and owned, only where it
//! does not): the device takes the parts one after another, so loading a model for it
//! makes no host copy of its matrices.

use std::borrow::Cow;

use half::{bf16, f16};

use super::block::BlockWeights;
use super::config::GdnConfig;
use super::readers::gated_deltanet::GatedDeltaNetReader;
use super::readers::{BlockTensors, Reader, Tensor};
use super::weights::{WeightFiles, Weights};
use crate::error::{Error, Result};
use crate::tensor::DType;

/// A row-major `[rows, cols]` matrix as little-endian bytes of `dtype`, in parts of
/// whole rows (the stacked tensors) whose concatenation is the matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct Matrix<'a> {
    /// Element type.
    pub dtype: DType,
    /// Rows (a projection's outputs).
    pub rows: usize,
    /// Columns (a projection's inputs).
    pub cols: usize,
    /// `rows · cols` elements in all, in order; borrowed from the weight files where
    /// they are stored in `dtype`.
    pub parts: Vec<Cow<'a, [u8]>>,
}

impl Matrix<'_> {
    /// Bytes of the whole matrix.
    pub fn len_bytes(&self) -> usize {
        self.parts.iter().map(|p| p.len()).sum()
    }

    /// The whole matrix in one buffer (a copy).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.parts.concat()
    }

    /// Parts that are copies (converted from another dtype), not borrowed.
    pub fn owned_parts(&self) -> usize {
        self.parts
            .iter()
            .filter(|p| matches!(p, Cow::Owned(_)))
            .count()
    }
}

/// One layer's projections in one element type, stacked as
/// [`super::weights::LayerWeights`] stacks them; its vectors stay with the f32 weights.
pub type LayerMatrices<'a> = BlockWeights<Matrix<'a>, ()>;

/// Every large matrix of a model, in one element type.
#[derive(Clone, Debug, PartialEq)]
pub struct Matrices<'a> {
    /// The element type of all of them.
    pub dtype: DType,
    /// `[vocab, D]`.
    pub embeddings: Matrix<'a>,
    /// Per layer.
    pub layers: Vec<LayerMatrices<'a>>,
    /// `[vocab, D]`; `None` when tied to the embeddings.
    pub lm_head: Option<Matrix<'a>>,
}

fn elem(d: DType) -> usize {
    match d {
        DType::F32 => 4,
        DType::F16 | DType::BF16 => 2,
    }
}

/// `values` as bytes of `dtype` (rounded to nearest).
pub fn encode(values: &[f32], dtype: DType) -> Vec<u8> {
    match dtype {
        DType::F32 => bytemuck::cast_slice(values).to_vec(),
        DType::F16 => values
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect(),
        DType::BF16 => values
            .iter()
            .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
            .collect(),
    }
}

/// Bytes of `from` as f32 values.
fn decode(bytes: &[u8], from: DType) -> Vec<f32> {
    match from {
        DType::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        DType::F16 => bytes
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        DType::BF16 => bytes
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
    }
}

/// Tensors stacked row-wise into one matrix of `dtype`: their bytes borrowed as they
/// are when they have that type, else converted.
fn stack<'a>(parts: &[(DType, &'a [u8])], cols: usize, dtype: DType) -> Result<Matrix<'a>> {
    let mut out = Vec::with_capacity(parts.len());
    let mut elems = 0usize;
    for &(d, b) in parts {
        let n = b.len() / elem(d);
        elems += n;
        if d == dtype {
            out.push(Cow::Borrowed(b));
        } else {
            out.push(Cow::Owned(encode(&decode(b, d), dtype)));
        }
    }
    if cols == 0 || !elems.is_multiple_of(cols) {
        return Err(Error::Config(format!(
            "a stacked matrix of {elems} values does not have rows of {cols}"
        )));
    }
    Ok(Matrix {
        dtype,
        rows: elems / cols,
        cols,
        parts: out,
    })
}

impl<'a> Matrices<'a> {
    /// The matrices of checked checkpoint files (`WeightFiles::load` has checked names
    /// and shapes), in the checkpoint's dtype when all of them share one, else f32.
    pub fn from_files(files: &'a WeightFiles, c: &GdnConfig) -> Result<Self> {
        let reader = GatedDeltaNetReader(c);
        let (emb, head) = (reader.embeddings(), reader.head());
        let layers: Vec<BlockTensors> = (0..reader.layers()).map(|l| reader.block(l)).collect();
        let mut names: Vec<&str> = vec![emb.0.as_str()];
        for l in &layers {
            names.extend(l.matrices().into_iter().flatten().map(|t| t.0.as_str()));
        }
        names.extend(head.as_ref().map(|t| t.0.as_str()));
        let mut dtypes = Vec::with_capacity(names.len());
        for n in &names {
            dtypes.push(files.raw(n)?.0);
        }
        let dtype = common_dtype(&dtypes);
        let take = |group: &[Tensor]| -> Result<Matrix<'a>> {
            let mut parts = Vec::with_capacity(group.len());
            for (n, _) in group {
                let (d, _, b) = files.raw(n)?;
                parts.push((d, b));
            }
            // Every part has the matrix's columns (the reader's shapes, checked at load).
            stack(&parts, group[0].1[1], dtype)
        };
        let embeddings = take(std::slice::from_ref(&emb))?;
        let layers = layers
            .iter()
            .map(|names| names.try_map(|_, m| take(m), |_, _| Ok(())))
            .collect::<Result<Vec<_>>>()?;
        let lm_head = head.map(|h| take(&[h])).transpose()?;
        Ok(Matrices {
            dtype,
            embeddings,
            layers,
            lm_head,
        })
    }

    /// The matrices of f32 weights (a random model), rounded to `dtype`.
    pub fn from_weights(w: &Weights, c: &GdnConfig, dtype: DType) -> Self {
        let m = |v: &[f32], cols: usize| Matrix {
            dtype,
            rows: v.len() / cols,
            cols,
            parts: vec![Cow::Owned(encode(v, dtype))],
        };
        let (d, i, dv) = (c.hidden_size, c.intermediate_size, c.value_width());
        Matrices {
            dtype,
            embeddings: m(&w.embeddings, d),
            layers: w
                .layers
                .iter()
                .map(|l| {
                    let cols = |name| match name {
                        "o_proj" => dv,
                        "down" => i,
                        _ => d,
                    };
                    let mapped: std::result::Result<_, std::convert::Infallible> =
                        l.try_map(|name, w| Ok(m(w, cols(name))), |_, _| Ok(()));
                    match mapped {
                        Ok(layer) => layer,
                        Err(never) => match never {},
                    }
                })
                .collect(),
            lm_head: w.lm_head.as_ref().map(|h| m(h, d)),
        }
    }

    /// Bytes of all the matrices.
    pub fn bytes(&self) -> usize {
        self.all().map(Matrix::len_bytes).sum()
    }

    /// Every matrix, in upload order.
    pub fn all(&self) -> impl Iterator<Item = &Matrix<'a>> {
        std::iter::once(&self.embeddings)
            .chain(self.layers.iter().flat_map(|l| l.matrices()))
            .chain(self.lm_head.as_ref())
    }
}

/// The one dtype every matrix has, or f32 when they differ.
fn common_dtype(dtypes: &[DType]) -> DType {
    match dtypes.first() {
        Some(&d) if dtypes.iter().all(|&x| x == d) => d,
        _ => DType::F32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacking_keeps_bytes_of_the_common_type_and_converts_others() {
        let a = encode(&[1.0, 2.0, 3.0], DType::BF16);
        let b = encode(&[0.5, -4.0, 8.0], DType::BF16);
        let m = stack(&[(DType::BF16, &a), (DType::BF16, &b)], 3, DType::BF16).unwrap();
        assert_eq!((m.rows, m.cols), (2, 3));
        assert_eq!(
            m.to_bytes(),
            [a.clone(), b.clone()].concat(),
            "bf16 bytes taken as they are"
        );
        assert_eq!(m.owned_parts(), 0, "bf16 parts borrowed, not copied");
        let f = encode(&[0.25, 0.75, 1.5], DType::F32);
        let mixed = stack(&[(DType::BF16, &a), (DType::F32, &f)], 3, DType::F32).unwrap();
        assert_eq!(
            decode(&mixed.to_bytes(), DType::F32),
            vec![1.0, 2.0, 3.0, 0.25, 0.75, 1.5]
        );
        assert_eq!(mixed.owned_parts(), 1, "only the bf16 part converted");
        assert_eq!(mixed.len_bytes(), 24);
        assert!(stack(&[(DType::F32, &f)], 2, DType::F32).is_err());
        assert_eq!(common_dtype(&[DType::F16, DType::F16]), DType::F16);
        assert_eq!(common_dtype(&[DType::F16, DType::BF16]), DType::F32);
    }

    #[test]
    fn a_checkpoint_keeps_its_dtype_and_its_values() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gdn-tiny");
        let c = GdnConfig::load(std::path::Path::new(&format!("{dir}/config.json"))).unwrap();
        let files = WeightFiles::open(std::path::Path::new(dir)).unwrap();
        let (w, _) = files.load(&c).unwrap();
        let m = Matrices::from_files(&files, &c).unwrap();
        let (dt, _, _) = files.raw("model.embeddings.weight").unwrap();
        assert_eq!(m.dtype, dt);
        assert_eq!(m.layers.len(), c.layers);
        // The same values as the f32 weights the CPU runs, matrix by matrix.
        let same = |x: &Matrix, want: &[f32]| {
            assert_eq!(x.rows * x.cols, want.len());
            assert_eq!(decode(&x.to_bytes(), x.dtype), want);
            assert_eq!(x.owned_parts(), 0, "a one-dtype checkpoint is not copied");
        };
        same(&m.embeddings, &w.embeddings);
        for (lm, lw) in m.layers.iter().zip(&w.layers) {
            same(&lm.in_proj, &lw.in_proj);
            same(&lm.o_proj, &lw.o_proj);
            same(&lm.gate_up, &lw.gate_up);
            same(&lm.down, &lw.down);
        }
        assert_eq!(m.lm_head.is_none(), w.lm_head.is_none());
        let round = Matrices::from_weights(&w, &c, DType::BF16);
        assert_eq!(round.dtype, DType::BF16);
        assert_eq!(
            round.bytes() * 2,
            Matrices::from_weights(&w, &c, DType::F32).bytes()
        );
    }
}
