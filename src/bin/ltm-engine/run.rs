use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use ltm_engine::memory_model::codec::Decoded;
use ltm_engine::memory_model::{check_query, MemoryModel, ModelConfig};
use ltm_engine::model::{Model, RandomFeatureModel};
use ltm_engine::output_path::OutputPath;
use ltm_engine::state_file::load_state;
use ltm_engine::stream::{
    check_resume, stream, ContextFile, Format, Observer, Progress, RandomFeatureStream,
    StreamModel, StreamOptions, StreamSummary,
};
use ltm_engine::{backend_for, Device, Error, State};

use crate::hashhop::parse_bytes;

/// Which model turns the context into the memory's writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelChoice {
    /// The built-in memory model: words under sparse hashed keys, answers decoded to
    /// exact words (text only).
    Memory,
    /// Dense random features over any tokens: the engine's dense forward at H=4,
    /// K=V=64, a next-token memory.
    RandomFeatures,
    /// A trained Gated DeltaNet checkpoint (a model directory).
    Dir(PathBuf),
}

/// `memory`, `random-features`, or the path of a model directory.
fn parse_model(s: &str) -> Result<ModelChoice, String> {
    match s {
        "memory" => Ok(ModelChoice::Memory),
        "random-features" => Ok(ModelChoice::RandomFeatures),
        path => {
            let p = PathBuf::from(path);
            if p.is_dir() {
                Ok(ModelChoice::Dir(p))
            } else {
                Err(format!(
                    "`{path}` is neither `memory`, `random-features` nor a model directory"
                ))
            }
        }
    }
}

#[derive(clap::Args)]
pub struct Args {
    /// The context to stream: UTF-8 text, raw bytes, or little-endian u32 token ids.
    #[arg(long)]
    pub context_file: PathBuf,
    /// The model: `memory` (default; text), `random-features` (any format), or a
    /// Gated DeltaNet model directory (config.json, model.safetensors, tokenizer.json).
    #[arg(long, default_value = "memory", value_parser = parse_model)]
    model: ModelChoice,
    /// Size of the memory model's state (e.g. 256MiB, 16GiB).
    #[arg(long, default_value = "256MiB", value_parser = parse_bytes)]
    pub state_bytes: u64,
    /// After streaming, ask the memory model which word follows this line prefix
    /// (repeatable).
    #[arg(long)]
    pub query: Vec<String>,
    /// text, bytes or u32; by default from the extension, else text if the file starts
    /// as valid UTF-8.
    #[arg(long)]
    pub format: Option<Format>,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: Device,
    /// Tokens per window (rounded up to a multiple of the chunk size); for the memory
    /// model, writes per backend call; for a model directory, tokens per prefill
    /// window (default 512).
    /// [default: 4096; 512 for a model directory]
    #[arg(long)]
    pub window_tokens: Option<usize>,
    /// Stop after this many tokens.
    #[arg(long)]
    pub max_tokens: Option<u64>,
    /// Start from this state instead of an empty memory.
    #[arg(long)]
    pub load_state: Option<PathBuf>,
    /// With --load-state: skip the tokens that state has already consumed from this
    /// file, to finish an interrupted run.
    #[arg(long, requires = "load_state")]
    pub resume: bool,
    /// Save the final state here (atomically).
    #[arg(long)]
    pub save_state: Option<PathBuf>,
    /// Also save the state every N tokens, so an interrupted run can --resume.
    #[arg(long, requires = "save_state")]
    pub checkpoint_every: Option<u64>,
    /// Token ids of bytes and u32 files must be below this (default: the model's
    /// vocabulary, 2^32 for the random-feature model).
    #[arg(long)]
    pub vocab_size: Option<u64>,
    /// Bytes per window of text (extended to a line end) [default: 4MiB for the memory
    /// model, 256KiB for a model directory, whose tokenizer needs memory in proportion].
    #[arg(long, value_parser = parse_bytes)]
    pub window_bytes: Option<u64>,
    /// Seed of the model (default: the model's own).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Add a CRC-32 of all outputs to the summary (to compare runs).
    #[arg(long)]
    pub digest: bool,
    /// Print the summary as JSON on stdout, and no progress.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub lm: crate::run_lm::LmArgs,
}

