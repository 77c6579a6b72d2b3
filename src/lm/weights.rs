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

use super::block::BlockWeights;
use super::config::GdnConfig;
use super::desc::{Norm, TokenMixer};
use super::readers::gated_deltanet::GatedDeltaNetReader;
use super::readers::{tensors, Reader, Tensor};
use crate::error::{Error, Result};
use crate::input_file::{present, read_bounded_string, INDEX_JSON_MAX};
use crate::tensor::{shape_string, DType};

/// One layer's weights in f32, several of the checkpoint's matrices stacked row-wise
/// so that one product computes them all.
pub type LayerWeights = BlockWeights<Vec<f32>, Vec<f32>>;

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
        let layer = |l: &LayerWeights| l.in_order().iter().map(|v| v.len()).sum::<usize>();
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
    tensors(&GatedDeltaNetReader(c)).collect()
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
    /// `read_metadata`: offsets inside the file, contiguous, no overlaps; and no name
    /// given twice).
    files: Vec<(PathBuf, FileBytes, Header)>,
    /// Tensor name → index into `files`.
    index: BTreeMap<String, usize>,
    /// What names the tensors: the one file, or the shards' index.
    source: PathBuf,
}

/// A safetensors header: its length in bytes and the tensors it describes.
struct Header {
    len: usize,
    meta: safetensors::tensor::Metadata,
}

fn read_header(path: &Path, bytes: &[u8]) -> Result<Header> {
    let bad = |problem: String| Error::File {
        path: path.to_path_buf(),
        problem: format!("not a valid safetensors file: {problem}"),
    };
    let (len, meta) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
    crate::safetensors_io::check_unique_names(path, bytes)?;
    Ok(Header { len, meta })
}

/// A shard's name as the index gives it, if it is a plain file name of the model
/// directory (no folder, no parent, not absolute, not hidden).
fn plain_file_name(shard: &str) -> bool {
    let mut parts = Path::new(shard).components();
    matches!(
        (parts.next(), parts.next()),
        (Some(std::path::Component::Normal(_)), None)
    ) && !shard.contains(['/', '\\'])
        && !shard.starts_with('.')
}

/// Each shard holds exactly the tensors the index lists under it: a tensor the index
/// puts in a shard that lacks it is blamed on that shard, one that two shards hold
/// names both.
fn check_shards(
    files: &[(PathBuf, FileBytes, Header)],
    index: &BTreeMap<String, usize>,
    index_path: &Path,
) -> Result<()> {
    for (name, &i) in index {
        let (path, _, header) = &files[i];
        if header.meta.info(name).is_none() {
            return Err(Error::File {
                path: path.clone(),
                problem: format!(
                    "does not hold tensor `{}`, which {} lists under this file",
                    crate::limits::cut(name),
                    index_path.display()
                ),
            });
        }
    }
    for (i, (path, _, header)) in files.iter().enumerate() {
        for name in header.meta.offset_keys() {
            let shown = crate::limits::cut(&name);
            let problem = match index.get(&name) {
                Some(&j) if j == i => continue,
                // Every shard holds what the index lists under it (checked above).
                Some(&j) => format!(
                    "tensor `{shown}` is in this file and in {}, which {} lists it under",
                    files[j].0.display(),
                    index_path.display()
                ),
                None => format!(
                    "holds tensor `{shown}`, which {} does not list",
                    index_path.display()
                ),
            };
            return Err(Error::File {
                path: path.clone(),
                problem,
            });
        }
    }
    Ok(())
}

