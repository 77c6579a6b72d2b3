//! The scheduler: a reader thread reads and tokenizes window i+1 while window i is
//! computed on all cores; a fixed set of token buffers circulates between them, so
//! memory is the same for a thousand tokens or a hundred million.
//!
//! The backend asks the model for each token's features as it gathers a chunk
//! ([`ModelRows`]): computing them is cheaper than writing a window's worth out to
//! memory and reading it back, and on a reader thread it would only compete with the
//! forward for the same cores.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::{Model, ModelRows};
use crate::state::{Source, State};
use crate::state_file::save_state;
use crate::stream::context_file::ContextFile;
use crate::stream::tokenizer::Tokenizer;
use crate::vec_math::dot;

/// Window buffers in circulation: one computing, one being filled, one spare so the
/// reader never waits for the hand-back.
const WINDOW_BUFFERS: usize = 3;

/// How to stream a context: window sizes, token budget, resume, checkpoints, digest,
/// vocabulary.
#[derive(Clone, Debug)]
pub struct StreamOptions {
    /// Tokens per window, rounded up to a multiple of the chunk size so that every
    /// window size gives bit-identical results. (For the memory model: writes sent to
    /// the backend at a time.)
    pub window_tokens: usize,
    /// For models that read text themselves (the memory model): bytes per window,
    /// extended to the end of its last line.
    pub window_bytes: usize,
    /// Stop after this many tokens of this run.
    pub max_tokens: Option<u64>,
    /// Skip the tokens the state has already consumed (continue an interrupted run).
    pub resume: bool,
    /// Save the state to `checkpoint_path` every this many tokens (at window ends), so
    /// an interrupted run can resume. The state at the end of the run is the caller's
    /// to save (the CLI saves it to the same path).
    pub checkpoint_every: Option<u64>,
    /// Where checkpoints are written (atomically; each replaces the last).
    pub checkpoint_path: Option<PathBuf>,
    /// Compute a CRC-32 of every output value (costs a pass over the outputs).
    pub digest: bool,
    /// Token ids of `bytes` and `u32` files must be below this; `None` (or more than
    /// the model takes) means the model's vocabulary.
    pub vocab_size: Option<u64>,
}

impl StreamOptions {
    /// Chosen by measurement (README): smaller windows keep the buffers in cache,
    /// larger ones only cost memory.
    pub const DEFAULT_WINDOW: usize = 4096;

    /// `window_tokens` rounded up to whole chunks, once the buffers of that many tokens
    /// at `bytes_per_token` are known to fit in memory; an error names the option.
    pub fn checked_window(&self, chunk: usize, bytes_per_token: u64) -> Result<usize> {
        let what = format!("--window-tokens {}", self.window_tokens);
        let window = self
            .window_tokens
            .max(1)
            .div_ceil(chunk.max(1))
            .checked_mul(chunk.max(1));
        let bytes = window.and_then(|w| (w as u64).checked_mul(bytes_per_token));
        crate::limits::check_alloc(&format!("{what} (window buffers)"), bytes)?;
        // Only reached when `window` is Some: the size check fails on None.
        window.ok_or_else(|| Error::Config(format!("{what}: too large")))
    }
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            window_tokens: Self::DEFAULT_WINDOW,
            window_bytes: 4 << 20,
            max_tokens: None,
            resume: false,
            checkpoint_every: None,
            checkpoint_path: None,
            digest: false,
            vocab_size: None,
        }
    }
}

/// Watches a run: progress for displays, outputs for whoever wants the reads.
pub trait Observer {
    /// After each window.
    fn progress(&mut self, _progress: Progress) {}
    /// The reads `o: [T, H, V]` of each window, in order.
    fn outputs(&mut self, _o: &[f32]) {}
}

/// An observer that watches nothing.
pub struct Quiet;
impl Observer for Quiet {}