pub fn run(args: Args) -> ltm_engine::Result<()> {
    // Held to the end of the run, so no other run writes the same state meanwhile.
    let output = match &args.save_state {
        Some(path) => Some(claim_output(path, &args)?),
        None => None,
    };
    let output = output.as_ref();
    let lm = matches!(args.model, ModelChoice::Dir(_));
    let options = StreamOptions {
        window_tokens: args.window_tokens.unwrap_or(StreamOptions::DEFAULT_WINDOW),
        window_bytes: args.window_bytes.map_or(
            if lm {
                ltm_engine::lm::stream::DEFAULT_WINDOW_BYTES
            } else {
                4 << 20
            },
            |b| usize::try_from(b).unwrap_or(usize::MAX),
        ),
        max_tokens: args.max_tokens,
        resume: args.resume,
        checkpoint_every: args.checkpoint_every,
        checkpoint_path: args.checkpoint_every.and(args.save_state.clone()),
        digest: args.digest,
        vocab_size: args.vocab_size,
    };
    let mut bar = ProgressLine::new(!args.json && std::io::stderr().is_terminal());
    if let ModelChoice::Dir(dir) = &args.model {
        return crate::run_lm::run(dir, &args, &options, output, &mut bar);
    }
    args.lm.refuse_without_model()?;
    let (summary, answers) = match args.model {
        ModelChoice::Memory => run_memory_model(&args, &options, output, &mut bar)?,
        ModelChoice::RandomFeatures => (
            run_random_features(&args, &options, output, &mut bar)?,
            vec![],
        ),
        ModelChoice::Dir(_) => unreachable!("model directories returned above"),
    };
    if let Some(c) = summary.capacity.as_ref().filter(|c| c.over_capacity) {
        eprintln!(
            "warning: {} pairs written into {} rows is {:.1}× the state's capacity: the capacity \
             formula predicts {:.1}% recall, the oldest pairs forgotten first; --state-bytes {}MiB \
             would hold this file",
            c.pairs,
            c.rows,
            c.load,
            100.0 * c.predicted_recall,
            c.state_bytes_to_hold >> 20
        );
    }
    if args.json {
        let mut value = serde_json::to_value(&summary).map_err(|e| Error::Config(e.to_string()))?;
        if !answers.is_empty() {
            value["answers"] = serde_json::json!(answers
                .iter()
                .map(|(q, d)| answer_json(q, d))
                .collect::<Vec<_>>());
        }
        println!("{value}");
    } else {
        print_summary(&summary, args.save_state.as_deref());
        for (q, d) in &answers {
            println!("  query       {q:?} → {}", answer_text(d));
        }
    }
    Ok(())
}

/// Claims `--save-state` for this run: not one of the run's inputs (the context, the
/// state loaded, a file of the model directory), writable, and written by no other
/// run. The state loaded is refused too: a run that fails or is stopped midway would
/// have replaced it with a checkpoint of another run, and it is the user's input;
/// a resumed run saves to a new path.
fn claim_output(path: &Path, args: &Args) -> ltm_engine::Result<OutputPath> {
    let mut inputs: Vec<(&str, PathBuf)> = vec![("the context file", args.context_file.clone())];
    if let Some(loaded) = &args.load_state {
        inputs.push(("the state loaded (--load-state)", loaded.clone()));
    }
    if let ModelChoice::Dir(dir) = &args.model {
        // Every file there, not only those a load reads now: a model directory's
        // files belong to the model.
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            inputs.push(("a file of the model directory", entry.path()));
        }
    }
    let inputs: Vec<(&str, &Path)> = inputs.iter().map(|(w, p)| (*w, p.as_path())).collect();
    OutputPath::claim(path, &inputs)
}

/// An answer the check symbol did not confirm is no answer: a prefix never written
/// reads noise that decodes to some word all the same. The guess is kept apart.
fn answer_json(query: &str, d: &Decoded) -> serde_json::Value {
    if d.verified {
        serde_json::json!({"query": query, "answer": d.text, "verified": true})
    } else {
        serde_json::json!({"query": query, "answer": null, "verified": false, "guess": d.text})
    }
}

