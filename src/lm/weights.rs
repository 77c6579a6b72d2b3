//! A checkpoint's tensors: `model.safetensors` or shards listed by
//! `model.safetensors.index.json`, memory-mapped, checked against the config (name,
//! shape, dtype) and converted to f32 at load, the layout the matrix products read.
//!
//! Conversion at load rather than on the fly: the projections run as f32 products on
//! the CPU either way, so converting once costs one pass at load instead of one per
//! window (the memory is twice that of bf16 weights; the note in the README says so).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use rayon::prelude::*;
use safetensors::{Dtype, SafeTensors};

use super::config::GdnConfig;
use crate::error::{Error, Result};
use crate::input_file::{present, read_bounded_string, INDEX_JSON_MAX};
use crate::tensor::{shape_string, DType};

/// One layer's weights, several of the checkpoint's matrices stacked row-wise so that
/// one product computes them all.
#[derive(Clone, Debug)]
pub struct LayerWeights {
    /// `attn_norm.weight` `[D]`.
    pub attn_norm: Vec<f32>,
    /// `q_proj; k_proj; v_proj; g_proj (if use_gate); a_proj; b_proj` stacked:
    /// `[2·Dk + Dv (+ Dv) + 2·HV, D]`.
    pub in_proj: Vec<f32>,
    /// `q_conv1d; k_conv1d; v_conv1d` taps, transposed: `[W, 2·Dk + Dv]`, oldest tap
    /// first.
    pub conv: Vec<f32>,
    /// `-exp(A_log)` `[HV]`: the decay rate per value head.
    pub decay_rate: Vec<f32>,
    /// `dt_bias` `[HV]`.
    pub dt_bias: Vec<f32>,
    /// `o_norm.weight` `[V]`.
    pub o_norm: Vec<f32>,
    /// `o_proj.weight` `[D, Dv]`.
    pub o_proj: Vec<f32>,
    /// `mlp_norm.weight` `[D]`.
    pub mlp_norm: Vec<f32>,
    /// `gate_proj; up_proj` stacked: `[2·I, D]`.
    pub gate_up: Vec<f32>,
    /// `down_proj.weight` `[D, I]`.
    pub down: Vec<f32>,
}

/// All weights of a model, f32.
#[derive(Clone, Debug)]
pub struct Weights {
    /// `model.embeddings.weight` `[vocab, D]`.
    pub embeddings: Vec<f32>,
    /// The layers, in order.
    pub layers: Vec<LayerWeights>,
    /// `model.norm.weight` `[D]`.
    pub norm: Vec<f32>,
    /// `lm_head.weight` `[vocab, D]`; `None` when tied to the embeddings.
    pub lm_head: Option<Vec<f32>>,
}

impl Weights {
    /// The output head: its own matrix, or the embeddings when tied.
    pub fn head(&self) -> &[f32] {
        self.lm_head.as_deref().unwrap_or(&self.embeddings)
    }

    /// f32 values held.
    pub fn len(&self) -> usize {
        let layer = |l: &LayerWeights| {
            l.attn_norm.len()
                + l.in_proj.len()
                + l.conv.len()
                + l.decay_rate.len()
                + l.dt_bias.len()
                + l.o_norm.len()
                + l.o_proj.len()
                + l.mlp_norm.len()
                + l.gate_up.len()
                + l.down.len()
        };
        self.embeddings.len()
            + self.layers.iter().map(layer).sum::<usize>()
            + self.norm.len()
            + self.lm_head.as_ref().map_or(0, Vec::len)
    }

