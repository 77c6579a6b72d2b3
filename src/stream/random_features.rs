//! The random-feature model as a [`StreamModel`]: windows of a fixed number of tokens
//! (any format), each sent with the model's context before it; the backend asks the
//! model for each token's features as it gathers a chunk ([`ModelRows`]): computing
//! them is cheaper than writing a window's worth out to memory and reading it back,
//! and on the reader thread it would only compete with the forward for the same cores.
//!
//! A window may end anywhere (the forward is chunked to the same result for every
//! window size), so windows are cut by token count; states are saved at window ends.

use std::ops::Range;
use std::path::Path;
use std::time::Instant;

use rayon::prelude::*;

use crate::backend::Backend;
use crate::config::MemoryConfig;
use crate::context_file::{ContextFile, Format};
use crate::error::{Error, Result};
use crate::model::{Model, ModelRows};
use crate::state::{Source, State};
use crate::state_file::save_state;
use crate::stream::scheduler::{stream, WINDOW_BUFFERS};
use crate::streamable::{
    not_this_context, Fed, Observer, RunCounts, StreamModel, StreamOptions, StreamSummary, Window,
    WindowReader,
};
use crate::tokenize::hashed::Tokenizer;
use crate::vec_math::dot;

/// Streams `file` through `state` with the random-feature `model` on `backend`.
/// Returns when the file (or `max_tokens`) is done.
pub fn stream_context(
    file: &mut ContextFile,
    model: &dyn Model,
    backend: &dyn Backend,
    state: &mut State,
    options: &StreamOptions,
    observer: &mut dyn Observer,
) -> Result<StreamSummary> {
    let mut streamed = RandomFeatureStream::new(model, backend, state);
    stream(file, &mut streamed, options, observer)
}

/// A model of the dense forward ([`Model`]) with its backend and state, ready to stream.
pub struct RandomFeatureStream<'a> {
    model: &'a dyn Model,
    backend: &'a dyn Backend,
    state: &'a mut State,
    config: MemoryConfig,
    window: usize,
    skip: u64,
    tokens: u64,
    out: Vec<f32>,
    acc: Accumulator,
    forward: f64,
}

impl<'a> RandomFeatureStream<'a> {
    /// `model` writing into `state` through `backend`.
    pub fn new(model: &'a dyn Model, backend: &'a dyn Backend, state: &'a mut State) -> Self {
        let config = model.memory_config().clone();
        RandomFeatureStream {
            model,
            backend,
            state,
            acc: Accumulator::new(false, config.heads, config.value_dim),
            config,
            window: 0,
            skip: 0,
            tokens: 0,
            out: Vec::new(),
            forward: 0.0,
        }
    }
}

/// A filled window on its way from the reader to the backend.
pub struct TokenWindow {
    /// The model's context before the window, then the window's tokens.
    tokens: Vec<u64>,
    /// Where the window starts in `tokens`.
    start: usize,
    /// File bytes of the window.
    bytes: Range<usize>,
    /// CRC-32 of the file's bytes up to `bytes.end`.
    crc: u32,
}

impl Window for TokenWindow {
    fn span(&self) -> Range<usize> {
        self.bytes.clone()
    }
}