fn answer_text(d: &Decoded) -> String {
    if d.verified {
        d.text.clone()
    } else {
        format!(
            "no answer (nothing passed the check; best guess {:?})",
            d.text
        )
    }
}

/// The built-in memory model through the scheduler's text path.
fn run_memory_model(
    args: &Args,
    options: &StreamOptions,
    output: Option<&OutputPath>,
    bar: &mut ProgressLine,
) -> ltm_engine::Result<(StreamSummary, Vec<(String, Decoded)>)> {
    for q in &args.query {
        check_query(q)?;
    }
    if args.format.is_some_and(|f| f != Format::Text) {
        return Err(Error::Config(
            "the memory model reads text; use --model random-features for bytes or u32 files"
                .into(),
        ));
    }
    let mut config = ModelConfig::with_state_bytes(args.state_bytes)?;
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    let mut model = match &args.load_state {
        Some(path) => {
            let state = load_state(path, &config.memory_config())?;
            MemoryModel::with_state(config, args.device, state)?
        }
        None => MemoryModel::new(config, args.device)?,
    };
    let file = ContextFile::open(&args.context_file, Some(Format::Text))?;
    if let (true, Some(path)) = (args.resume, &args.load_state) {
        check_resume(&file, model.state(), path)?;
    }
    let mut streamed = model.streamer(options.window_tokens)?;
    let summary = stream_and_save(&file, &mut streamed, options, output, bar)?;
    let prefixes: Vec<&str> = args.query.iter().map(String::as_str).collect();
    let answers = model
        .next_words(&prefixes)?
        .into_iter()
        .zip(&args.query)
        .map(|(d, q)| (q.clone(), d))
        .collect();
    Ok((summary, answers))
}

/// The random-feature model through the dense forward.
fn run_random_features(
    args: &Args,
    options: &StreamOptions,
    output: Option<&OutputPath>,
    bar: &mut ProgressLine,
) -> ltm_engine::Result<StreamSummary> {
    if !args.query.is_empty() {
        return Err(Error::Config(
            "--query needs the memory model (--model memory)".into(),
        ));
    }
    let model =
        RandomFeatureModel::new(RandomFeatureModel::default_config(), args.seed.unwrap_or(0));
    let config = model.memory_config();
    let backend = backend_for(args.device)?;
    let mut state = match &args.load_state {
        Some(path) => load_state(path, config)?,
        None => State::zeros(config, 1),
    };
    let file = ContextFile::open(&args.context_file, args.format)?;
    if let (true, Some(path)) = (args.resume, &args.load_state) {
        check_resume(&file, &state, path)?;
    }
    let mut streamed = RandomFeatureStream::new(&model, backend.as_ref(), &mut state);
    stream_and_save(&file, &mut streamed, options, output, bar)
}

/// The one streaming path of every model: the free space for the state checked, the
/// scheduler, then the final state saved by the model with its place in the context
/// (as its checkpoints are).
pub fn stream_and_save<M: StreamModel>(
    file: &ContextFile,
    model: &mut M,
    options: &StreamOptions,
    output: Option<&OutputPath>,
    bar: &mut ProgressLine,
) -> ltm_engine::Result<M::Summary> {
    if let Some(out) = output {
        out.check_space(model.saved_bytes(), options.checkpoint_every.is_some())?;
    }
    let summary = stream(file, model, options, bar)?;
    bar.finish();
    if let Some(out) = output {
        model.save(out.path())?;
    }
    Ok(summary)
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
    if let Some(c) = s.next_token_cosine {
        println!("  next-token  mean cosine of read vs next value {c:.4}");
    }
    if let Some(w) = s.writes {
        println!("  writes      {w} key-value pairs written");
    }
    if let Some(c) = &s.capacity {
        println!(
            "  capacity    {:.2} pairs per row of {} (predicted recall {:.1}%{})",
            c.load,
            c.rows,
            100.0 * c.predicted_recall,
            if c.over_capacity {
                ", past capacity"
            } else {
                ""
            }
        );
    }
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
pub struct ProgressLine {
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

    pub fn finish(&mut self) {
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
