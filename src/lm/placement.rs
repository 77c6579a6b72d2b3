//! Where a model's weights go: on a device where its backend is one (the CUDA
//! implementation decides, behind the `cuda` feature), else on the host. `model.rs`
//! asks here and names no device's types.

#[cfg(not(feature = "cuda"))]
use crate::backend::Backend;
#[cfg(not(feature = "cuda"))]
use crate::error::{Error, Result};

#[cfg(not(feature = "cuda"))]
use super::{config::GdnConfig, matrices::Matrices, runner::Placement, weights::Weights};

#[cfg(feature = "cuda")]
pub(crate) use super::cuda::{can_run, on_device, place};

/// Without the `cuda` feature every backend is the host's.
#[cfg(not(feature = "cuda"))]
pub(crate) fn on_device(_backend: &dyn Backend) -> bool {
    false
}

/// Without the `cuda` feature no device runs a model.
#[cfg(not(feature = "cuda"))]
pub(crate) fn can_run(_backend: &dyn Backend, _config: &GdnConfig) -> bool {
    false
}

/// Without the `cuda` feature there is no device to place a model on ([`on_device`]
/// is false, so this is never asked).
#[cfg(not(feature = "cuda"))]
pub(crate) fn place(
    _backend: &dyn Backend,
    _config: &GdnConfig,
    _weights: &Weights,
    _matrices: &Matrices,
) -> Result<Box<dyn Placement>> {
    Err(Error::Device(
        "this build has no device support (the `cuda` feature is off)".into(),
    ))
}
