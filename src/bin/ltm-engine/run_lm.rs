//! `run --model DIR`: a trained Gated DeltaNet checkpoint reads the context (scoring
//! every next token), then optionally continues a prompt.

use std::io::Write;
use std::path::Path;

use ltm_engine::limits::check_alloc;
use ltm_engine::lm::state_file::{load_model_state, SourcePosition};
use ltm_engine::lm::stream::{LmStream, LmStreamOptions, LmStreamSummary};
use ltm_engine::lm::{LanguageModel, Logits, ModelSession, ModelTokenizer, Sampler, Sampling};
use ltm_engine::output_path::OutputPath;
use ltm_engine::stream::{ContextFile, Format, StreamOptions};
use ltm_engine::tokenize::incremental::IncrementalText;
use ltm_engine::Error;

use crate::interrupt::Catch;
use crate::run::{stream_and_save, Args, ProgressLine};

/// Options that only a model directory uses.
#[derive(clap::Args, Debug)]
pub struct LmArgs {
    /// After the context, feed this text and generate a continuation (model
    /// directories).
    #[arg(long)]
    pub prompt: Option<String>,
    /// Tokens to generate after --prompt (or after the context without one).
    #[arg(long, default_value_t = 0)]
    pub generate: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Sample among the k most likely tokens only (0: all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Sample among the most likely tokens that make up this probability (1: all).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Report the perplexity of every N predicted tokens too.
    #[arg(long)]
    pub segment_tokens: Option<u64>,
    /// Do not score the context (no output head per token: faster).
    #[arg(long)]
    pub no_perplexity: bool,
}

impl LmArgs {
    /// The built-in models take none of these options: say so instead of ignoring them.
    pub fn refuse_without_model(&self) -> ltm_engine::Result<()> {
        let given = [
            ("--prompt", self.prompt.is_some()),
            ("--generate", self.generate > 0),
            ("--segment-tokens", self.segment_tokens.is_some()),
            ("--no-perplexity", self.no_perplexity),
            ("--temperature", self.temperature != 0.0),
            ("--top-k", self.top_k != 0),
            ("--top-p", self.top_p != 1.0),
        ];
        match given.iter().find(|(_, on)| *on) {
            Some((name, _)) => Err(Error::Config(format!(
                "{name} needs a language model: --model DIR (a Gated DeltaNet model directory)"
            ))),
            None => Ok(()),
        }
    }
}

pub fn run(
    dir: &Path,
    args: &Args,
    options: &StreamOptions,
    output: Option<&OutputPath>,
    bar: &mut ProgressLine,
) -> ltm_engine::Result<()> {
    if !args.query.is_empty() {
        return Err(Error::Config(
            "--query needs the memory model (--model memory); with a language model use --prompt"
                .into(),
        ));
    }
    if args.format.is_some_and(|f| f != Format::Text) {
        return Err(Error::Config(
            "a language model reads text: --format must be text".into(),
        ));
    }
    if args.digest || args.vocab_size.is_some() {
        return Err(Error::Config(
            "--digest and --vocab-size are options of the built-in models".into(),
        ));
    }
    if args.lm.segment_tokens == Some(0) {
        return Err(Error::Config("--segment-tokens must be at least 1".into()));
    }
    if args.checkpoint_every == Some(0) {
        return Err(Error::Config(
            "--checkpoint-every must be at least 1".into(),
        ));
    }
    let sampling = Sampling {
        temperature: args.lm.temperature,
        top_k: args.lm.top_k,
        top_p: args.lm.top_p,
        seed: args.seed.unwrap_or(0),
    };
    let mut sampler = Sampler::new(sampling)?;
    let window = args.window_tokens.unwrap_or(ModelSession::DEFAULT_WINDOW);
    if window == 0 || window > 1 << 20 {
        return Err(Error::Config(format!(
            "--window-tokens must be from 1 to {}, found {window}",
            1 << 20
        )));
    }
    let window_bytes = options.window_bytes as u64;
    // The tokenizer's working memory is a few hundred bytes per byte of a window.
    const MAX_WINDOW_BYTES: u64 = 64 << 20;
    if window_bytes == 0 || window_bytes > MAX_WINDOW_BYTES {
        return Err(Error::Config(format!(
            "--window-bytes must be from 1 to {MAX_WINDOW_BYTES} (64 MiB) with a language model, \
             found {window_bytes}: the tokenizer needs memory in proportion to a window"
        )));
    }

    let model = LanguageModel::load(dir, args.device)?;
    let tokenizer = model.require_tokenizer()?;
    let prompt_ids = match &args.lm.prompt {
        Some(p) => tokenizer.encode(p, false)?,
        None => Vec::new(),
    };
    let (mut session, mut position) = match &args.load_state {
        Some(path) => {
            let (state, position) = load_model_state(path, &model)?;
            (model.resume(state)?, position)
        }
        None => (model.session()?, SourcePosition::default()),
    };
    session.set_window(window)?;
    let file = ContextFile::open(&args.context_file, Some(Format::Text))?;
    let lm = LmStreamOptions {
        loaded_from: args.load_state.clone(),
        perplexity: !args.lm.no_perplexity,
        segment_tokens: args.lm.segment_tokens,
    };
    let mut streamed = LmStream::new(&mut session, &mut position, lm);
    let summary = stream_and_save(&file, &mut streamed, options, output, bar)?;
    drop(streamed);
    let state_tokens = session.tokens();
    if args.save_state.is_some()
        && args.max_tokens == Some(summary.tokens)
        && state_tokens % window as u64 != 0
    {
        eprintln!(
            "note: the state stops at token {state_tokens}, not on a multiple of --window-tokens \
             {window}: resuming it agrees with one uninterrupted run within f32 rounding, not bit \
             for bit (a --max-tokens that ends on a multiple does)"
        );
    }
    if !args.json {
        print_summary(&summary, args.save_state.as_deref());
    }

    let generating = args.lm.generate > 0 || !prompt_ids.is_empty();
    let generated = if generating {
        Some(generate(
            &mut session,
            &prompt_ids,
            &mut sampler,
            tokenizer,
            args,
        )?)
    } else {
        None
    };
    if args.json {
        let mut value = serde_json::to_value(&summary).map_err(|e| Error::Config(e.to_string()))?;
        if let Some(g) = &generated {
            value["generated"] = serde_json::json!({
                "ids": g.ids,
                "text": tokenizer.decode(&g.ids)?,
                "interrupted": g.interrupted,
            });
        }
        println!("{value}");
    }
    if generated.is_some_and(|g| g.interrupted) {
        return Err(Error::Config(
            "interrupted: generation stopped by a signal (what was generated is above)".into(),
        ));
    }
    Ok(())
}

/// What generation gave: the ids (kept for `--json` only) and whether a signal ended it.
struct Generated {
    ids: Vec<u32>,
    interrupted: bool,
}

/// Feeds the prompt, then picks `--generate` tokens one at a time, printing each one's
/// text as it comes (without `--json`). Memory stays constant without `--json`; with
/// it the ids and their text are kept, so their bytes are checked first. Ctrl-C or
/// SIGTERM stops after the token in hand, and what came is still printed.
fn generate(
    session: &mut ModelSession<'_>,
    prompt: &[u32],
    sampler: &mut Sampler,
    tokenizer: &ModelTokenizer,
    args: &Args,
) -> ltm_engine::Result<Generated> {
    let n = args.lm.generate;
    let json = args.json;
    // An id, and a generous share of text per token, in the JSON.
    const JSON_BYTES_PER_TOKEN: u64 = 4 + 32;
    if json {
        check_alloc("--generate", (n as u64).checked_mul(JSON_BYTES_PER_TOKEN))?;
    }
    let catch = Catch::install();
    let mut out = std::io::stdout().lock();
    if !json {
        let _ = writeln!(
            out,
            "  generated   after {} tokens:",
            session.tokens() + prompt.len() as u64
        );
    }
    if !prompt.is_empty() {
        session.feed(prompt, Logits::None)?;
    }
    let mut next = session.pick_next(sampler)?.ok_or_else(|| {
        Error::Query("nothing to continue: feed at least one token before generating".into())
    })?;
    let mut text = IncrementalText::new(tokenizer);
    let mut kept = Vec::new();
    let mut interrupted = false;
    for i in 0..n {
        if json {
            kept.push(next);
        } else {
            let piece = text.push(next)?;
            // A closed pipe ends generation quietly.
            if write!(out, "{piece}").and_then(|_| out.flush()).is_err() {
                break;
            }
        }
        if catch.interrupted() {
            interrupted = true;
            break;
        }
        if i + 1 < n {
            next = session.step_pick(next, sampler)?;
        }
    }
    if !json {
        let _ = writeln!(out, "{}", text.finish()?);
    }
    Ok(Generated {
        ids: kept,
        interrupted,
    })
}

fn print_summary(s: &LmStreamSummary, saved: Option<&Path>) {
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    println!("{} through {} on {}", s.file.display(), s.model, s.backend);
    println!(
        "  tokens      {} streamed{}, {} in the state",
        s.tokens,
        if s.skipped_tokens > 0 {
            format!(" (after {} already in the loaded state)", s.skipped_tokens)
        } else {
            String::new()
        },
        s.state_tokens
    );
    println!(
        "  time        {:.2} s wall, {:.2} s computing, {:.0} tokens/s",
        s.wall_seconds, s.compute_seconds, s.tokens_per_second
    );
    println!(
        "  memory      state {:.2} MiB (all layers); peak host {}",
        mib(s.state_bytes as u64),
        s.peak_host_bytes
            .map_or("n/a".into(), |b| format!("{:.1} MiB", mib(b)))
    );
    if let (Some(nll), Some(ppl)) = (s.mean_nll, s.perplexity) {
        println!(
            "  perplexity  {ppl:.4} (mean NLL {nll:.5} nats over {} predicted tokens)",
            s.predicted_tokens
        );
    }
    for seg in &s.segments {
        println!(
            "  segment     tokens {}..{}: perplexity {:.4}",
            seg.first_token,
            seg.first_token + seg.tokens,
            seg.perplexity
        );
    }
    if let Some(p) = saved {
        println!(
            "  state       saved to {} ({} checkpoints on the way)",
            p.display(),
            s.checkpoints
        );
    }
}
