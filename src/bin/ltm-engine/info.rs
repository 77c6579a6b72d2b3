use ltm_engine::backend::cpu::Isa;
use ltm_engine::backend::device::{probe_cuda, CudaProbe};
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    /// Print a machine-readable summary on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> ltm_engine::Result<()> {
    let kernels = ltm_engine::backend::EMBEDDED_KERNELS;
    let (driver, devices) = match probe_cuda() {
        CudaProbe::NotBuilt => ("built without CUDA support".to_string(), vec![]),
        CudaProbe::NoDriver => ("no CUDA driver found".to_string(), vec![]),
        CudaProbe::DriverError(e) => (format!("CUDA driver error: {e}"), vec![]),
        CudaProbe::Devices(d) => {
            #[cfg(feature = "cuda")]
            let version = ltm_engine::backend::cuda::driver_version().unwrap_or_default();
            #[cfg(not(feature = "cuda"))]
            let version = String::new();
            let line = format!("CUDA driver {version} present, {} device(s)", d.len());
            (line, d)
        }
    };
    // `info` reports a GPU that fails to start (an old driver, say) instead of failing.
    let auto = match ltm_engine::backend_for(ltm_engine::Device::Auto) {
        Ok(b) => b.name(),
        Err(e) => format!("none: the CUDA device did not start ({e}); --device cpu runs"),
    };
    if args.json {
        let devs: Vec<_> = devices
            .iter()
            .map(|d| {
                json!({"ordinal": d.ordinal, "name": d.name,
                       "compute_capability": format!("{}.{}", d.compute_capability.0, d.compute_capability.1),
                       "memory_bytes": d.memory_bytes})
            })
            .collect();
        let ks: Vec<_> = kernels
            .iter()
            .map(|k| json!({"name": k.name, "target": k.target}))
            .collect();
        let out = json!({
            "version": env!("CARGO_PKG_VERSION"),
            "cpu_isa": Isa::detect().name(),
            "cpu_threads": rayon::current_num_threads(),
            "kernels_embedded": ks,
            "cuda": driver,
            "devices": devs,
            "auto_backend": auto,
        });
        println!("{out}");
        return Ok(());
    }
    println!("ltm-engine {}", env!("CARGO_PKG_VERSION"));
    println!(
        "cpu: {} kernels, {} threads",
        Isa::detect().name(),
        rayon::current_num_threads()
    );
    if kernels.is_empty() {
        println!(
            "cuda kernels: none embedded (built without nvcc; for the GPU backend: \
             NVCC=$(bash scripts/install-nvcc.sh | tail -n1) cargo build --release)"
        );
    }
    for k in kernels {
        println!("cuda kernel: {} ({})", k.name, k.target);
    }
    println!("cuda: {driver}");
    for d in &devices {
        println!(
            "  cuda:{} {} (compute {}.{}, {:.1} GiB)",
            d.ordinal,
            d.name,
            d.compute_capability.0,
            d.compute_capability.1,
            d.memory_bytes as f64 / (1u64 << 30) as f64
        );
    }
    println!("--device auto uses: {auto}");
    Ok(())
}