    /// True when there are no weights (never for a loaded model).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The names and shapes a config implies, in file order: what a checkpoint must hold.
pub fn expected_tensors(c: &GdnConfig) -> Vec<(String, Vec<usize>)> {
    let (d, dk, dv, hv, v) = (
        c.hidden_size,
        c.key_width(),
        c.value_width(),
        c.value_heads,
        c.value_dim,
    );
    let mut out = vec![("model.embeddings.weight".to_string(), vec![c.vocab_size, d])];
    for l in 0..c.layers {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        out.push((p("attn_norm.weight"), vec![d]));
        out.push((p("attn.q_proj.weight"), vec![dk, d]));
        out.push((p("attn.k_proj.weight"), vec![dk, d]));
        out.push((p("attn.v_proj.weight"), vec![dv, d]));
        if c.use_gate {
            out.push((p("attn.g_proj.weight"), vec![dv, d]));
        }
        out.push((p("attn.a_proj.weight"), vec![hv, d]));
        out.push((p("attn.b_proj.weight"), vec![hv, d]));
        out.push((p("attn.q_conv1d.weight"), vec![dk, 1, c.conv_size]));
        out.push((p("attn.k_conv1d.weight"), vec![dk, 1, c.conv_size]));
        out.push((p("attn.v_conv1d.weight"), vec![dv, 1, c.conv_size]));
        out.push((p("attn.A_log"), vec![hv]));
        out.push((p("attn.dt_bias"), vec![hv]));
        out.push((p("attn.o_norm.weight"), vec![v]));
        out.push((p("attn.o_proj.weight"), vec![d, dv]));
        out.push((p("mlp_norm.weight"), vec![d]));
        out.push((p("mlp.gate_proj.weight"), vec![c.intermediate_size, d]));
        out.push((p("mlp.up_proj.weight"), vec![c.intermediate_size, d]));
        out.push((p("mlp.down_proj.weight"), vec![d, c.intermediate_size]));
    }
    out.push(("model.norm.weight".into(), vec![d]));
    if !c.tie_word_embeddings {
        out.push(("lm_head.weight".into(), vec![c.vocab_size, d]));
    }
    out
}

/// The bytes of one weight file: memory-mapped, or in memory (tests, generated
/// checkpoints).
enum FileBytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Mapped(m) => m,
            FileBytes::Owned(v) => v,
        }
    }
}

/// The memory-mapped weight files of a model directory.
pub struct WeightFiles {
    /// Each file with its header, parsed and checked once at open (safetensors'
    /// `read_metadata`: offsets inside the file, no overlaps).
    files: Vec<(PathBuf, FileBytes, Header)>,
    /// Tensor name → index into `files`.
    index: BTreeMap<String, usize>,
}

/// A safetensors header: its length in bytes and the tensors it describes.
struct Header {
    len: usize,
    meta: safetensors::tensor::Metadata,
}

fn read_header(path: &Path, bytes: &[u8]) -> Result<Header> {
    let (len, meta) = SafeTensors::read_metadata(bytes).map_err(|e| Error::File {
        path: path.to_path_buf(),
        problem: format!("not a valid safetensors file: {e}"),
    })?;
    Ok(Header { len, meta })
}

