//! A language model on a CUDA device: its weights uploaded once (the large matrices in
//! the checkpoint's dtype, [`super::matrices`]; the small per-layer vectors in f32, as
//! the kernels of [`super::kernels`] read them), the kernels loaded, a cuBLAS handle.
//! Sequences run in [`session::CudaModelSession`]s.

pub(crate) mod session;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaFunction, CudaModule, DeviceRepr, LaunchConfig, PushKernelArg};

use crate::backend::cuda::buffers::DeviceBuffer;
use crate::backend::cuda::gemm::{Blas, GemmShape, Operands};
use crate::backend::cuda::module::load_embedded;
use crate::backend::cuda::CudaBackend;
use crate::error::{Error, Result};
use crate::tensor::DType;

use super::block::BlockWeights;
use super::config::GdnConfig;
use super::kernels::{module_of, LmDims, LmLaunch};
use super::matrices::{Matrices, Matrix};
use super::model::LanguageModel;
use super::runner::{Placement, Runner};
use super::state::ModelState;
use super::weights::Weights;
use crate::backend::Backend;
use crate::config::MemoryConfig;

/// Logits values (f32) copied from a device to the host by model sessions.
static LOGITS_DOWNLOADED: AtomicU64 = AtomicU64::new(0);
/// Token ids chosen on a device and copied to the host.
static IDS_DOWNLOADED: AtomicU64 = AtomicU64::new(0);

/// Logits values (f32) model sessions have copied from a device to the host since the
/// process started, so a test can show that generation on the device brings back ids,
/// not logits rows.
pub fn logits_downloaded() -> u64 {
    LOGITS_DOWNLOADED.load(Ordering::Relaxed)
}

/// Token ids chosen on a device ([`crate::lm::pick::PickPath`]) and copied to the
/// host since the process started.
pub fn ids_downloaded() -> u64 {
    IDS_DOWNLOADED.load(Ordering::Relaxed)
}

fn count_download(counter: &AtomicU64, n: usize) {
    counter.fetch_add(n as u64, Ordering::Relaxed);
}

/// Whether `backend` is a CUDA device: a model there keeps its matrices in their dtype
/// and runs its sequences on the device.
pub(crate) fn on_device(backend: &dyn Backend) -> bool {
    backend.as_cuda().is_some()
}

/// Whether the device behind `backend` can run a model of `config`: cuBLAS present (the
/// products need it) and a shape the kernels take (e.g. key heads up to 128 wide).
pub(crate) fn can_run(backend: &dyn Backend, config: &GdnConfig) -> bool {
    let Some(cuda) = backend.as_cuda() else {
        return false;
    };
    let memory = MemoryConfig::new(config.value_heads, config.head_dim, config.value_dim);
    crate::backend::cuda::gemm::cublas_present()
        && cuda.check_supported(&memory, 1).is_ok()
        && LmDims::of(config).check().is_ok()
}

/// The model's weights on the device behind `backend` ([`on_device`]).
pub(crate) fn place(
    backend: &dyn Backend,
    config: &GdnConfig,
    weights: &Weights,
    matrices: &Matrices,
) -> Result<Box<dyn Placement>> {
    let cuda = backend
        .as_cuda()
        .ok_or_else(|| Error::Device("a model placed on a device that is not one".into()))?;
    Ok(Box::new(DeviceModel::new(cuda, config, weights, matrices)?))
}

