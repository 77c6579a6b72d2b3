//! A device suite's instantiation, shared by the memory's suite (`backend_suite.rs`) and
//! the language models' (`lm_suite.rs`): one `#[test]` per case for each CPU instruction
//! set, and for CUDA (`#[ignore]`d without a GPU, run by the GPU check). The suite file
//! defines `run(Target, case)` and the `Target` (`Cpu(Isa)`, `Cuda`) and `Isa` it takes.

/// `device_suite!(case_a, case_b, …)`: modules `cpu_avx512`, `cpu_avx2`, `cpu_portable`
/// and `cuda`, each with one test per case, e.g. `cpu_avx2::case_a`.
#[allow(unused_macros)]
macro_rules! device_suite {
    ($($case:ident),* $(,)?) => {
        mod cpu_avx512 {
            $(#[test]
            fn $case() {
                super::run(super::Target::Cpu(super::Isa::Avx512), super::$case);
            })*
        }
        mod cpu_avx2 {
            $(#[test]
            fn $case() {
                super::run(super::Target::Cpu(super::Isa::Avx2), super::$case);
            })*
        }
        mod cpu_portable {
            $(#[test]
            fn $case() {
                super::run(super::Target::Cpu(super::Isa::Portable), super::$case);
            })*
        }
        #[cfg(feature = "cuda")]
        mod cuda {
            $(#[test]
            #[ignore = "needs a CUDA GPU"]
            fn $case() {
                super::run(super::Target::Cuda, super::$case);
            })*
        }
    };
}

#[allow(unused_imports)]
pub(crate) use device_suite;
