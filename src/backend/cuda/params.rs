//! Kernel parameter blocks, field for field the structs of `kernels/*.cu` (pointers
//! first, then 32-bit fields, so `#[repr(C)]` gives the C++ layout with no padding).
//! The pointer type is a parameter: a launch plan (`plan.rs`) names buffers, and the
//! backend turns the names into device addresses (`u64`) just before launching.

use cudarc::driver::DeviceRepr;

/// `PrepParams` of `kernels/column_write.cu`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct PrepParams<P = u64> {
    pub q: P,
    pub k: P,
    pub v: P,
    pub beta: P,
    pub g: P,
    pub w: P,
    pub u: P,
    pub p: P,
    pub gamma: P,
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
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct ScanParams<P = u64> {
    pub q: P,
    pub k: P,
    pub w: P,
    pub u: P,
    pub p: P,
    pub gamma: P,
    pub starts: P,
    pub state_out: P,
    pub out: P,
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
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct CombineParams<P = u64> {
    pub state: P,
    pub maps: P,
    pub starts: P,
    pub batch: i32,
    pub heads: i32,
    pub key_dim: i32,
    pub value_dim: i32,
    pub num_segments: i32,
    pub pad: i32,
}

/// `StepParams` of `kernels/step.cu`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct StepParams<P = u64> {
    pub q: P,
    pub k: P,
    pub v: P,
    pub beta: P,
    pub g: P,
    pub state: P,
    pub out: P,
    pub batch: i32,
    pub heads: i32,
    pub key_dim: i32,
    pub value_dim: i32,
    pub t_stride: i32,
    pub tokens: i32,
    pub slices: i32,
    pub scale: f32,
}

impl<P: Copy> PrepParams<P> {
    /// The same values with every pointer passed through `f`.
    pub fn resolve<Q>(&self, f: impl Fn(P) -> Q) -> PrepParams<Q> {
        PrepParams {
            q: f(self.q),
            k: f(self.k),
            v: f(self.v),
            beta: f(self.beta),
            g: f(self.g),
            w: f(self.w),
            u: f(self.u),
            p: f(self.p),
            gamma: f(self.gamma),
            batch: self.batch,
            heads: self.heads,
            key_dim: self.key_dim,
            value_dim: self.value_dim,
            kp: self.kp,
            t_stride: self.t_stride,
            tokens: self.tokens,
            num_chunks: self.num_chunks,
            scale: self.scale,
            pad: self.pad,
        }
    }
}

impl<P: Copy> ScanParams<P> {
    /// The same values with every pointer passed through `f`.
    pub fn resolve<Q>(&self, f: impl Fn(P) -> Q) -> ScanParams<Q> {
        ScanParams {
            q: f(self.q),
            k: f(self.k),
            w: f(self.w),
            u: f(self.u),
            p: f(self.p),
            gamma: f(self.gamma),
            starts: f(self.starts),
            state_out: f(self.state_out),
            out: f(self.out),
            batch: self.batch,
            heads: self.heads,
            key_dim: self.key_dim,
            value_dim: self.value_dim,
            kp: self.kp,
            t_stride: self.t_stride,
            tokens: self.tokens,
            num_chunks: self.num_chunks,
            chunks_per_segment: self.chunks_per_segment,
            num_segments: self.num_segments,
            slices: self.slices,
            scale: self.scale,
        }
    }
}

impl<P: Copy> CombineParams<P> {
    /// The same values with every pointer passed through `f`.
    pub fn resolve<Q>(&self, f: impl Fn(P) -> Q) -> CombineParams<Q> {
        CombineParams {
            state: f(self.state),
            maps: f(self.maps),
            starts: f(self.starts),
            batch: self.batch,
            heads: self.heads,
            key_dim: self.key_dim,
            value_dim: self.value_dim,
            num_segments: self.num_segments,
            pad: self.pad,
        }
    }
}