/// Where a run stands, for progress displays.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// Tokens streamed so far by this run.
    pub tokens: u64,
    /// Wall-clock seconds since the run started.
    pub seconds: f64,
    /// Share of the file read so far, in [0, 1].
    pub fraction: f64,
}

/// What a streaming run did: tokens, times, sizes, and what the model measured.
#[derive(Clone, Debug, Serialize)]
pub struct StreamSummary {
    /// The context file streamed.
    pub file: PathBuf,
    /// Its format: `text`, `bytes` or `u32`.
    pub format: String,
    /// The model's description.
    pub model: String,
    /// The backend's description.
    pub backend: String,
    /// Tokens streamed by this run.
    pub tokens: u64,
    /// Tokens skipped at the start because the loaded state had consumed them.
    pub skipped_tokens: u64,
    /// Tokens in the state after the run.
    pub state_tokens: u64,
    /// Windows computed.
    pub windows: u64,
    /// Tokens per window: rounded up to whole chunks for random features; writes per call
    /// to the backend for the memory model.
    pub window_tokens: usize,
    /// Wall-clock seconds of the whole run, reader start-up to the last window.
    pub wall_seconds: f64,
    /// `tokens / wall_seconds`.
    pub tokens_per_second: f64,
    /// Seconds spent computing (the forward, with features made on the way) and
    /// measuring; the rest was waiting for the reader.
    pub compute_seconds: f64,
    /// Seconds inside the backend's forward alone (for the memory model, the same as
    /// `compute_seconds`).
    pub forward_seconds: f64,
    /// Size of the state in bytes.
    pub state_bytes: usize,
    /// Peak resident memory of the process in bytes (`VmHWM`), where the platform reports
    /// it.
    pub peak_host_bytes: Option<u64>,
    /// Peak device memory in bytes, for backends that report it.
    pub peak_device_bytes: Option<u64>,
    /// Mean cosine between each read and the next token's value: how well the memory
    /// predicted what came next (random-feature model).
    pub next_token_cosine: Option<f64>,
    /// Key–value pairs written (memory model).
    pub writes: Option<u64>,
    /// What the state holds against what it can (memory model).
    pub capacity: Option<Capacity>,
    /// CRC-32 of every output value in order, as 8 hex digits, when `digest` was asked for.
    pub output_digest: Option<String>,
    /// Checkpoints written during the run.
    pub checkpoints: u64,
}

/// The memory model's load: pairs written by this run against the state's rows.
#[derive(Clone, Debug, Serialize)]
pub struct Capacity {
    /// Rows of the state (all heads): about this many pairs are recalled at ≈ 97%.
    pub rows: u64,
    /// Pairs written by this run.
    pub pairs: u64,
    /// `pairs / rows`.
    pub load: f64,
    /// Mean recall the capacity formula predicts at this load.
    pub predicted_recall: f64,
    /// Whether the load is past the capacity (`load > 1`).
    pub over_capacity: bool,
    /// `--state-bytes` that would hold this many pairs at the capacity load.
    pub state_bytes_to_hold: u64,
}

/// A filled window on its way from the reader to the backend.
struct Window {
    /// The model's context before the window, then the window's tokens.
    tokens: Vec<u64>,
    /// Where the window starts in `tokens`.
    start: usize,
    /// File bytes read up to the end of this window.
    offset: usize,
    /// CRC-32 of the file's bytes up to `offset`.
    crc: u32,
}

