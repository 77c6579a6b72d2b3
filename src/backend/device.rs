//! Device selection and what the machine offers.

use std::str::FromStr;

use crate::error::Error;

/// Where to run: `auto` picks a CUDA device when this build can use one, else the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Device {
    /// CUDA device 0 when this build has kernels and the machine a driver and a device,
    /// else the CPU.
    #[default]
    Auto,
    /// The CPU backend, always available.
    Cpu,
    /// The CUDA device with this ordinal; an error where it cannot run.
    Cuda(usize),
}

impl FromStr for Device {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "auto" => Ok(Device::Auto),
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| {
                    Error::Device(format!(
                        "unknown device `{s}` (expected auto, cpu, cuda or cuda:N)"
                    ))
                }),
        }
    }
}

/// A CUDA device as the driver reports it.
#[derive(Clone, Debug)]
pub struct CudaDeviceInfo {
    /// The driver's index of the device (`cuda:N`).
    pub ordinal: usize,
    /// The device's name as the driver reports it, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// Compute capability `(major, minor)`, e.g. `(9, 0)` for Hopper.
    pub compute_capability: (i32, i32),
    /// Total device memory in bytes.
    pub memory_bytes: usize,
}

/// What the CUDA driver reports, without failing when there is none.
#[derive(Clone, Debug)]
pub enum CudaProbe {
    /// This build has no CUDA support (the `cuda` feature was off).
    NotBuilt,
    /// No CUDA driver library (libcuda) on this machine.
    NoDriver,
    /// The driver is there but failed to initialise or to list devices; its message.
    DriverError(String),
    /// The devices the driver lists, in ordinal order (possibly none).
    Devices(Vec<CudaDeviceInfo>),
}

/// Asks the driver for its devices. The library is loaded dynamically, so a machine
/// without one gets `NoDriver` rather than a failed start.
#[cfg(feature = "cuda")]
pub fn probe_cuda() -> CudaProbe {
    use cudarc::driver::{result, sys, CudaContext};
    // SAFETY: only looks for the shared library; calls nothing in it.
    if !unsafe { sys::is_culib_present() } {
        return CudaProbe::NoDriver;
    }
    if let Err(e) = result::init() {
        return CudaProbe::DriverError(e.to_string());
    }
    let count = match CudaContext::device_count() {
        Ok(n) => n.max(0) as usize,
        Err(e) => return CudaProbe::DriverError(e.to_string()),
    };
    let mut devices = Vec::with_capacity(count);
    for ordinal in 0..count {
        match CudaContext::new(ordinal) {
            Ok(ctx) => {
                let attr = |a| ctx.attribute(a).unwrap_or(0);
                use sys::CUdevice_attribute::*;
                devices.push(CudaDeviceInfo {
                    ordinal,
                    name: ctx.name().unwrap_or_else(|_| "unknown".into()),
                    compute_capability: (
                        attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR),
                        attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR),
                    ),
                    memory_bytes: ctx.total_mem().unwrap_or(0),
                });
            }
            Err(e) => return CudaProbe::DriverError(e.to_string()),
        }
    }
    CudaProbe::Devices(devices)
}

/// Without the `cuda` feature there is nothing to ask.
#[cfg(not(feature = "cuda"))]
pub fn probe_cuda() -> CudaProbe {
    CudaProbe::NotBuilt
}

/// What keeps `cuda:N` from running here, if anything: this build's kernels, the
/// driver, the device. `None` when all three are present.
pub fn cuda_missing(ordinal: usize) -> Option<CudaMissing> {
    if crate::backend::EMBEDDED_KERNELS.is_empty() {
        return Some(CudaMissing::Kernels);
    }
    match probe_cuda() {
        CudaProbe::NotBuilt => Some(CudaMissing::Kernels),
        CudaProbe::NoDriver => Some(CudaMissing::Driver),
        CudaProbe::DriverError(e) => Some(CudaMissing::DriverFailed(e)),
        CudaProbe::Devices(d) if ordinal >= d.len() => Some(CudaMissing::Device { found: d.len() }),
        CudaProbe::Devices(_) => None,
    }
}

/// The first thing missing for the CUDA backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CudaMissing {
    /// Built without nvcc: no kernels embedded.
    Kernels,
    /// No libcuda on this machine.
    Driver,
    /// The driver is there but failed to start; its message.
    DriverFailed(String),
    /// The driver lists fewer devices than the ordinal asked for.
    Device {
        /// How many devices the driver lists.
        found: usize,
    },
}

/// Why `--device cuda:N` cannot run here, and what to do about it.
pub(crate) fn cuda_unavailable(ordinal: usize, missing: &CudaMissing) -> Error {
    let why = match missing {
        CudaMissing::Kernels if !cfg!(feature = "cuda") => {
            "this build of ltm-engine has no CUDA support (built without the `cuda` feature, \
             which is on by default)"
                .to_string()
        }
        CudaMissing::Kernels => "this build of ltm-engine has no CUDA kernels (nvcc was not found \
             when it was built). Build them in: NVCC=$(bash scripts/install-nvcc.sh | tail -n1) \
             cargo build --release (or set CUDA_HOME, or put nvcc on PATH)"
            .to_string(),
        CudaMissing::Driver => {
            "no CUDA driver (libcuda) was found on this machine; install the NVIDIA driver \
             (580 or newer for these kernels)"
                .to_string()
        }
        CudaMissing::DriverFailed(e) => format!("the CUDA driver failed: {e}"),
        CudaMissing::Device { found } => {
            format!("device cuda:{ordinal} does not exist (the driver reports {found})")
        }
    };
    Error::Device(format!(
        "cuda:{ordinal} requested, but {why}; --device cpu (or auto) runs on the CPU"
    ))
}