impl<P: Copy> StepParams<P> {
    /// The same values with every pointer passed through `f`.
    pub fn resolve<Q>(&self, f: impl Fn(P) -> Q) -> StepParams<Q> {
        StepParams {
            q: f(self.q),
            k: f(self.k),
            v: f(self.v),
            beta: f(self.beta),
            g: f(self.g),
            state: f(self.state),
            out: f(self.out),
            batch: self.batch,
            heads: self.heads,
            key_dim: self.key_dim,
            value_dim: self.value_dim,
            t_stride: self.t_stride,
            tokens: self.tokens,
            slices: self.slices,
            scale: self.scale,
        }
    }
}

// SAFETY: plain-old-data structs of u64/i32/f32 with the C layout of the kernels'
// parameter structs, passed by value.
unsafe impl DeviceRepr for PrepParams<u64> {}
unsafe impl DeviceRepr for ScanParams<u64> {}
unsafe impl DeviceRepr for CombineParams<u64> {}
unsafe impl DeviceRepr for StepParams<u64> {}

#[cfg(test)]
mod tests {
    use super::super::c_layout::c_layout;
    use super::*;
    use std::mem::{offset_of, size_of};

    /// (name, offset, size) of each field, read off the Rust struct.
    macro_rules! rust_layout {
        ($t:ty: $($f:ident),* $(,)?) => {{
            let d = <$t>::default();
            (vec![$((stringify!($f), offset_of!($t, $f), std::mem::size_of_val(&d.$f))),*],
             size_of::<$t>())
        }};
    }

    fn check(
        source: &str,
        name: &str,
        rust: (Vec<(&'static str, usize, usize)>, usize),
        rust_size: usize,
    ) {
        let (c_fields, c_size) = c_layout(source, name);
        let rust_fields: Vec<(String, usize, usize)> = rust
            .0
            .iter()
            .map(|&(n, o, s)| (n.to_string(), o, s))
            .collect();
        assert_eq!(
            rust_fields, c_fields,
            "{name}: fields (name, offset, size) differ"
        );
        // The list above names every Rust field only if the sizes agree too.
        assert_eq!(rust.1, rust_size);
        assert_eq!(rust_size, c_size, "{name}: sizes differ (Rust vs C++)");
    }

    /// Field for field (name, order, offset, size) against the structs in the kernel
    /// sources: a field added, removed, renamed or moved on one side fails here, not as
    /// garbage on a GPU.
    #[test]
    fn layouts_match_the_kernels() {
        let prep = include_str!("../../../kernels/column_write.cu");
        let scan = include_str!("../../../kernels/scan.cu");
        let step = include_str!("../../../kernels/step.cu");
        check(
            prep,
            "PrepParams",
            rust_layout!(PrepParams: q, k, v, beta, g, w, u, p, gamma, batch, heads,
                key_dim, value_dim, kp, t_stride, tokens, num_chunks, scale, pad),
            size_of::<PrepParams>(),
        );
        check(
            scan,
            "ScanParams",
            rust_layout!(ScanParams: q, k, w, u, p, gamma, starts, state_out, out, batch,
                heads, key_dim, value_dim, kp, t_stride, tokens, num_chunks,
                chunks_per_segment, num_segments, slices, scale),
            size_of::<ScanParams>(),
        );
        check(
            scan,
            "CombineParams",
            rust_layout!(CombineParams: state, maps, starts, batch, heads, key_dim,
                value_dim, num_segments, pad),
            size_of::<CombineParams>(),
        );
        check(
            step,
            "StepParams",
            rust_layout!(StepParams: q, k, v, beta, g, state, out, batch, heads, key_dim,
                value_dim, t_stride, tokens, slices, scale),
            size_of::<StepParams>(),
        );
    }

    /// The reader itself: a swapped pair of fields must change what it reports.
    #[test]
    fn the_layout_reader_sees_order_and_types() {
        let a = "struct X {\n const float* p; // c\n int a, b;\n float s;\n};";
        let b = "struct X {\n const float* p;\n int b, a;\n float s;\n};";
        let (fa, sa) = c_layout(a, "X");
        assert_eq!(
            fa,
            vec![
                ("p".into(), 0, 8),
                ("a".into(), 8, 4),
                ("b".into(), 12, 4),
                ("s".into(), 16, 4)
            ]
        );
        assert_eq!(sa, 24);
        assert_ne!(fa, c_layout(b, "X").0);
    }
}