impl WeightFiles {
    /// Maps `dir/model.safetensors`, or every shard named in
    /// `dir/model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        if present(&index_path)? {
            Self::sharded(dir, index_path)
        } else if present(&single)? {
            Self::single(single.clone(), FileBytes::Mapped(map_file(&single)?))
        } else {
            Err(Error::File {
                path: dir.to_path_buf(),
                problem: "no model.safetensors or model.safetensors.index.json in this directory"
                    .into(),
            })
        }
    }

    /// The shards an index names: plain files of the directory, each checked against
    /// the index ([`check_shards`]).
    fn sharded(dir: &Path, index_path: PathBuf) -> Result<Self> {
        let text = read_bounded_string(&index_path, "safetensors index", INDEX_JSON_MAX)?;
        let bad = |problem: String| Error::File {
            path: index_path.clone(),
            problem,
        };
        let value =
            crate::strict_json::parse(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let map = value
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| bad("no \"weight_map\" object".into()))?;
        let mut index = BTreeMap::new();
        let mut shard_of: BTreeMap<String, usize> = BTreeMap::new();
        for (name, shard) in map {
            let name_shown = crate::limits::cut(name);
            let shard = shard
                .as_str()
                .ok_or_else(|| bad(format!("weight_map[\"{name_shown}\"] is not a file name")))?;
            if !plain_file_name(shard) {
                return Err(bad(format!(
                    "weight_map[\"{name_shown}\"] = \"{}\" is not a plain file name in the model directory",
                    crate::limits::cut(shard)
                )));
            }
            let next = shard_of.len();
            let i = *shard_of.entry(shard.to_string()).or_insert(next);
            index.insert(name.clone(), i);
        }
        let mut shards: Vec<(String, usize)> = shard_of.into_iter().collect();
        shards.sort_by_key(|s| s.1);
        let mut files = Vec::with_capacity(shards.len());
        for (shard, _) in shards {
            let path = dir.join(&shard);
            // The name is a file of this directory; it may be a link to a file elsewhere
            // (the Hugging Face cache links each snapshot's files to its blobs), which
            // `map_file` still requires to be a bounded regular file.
            let bytes = FileBytes::Mapped(map_file(&path)?);
            let header = read_header(&path, &bytes)?;
            files.push((path, bytes, header));
        }
        check_shards(&files, &index, &index_path)?;
        Ok(WeightFiles {
            files,
            index,
            source: index_path,
        })
    }

    /// One safetensors file held in memory; `path` only names it in messages.
    pub fn from_bytes(path: PathBuf, bytes: Vec<u8>) -> Result<Self> {
        Self::single(path, FileBytes::Owned(bytes))
    }

    fn single(path: PathBuf, bytes: FileBytes) -> Result<Self> {
        let header = read_header(&path, &bytes)?;
        let index = header
            .meta
            .offset_keys()
            .into_iter()
            .map(|n| (n, 0))
            .collect();
        Ok(WeightFiles {
            files: vec![(path.clone(), bytes, header)],
            index,
            source: path,
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
        let needed = self.check(config, matrices)?;
        let what = format!("the weights of {} as f32", self.source.display());
        crate::limits::check_alloc(&what, needed)?;

        let mut digest = crate::hash::Fnv1a::new();
        let mut take = |name: &str| -> Result<Vec<f32>> {
            let (path, view) = self.view(name)?;
            let bytes = view.data();
            digest.write(name.as_bytes());
            digest.write(format!("{:?}{:?}", view.dtype(), view.shape()).as_bytes());
            digest.write(&crc32fast::hash(bytes).to_le_bytes());
            let non_finite = |i: usize| Error::File {
                path: path.to_path_buf(),
                problem: format!(
                    "tensor `{name}`: non-finite value (NaN or infinity) at element {i}"
                ),
            };
            if !matrices && is_matrix(view.shape()) {
                // A device takes these bytes as they are: checked here, in the pass
                // that reads them for the digest anyway.
                return match first_non_finite(view.dtype(), bytes) {
                    Some(i) => Err(non_finite(i)),
                    None => Ok(Vec::new()),
                };
            }
            to_f32(view.dtype(), bytes).map_err(non_finite)
        };
        let reader = GatedDeltaNetReader(config);
        let desc = reader.desc();
        let mut stacked = |parts: &[Tensor]| -> Result<Vec<f32>> {
            let mut all = take(&parts[0].0)?;
            for (name, _) in &parts[1..] {
                all.extend(take(name)?);
            }
            Ok(all)
        };
        let embeddings = stacked(&[reader.embeddings()])?;
        let mut layers = Vec::with_capacity(config.layers);
        for (l, block) in desc.blocks.iter().enumerate() {
            let names = reader.block(l);
            let mut w = names.try_map_all(|_, parts| stacked(parts))?;
            // The checkpoint stores each channel's taps together; the conv reads one
            // tap of every channel at a time.
            let taps = config.conv_size;
            let channels = w.conv.len() / taps;
            w.conv = (0..taps * channels)
                .map(|i| w.conv[(i % channels) * taps + i / channels])
                .collect();
            let a_log = &names.decay_rate[0].0;
            for a in &mut w.decay_rate {
                *a = -a.exp();
            }
            if let Some(i) = w.decay_rate.iter().position(|r| !r.is_finite()) {
                return Err(Error::File {
                    path: self.view(a_log)?.0.to_path_buf(),
                    problem: format!(
                        "tensor `{a_log}`: element {i} gives a decay rate -exp(A_log) that is infinite in f32"
                    ),
                });
            }
            let TokenMixer::GatedDeltaNet(m) = &block.token_mixer;
            fold_norm(&block.mixer_norm, &mut w.attn_norm);
            fold_norm(&m.out_norm, &mut w.o_norm);
            fold_norm(&block.channel_norm, &mut w.mlp_norm);
            layers.push(w);
        }
        let mut norm = stacked(&[reader.final_norm()])?;
        fold_norm(&desc.final_norm, &mut norm);
        let lm_head = reader.head().map(|h| stacked(&[h])).transpose()?;
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
        let (_, view) = self.view(name)?;
        Ok((
            dtype_of(name, view.dtype())?,
            view.shape().to_vec(),
            view.data(),
        ))
    }

    /// Checks the headers against `config` before anything is allocated: every
    /// tensor it implies is there, with its shape and a dtype this engine reads, and
    /// the files hold nothing else. Returns the bytes the f32 copies will take (`None`
    /// when that overflows). Each step of the walk meets a distinct tensor of the
    /// files or fails, so it costs what the files hold, whatever the config asks for.
    fn check(&self, config: &GdnConfig, matrices: bool) -> Result<Option<u64>> {
        let mut needed = Some(0u64);
        let mut found = 0usize;
        let reader = GatedDeltaNetReader(config);
        for (name, dims) in tensors(&reader) {
            let (_, info) = self.info(&name)?;
            if info.shape != dims {
                return Err(Error::Shape {
                    tensor: name,
                    expected: shape_string(&dims),
                    found: shape_string(&info.shape),
                });
            }
            dtype_of(&name, info.dtype)?;
            found += 1;
            if !matrices && is_matrix(&dims) {
                continue;
            }
            let bytes = dims
                .iter()
                .try_fold(4u64, |acc, &d| acc.checked_mul(d as u64));
            needed = needed.zip(bytes).and_then(|(a, b)| a.checked_add(b));
        }
        let tied_head = config.tie_word_embeddings && self.index.contains_key("lm_head.weight");
        if found + usize::from(tied_head) == self.index.len() {
            return Ok(needed);
        }
        // Every name the config implies was found, so this list is no longer than the
        // files' own.
        let wanted: BTreeSet<String> = tensors(&reader).map(|(n, _)| n).collect();
        let unknown: Vec<&str> = self
            .index
            .keys()
            .map(String::as_str)
            .filter(|n| !(wanted.contains(*n) || (tied_head && *n == "lm_head.weight")))
            .collect();
        let shown: Vec<String> = unknown
            .iter()
            .take(8)
            .map(|n| crate::limits::cut(n))
            .collect();
        Err(Error::File {
            path: self.files[self.index[unknown[0]]].0.clone(),
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
        })
    }

    /// The header entry of `name` and the file it is in; a missing tensor is blamed on
    /// what names the tensors (the file, or the index), or on the shard the index
    /// puts it in.
    fn info(&self, name: &str) -> Result<(&Path, &safetensors::tensor::TensorInfo)> {
        let missing = |path: &Path| Error::MissingTensor {
            tensor: crate::limits::cut(name),
            path: path.to_path_buf(),
        };
        let &i = self.index.get(name).ok_or_else(|| missing(&self.source))?;
        let (path, _, header) = &self.files[i];
        let info = header.meta.info(name).ok_or_else(|| missing(path))?;
        Ok((path, info))
    }

    fn view(&self, name: &str) -> Result<(&Path, safetensors::tensor::TensorView<'_>)> {
        let (path, info) = self.info(name)?;
        let (_, bytes, header) = &self.files[self.index[name]];
        // read_metadata checked the offsets against the file's length at open.
        let start = 8 + header.len;
        let (a, b) = info.data_offsets;
        let data = bytes.get(start + a..start + b).ok_or_else(|| Error::File {
            path: path.to_path_buf(),
            problem: format!("tensor `{name}` lies outside the file"),
        })?;
        let view = safetensors::tensor::TensorView::new(info.dtype, info.shape.clone(), data)
            .map_err(|e| Error::File {
                path: path.to_path_buf(),
                problem: format!("tensor `{name}`: {e}"),
            })?;
        Ok((path, view))
    }
}

/// A norm's stored weight as the multiplier the forward applies ([`Norm::effective`]).
fn fold_norm(norm: &Norm, w: &mut [f32]) {
    if norm.effective(0.0) != 0.0 {
        for x in w {
            *x = norm.effective(*x);
        }
    }
}

fn dtype_of(name: &str, dtype: Dtype) -> Result<DType> {
    match dtype {
        Dtype::F32 => Ok(DType::F32),
        Dtype::F16 => Ok(DType::F16),
        Dtype::BF16 => Ok(DType::BF16),
        other => Err(Error::DType {
            tensor: name.to_string(),
            found: format!("{other:?}"),
        }),
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

/// Values per task of the parallel conversions and checks.
const STEP: usize = 1 << 16;

/// Little-endian f32, f16 or bf16 bytes (the dtype checked already) to f32 values, on
/// all cores; `Err` holds the index of the first value that is not finite, found in
/// the same pass while the values are in cache.
fn to_f32(dtype: Dtype, bytes: &[u8]) -> std::result::Result<Vec<f32>, usize> {
    let convert = |width: usize, f: fn(&[u8]) -> f32| -> std::result::Result<Vec<f32>, usize> {
        let mut out = vec![0.0f32; bytes.len() / width];
        let bad = out
            .par_chunks_mut(STEP)
            .zip(bytes.par_chunks(STEP * width))
            .enumerate()
            .filter_map(|(n, (o, b))| {
                for (x, c) in o.iter_mut().zip(b.chunks_exact(width)) {
                    *x = f(c);
                }
                // As in scan_exponents: a fold that vectorises, then the position.
                if !o.iter().fold(false, |acc, x| acc | !x.is_finite()) {
                    return None;
                }
                o.iter().position(|x| !x.is_finite()).map(|i| n * STEP + i)
            })
            .min();
        bad.map_or(Ok(out), Err)
    };
    match dtype {
        Dtype::F16 => convert(2, |c| f16::from_le_bytes([c[0], c[1]]).to_f32()),
        Dtype::BF16 => convert(2, |c| bf16::from_le_bytes([c[0], c[1]]).to_f32()),
        _ => convert(4, |c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
    }
}

/// The index of the first value of `bytes` (f32, f16 or bf16, little-endian) whose
/// exponent bits are all ones (NaN or infinity), on all cores, without converting.
fn first_non_finite(dtype: Dtype, bytes: &[u8]) -> Option<usize> {
    match dtype {
        Dtype::F16 => scan_exponents::<2>(bytes, 0x7c00),
        Dtype::BF16 => scan_exponents::<2>(bytes, 0x7f80),
        _ => scan_exponents::<4>(bytes, 0x7f80_0000),
    }
}

/// [`first_non_finite`] for values of `W` bytes whose exponent is `all_ones`. The
/// width is a constant and the first pass a fold without early exit, so that it
/// vectorises; the position is looked for only in a chunk with a bad value.
fn scan_exponents<const W: usize>(bytes: &[u8], all_ones: u32) -> Option<usize> {
    let bad = |c: &[u8]| {
        let mut le = [0u8; 4];
        le[..W].copy_from_slice(c);
        u32::from_le_bytes(le) & all_ones == all_ones
    };
    bytes
        .par_chunks(STEP * W)
        .enumerate()
        .filter_map(|(n, b)| {
            if !b.chunks_exact(W).fold(false, |acc, c| acc | bad(c)) {
                return None;
            }
            b.chunks_exact(W).position(bad).map(|i| n * STEP + i)
        })
        .min()
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
