//! A loaded Gated DeltaNet language model: config, weights (f32 on the host for the
//! CPU, on the device only for CUDA), the backend its memories run on, and its
//! tokenizer. Sequences run in [`ModelSession`]s.

use std::path::Path;

use crate::backend::{backend_for, Backend, Device};
use crate::config::MemoryConfig;
use crate::error::{Error, Result};
use crate::hash::Fnv1a;
use crate::hash::SplitMix64;
use crate::tensor::DType;

use super::config::GdnConfig;
use super::cpu::CpuRunner;
use super::desc::ModelDesc;
use super::matrices::Matrices;
use super::placement;
use super::readers::gated_deltanet::{config_of, GatedDeltaNetReader};
use super::readers::Reader;
use super::runner::{Placement, Runner};
use super::session::ModelSession;
use super::state::ModelState;
use super::tokenizer::ModelTokenizer;
use super::weights::{expected_tensors, LayerWeights, WeightFiles, Weights};

/// The backend a model of `config` runs on: [`backend_for`], except that `auto` means
/// the CPU where the device cannot run this model ([`placement::can_run`] says why
/// not). A device asked for explicitly fails there instead, saying why, when the
/// model is put on it.
fn model_backend(device: Device, config: &GdnConfig) -> Result<Box<dyn Backend>> {
    let backend = backend_for(device)?;
    if device == Device::Auto
        && placement::on_device(backend.as_ref())
        && !placement::can_run(backend.as_ref(), config)
    {
        return backend_for(Device::Cpu);
    }
    Ok(backend)
}

/// A causal language model of Gated DeltaNet layers, ready to run sequences.
pub struct LanguageModel {
    config: GdnConfig,
    /// The model as data, which the forward walks.
    desc: ModelDesc,
    /// f32 on the host for the CPU forward; `None` when the model is on a device.
    weights: Option<Weights>,
    memory: MemoryConfig,
    backend: Box<dyn Backend>,
    /// On a device: the weights there, where sessions run the whole forward.
    device: Option<Box<dyn Placement>>,
    tokenizer: Option<ModelTokenizer>,
    fingerprint: u64,
    name: String,
}

impl LanguageModel {
    /// Loads a model directory as flash-linear-attention's `save_pretrained` writes
    /// it: `config.json`, `model.safetensors` (or shards with an index), and
    /// `tokenizer.json` if present.
    pub fn load(dir: impl AsRef<Path>, device: Device) -> Result<Self> {
        Self::load_with(dir.as_ref(), &|config| model_backend(device, config))
    }

    /// [`LanguageModel::load`] on a backend the caller made (the CPU with a chosen
    /// instruction set, for one): no fallback, the model runs where it is told.
    pub fn load_on(dir: impl AsRef<Path>, backend: Box<dyn Backend>) -> Result<Self> {
        let backend = std::cell::Cell::new(Some(backend));
        Self::load_with(dir.as_ref(), &|_| {
            backend
                .take()
                .ok_or_else(|| Error::Device("the backend was taken already".into()))
        })
    }