impl StreamModel for RandomFeatureStream<'_> {
    type Window = TokenWindow;
    type Reader = TokenReader;
    type Summary = StreamSummary;

    fn start(&mut self, file: &ContextFile, options: &StreamOptions) -> Result<TokenReader> {
        let c = &self.config;
        self.state.check_matches(c, 1)?;
        let per_token = (c.heads * c.value_dim * 4 + WINDOW_BUFFERS * 8) as u64;
        self.window = options.checked_window(c.chunk_size, per_token)?;
        let source = self.state.source();
        self.skip = if options.resume { source.tokens } else { 0 };
        if !options.resume {
            self.state.set_source(Source::default());
        }
        let vocab = options
            .vocab_size
            .map_or(self.model.vocab_size(), |v| v.min(self.model.vocab_size()));
        self.tokens = 0;
        self.forward = 0.0;
        self.acc = Accumulator::new(options.digest, c.heads, c.value_dim);
        self.out = vec![0.0f32; self.window * c.heads * c.value_dim];
        let ctx = self.model.context_len();
        Ok(TokenReader {
            tokenizer: Tokenizer::new(file, vocab),
            crc: crc32fast::Hasher::new(),
            ctx,
            prefix: Vec::with_capacity(ctx),
            window: self.window,
            resume: options.resume.then_some(source),
            budget: options.max_tokens.unwrap_or(u64::MAX),
            sent: 0,
        })
    }

    fn feed(
        &mut self,
        _file: &ContextFile,
        w: &mut TokenWindow,
        _limit: u64,
        observer: &mut dyn Observer,
    ) -> Result<Fed> {
        let c = &self.config;
        let n = w.tokens.len() - w.start;
        let t0 = Instant::now();
        let rows = ModelRows {
            model: self.model,
            tokens: &w.tokens,
            start: w.start,
        };
        let o = &mut self.out[..n * c.heads * c.value_dim];
        self.backend.forward_rows(c, &rows, self.state, o)?;
        self.forward += t0.elapsed().as_secs_f64();
        self.acc.add(o, &rows);
        observer.outputs(o);
        self.tokens += n as u64;
        self.state.set_source(Source {
            tokens: self.skip + self.tokens,
            bytes: w.bytes.end as u64,
            crc32: w.crc,
        });
        Ok(Fed {
            tokens: n as u64,
            done: true,
        })
    }

    fn save(&mut self, path: &Path) -> Result<()> {
        save_state(path, &self.config, self.state)
    }

    fn saved_bytes(&self) -> u64 {
        crate::state_file::file_bytes(self.state)
    }

    fn finish(&mut self) -> Result<u64> {
        Ok(0)
    }

    fn summary(&self, file: &ContextFile, run: RunCounts) -> StreamSummary {
        let (model, backend) = (self.model.name(), self.backend.name());
        StreamSummary {
            forward_seconds: self.forward,
            next_token_cosine: Some(self.acc.mean_cosine()),
            output_digest: self.acc.digest(),
            ..StreamSummary::finish(
                file,
                model,
                backend,
                self.state,
                self.skip,
                self.window,
                run,
            )
        }
    }
}

/// The reader thread's side: tokenizes, skips what a resumed state already holds, and
/// fills windows until the file or the budget ends.
pub struct TokenReader {
    tokenizer: Tokenizer,
    crc: crc32fast::Hasher,
    ctx: usize,
    /// The last `ctx` tokens before the next window.
    prefix: Vec<u64>,
    window: usize,
    resume: Option<Source>,
    budget: u64,
    sent: u64,
}

impl WindowReader for TokenReader {
    type Window = TokenWindow;

    fn skip(&mut self, file: &ContextFile) -> Result<()> {
        let Some(source) = self.resume else {
            return Ok(());
        };
        let skip = source.tokens;
        let mut scratch = Vec::with_capacity(self.window);
        let mut remaining = skip;
        while remaining > 0 {
            scratch.clear();
            let want = remaining.min(self.window as u64) as usize;
            let got = self.tokenizer.fill(file, &mut scratch, want)?;
            file.check_intact()?;
            if got == 0 {
                return Err(Error::StateMismatch(format!(
                    "the loaded state has consumed {skip} tokens, but {} has only {}",
                    file.path().display(),
                    self.tokenizer.tokens_read()
                )));
            }
            keep_tail(&mut self.prefix, &scratch, self.ctx);
            remaining -= got as u64;
            self.take_bytes(file);
        }
        // A run that reached the end of a text file also read the blanks after its last
        // token, which skipping that many tokens does not: the recorded end may lie
        // past this offset by blanks only.
        let at = self.tokenizer.offset();
        let mut whole = self.crc.clone();
        let blanks = usize::try_from(source.bytes)
            .ok()
            .and_then(|end| file.bytes().get(at..end))
            .filter(|tail| only_blanks(tail, file.format()));
        if let Some(tail) = blanks {
            whole.update(tail);
        }
        let here = Source {
            tokens: skip,
            bytes: (at + blanks.map_or(0, <[u8]>::len)) as u64,
            crc32: whole.finalize(),
        };
        if here != source {
            return Err(not_this_context(file.path(), source, here));
        }
        Ok(())
    }

