use std::path::PathBuf;

use ltm_engine::kernel_file::run_kernel_file;
use ltm_engine::{Device, MemoryConfig};

#[derive(clap::Args)]
pub struct Args {
    /// safetensors file with q, k [B,T,H,K], v [B,T,H,V], beta, g [B,T,H] and an
    /// optional initial_state [B,H,K,V] (f32, f16 or bf16).
    #[arg(long)]
    input: PathBuf,
    /// Where to write o [B,T,H,V] and final_state [B,H,K,V] as f32.
    #[arg(long)]
    output: PathBuf,
    /// Tokens per chunk.
    #[arg(long, default_value_t = MemoryConfig::DEFAULT_CHUNK)]
    chunk: usize,
    /// Query scale; default 1/sqrt(K).
    #[arg(long)]
    scale: Option<f32>,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: Device,
    /// Timed runs after one warm-up; the median is reported.
    #[arg(long, default_value_t = 1)]
    repeats: usize,
    /// Print a machine-readable summary on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> ltm_engine::Result<()> {
    let _output = ltm_engine::output_path::OutputPath::claim(
        &args.output,
        &[("the input (--input)", &args.input)],
    )?;
    let report = run_kernel_file(
        &args.input,
        &args.output,
        args.chunk,
        args.scale,
        args.device,
        args.repeats,
    )?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).expect("report serialises")
        );
    } else {
        println!(
            "{} × {} tokens, H={} K={} V={} on {}: forward {:.4} s (median of {}), {:.0} tokens/s; wrote {}",
            report.batch,
            report.tokens,
            report.heads,
            report.key_dim,
            report.value_dim,
            report.backend,
            report.forward_seconds,
            report.forward_seconds_all.len(),
            report.tokens_per_second,
            args.output.display()
        );
    }
    Ok(())
}