    fn load_with(
        dir: &Path,
        backend_for_config: &dyn Fn(&GdnConfig) -> Result<Box<dyn Backend>>,
    ) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::File {
                path: dir.to_path_buf(),
                problem: "not a model directory (expected config.json and model.safetensors in it)"
                    .into(),
            });
        }
        let config = GdnConfig::load(&dir.join("config.json"))?;
        let files = WeightFiles::open(dir)?;
        let backend = backend_for_config(&config)?;
        // On a device the matrices go up in the checkpoint's own dtype, straight from
        // the mapped files: the host never holds them in f32, nor copies them at all
        // when the checkpoint has one dtype; it converts only the small vectors.
        let (weights, weight_digest, matrices) = match placement::on_device(backend.as_ref()) {
            true => {
                let (vectors, digest) = files.load_vectors(&config)?;
                (
                    vectors,
                    digest,
                    Some(Matrices::from_files(&files, &config)?),
                )
            }
            false => {
                let (weights, digest) = files.load(&config)?;
                (weights, digest, None)
            }
        };
        // Every session allocates a state of this size: refused here rather than
        // failing at the first session (the config bounds keep it from overflowing;
        // the weights, checked first, say what is wrong with a mistaken config).
        crate::limits::check_alloc(
            &format!("one sequence's state of the model in {}", dir.display()),
            Some(config.state_bytes()),
        )?;
        let tokenizer_path = dir.join("tokenizer.json");
        let tokenizer = if crate::input_file::present(&tokenizer_path)? {
            Some(ModelTokenizer::load(&tokenizer_path, config.vocab_size)?)
        } else {
            None
        };
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string());
        // The matrices borrow the mapped files until they are on the device.
        let model = Self::assemble(
            config,
            weights,
            weight_digest,
            tokenizer,
            backend,
            matrices,
            name,
        )?;
        drop(files);
        Ok(model)
    }

    /// A model of the given shape with random weights (for benchmarks and tests at
    /// shapes no checkpoint here has): normal-ish weights scaled by `1/sqrt(fan_in)`,
    /// norms at one, decays and gates in the ranges trained models have.
    pub fn random(config: GdnConfig, seed: u64, device: Device) -> Result<Self> {
        Self::random_in(config, seed, device, DType::F32)
    }

    /// [`LanguageModel::random`] whose matrices a device keeps in `dtype` (bf16 for a
    /// benchmark at a trained model's precision); the CPU runs the f32 values.
    pub fn random_in(config: GdnConfig, seed: u64, device: Device, dtype: DType) -> Result<Self> {
        let backend = model_backend(device, &config)?;
        Self::random_with(config, seed, backend, dtype)
    }

    fn random_with(
        config: GdnConfig,
        seed: u64,
        backend: Box<dyn Backend>,
        dtype: DType,
    ) -> Result<Self> {
        let mut rng = SplitMix64::new(seed);
        let mut fill = |n: usize, scale: f32| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    // Sum of uniforms: cheap, bell-shaped, unit variance.
                    let s: f32 = (0..4)
                        .map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
                        .sum();
                    s * 1.732 * scale
                })
                .collect()
        };
        let c = &config;
        let (d, hv, i) = (c.hidden_size, c.value_heads, c.intermediate_size);
        let in_rows = 2 * c.key_width() + c.value_width() * if c.use_gate { 2 } else { 1 } + 2 * hv;
        let inv = |n: usize| 1.0 / (n as f32).sqrt();
        let layers = (0..c.layers)
            .map(|_| LayerWeights {
                attn_norm: vec![1.0; d],
                in_proj: fill(in_rows * d, inv(d)),
                conv: fill((2 * c.key_width() + c.value_width()) * c.conv_size, 0.5),
                decay_rate: (0..hv).map(|h| -(1.0 + h as f32) / hv as f32).collect(),
                dt_bias: vec![-2.0; hv],
                o_norm: vec![1.0; c.value_dim],
                o_proj: fill(d * c.value_width(), inv(c.value_width())),
                mlp_norm: vec![1.0; d],
                gate_up: fill(2 * i * d, inv(d)),
                down: fill(d * i, inv(i)),
            })
            .collect();
        let weights = Weights {
            embeddings: fill(c.vocab_size * d, 1.0),
            layers,
            norm: vec![1.0; d],
            lm_head: (!c.tie_word_embeddings).then(|| fill(c.vocab_size * d, inv(d))),
        };
        let name = format!(
            "random gated-deltanet (D={}, L={}, H={}, HV={}, K={}, V={})",
            c.hidden_size, c.layers, c.heads, c.value_heads, c.head_dim, c.value_dim
        );
        let matrices = placement::on_device(backend.as_ref())
            .then(|| Matrices::from_weights(&weights, &config, dtype));
        Self::assemble(config, weights, seed, None, backend, matrices, name)
    }

    /// A model described in code (no reader, no `config.json`) with random weights as
    /// [`LanguageModel::random`] makes them, on `backend`. The description must be one
    /// the gated_deltanet runtime holds ([`config_of`] says why not).
    pub fn random_desc(desc: &ModelDesc, seed: u64, backend: Box<dyn Backend>) -> Result<Self> {
        let config = config_of(desc)?;
        Self::random_with(config, seed, backend, DType::F32)
    }

    fn assemble(
        config: GdnConfig,
        weights: Weights,
        weight_digest: u64,
        tokenizer: Option<ModelTokenizer>,
        backend: Box<dyn Backend>,
        matrices: Option<Matrices<'_>>,
        name: String,
    ) -> Result<Self> {
        // On a device the host keeps no weights: every forward, scoring and pick runs
        // there (the tied head is the device's embeddings), and the fingerprint is
        // the files' digest.
        let (device, weights) = match matrices {
            Some(m) => (
                Some(placement::place(backend.as_ref(), &config, &weights, &m)?),
                None,
            ),
            None => (None, Some(weights)),
        };
        let mut h = Fnv1a::new();
        h.write(b"ltm-engine/gated-deltanet-lm/v1");
        h.write(format!("{config:?}").as_bytes());
        h.write(&weight_digest.to_le_bytes());
        // A state holds what the model made of ids, which mean other text under
        // another tokenizer.
        if let Some(t) = &tokenizer {
            h.write(b"tokenizer.json");
            h.write(&t.digest().to_le_bytes());
        }
        let fingerprint = h.finish();
        let memory = MemoryConfig::new(config.value_heads, config.head_dim, config.value_dim)
            .with_scale(1.0 / (config.head_dim as f32).sqrt())
            .with_model(fingerprint);
        let desc = GatedDeltaNetReader(&config).desc();
        Ok(LanguageModel {
            desc,
            config,
            weights,
            memory,
            backend,
            device,
            tokenizer,
            fingerprint,
            name,
        })
    }

    /// The model's configuration.
    pub fn config(&self) -> &GdnConfig {
        &self.config
    }

    /// The model as data: its blocks and what differs between architectures.
    pub fn desc(&self) -> &ModelDesc {
        &self.desc
    }

    /// The sequence in `state` on this model's device.
    pub(crate) fn runner(&self, state: ModelState) -> Result<Box<dyn Runner<'_> + '_>> {
        match &self.device {
            Some(device) => device.open(self, state),
            None => Ok(Box::new(CpuRunner::new(self, state)?)),
        }
    }

    /// The weights in f32 on the host, which the CPU forward runs; `None` when the
    /// model is on a device (the weights live there only).
    pub fn weights(&self) -> Option<&Weights> {
        self.weights.as_ref()
    }

    /// Bytes of weights the host holds for this model: all of them in f32 on the
    /// CPU, none on a device (whose bytes the device model counts).
    pub fn host_weight_bytes(&self) -> usize {
        self.weights.as_ref().map_or(0, |w| 4 * w.len())
    }

    /// The shape of each layer's memory (value heads, `K`, `V`).
    pub fn memory_config(&self) -> &MemoryConfig {
        &self.memory
    }

    /// The backend the layers' memories run on.
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// The weights on a device, where the model runs on one.
    #[cfg(feature = "cuda")]
    pub(crate) fn placement(&self) -> Option<&dyn Placement> {
        self.device.as_deref()
    }

    /// The tokenizer of the model directory, if it had one.
    pub fn tokenizer(&self) -> Option<&ModelTokenizer> {
        self.tokenizer.as_ref()
    }

    /// The tokenizer, or an error saying the model has none.
    pub fn require_tokenizer(&self) -> Result<&ModelTokenizer> {
        self.tokenizer.as_ref().ok_or_else(|| {
            Error::Config(format!(
                "model {} has no tokenizer.json: text needs one (token ids do not)",
                self.name
            ))
        })
    }

    /// A digest of the config, every weight's bytes and the tokenizer's: state files
    /// carry it, so a state is never loaded into another model, nor resumed with
    /// another tokenizer.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// A short description, e.g. the directory's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// An empty sequence: zero memories and conv caches.
    pub fn session(&self) -> Result<ModelSession<'_>> {
        ModelSession::new(self, ModelState::zeros(self))
    }

    /// A sequence continued from a saved state (checked against this model).
    pub fn resume(&self, state: ModelState) -> Result<ModelSession<'_>> {
        ModelSession::new(self, state)
    }

    /// Bytes of one sequence's state: every layer's memory and conv cache.
    pub fn state_bytes(&self) -> usize {
        let c = &self.config;
        4 * c.layers
            * (self.memory.state_len() + (2 * c.key_width() + c.value_width()) * c.conv_size)
            + 4 * c.hidden_size
    }

    /// Bytes a prefill window of `tokens` needs beside the weights and the state: the
    /// forward's activations, the memory's inputs and outputs and its chunk work (q, k
    /// repeated per value head), the logits of every row and the scores; `None` on
    /// overflow. Checked before a window of that size is set.
    pub fn window_bytes(&self, tokens: usize) -> Option<u64> {
        let c = &self.config;
        let channels = 2 * c.key_width() + c.value_width();
        let heads_kv = c.value_heads * (2 * c.head_dim + 2 * c.value_dim);
        let per_token = [
            3 * c.hidden_size,
            channels + c.value_width() + 2 * c.value_heads, // projection
            2 * channels,                                   // conv output and window
            2 * heads_kv,                                   // memory inputs, chunk work
            3 * c.intermediate_size,
            c.vocab_size + 2, // logits, f64 scores
        ]
        .iter()
        .try_fold(0u64, |a, &n| a.checked_add(n as u64))?;
        per_token.checked_mul(4)?.checked_mul(tokens as u64)
    }

    /// The names and shapes the checkpoint must hold (for error messages and tests).
    pub fn expected_tensors(&self) -> Vec<(String, Vec<usize>)> {
        expected_tensors(&self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cpu_model_holds_every_weight_in_f32_on_the_host() {
        for name in ["gdn-tiny", "gdn-gva"] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(name);
            let model = LanguageModel::load(&dir, Device::Cpu).unwrap();
            #[cfg(feature = "cuda")]
            assert!(model.device_model().is_none());
            let values: usize = model
                .expected_tensors()
                .iter()
                .map(|(_, shape)| shape.iter().product::<usize>())
                .sum();
            assert_eq!(model.host_weight_bytes(), 4 * values, "{name}");
            assert!(model.weights().is_some());
        }
    }
}