/// Streams `file` through `state`. Returns when the file (or `max_tokens`) is done.
pub fn stream_context(
    file: &mut ContextFile,
    model: &dyn Model,
    backend: &dyn Backend,
    state: &mut State,
    options: &StreamOptions,
    observer: &mut dyn Observer,
) -> Result<StreamSummary> {
    let config = model.memory_config().clone();
    state.check_matches(&config, 1)?;
    let mut checkpoints = Checkpoints::new(options)?;
    let chunk = config.chunk_size;
    let per_token = (config.heads * config.value_dim * 4 + WINDOW_BUFFERS * 8) as u64;
    let window = options.checked_window(chunk, per_token)?;
    let source = state.source();
    let skip = if options.resume { source.tokens } else { 0 };
    if !options.resume {
        state.set_source(Source::default());
    }
    let budget = options.max_tokens.unwrap_or(u64::MAX);
    let started = Instant::now();
    let file_len = file.len() as f64;
    let vocab = options
        .vocab_size
        .map_or(model.vocab_size(), |v| v.min(model.vocab_size()));

    let (full_tx, full_rx) = mpsc::sync_channel::<Result<Window>>(WINDOW_BUFFERS);
    let (free_tx, free_rx) = mpsc::channel::<Window>();
    for _ in 0..WINDOW_BUFFERS {
        free_tx
            .send(Window {
                start: 0,
                tokens: Vec::with_capacity(window + 64),
                offset: 0,
                crc: 0,
            })
            .expect("receiver alive");
    }

    let mut acc = Accumulator::new(options.digest, config.heads, config.value_dim);
    let mut out = vec![0.0f32; window * config.heads * config.value_dim];
    let (mut tokens, mut windows) = (0u64, 0u64);
    let (mut compute, mut forward) = (0.0f64, 0.0f64);

    std::thread::scope(|scope| -> Result<()> {
        let file = &mut *file;
        // The reader owns its ends of both channels: when it finishes, `full_rx` ends.
        let reader = scope.spawn(move || {
            let resume = options.resume.then_some(source);
            read_windows(
                file, model, vocab, window, resume, budget, &full_tx, &free_rx,
            )
        });
        let result = (|| -> Result<()> {
            for filled in full_rx.iter() {
                let filled = filled?;
                let n = filled.tokens.len() - filled.start;
                let t0 = Instant::now();
                let rows = ModelRows {
                    model,
                    tokens: &filled.tokens,
                    start: filled.start,
                };
                let o = &mut out[..n * config.heads * config.value_dim];
                backend.forward_rows(&config, &rows, state, o)?;
                forward += t0.elapsed().as_secs_f64();
                acc.add(o, &rows);
                compute += t0.elapsed().as_secs_f64();
                observer.outputs(o);
                tokens += n as u64;
                windows += 1;
                let offset = filled.offset;
                state.set_source(Source {
                    tokens: skip + tokens,
                    bytes: offset as u64,
                    crc32: filled.crc,
                });
                let _ = free_tx.send(filled);
                checkpoints.advance(n as u64, |path| save_state(path, &config, state))?;
                observer.progress(Progress {
                    tokens,
                    seconds: started.elapsed().as_secs_f64(),
                    fraction: done_fraction(offset as f64 / file_len, tokens, options.max_tokens),
                });
            }
            Ok(())
        })();
        // Unblocks the reader if computing stopped early: it may wait to send a window
        // or to get a buffer back.
        drop(full_rx);
        drop(free_tx);
        let read = reader.join().expect("reader thread panicked");
        result.and(read)
    })?;

    let counts = RunCounts {
        tokens,
        skipped_tokens: skip,
        windows,
        window_tokens: window,
        compute_seconds: compute,
        checkpoints: checkpoints.written,
    };
    Ok(StreamSummary {
        forward_seconds: forward,
        next_token_cosine: Some(acc.mean_cosine()),
        output_digest: acc.digest(),
        ..StreamSummary::finish(file, model.name(), backend.name(), state, started, counts)
    })
}

/// What a run counted, for [`StreamSummary::finish`].
pub(crate) struct RunCounts {
    pub(crate) tokens: u64,
    pub(crate) skipped_tokens: u64,
    pub(crate) windows: u64,
    pub(crate) window_tokens: usize,
    pub(crate) compute_seconds: f64,
    pub(crate) checkpoints: u64,
}