impl WeightFiles {
    /// Maps `dir/model.safetensors`, or every shard named in
    /// `dir/model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        let mut files = Vec::new();
        let mut index = BTreeMap::new();
        if present(&index_path)? {
            let text = read_bounded_string(&index_path, "safetensors index", INDEX_JSON_MAX)?;
            let bad = |problem: String| Error::File {
                path: index_path.clone(),
                problem,
            };
            let value: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
            let map = value
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| bad("no \"weight_map\" object".into()))?;
            let mut shard_of: BTreeMap<String, usize> = BTreeMap::new();
            for (name, shard) in map {
                let shard = shard
                    .as_str()
                    .ok_or_else(|| bad(format!("weight_map[\"{name}\"] is not a file name")))?;
                if shard.contains('/') || shard.contains('\\') || shard.starts_with('.') {
                    return Err(bad(format!(
                        "weight_map[\"{name}\"] = \"{shard}\" is not a plain file name in the model directory"
                    )));
                }
                let next = shard_of.len();
                let i = *shard_of.entry(shard.to_string()).or_insert(next);
                index.insert(name.clone(), i);
            }
            let mut shards: Vec<(String, usize)> = shard_of.into_iter().collect();
            shards.sort_by_key(|s| s.1);
            for (shard, _) in shards {
                let path = dir.join(&shard);
                let bytes = FileBytes::Mapped(map_file(&path)?);
                let header = read_header(&path, &bytes)?;
                files.push((path.clone(), bytes, header));
            }
            for (i, (path, _, header)) in files.iter().enumerate() {
                for name in header.meta.tensors().keys() {
                    if index.get(name) != Some(&i) {
                        return Err(Error::File {
                            path: path.clone(),
                            problem: format!(
                                "holds tensor `{name}`, which {} does not list under this file",
                                index_path.display()
                            ),
                        });
                    }
                }
            }
        } else if present(&single)? {
            return Self::single(single.clone(), FileBytes::Mapped(map_file(&single)?));
        } else {
            return Err(Error::File {
                path: dir.to_path_buf(),
                problem: "no model.safetensors or model.safetensors.index.json in this directory"
                    .into(),
            });
        }
        Ok(WeightFiles { files, index })
    }

    /// One safetensors file held in memory; `path` only names it in messages.
    pub fn from_bytes(path: PathBuf, bytes: Vec<u8>) -> Result<Self> {
        Self::single(path, FileBytes::Owned(bytes))
    }

    fn single(path: PathBuf, bytes: FileBytes) -> Result<Self> {
        let header = read_header(&path, &bytes)?;
        let index = header
            .meta
            .tensors()
            .keys()
            .map(|n| (n.clone(), 0))
            .collect();
        Ok(WeightFiles {
            files: vec![(path, bytes, header)],
            index,
        })
    }

    /// Checks every tensor's presence, shape and dtype against `config`, refuses
    /// tensors the config does not explain, and converts them to f32. Also returns a
    /// digest of the tensors' names, shapes, dtypes and bytes.
    pub fn load(&self, config: &GdnConfig) -> Result<(Weights, u64)> {
        self.load_with(config, true)
    }

    /// [`WeightFiles::load`] without converting the large matrices (embeddings,
    /// projections, MLP, head: every 2-D tensor), which stay empty in the result: the
    /// small vectors a device takes in f32 while its matrices come from
    /// [`super::matrices::Matrices::from_files`] in the checkpoint's dtype. The same
    /// checks, and the same digest (every tensor's bytes are still read for it).
    pub fn load_vectors(&self, config: &GdnConfig) -> Result<(Weights, u64)> {
        self.load_with(config, false)
    }

    fn load_with(&self, config: &GdnConfig, matrices: bool) -> Result<(Weights, u64)> {
        let expected = expected_tensors(config);
        let wanted: BTreeSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
        let unknown: Vec<&str> = self
            .index
            .keys()
            .map(String::as_str)
            .filter(|n| {
                let tied_head = config.tie_word_embeddings && *n == "lm_head.weight";
                !(wanted.contains(n) || tied_head)
            })
            .collect();
        if !unknown.is_empty() {
            let shown: Vec<&str> = unknown.iter().take(8).copied().collect();
            return Err(Error::File {
                path: self.files[0].0.clone(),
                problem: format!(
                    "{} tensor(s) the config does not describe: {}{}",
                    unknown.len(),
                    shown.join(", "),
                    if unknown.len() > shown.len() {
                        ", …"
                    } else {
                        ""
                    }
                ),
            });
        }
        let mut needed = Some(0u64);
        for (name, dims) in &expected {
            let view = self.view(name)?;
            if view.shape() != dims.as_slice() {
                return Err(Error::Shape {
                    tensor: name.clone(),
                    expected: shape_string(dims),
                    found: shape_string(view.shape()),
                });
            }
            if !matrices && is_matrix(dims) {
                continue;
            }
            let bytes = dims
                .iter()
                .try_fold(4u64, |acc, &d| acc.checked_mul(d as u64));
            needed = needed.zip(bytes).and_then(|(a, b)| a.checked_add(b));
        }
        let what = format!("the weights of {} as f32", self.files[0].0.display());
        crate::limits::check_alloc(&what, needed)?;

        let mut digest = crate::hash::Fnv1a::new();
        let mut take = |name: &str| -> Result<Vec<f32>> {
            let view = self.view(name)?;
            let bytes = view.data();
            digest.write(name.as_bytes());
            digest.write(format!("{:?}{:?}", view.dtype(), view.shape()).as_bytes());
            digest.write(&crc32fast::hash(bytes).to_le_bytes());
            if !matrices && is_matrix(view.shape()) {
                return Ok(Vec::new());
            }
            to_f32(name, view.dtype(), bytes)
        };
        let embeddings = take("model.embeddings.weight")?;
        let mut layers = Vec::with_capacity(config.layers);
        for l in 0..config.layers {
            let p = |s: &str| format!("model.layers.{l}.{s}");
            let attn_norm = take(&p("attn_norm.weight"))?;
            let mut in_proj = take(&p("attn.q_proj.weight"))?;
            in_proj.extend(take(&p("attn.k_proj.weight"))?);
            in_proj.extend(take(&p("attn.v_proj.weight"))?);
            if config.use_gate {
                in_proj.extend(take(&p("attn.g_proj.weight"))?);
            }
            in_proj.extend(take(&p("attn.a_proj.weight"))?);
            in_proj.extend(take(&p("attn.b_proj.weight"))?);
            let mut conv_cw = take(&p("attn.q_conv1d.weight"))?;
            conv_cw.extend(take(&p("attn.k_conv1d.weight"))?);
            conv_cw.extend(take(&p("attn.v_conv1d.weight"))?);
            let w = config.conv_size;
            let channels = conv_cw.len() / w;
            let conv = (0..w * channels)
                .map(|i| conv_cw[(i % channels) * w + i / channels])
                .collect();
            let decay_rate = take(&p("attn.A_log"))?
                .into_iter()
                .map(|a| -a.exp())
                .collect();
            let dt_bias = take(&p("attn.dt_bias"))?;
            let o_norm = take(&p("attn.o_norm.weight"))?;
            let o_proj = take(&p("attn.o_proj.weight"))?;
            let mlp_norm = take(&p("mlp_norm.weight"))?;
            let mut gate_up = take(&p("mlp.gate_proj.weight"))?;
            gate_up.extend(take(&p("mlp.up_proj.weight"))?);
            let down = take(&p("mlp.down_proj.weight"))?;
            layers.push(LayerWeights {
                attn_norm,
                in_proj,
                conv,
                decay_rate,
                dt_bias,
                o_norm,
                o_proj,
                mlp_norm,
                gate_up,
                down,
            });
        }
        let norm = take("model.norm.weight")?;
        let lm_head = if config.tie_word_embeddings {
            None
        } else {
            Some(take("lm_head.weight")?)
        };
        let weights = Weights {
            embeddings,
            layers,
            norm,
            lm_head,
        };
        Ok((weights, digest.finish()))
    }

    /// One tensor as stored: its element type, shape and little-endian bytes (no
    /// conversion; for a device that keeps the checkpoint's dtype).
    pub fn raw(&self, name: &str) -> Result<(DType, Vec<usize>, &[u8])> {
        let view = self.view(name)?;
        let dtype = match view.dtype() {
            Dtype::F32 => DType::F32,
            Dtype::F16 => DType::F16,
            Dtype::BF16 => DType::BF16,
            other => {
                return Err(Error::DType {
                    tensor: name.to_string(),
                    found: format!("{other:?}"),
                })
            }
        };
        Ok((dtype, view.shape().to_vec(), view.data()))
    }

    fn view(&self, name: &str) -> Result<safetensors::tensor::TensorView<'_>> {
        let missing = || Error::MissingTensor {
            tensor: name.to_string(),
            path: self.files[0].0.clone(),
        };
        let &i = self.index.get(name).ok_or_else(missing)?;
        let (path, bytes, header) = &self.files[i];
        let info = header.meta.info(name).ok_or_else(missing)?;
        // read_metadata checked the offsets against the file's length at open.
        let start = 8 + header.len;
        let (a, b) = info.data_offsets;
        let data = bytes.get(start + a..start + b).ok_or_else(|| Error::File {
            path: path.clone(),
            problem: format!("tensor `{name}` lies outside the file"),
        })?;
        safetensors::tensor::TensorView::new(info.dtype, info.shape.clone(), data).map_err(|e| {
            Error::File {
                path: path.clone(),
                problem: format!("tensor `{name}`: {e}"),
            }
        })
    }
}

