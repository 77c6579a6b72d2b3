use std::path::PathBuf;

use ltm_engine::hashhop::{eval, generate, EvalOptions, GenerateOptions};
use ltm_engine::memory_model::ModelConfig;
use ltm_engine::Device;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Write prompt.txt and targets.json in the format of Magic's HashHop generator.
    Generate(GenerateArgs),
    /// Stream a prompt through the built-in memory model and score its answers.
    Eval(EvalArgs),
}

#[derive(clap::Args)]
struct GenerateArgs {
    /// Problem size in tokens (Magic's 3 characters per token).
    #[arg(long)]
    tokens: u64,
    /// Hops per chain.
    #[arg(long, default_value_t = 1)]
    hops: usize,
    /// Queries in targets.json.
    #[arg(long)]
    queries: usize,
    /// Chain of thought: targets give the whole chain `H2 = H3 = …`.
    #[arg(long)]
    cot: bool,
    /// Seed: the same seed gives the same files.
    #[arg(long)]
    seed: u64,
    /// Directory for prompt.txt and targets.json (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Print a machine-readable summary on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct EvalArgs {
    /// The prompt (one `KEY = VALUE` pair per line).
    #[arg(long)]
    context_file: PathBuf,
    /// targets.json: query hash → answer.
    #[arg(long)]
    targets: PathBuf,
    /// Bytes of memory state, e.g. 268435456, 256MiB or 16GiB.
    #[arg(long, default_value = "256MiB", value_parser = parse_bytes)]
    state_bytes: u64,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: Device,
    /// Hops per query when targets.json has no chains; default: read off the prompt.
    #[arg(long)]
    hops: Option<usize>,
    /// Rows per key (the model's `s`).
    #[arg(long, default_value_t = ModelConfig::DEFAULT_ACTIVE)]
    active: usize,
    /// Write strength β.
    #[arg(long, default_value_t = ModelConfig::DEFAULT_BETA)]
    beta: f32,
    /// Heads of the state (each written by its own thread).
    #[arg(long, default_value_t = ModelConfig::DEFAULT_HEADS)]
    heads: usize,
    /// Model seed (keys and value codes).
    #[arg(long, default_value_t = ModelConfig::DEFAULT_SEED)]
    model_seed: u64,
    /// Score only this many queries (a random sample of the targets).
    #[arg(long)]
    max_queries: Option<usize>,
    /// Prompt bytes per streaming window.
    #[arg(long, default_value_t = EvalOptions::DEFAULT_WINDOW_BYTES)]
    window_bytes: usize,
    /// Print a machine-readable summary on stdout.
    #[arg(long)]
    json: bool,
    /// Also write every query's answer chain to this JSON file.
    #[arg(long)]
    answers: Option<PathBuf>,
}

pub fn run(args: Args) -> ltm_engine::Result<()> {
    match args.command {
        Command::Generate(a) => run_generate(a),
        Command::Eval(a) => run_eval(a),
    }
}

fn run_generate(a: GenerateArgs) -> ltm_engine::Result<()> {
    let options = GenerateOptions {
        tokens: a.tokens,
        hops: a.hops,
        queries: a.queries,
        cot: a.cot,
        seed: a.seed,
    };
    let g = generate(&options, &a.out)?;
    if a.json {
        println!("{}", serde_json::to_string(&g).expect("report serialises"));
    } else {
        println!(
            "wrote {} ({} chains of {} hops, {} lines, {} bytes) and {} ({} queries{})",
            g.prompt.display(),
            g.chains,
            a.hops,
            g.lines,
            g.prompt_bytes,
            g.targets.display(),
            g.queries,
            if a.cot { ", chain of thought" } else { "" }
        );
    }
    Ok(())
}

fn run_eval(a: EvalArgs) -> ltm_engine::Result<()> {
    let _answers = match &a.answers {
        Some(path) => Some(ltm_engine::output_path::OutputPath::claim(
            path,
            &[
                ("the context file", &a.context_file),
                ("the targets file", &a.targets),
            ],
        )?),
        None => None,
    };
    let mut model = ModelConfig::with_state_bytes_and_heads(a.state_bytes, a.heads)?;
    model.active = a.active;
    model.beta = a.beta;
    model.seed = a.model_seed;
    let mut options = EvalOptions::new(model);
    options.device = a.device;
    options.hops = a.hops;
    options.window_bytes = a.window_bytes;
    options.max_queries = a.max_queries;
    let r = eval(&a.context_file, &a.targets, &options)?;
    if let Some(path) = &a.answers {
        let json = serde_json::to_vec_pretty(&r.answers).expect("answers serialise");
        ltm_engine::atomic_file::write_bytes_atomically(path, &json)?;
    }
    if a.json {
        println!("{}", serde_json::to_string(&r).expect("report serialises"));
        return Ok(());
    }
    println!(
        "recall {:.2}% ({} of {} queries)",
        100.0 * r.recall,
        r.correct,
        r.queries
    );
    for h in &r.by_hops {
        println!(
            "  {} hop{}: {:.2}% ({} of {})",
            h.hops,
            if h.hops == 1 { "" } else { "s" },
            100.0 * h.recall,
            h.correct,
            h.queries
        );
    }
    println!(
        "prompt: {} bytes ({} nominal tokens), {} tokens of the built-in tokenizer, {} pairs",
        r.prompt_bytes, r.nominal_tokens, r.tokens, r.pairs
    );
    println!(
        "stream: {:.2} s, {:.0} tokens/s ({:.0} nominal tokens/s); queries: {:.3} s",
        r.stream_seconds, r.tokens_per_second, r.nominal_tokens_per_second, r.query_seconds
    );
    println!(
        "state: {} bytes ({:.1} MiB): {} heads × {} rows × {} values, {} rows per key, β = {}; {}; {:.2}% of reads verified",
        r.state_bytes,
        r.state_bytes as f64 / (1u64 << 20) as f64,
        r.heads,
        r.rows_per_head,
        r.value_dim,
        r.active_rows,
        r.beta,
        r.backend,
        100.0 * r.verified_reads
    );
    Ok(())
}

/// `123`, `256K`/`KiB`, `256M`/`MiB`, `16G`/`GiB` (powers of 1024).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (e.g. 268435456, 256MiB, 16GiB)"))?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        other => {
            return Err(format!(
                "unknown size unit `{other}` in `{s}` (K, M, G, KiB, MiB, GiB)"
            ))
        }
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("`{s}` is too large"))
}
