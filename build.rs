//! Embeds the CUDA kernels' PTX. This version has no `.cu` files yet, so the list is
//! empty and the build is CPU-only; DESIGN.md §4 describes the nvcc step to come.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=kernels");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(
        out.join("kernels.rs"),
        "pub static EMBEDDED_KERNELS: &[EmbeddedKernel] = &[];\n",
    )
    .expect("write kernels.rs");
}