    fn next(
        &mut self,
        file: &ContextFile,
        buffer: Option<TokenWindow>,
    ) -> Result<Option<TokenWindow>> {
        if self.sent >= self.budget {
            return Ok(None);
        }
        let mut w = buffer.unwrap_or_else(|| TokenWindow {
            tokens: Vec::with_capacity(self.window + 64),
            start: 0,
            bytes: 0..0,
            crc: 0,
        });
        w.tokens.clone_from(&self.prefix);
        w.start = self.prefix.len();
        let begin = self.tokenizer.offset();
        let want = (self.budget - self.sent).min(self.window as u64) as usize;
        let got = match self.tokenizer.fill(file, &mut w.tokens, want)? {
            0 => return Ok(None),
            n => n,
        };
        self.take_bytes(file);
        keep_tail(&mut self.prefix, &w.tokens[w.start..], self.ctx);
        w.bytes = begin..self.tokenizer.offset();
        w.crc = self.crc.clone().finalize();
        self.sent += got as u64;
        Ok(Some(w))
    }
}

impl TokenReader {
    /// Adds the bytes tokenized since the last call to the checksum and gives their
    /// pages back: the tokens hold all that is needed of them.
    fn take_bytes(&mut self, file: &ContextFile) {
        let end = self.tokenizer.offset();
        self.crc
            .update(&file.bytes()[self.crc.total_len() as usize..end]);
        file.release_before(end);
    }
}

/// Whether `bytes` hold no token of `format`: blanks of text (whitespace other than
/// line breaks, which are tokens); nothing at all for bytes and u32 files.
fn only_blanks(bytes: &[u8], format: Format) -> bool {
    match format {
        Format::Text => std::str::from_utf8(bytes)
            .is_ok_and(|t| t.chars().all(|c| c.is_whitespace() && c != '\n')),
        _ => bytes.is_empty(),
    }
}

/// Keeps the last `ctx` tokens of `prefix ++ tokens` in `prefix`.
fn keep_tail(prefix: &mut Vec<u64>, tokens: &[u64], ctx: usize) {
    prefix.extend_from_slice(&tokens[tokens.len().saturating_sub(ctx)..]);
    let excess = prefix.len().saturating_sub(ctx);
    prefix.drain(..excess);
}

/// Running measures over the outputs, independent of how the run is cut in windows.
struct Accumulator {
    crc: Option<crc32fast::Hasher>,
    heads: usize,
    value_dim: usize,
    cos_sum: f64,
    cos_count: u64,
}

/// The next-token measure looks at every this many tokens: the values it compares
/// against are made again, and a sample of one in eight costs little and measures the
/// same thing.
const MEASURE_EVERY: usize = 8;

impl Accumulator {
    fn new(digest: bool, heads: usize, value_dim: usize) -> Self {
        Accumulator {
            crc: digest.then(crc32fast::Hasher::new),
            heads,
            value_dim,
            cos_sum: 0.0,
            cos_count: 0,
        }
    }

    /// `o: [T, H, V]` of one window, read from `rows`.
    fn add(&mut self, o: &[f32], rows: &ModelRows<'_>) {
        if let Some(crc) = &mut self.crc {
            crc.update(bytemuck::cast_slice(o));
        }
        let (heads, vd) = (self.heads, self.value_dim);
        let c = rows.model.memory_config();
        let tokens = o.len() / (heads * vd);
        let sampled: Vec<usize> = (0..tokens.saturating_sub(1))
            .step_by(MEASURE_EVERY)
            .collect();
        let (sum, count) = sampled
            .par_chunks(64)
            .map(|ts| {
                let (mut q, mut k, mut v) =
                    (vec![0.0; c.key_dim], vec![0.0; c.key_dim], vec![0.0; vd]);
                let mut sum = 0.0;
                for &t in ts {
                    for h in 0..heads {
                        let next = rows.start + t + 1;
                        rows.model
                            .token_features(rows.tokens, next, h, &mut q, &mut k, &mut v);
                        sum += cosine(&o[(t * heads + h) * vd..][..vd], &v);
                    }
                }
                (sum, ts.len() * heads)
            })
            .reduce(|| (0.0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        self.cos_sum += sum;
        self.cos_count += count as u64;
    }

    fn mean_cosine(&self) -> f64 {
        if self.cos_count == 0 {
            0.0
        } else {
            self.cos_sum / self.cos_count as f64
        }
    }

    fn digest(&self) -> Option<String> {
        self.crc
            .as_ref()
            .map(|c| format!("{:08x}", c.clone().finalize()))
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let denom = (dot(a, a) * dot(b, b)).sqrt();
    if denom > 0.0 {
        (dot(a, b) / denom) as f64
    } else {
        0.0
    }
}
