mod chart;
mod table;

use std::path::PathBuf;

use ltm_engine::bench::meminfo::MemInfo;
use ltm_engine::bench::report::{fmt_count, fmt_seconds};
use ltm_engine::bench::{run_sweep, BenchConfig, Cell, Clock, Point};
use ltm_engine::Device;

#[derive(clap::Args)]
pub struct Args {
    /// auto, cpu, cuda or cuda:N. Both sides run on the same device; `auto` is the
    /// CPU while the attention baseline has no CUDA kernel.
    #[arg(long, default_value = "auto")]
    device: Device,
    /// Heads of both the memory and attention.
    #[arg(long, default_value_t = 4)]
    heads: usize,
    /// Head dimension: attention's D, the memory's K = V.
    #[arg(long, default_value_t = 64)]
    head_dim: usize,
    /// Shortest context length (rounded up to a power of two).
    #[arg(long, default_value_t = 64)]
    min_tokens: usize,
    /// Longest context length of the sweep.
    #[arg(long, default_value_t = 1 << 20)]
    max_tokens: usize,
    /// Timed runs per measurement, after one warm-up (3 when a call takes over 2 s).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Stop timing attention prefill where one run would take longer (seconds).
    #[arg(long, default_value_t = 30.0)]
    prefill_budget: f64,
    /// Do not run attention where its buffers would exceed this (GiB).
    #[arg(long, default_value_t = 2.5)]
    memory_limit_gib: f64,
    /// Length to extrapolate both to.
    #[arg(long, default_value_t = 1e8)]
    extrapolate_to: f64,
    /// Clock of the table, fits and chart: wall, or cpu (this process's CPU time, all
    /// threads summed; robust on a machine shared with other work). Both are recorded.
    #[arg(long, default_value = "wall")]
    clock: Clock,
    /// Print the report as JSON on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Write a log-log chart of tokens/s and bytes against context length.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
}

pub fn run(args: Args) -> ltm_engine::Result<()> {
    if !(args.memory_limit_gib.is_finite() && args.memory_limit_gib >= 0.0) {
        return Err(ltm_engine::Error::Config(format!(
            "--memory-limit-gib must be a non-negative number, found {}",
            args.memory_limit_gib
        )));
    }
    if let Some(path) = &args.plot {
        ltm_engine::atomic_file::check_writable(path)?;
    }
    let config = BenchConfig {
        heads: args.heads,
        head_dim: args.head_dim,
        min_tokens: args.min_tokens,
        max_tokens: args.max_tokens,
        timed_runs: args.runs,
        prefill_budget_s: args.prefill_budget,
        memory_limit_bytes: (args.memory_limit_gib * (1u64 << 30) as f64) as u64,
        target_tokens: args.extrapolate_to,
        clock: args.clock,
        ..BenchConfig::default()
    };
    config.validate()?;
    // Comparing a GPU memory with a CPU attention would say nothing: both go where
    // the attention baseline can run, and asking for a device it lacks is an error.
    let device = match args.device {
        Device::Auto => Device::Cpu,
        d => d,
    };
    let attention = ltm_engine::baseline::attention_backend_for(device)?;
    let memory = ltm_engine::backend_for(device)?;
    eprintln!(
        "bench: H={} D={}, {} to {} tokens; memory on {}, attention on {}",
        config.heads,
        config.head_dim,
        fmt_count(config.lengths()[0] as f64),
        fmt_count(config.max_tokens as f64),
        memory.name(),
        attention.name()
    );
    let report = run_sweep(
        memory.as_ref(),
        attention.as_ref(),
        &config,
        MemInfo::read(),
        &mut |p: &Point| eprintln!("{}", progress_line(p)),
    )?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serialises")
        );
    } else {
        print!("{}", table::table(&report));
    }
    if let Some(path) = &args.plot {
        let command = std::iter::once("ltm-engine".to_string())
            .chain(std::env::args().skip(1))
            .collect::<Vec<_>>()
            .join(" ");
        let svg = chart::render_report(&report, &command);
        ltm_engine::atomic_file::write_bytes_atomically(path, svg.as_bytes())?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn progress_line(p: &Point) -> String {
    let cell = |c: &Cell| match c {
        Cell::Measured(t) => fmt_seconds(t.median_s),
        Cell::Skipped { .. } => "skipped".into(),
        Cell::OutOfMemory { .. } => "out of memory".into(),
    };
    format!(
        "  {:>6} tokens: memory {} (decode {}/token), attention {} (decode {}/token)",
        fmt_count(p.tokens as f64),
        cell(&p.memory_forward),
        cell(&p.memory_decode),
        cell(&p.attention_prefill),
        cell(&p.attention_decode)
    )
}