impl StreamSummary {
    /// The summary of a run of `file` that started at `started` and left `state`, with
    /// what every model reports alike; the model's own measures (cosine, writes,
    /// digest) are `None` and the forward time is the compute time.
    pub(crate) fn finish(
        file: &ContextFile,
        model: String,
        backend: String,
        state: &State,
        started: Instant,
        counts: RunCounts,
    ) -> StreamSummary {
        let wall = started.elapsed().as_secs_f64();
        StreamSummary {
            file: file.path().to_path_buf(),
            format: file.format().name().into(),
            model,
            backend,
            tokens: counts.tokens,
            skipped_tokens: counts.skipped_tokens,
            state_tokens: state.tokens_seen(),
            windows: counts.windows,
            window_tokens: counts.window_tokens,
            wall_seconds: wall,
            tokens_per_second: counts.tokens as f64 / wall.max(1e-9),
            compute_seconds: counts.compute_seconds,
            forward_seconds: counts.compute_seconds,
            state_bytes: state.size_bytes(),
            peak_host_bytes: peak_resident_bytes(),
            peak_device_bytes: None,
            next_token_cosine: None,
            writes: None,
            capacity: None,
            output_digest: None,
            checkpoints: counts.checkpoints,
        }
    }
}

/// Periodic saves of the state during a run, every `checkpoint_every` tokens at the
/// end of a window; shared by both stream paths.
pub(crate) struct Checkpoints<'a> {
    every: u64,
    path: Option<&'a Path>,
    since: u64,
    pub(crate) written: u64,
}

impl<'a> Checkpoints<'a> {
    pub(crate) fn new(options: &'a StreamOptions) -> Result<Self> {
        let path = match (options.checkpoint_every, &options.checkpoint_path) {
            (Some(_), None) => {
                return Err(Error::Config(
                    "checkpoints need a path to save the state to".into(),
                ))
            }
            (Some(_), Some(path)) => Some(path.as_path()),
            (None, _) => None,
        };
        Ok(Checkpoints {
            every: options.checkpoint_every.unwrap_or(u64::MAX),
            path,
            since: 0,
            written: 0,
        })
    }

    /// After a window of `tokens`: saves with `save` once `every` tokens have passed
    /// since the last save.
    pub(crate) fn advance(
        &mut self,
        tokens: u64,
        save: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<()> {
        self.since += tokens;
        if let Some(path) = self.path.filter(|_| self.since >= self.every) {
            save(path)?;
            self.written += 1;
            self.since = 0;
        }
        Ok(())
    }
}

/// The reader thread: tokenizes, skips what a resumed state already holds, featurizes
/// and hands windows over until the file or the budget ends.
#[allow(clippy::too_many_arguments)]
fn read_windows(
    file: &mut ContextFile,
    model: &dyn Model,
    vocab: u64,
    window: usize,
    resume: Option<Source>,
    budget: u64,
    full: &mpsc::SyncSender<Result<Window>>,
    free: &mpsc::Receiver<Window>,
) -> Result<()> {
    let skip = resume.map_or(0, |s| s.tokens);
    let mut tokenizer = Tokenizer::new(file, vocab);
    let mut crc = crc32fast::Hasher::new();
    let ctx = model.context_len();
    let mut prefix: Vec<u64> = Vec::with_capacity(ctx);
    let mut scratch = Vec::with_capacity(window);
    let mut remaining_skip = skip;
    while remaining_skip > 0 {
        scratch.clear();
        let want = remaining_skip.min(window as u64) as usize;
        let got = tokenizer.fill(file, &mut scratch, want);
        let got = match got.and_then(|n| file.check_intact().map(|_| n)) {
            Ok(n) => n,
            Err(e) => return send_error(full, e),
        };
        if got == 0 {
            let e = Error::StateMismatch(format!(
                "the loaded state has consumed {skip} tokens, but {} has only {}",
                file.path().display(),
                tokenizer.tokens_read()
            ));
            return send_error(full, e);
        }
        keep_tail(&mut prefix, &scratch, ctx);
        remaining_skip -= got as u64;
        crc.update(&file.bytes()[crc.total_len() as usize..tokenizer.offset()]);
        file.release_before(tokenizer.offset());
    }
    if let Some(source) = resume {
        // A run that reached the end of a text file also read the blanks after its last
        // token, which skipping that many tokens does not: the recorded end may lie
        // past this offset by blanks only.
        let at = tokenizer.offset();
        let mut whole = crc.clone();
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
            return send_error(full, not_this_context(file.path(), source, here));
        }
    }
    let mut sent = 0u64;
    while sent < budget {
        let Ok(mut w) = free.recv() else {
            return Ok(());
        };
        w.tokens.clone_from(&prefix);
        w.start = prefix.len();
        let want = (budget - sent).min(window as u64) as usize;
        let got = match tokenizer.fill(file, &mut w.tokens, want) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) => return send_error(full, e),
        };
        if let Err(e) = file.check_intact() {
            return send_error(full, e);
        }
        crc.update(&file.bytes()[crc.total_len() as usize..tokenizer.offset()]);
        file.release_before(tokenizer.offset());
        keep_tail(&mut prefix, &w.tokens[w.start..], ctx);
        w.offset = tokenizer.offset();
        w.crc = crc.clone().finalize();
        sent += got as u64;
        if full.send(Ok(w)).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// The error for a resumed state whose recorded context differs from `path`'s bytes.
