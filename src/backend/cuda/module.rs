//! Loading the embedded kernels into a context: PTX first, NVRTC from the embedded
//! source when the driver is too old for the PTX, and the layout the kernels report.

use std::collections::BTreeMap;
use std::sync::Arc;

use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute, CUresult};
use cudarc::driver::{result, CudaContext, CudaFunction, CudaModule, CudaStream, PushKernelArg};
use cudarc::nvrtc::{CompileOptions, Ptx};

use super::cuda_err;
use super::plan::{Kernel, ScanLayout, Stage};
use crate::backend::{EmbeddedKernel, EMBEDDED_KERNELS};
use crate::error::{Error, Result};

/// The CUDA driver version the embedded PTX (ISA 9.0, nvcc 13.0) needs: 13.0, driver 580.
pub const PTX_DRIVER: &str = "CUDA 13.0 (driver 580 or newer)";

/// The memory's entry points, by name ([`Kernel::entry`]).
pub(crate) struct Kernels {
    functions: BTreeMap<String, CudaFunction>,
    pub layout: ScanLayout,
    /// Shared memory a block may opt into on this device (bytes).
    optin_smem: u32,
    /// How the modules were loaded: "ptx" or "nvrtc (…)".
    pub loaded_from: String,
}

fn embedded(name: &str) -> Result<&'static EmbeddedKernel> {
    EMBEDDED_KERNELS
        .iter()
        .find(|k| k.name == name)
        .ok_or_else(|| Error::Device(format!("this build has no `{name}` kernel embedded")))
}

impl Kernels {
    /// The loaded entry point `k` names.
    pub fn function(&self, k: &Kernel) -> Result<&CudaFunction> {
        let name = k.entry();
        self.functions
            .get(&name)
            .ok_or_else(|| Error::Device(format!("kernel {name} is not loaded")))
    }

    pub fn load(ctx: &Arc<CudaContext>, stream: &Arc<CudaStream>) -> Result<Self> {
        let mut via = Vec::new();
        let cw = load_module(ctx, embedded("column_write")?, &mut via)?;
        let sc = load_module(ctx, embedded("scan")?, &mut via)?;
        let st = load_module(ctx, embedded("step")?, &mut via)?;
        let mut functions = BTreeMap::new();
        for k in Kernel::all() {
            let module = match k.stage {
                Stage::Prep => &cw,
                Stage::Step => &st,
                _ => &sc,
            };
            let name = k.entry();
            let f = module
                .load_function(&name)
                .map_err(cuda_err(&format!("loading kernel {name}")))?;
            functions.insert(name, f);
        }
        let optin = ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
            .map_err(cuda_err("querying shared memory per block"))?;
        let kernels = Kernels {
            functions,
            layout: read_layout(&sc, stream)?,
            optin_smem: optin.max(0) as u32,
            loaded_from: via.join(", "),
        };
        kernels.allow_shared_memory()?;
        Ok(kernels)
    }

    /// The scan kernels keep a whole chunk's tiles in shared memory, beyond the 48 KB a
    /// block gets without opting in. A GPU that has room for the narrow kernels but not
    /// the wide ones (an A100) loads; a memory with key_dim > 128 is then refused by
    /// [`Kernels::check_key_dim`].
    fn allow_shared_memory(&self) -> Result<()> {
        let optin = self.optin_smem;
        let need = self.layout.smem_bytes;
        if optin < need {
            return Err(Error::Device(format!(
                "this GPU allows {optin} bytes of shared memory per block; the scan kernel needs \
                 {need} (an A100, H100 or H200 class GPU, compute capability 8.0 or 9.0)"
            )));
        }
        for k in Kernel::all() {
            if !matches!(k.stage, Stage::Scan | Stage::Maps) {
                continue;
            }
            let bytes = self.layout.smem_of(k.wide);
            if bytes > optin {
                continue;
            }
            let f = self.function(&k)?;
            // SAFETY: `f` is a loaded function of this context.
            unsafe {
                result::function::set_function_attribute(
                    f.cu_function(),
                    CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    bytes as i32,
                )
            }
            .map_err(cuda_err("allowing the scan kernel its shared memory"))?;
        }
        Ok(())
    }

    /// Fails, saying why, unless the scan kernels take keys of `key_dim` on this GPU.
    pub fn check_key_dim(&self, key_dim: usize) -> Result<()> {
        self.layout.check_key_dim(key_dim, self.optin_smem)
    }
}