/// The large tensors (embeddings, projections, MLP, head) are the 2-D ones; norms,
/// `A_log`, `dt_bias` are 1-D and the conv taps 3-D.
fn is_matrix(shape: &[usize]) -> bool {
    shape.len() == 2
}

fn map_file(path: &Path) -> Result<memmap2::Mmap> {
    let (file, _) = crate::input_file::open_regular(path)?;
    // SAFETY: the mapping is read-only; a checkpoint changed under a running engine
    // is outside what it promises (as for any memory-mapped model file).
    unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))
}

/// Little-endian f32, f16 or bf16 bytes to f32 values, on all cores.
fn to_f32(name: &str, dtype: Dtype, bytes: &[u8]) -> Result<Vec<f32>> {
    const STEP: usize = 1 << 16;
    let convert = |width: usize, f: fn(&[u8]) -> f32| -> Vec<f32> {
        let mut out = vec![0.0f32; bytes.len() / width];
        out.par_chunks_mut(STEP)
            .zip(bytes.par_chunks(STEP * width))
            .for_each(|(o, b)| {
                for (x, c) in o.iter_mut().zip(b.chunks_exact(width)) {
                    *x = f(c);
                }
            });
        out
    };
    Ok(match dtype {
        Dtype::F32 => convert(4, |c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        Dtype::F16 => convert(2, |c| f16::from_le_bytes([c[0], c[1]]).to_f32()),
        Dtype::BF16 => convert(2, |c| bf16::from_le_bytes([c[0], c[1]]).to_f32()),
        other => {
            return Err(Error::DType {
                tensor: name.to_string(),
                found: format!("{other:?}"),
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_only_keep_the_checks_the_digest_and_the_small_weights() {
        for name in ["gdn-tiny", "gdn-gva"] {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(name);
            let c = GdnConfig::load(&dir.join("config.json")).unwrap();
            let files = WeightFiles::open(&dir).unwrap();
            let (all, digest) = files.load(&c).unwrap();
            let (small, small_digest) = files.load_vectors(&c).unwrap();
            assert_eq!(digest, small_digest, "{name}: a state must fit either load");
            assert!(small.embeddings.is_empty());
            assert_eq!(small.lm_head.is_some(), all.lm_head.is_some());
            assert!(small.lm_head.as_ref().is_none_or(Vec::is_empty));
            assert_eq!(small.norm, all.norm);
            for (s, a) in small.layers.iter().zip(&all.layers) {
                assert!(s.in_proj.is_empty() && s.o_proj.is_empty());
                assert!(s.gate_up.is_empty() && s.down.is_empty());
                assert_eq!(
                    (&s.attn_norm, &s.conv, &s.decay_rate, &s.dt_bias),
                    (&a.attn_norm, &a.conv, &a.decay_rate, &a.dt_bias)
                );
                assert_eq!((&s.o_norm, &s.mlp_norm), (&a.o_norm, &a.mlp_norm));
            }
            // The vectors are a small part: under 2% of the values of these models.
            assert!(!small.is_empty() && small.len() * 50 < all.len(), "{name}");
            // A wrong shape fails the same way in both.
            let wrong = GdnConfig {
                hidden_size: c.hidden_size * 2,
                ..c.clone()
            };
            assert!(files.load_vectors(&wrong).is_err());
        }
    }
}
