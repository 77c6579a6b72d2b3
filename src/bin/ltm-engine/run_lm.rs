//! `run --model DIR`: a trained Gated DeltaNet checkpoint reads the context (scoring
//! every next token), then optionally continues a prompt.

use std::io::Write;
use std::path::Path;

use ltm_engine::lm::state_file::{load_model_state, SourcePosition};
use ltm_engine::lm::stream::{LmStream, LmStreamOptions, LmStreamSummary};
use ltm_engine::lm::{LanguageModel, ModelSession, Sampler, Sampling};
use ltm_engine::output_path::OutputPath;
use ltm_engine::stream::{ContextFile, Format, StreamOptions};
use ltm_engine::Error;

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
    session.set_window(window);
    let file = ContextFile::open(&args.context_file, Some(Format::Text))?;
    let lm = LmStreamOptions {
        loaded_from: args.load_state.clone(),
        perplexity: !args.lm.no_perplexity,
        segment_tokens: args.lm.segment_tokens,
    };
    let mut streamed = LmStream::new(&mut session, &mut position, lm);
    let summary = stream_and_save(&file, &mut streamed, options, output, bar)?;
    drop(streamed);
    if !args.json {
        print_summary(&summary, args.save_state.as_deref());
    }

    let mut generated = Vec::new();
    let generating = args.lm.generate > 0 || !prompt_ids.is_empty();
    if generating {
        let json = args.json;
        let mut out = std::io::stdout().lock();
        if !json {
            let _ = writeln!(
                out,
                "  generated   after {} tokens:",
                session.tokens() + prompt_ids.len() as u64
            );
        }
        // Each token's new text is printed as it comes; decoding the whole
        // continuation each time keeps multi-byte characters whole.
        let mut so_far: Vec<u32> = Vec::new();
        let mut printed = 0usize;
        let mut failed = None;
        generated =
            session.generate_with(&prompt_ids, args.lm.generate, &mut sampler, &mut |id| {
                if json {
                    return true;
                }
                so_far.push(id);
                match tokenizer.decode(&so_far) {
                    Ok(text) if text.len() > printed && text.is_char_boundary(printed) => {
                        // A closed pipe ends generation quietly.
                        if write!(out, "{}", &text[printed..])
                            .and_then(|_| out.flush())
                            .is_err()
                        {
                            return false;
                        }
                        printed = text.len();
                    }
                    Ok(_) => {}
                    Err(e) => {
                        failed = Some(e);
                        return false;
                    }
                }
                true
            })?;
        if let Some(e) = failed {
            return Err(e);
        }
        if !json {
            let _ = writeln!(out);
        }
    }
    if args.json {
        let mut value = serde_json::to_value(&summary).map_err(|e| Error::Config(e.to_string()))?;
        if generating {
            value["generated"] = serde_json::json!({
                "ids": generated,
                "text": tokenizer.decode(&generated)?,
            });
        }
        println!("{value}");
    }
    Ok(())
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