/// Loads the embedded module `name` (a `.cu` file stem, e.g. `lm_norm`) into `ctx`, the
/// same way as the memory's kernels (PTX, NVRTC for an older driver).
pub(crate) fn load_embedded(ctx: &Arc<CudaContext>, name: &str) -> Result<Arc<CudaModule>> {
    let mut via = Vec::new();
    load_module(ctx, embedded(name)?, &mut via)
}

/// PTX as embedded; if the driver rejects its ISA version, the embedded source through
/// NVRTC for this device's architecture.
fn load_module(
    ctx: &Arc<CudaContext>,
    kernel: &EmbeddedKernel,
    via: &mut Vec<String>,
) -> Result<Arc<CudaModule>> {
    match ctx.load_module(Ptx::from_src(kernel.ptx)) {
        Ok(m) => {
            via.push(format!("{} from PTX ({})", kernel.name, kernel.target));
            Ok(m)
        }
        Err(e) if e.0 == CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION => {
            let driver = driver_version().unwrap_or_else(|| "unknown".into());
            // SAFETY: only looks for the shared library.
            if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
                return Err(Error::Device(format!(
                    "the CUDA driver ({driver}) is older than the embedded kernels need \
                     ({PTX_DRIVER}), and no NVRTC library was found to compile them for it: \
                     update the driver, or install libnvrtc of the driver's CUDA version"
                )));
            }
            let (major, minor) = ctx
                .compute_capability()
                .map_err(cuda_err("querying compute capability"))?;
            let opts = CompileOptions {
                arch: Some(nvrtc_arch(major, minor)),
                options: vec!["--std=c++17".into()],
                name: Some(format!("{}.cu", kernel.name)),
                ..Default::default()
            };
            let ptx = cudarc::nvrtc::compile_ptx_with_opts(kernel.source, opts).map_err(|e| {
                Error::Device(format!(
                    "the CUDA driver ({driver}) is older than the embedded PTX needs \
                     ({PTX_DRIVER}), and compiling {}.cu with NVRTC failed: {e}",
                    kernel.name
                ))
            })?;
            let m = ctx
                .load_module(ptx)
                .map_err(cuda_err(&format!("loading NVRTC-compiled {}", kernel.name)))?;
            via.push(format!("{} via NVRTC (driver {driver})", kernel.name));
            Ok(m)
        }
        Err(e) => Err(Error::cuda(
            format!("loading the {} module", kernel.name),
            e,
        )),
    }
}

fn nvrtc_arch(major: i32, minor: i32) -> &'static str {
    match (major, minor) {
        (8, 0) => "compute_80",
        (8, 6) => "compute_86",
        (8, 7) => "compute_87",
        (8, 9) => "compute_89",
        (9, 0) => "compute_90",
        (10, 0) => "compute_100",
        (12, 0) => "compute_120",
        _ => "compute_80",
    }
}

/// The driver's CUDA version as "13.0", if it answers.
pub fn driver_version() -> Option<String> {
    let mut v = 0i32;
    // SAFETY: the caller has checked that libcuda is present; writes one int.
    let r = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) };
    (r == CUresult::CUDA_SUCCESS).then(|| format!("{}.{}", v / 1000, (v % 1000) / 10))
}

fn read_layout(module: &Arc<CudaModule>, stream: &Arc<CudaStream>) -> Result<ScanLayout> {
    let query = module
        .load_function("ltm_scan_layout_query")
        .map_err(cuda_err("loading ltm_scan_layout_query"))?;
    let mut out = stream
        .alloc_zeros::<i32>(8)
        .map_err(cuda_err("allocating the layout query"))?;
    let cfg = cudarc::driver::LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: (32, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut builder = stream.launch_builder(&query);
    builder.arg(&mut out);
    // SAFETY: the kernel writes 8 ints into `out`, which holds 8.
    unsafe { builder.launch(cfg) }.map_err(cuda_err("launching ltm_scan_layout_query"))?;
    let v = stream
        .clone_dtoh(&out)
        .map_err(cuda_err("reading the kernel layout"))?;
    stream
        .synchronize()
        .map_err(cuda_err("reading the kernel layout"))?;
    let layout = ScanLayout {
        chunk: v[0] as usize,
        kmax: v[1] as usize,
        slice: v[2] as usize,
        threads: v[3] as u32,
        smem_bytes: v[4] as u32,
        combine_threads: v[5] as u32,
        kmax_wide: v[6] as usize,
        smem_bytes_wide: v[7] as u32,
    };
    if layout.chunk != 64
        || layout.slice == 0
        || !layout.kmax.is_multiple_of(16)
        || layout.kmax_wide < layout.kmax
    {
        return Err(Error::Device(format!(
            "unexpected kernel layout {layout:?}: kernels and host code disagree"
        )));
    }
    Ok(layout)
}