pub(crate) fn not_this_context(path: &Path, recorded: Source, here: Source) -> Error {
    Error::StateMismatch(format!(
        "the loaded state was not made from {}: it holds {} tokens ending at byte {} with \
         CRC-32 {:08x}, but that many tokens of this file end at byte {} with CRC-32 {:08x}",
        path.display(),
        recorded.tokens,
        recorded.bytes,
        recorded.crc32,
        here.bytes,
        here.crc32
    ))
}

/// Before a resumed run: fails unless the first bytes of `file` are those `state`
/// recorded when it was saved to `state_path`, naming both files. (The stream checks
/// the same again where the skipped tokens end; this is the check that can name the
/// state file, and it fails before any streaming.)
pub fn check_resume(file: &ContextFile, state: &State, state_path: &Path) -> Result<()> {
    let source = state.source();
    let mismatch = |problem: String| {
        Error::StateMismatch(format!(
            "{} was not made from {}: {problem}",
            state_path.display(),
            file.path().display()
        ))
    };
    if source.bytes > file.len() as u64 {
        return Err(mismatch(format!(
            "it has consumed {} bytes of its context file, and this one has {}",
            source.bytes,
            file.len()
        )));
    }
    let crc = crc32fast::hash(&file.bytes()[..source.bytes as usize]);
    if crc != source.crc32 {
        return Err(mismatch(format!(
            "the first {} bytes of its context file have CRC-32 {:08x}, this file's have {crc:08x}",
            source.bytes, source.crc32
        )));
    }
    Ok(())
}

/// Whether `bytes` hold no token of `format`: blanks of text (whitespace other than
/// line breaks, which are tokens); nothing at all for bytes and u32 files.
fn only_blanks(bytes: &[u8], format: crate::stream::Format) -> bool {
    match format {
        crate::stream::Format::Text => std::str::from_utf8(bytes)
            .is_ok_and(|t| t.chars().all(|c| c.is_whitespace() && c != '\n')),
        _ => bytes.is_empty(),
    }
}

fn send_error(full: &mpsc::SyncSender<Result<Window>>, e: Error) -> Result<()> {
    let _ = full.send(Err(e));
    Ok(())
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

/// Share of the run done: of the file, or of `--max-tokens` when that ends it sooner.
pub(crate) fn done_fraction(of_file: f64, tokens: u64, max_tokens: Option<u64>) -> f64 {
    let of_budget = max_tokens.map_or(0.0, |m| tokens as f64 / m.max(1) as f64);
    of_file.max(of_budget).min(1.0)
}

/// Peak resident set size of this process (Linux's VmHWM), if the OS reports it.
pub fn peak_resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
