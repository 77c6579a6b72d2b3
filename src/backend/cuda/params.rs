//! Kernel parameter blocks, field for field the structs of `kernels/*.cu` (pointers
//! first, then 32-bit fields, so `#[repr(C)]` gives the C++ layout with no padding).

use cudarc::driver::DeviceRepr;

/// `PrepParams` of `kernels/column_write.cu`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PrepParams {
    pub q: u64,
    pub k: u64,
    pub v: u64,
    pub beta: u64,
    pub g: u64,
    pub w: u64,
    pub u: u64,
    pub p: u64,
    pub gamma: u64,
    pub batch: i32,
    pub heads: i32,
    pub key_dim: i32,
    pub value_dim: i32,
    pub kp: i32,
    pub t_stride: i32,
    pub tokens: i32,
    pub num_chunks: i32,
    pub scale: f32,
    pub pad: i32,
}

/// `ScanParams` of `kernels/scan.cu`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ScanParams {
    pub q: u64,
    pub k: u64,
    pub w: u64,
    pub u: u64,
    pub p: u64,
    pub gamma: u64,
    pub starts: u64,
    pub state_out: u64,
    pub out: u64,
    pub batch: i32,
    pub heads: i32,
    pub key_dim: i32,
    pub value_dim: i32,
    pub kp: i32,
    pub t_stride: i32,
    pub tokens: i32,
    pub num_chunks: i32,
    pub chunks_per_segment: i32,
    pub num_segments: i32,
    pub slices: i32,
    pub scale: f32,
}

/// `CombineParams` of `kernels/scan.cu`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CombineParams {
    pub state: u64,
    pub maps: u64,
    pub starts: u64,
    pub batch: i32,
    pub heads: i32,
    pub key_dim: i32,
    pub value_dim: i32,
    pub num_segments: i32,
    pub pad: i32,
}

// SAFETY: plain-old-data structs of u64/i32/f32 with the C layout of the kernels'
// parameter structs, passed by value.
unsafe impl DeviceRepr for PrepParams {}
unsafe impl DeviceRepr for ScanParams {}
unsafe impl DeviceRepr for CombineParams {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sizes the C++ compiler gives the same structs (8-byte pointers, 4-byte
    /// scalars, no padding): a field added on one side only shows up here.
    #[test]
    fn layouts_match_the_kernels() {
        assert_eq!(std::mem::size_of::<PrepParams>(), 9 * 8 + 10 * 4);
        assert_eq!(std::mem::size_of::<ScanParams>(), 9 * 8 + 12 * 4);
        assert_eq!(std::mem::size_of::<CombineParams>(), 3 * 8 + 6 * 4);
    }
}
