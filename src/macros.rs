//! Macros shared by the CPU kernels.

/// Defines `unsafe fn $name`, a twin of the `#[inline(always)]` function `$body` with
/// the same arguments, compiled with more instructions enabled: the body is inlined
/// into it, so the compiler vectorises its loops 16 (AVX-512) or 8 (AVX2) wide there
/// and nowhere else. Callers must call it only after the CPU reported the features
/// (`Isa::Avx512`, `Isa::Avx2`). The feature list defaults to AVX-512 F/VL/BW/DQ with
/// AVX2 and FMA; `features = "avx2,fma"` gives the AVX2 twin.
macro_rules! simd_twin {
    (
        $(#[$meta:meta])*
        fn $name:ident $([$($generics:tt)*])? ($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?
        = $body:ident
    ) => {
        simd_twin! {
            $(#[$meta])*
            features = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma",
            fn $name $([$($generics)*])? ($($arg: $ty),*) $(-> $ret)? = $body
        }
    };
    (
        $(#[$meta:meta])*
        features = $features:literal,
        fn $name:ident $([$($generics:tt)*])? ($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?
        = $body:ident
    ) => {
        $(#[$meta])*
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $name $(<$($generics)*>)? ($($arg: $ty),*) $(-> $ret)? {
            $body($($arg),*)
        }
    };
}