impl Placement for DeviceModel {
    fn open<'m>(
        &'m self,
        model: &'m LanguageModel,
        state: ModelState,
    ) -> Result<Box<dyn Runner<'m> + 'm>> {
        let cuda = model
            .backend()
            .as_cuda()
            .ok_or_else(|| Error::Device("a device model on a backend that is not one".into()))?;
        Ok(Box::new(session::CudaModelSession::new(
            model, self, cuda, state,
        )?))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl LanguageModel {
    /// The weights on the device, where the model runs on CUDA.
    pub fn device_model(&self) -> Option<&DeviceModel> {
        self.placement()?.as_any().downcast_ref()
    }
}

/// One layer's weights on the device: matrices in the model's dtype, vectors in f32.
pub(crate) type DeviceLayer = BlockWeights<DeviceBuffer, DeviceBuffer>;

/// A model's weights, kernels and cuBLAS handle on one device.
pub struct DeviceModel {
    pub(crate) dtype: DType,
    pub(crate) dims: LmDims,
    pub(crate) blas: Blas,
    modules: HashMap<&'static str, Arc<CudaModule>>,
    functions: Mutex<HashMap<&'static str, CudaFunction>>,
    pub(crate) embeddings: DeviceBuffer,
    pub(crate) lm_head: Option<DeviceBuffer>,
    pub(crate) norm: DeviceBuffer,
    pub(crate) layers: Vec<DeviceLayer>,
    bytes: usize,
}

fn upload(backend: &CudaBackend, name: &'static str, bytes: &[u8]) -> Result<DeviceBuffer> {
    let mut buf = DeviceBuffer::new(backend.stream(), name, bytes.len())?;
    buf.upload(backend.stream(), 0, bytes)?;
    Ok(buf)
}

fn upload_f32(backend: &CudaBackend, name: &'static str, v: &[f32]) -> Result<DeviceBuffer> {
    upload(backend, name, bytemuck::cast_slice(v))
}

/// The matrix's parts one after another: straight from the mapped weight files, no
/// host copy of the whole.
fn upload_matrix(backend: &CudaBackend, name: &'static str, m: &Matrix) -> Result<DeviceBuffer> {
    let mut buf = DeviceBuffer::new(backend.stream(), name, m.len_bytes())?;
    let mut at = 0;
    for part in &m.parts {
        buf.upload(backend.stream(), at, part)?;
        at += part.len();
    }
    Ok(buf)
}

impl DeviceModel {
    /// Uploads `matrices` (in their dtype) and the small vectors of `weights` (f32),
    /// and loads the model kernels. Fails, naming what, where the device lacks memory,
    /// cuBLAS or the kernels, or the kernels cannot run this shape.
    pub fn new(
        backend: &CudaBackend,
        config: &GdnConfig,
        weights: &Weights,
        matrices: &Matrices,
    ) -> Result<Self> {
        let dims = LmDims::of(config);
        dims.check()?;
        backend.bind()?;
        let (free, _) = backend
            .context()
            .mem_get_info()
            .map_err(crate::backend::cuda::cuda_err("querying free memory"))?;
        let small: usize = 4
            * (weights.norm.len()
                + weights
                    .layers
                    .iter()
                    .flat_map(|l| l.vectors())
                    .map(Vec::len)
                    .sum::<usize>());
        let bytes = matrices.bytes() + small;
        if bytes > free {
            return Err(Error::TooLarge {
                what: "the model's weights on the device".into(),
                bytes: Some(bytes as u64),
                problem: format!("the device has {free} bytes free"),
            });
        }
        let blas = Blas::new(backend.stream())?;
        let mut modules = HashMap::new();
        for name in ["lm_norm", "lm_conv", "lm_head"] {
            modules.insert(name, load_embedded(backend.context(), name)?);
        }
        let layers = weights
            .layers
            .iter()
            .zip(&matrices.layers)
            .map(|(w, m)| {
                // The vectors from the f32 weights, the matrices from their bytes: one
                // walk over the fields of each.
                let vectors = w.try_map(
                    |_, _| Ok::<_, Error>(()),
                    |name, v| upload_f32(backend, name, v),
                )?;
                let matrices =
                    m.try_map(|name, x| upload_matrix(backend, name, x), |_, _| Ok(()))?;
                Ok(DeviceLayer {
                    attn_norm: vectors.attn_norm,
                    in_proj: matrices.in_proj,
                    conv: vectors.conv,
                    decay_rate: vectors.decay_rate,
                    dt_bias: vectors.dt_bias,
                    o_norm: vectors.o_norm,
                    o_proj: matrices.o_proj,
                    mlp_norm: vectors.mlp_norm,
                    gate_up: matrices.gate_up,
                    down: matrices.down,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let model = DeviceModel {
            dtype: matrices.dtype,
            dims,
            blas,
            modules,
            functions: Mutex::new(HashMap::new()),
            embeddings: upload_matrix(backend, "embeddings", &matrices.embeddings)?,
            lm_head: matrices
                .lm_head
                .as_ref()
                .map(|h| upload_matrix(backend, "lm_head", h))
                .transpose()?,
            norm: upload_f32(backend, "norm", &weights.norm)?,
            layers,
            bytes,
        };
        backend.synchronize()?;
        Ok(model)
    }

    /// The element type of the matrices (and of every GEMM operand).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Device bytes the weights take.
    pub fn weight_bytes(&self) -> usize {
        self.bytes
    }

    /// The output head: its own matrix, or the embeddings when tied.
    pub(crate) fn head(&self) -> &DeviceBuffer {
        self.lm_head.as_ref().unwrap_or(&self.embeddings)
    }

    fn function(&self, entry: &'static str) -> Result<CudaFunction> {
        let mut cache = self.functions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = cache.get(entry) {
            return Ok(f.clone());
        }
        let module = self
            .modules
            .get(module_of(entry))
            .ok_or_else(|| Error::Device(format!("no module loaded for kernel {entry}")))?;
        let f = module
            .load_function(entry)
            .map_err(crate::backend::cuda::cuda_err(&format!(
                "loading kernel {entry}"
            )))?;
        cache.insert(entry, f.clone());
        Ok(f)
    }

    /// Queues one launch on `backend`'s stream (and waits for it in test mode, so a
    /// fault is reported under the kernel's name).
    pub(crate) fn launch<P: DeviceRepr + Copy>(
        &self,
        backend: &CudaBackend,
        l: &LmLaunch<P>,
    ) -> Result<()> {
        let f = self.function(l.entry)?;
        let cfg = LaunchConfig {
            grid_dim: l.grid,
            block_dim: l.block,
            shared_mem_bytes: l.shared_mem_bytes,
        };
        let stream = backend.stream();
        let mut b = stream.launch_builder(&f);
        b.arg(&l.params);
        // SAFETY: the parameter block is the kernel's own struct (checked field by field
        // against the source in lm::kernels::params); its addresses come from buffers
        // the caller sized for the launch's rows and dims, and the kernels bound every
        // access by the sizes in the block.
        unsafe { b.launch(cfg) }
            .map_err(|e| Error::cuda(format!("launching {} (grid {:?})", l.entry, l.grid), e))?;
        if backend.checks() {
            backend
                .synchronize()
                .map_err(|e| Error::cuda(format!("running {}", l.entry), e))?;
        }
        Ok(())
    }

    /// `y[T, out] (+)= x[T, in] · w[out, in]ᵀ`, x in the model's dtype, y f32.
    pub(crate) fn linear(
        &self,
        backend: &CudaBackend,
        x: u64,
        w: &DeviceBuffer,
        y: u64,
        shape: GemmShape,
        accumulate: bool,
    ) -> Result<()> {
        let es = match self.dtype {
            DType::F32 => 4,
            _ => 2,
        };
        if w.len() != shape.out_dim * shape.in_dim * es {
            return Err(Error::Config(format!(
                "a weight of {} bytes for a product {shape:?}",
                w.len()
            )));
        }
        // SAFETY: `w` holds the weight of this shape (checked just above); the session
        // sized `x` and `y` for its window's rows, which bound `shape.tokens`.
        unsafe {
            self.blas.linear(
                Operands {
                    x,
                    w: w.ptr(backend.stream()),
                    y,
                },
                self.dtype,
                DType::F32,
                shape,
                accumulate,
            )
        }
    }
}
