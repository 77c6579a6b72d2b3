use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use ltm_engine::model::{Model, RandomFeatureModel};
use ltm_engine::state_file::{load_state_tagged, save_state_tagged};
use ltm_engine::stream::{
    stream_context, ContextFile, Format, Observer, Progress, StreamOptions, StreamSummary,
};
use ltm_engine::{backend_for, Device, Error, State};

#[derive(clap::Args)]
pub struct Args {
    /// The context to stream: UTF-8 text, raw bytes, or little-endian u32 token ids.
    #[arg(long)]
    context_file: PathBuf,
    /// text, bytes or u32; by default from the extension, else text if the file starts
    /// as valid UTF-8.
    #[arg(long)]
    format: Option<Format>,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: Device,
    /// Tokens per window (rounded up to a multiple of the chunk size).
    #[arg(long, default_value_t = StreamOptions::default().window_tokens)]
    window_tokens: usize,
    /// Stop after this many tokens.
    #[arg(long)]
    max_tokens: Option<u64>,
    /// Start from this state instead of an empty memory.
    #[arg(long)]
    load_state: Option<PathBuf>,
    /// With --load-state: skip the tokens that state has already consumed from this
    /// file, to finish an interrupted run.
    #[arg(long, requires = "load_state")]
    resume: bool,
    /// Save the final state here (atomically).
    #[arg(long)]
    save_state: Option<PathBuf>,
    /// Also save the state every N tokens, so an interrupted run can --resume.
    #[arg(long, requires = "save_state")]
    checkpoint_every: Option<u64>,
    /// Token ids of bytes and u32 files must be below this (default: the model's
    /// vocabulary, 2^32 for the random-feature model).
    #[arg(long)]
    vocab_size: Option<u64>,
    /// Seed of the model's random features.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Add a CRC-32 of all outputs to the summary (to compare runs).
    #[arg(long)]
    digest: bool,
    /// Print the summary as JSON on stdout, and no progress.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> ltm_engine::Result<()> {
    let model = RandomFeatureModel::new(RandomFeatureModel::default_config(), args.seed);
    let config = model.memory_config().clone();
    let backend = backend_for(args.device)?;
    let mut state = match &args.load_state {
        Some(path) => load_state_tagged(path, &config, model.fingerprint())?,
        None => State::zeros(&config, 1),
    };
    let mut file = ContextFile::open(&args.context_file, args.format)?;
    let options = StreamOptions {
        window_tokens: args.window_tokens,
        max_tokens: args.max_tokens,
        resume: args.resume,
        checkpoint_every: args.checkpoint_every,
        checkpoint_path: args.checkpoint_every.and(args.save_state.clone()),
        digest: args.digest,
        vocab_size: args.vocab_size,
    };
    let mut bar = ProgressLine::new(!args.json && std::io::stderr().is_terminal());
    let summary = stream_context(
        &mut file,
        &model,
        backend.as_ref(),
        &mut state,
        &options,
        &mut bar,
    )?;
    bar.finish();
    if let Some(path) = &args.save_state {
        save_state_tagged(path, &config, model.fingerprint(), &state)?;
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&summary).map_err(|e| Error::Config(e.to_string()))?
        );
    } else {
        print_summary(&summary, args.save_state.as_deref());
    }
    Ok(())
}

fn print_summary(s: &StreamSummary, saved: Option<&std::path::Path>) {
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    println!(
        "{} ({}) through {} on {}",
        s.file.display(),
        s.format,
        s.model,
        s.backend
    );
    println!(
        "  tokens      {} streamed{}, {} in the state",
        s.tokens,
        if s.skipped_tokens > 0 {
            format!(" (after skipping {})", s.skipped_tokens)
        } else {
            String::new()
        },
        s.state_tokens
    );
    println!(
        "  time        {:.2} s wall, {:.2} s computing, {:.0} tokens/s ({} windows of {})",
        s.wall_seconds, s.compute_seconds, s.tokens_per_second, s.windows, s.window_tokens
    );
    println!(
        "  memory      state {:.2} MiB; peak host {}; peak device {}",
        mib(s.state_bytes as u64),
        s.peak_host_bytes
            .map_or("n/a".into(), |b| format!("{:.1} MiB", mib(b))),
        s.peak_device_bytes
            .map_or("n/a (CPU)".into(), |b| format!("{:.1} MiB", mib(b)))
    );
    println!(
        "  next-token  mean cosine of read vs next value {:.4}",
        s.next_token_cosine
    );
    if let Some(d) = &s.output_digest {
        println!("  outputs     crc32 {d}");
    }
    if let Some(p) = saved {
        println!(
            "  state       saved to {} ({} checkpoints on the way)",
            p.display(),
            s.checkpoints
        );
    }
}

/// A one-line progress display on a terminal; silent otherwise.
struct ProgressLine {
    enabled: bool,
    last: Option<Instant>,
}

impl ProgressLine {
    fn new(enabled: bool) -> Self {
        ProgressLine {
            enabled,
            last: None,
        }
    }

    fn finish(&mut self) {
        if self.enabled && self.last.is_some() {
            eprintln!();
        }
    }
}

impl Observer for ProgressLine {
    fn progress(&mut self, p: Progress) {
        if !self.enabled || self.last.is_some_and(|t| t.elapsed().as_secs_f64() < 0.25) {
            return;
        }
        self.last = Some(Instant::now());
        let rate = p.tokens as f64 / p.seconds.max(1e-9);
        let eta = if p.fraction > 0.0 {
            p.seconds * (1.0 - p.fraction) / p.fraction
        } else {
            f64::NAN
        };
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r{:>12} tokens  {:>10.0} tokens/s  {:>5.1}%  ETA {:>6.0} s ",
            p.tokens,
            rate,
            100.0 * p.fraction,
            eta
        );
        let _ = err.flush();
    }
}
