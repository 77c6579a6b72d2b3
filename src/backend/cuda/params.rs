//! Kernel parameter blocks, field for field the structs of `kernels/*.cu` (pointers
//! first, then 32-bit fields, so `#[repr(C)]` gives the C++ layout with no padding).
//! The pointer type is a parameter: a launch plan (`plan.rs`) names buffers, and the
//! backend turns the names into device addresses (`u64`) just before launching.

use cudarc::driver::DeviceRepr;

/// A field of a parameter block, as a plan writes it out.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Field<P> {
    Ptr(P),
    Int(i32),
    Float(f32),
}

/// Declares a kernel's parameter struct once, its fields in the C order with their
/// types (`P`: a pointer, `i32`, `f32`), and derives from that one list the
/// `#[repr(C)]` struct generic over the pointer type, `resolve` (names to addresses),
/// `fields` (the plan text) and `layout` (the tests against the C source).
macro_rules! kernel_params {
    ($(#[$doc:meta])* $name:ident { $($f:ident: $kind:ident),* $(,)? }) => {
        $(#[$doc])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq)]
        pub(crate) struct $name<P = u64> {
            $(pub $f: $kind,)*
        }

        impl<P: Copy> $name<P> {
            /// The same values with every pointer passed through `f`.
            pub fn resolve<Q>(&self, f: impl Fn(P) -> Q) -> $name<Q> {
                $name { $($f: kernel_params!(@map $kind, f, self.$f),)* }
            }

            /// Every field with its name, in the struct's order.
            pub fn fields(&self) -> Vec<(&'static str, Field<P>)> {
                vec![$((stringify!($f), kernel_params!(@field $kind, self.$f)),)*]
            }
        }

        impl $name<u64> {
            /// (name, offset, size) of each field, as the compiler laid them out.
            #[cfg(test)]
            pub fn layout() -> Vec<(&'static str, usize, usize)> {
                let d = Self::default();
                vec![$((
                    stringify!($f),
                    std::mem::offset_of!($name<u64>, $f),
                    std::mem::size_of_val(&d.$f),
                )),*]
            }
        }

        // SAFETY: a plain-old-data struct of u64/i32/f32 fields with the C layout of the
        // kernel's parameter struct (the tests check it field by field), passed by value.
        unsafe impl DeviceRepr for $name<u64> {}
    };
    (@map P, $f:ident, $e:expr) => { $f($e) };
    (@map $kind:ident, $f:ident, $e:expr) => { $e };
    (@field P, $e:expr) => { Field::Ptr($e) };
    (@field i32, $e:expr) => { Field::Int($e) };
    (@field f32, $e:expr) => { Field::Float($e) };
}

kernel_params! {
    /// `PrepParams` of `kernels/column_write.cu`.
    PrepParams {
        q: P, k: P, v: P, beta: P, g: P, w: P, u: P, p: P, gamma: P,
        batch: i32, heads: i32, key_dim: i32, value_dim: i32, kp: i32, t_stride: i32,
        tokens: i32, num_chunks: i32, scale: f32, pad: i32,
    }
}

kernel_params! {
    /// `ScanParams` of `kernels/scan.cu`.
    ScanParams {
        q: P, k: P, w: P, u: P, p: P, gamma: P, starts: P, state_out: P,
        out: P, batch: i32, heads: i32, key_dim: i32, value_dim: i32, kp: i32,
        t_stride: i32, tokens: i32, num_chunks: i32, chunks_per_segment: i32,
        num_segments: i32, slices: i32, scale: f32,
    }
}

kernel_params! {
    /// `CombineParams` of `kernels/scan.cu`.
    CombineParams {
        state: P, maps: P, starts: P, batch: i32, heads: i32, key_dim: i32,
        value_dim: i32, num_segments: i32, pad: i32,
    }
}

kernel_params! {
    /// `StepParams` of `kernels/step.cu`.
    StepParams {
        q: P, k: P, v: P, beta: P, g: P, state: P, out: P, batch: i32,
        heads: i32, key_dim: i32, value_dim: i32, t_stride: i32, tokens: i32, slices: i32,
        scale: f32,
    }
}

#[cfg(test)]
mod tests {
    use super::super::c_layout::c_layout;
    use super::*;
    use std::mem::size_of;

    /// The Rust struct's fields (name, offset, size), which must cover it with no
    /// implicit padding, against the C struct `name` in `source`.
    fn check(source: &str, name: &str, rust: Vec<(&'static str, usize, usize)>, rust_size: usize) {
        let (c_fields, c_size) = c_layout(source, name);
        let rust_fields: Vec<(String, usize, usize)> = rust
            .iter()
            .map(|&(n, o, s)| (n.to_string(), o, s))
            .collect();
        assert_eq!(
            rust_fields, c_fields,
            "{name}: fields (name, offset, size) differ"
        );
        let sum: usize = rust.iter().map(|f| f.2).sum();
        assert_eq!(
            sum, rust_size,
            "{name}: implicit padding in the Rust struct"
        );
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
            PrepParams::layout(),
            size_of::<PrepParams>(),
        );
        check(
            scan,
            "ScanParams",
            ScanParams::layout(),
            size_of::<ScanParams>(),
        );
        check(
            scan,
            "CombineParams",
            CombineParams::layout(),
            size_of::<CombineParams>(),
        );
        check(
            step,
            "StepParams",
            StepParams::layout(),
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
