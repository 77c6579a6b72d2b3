//! What the scheduler in `stream` needs of a model to stream a context file
//! through it: the [`StreamModel`] trait, the options and observers of a run, and the
//! summary every model reports.
//!
//! It lives apart from `stream` so that a model can implement the trait without
//! importing the scheduler: `memory_model` and `lm` implement it here, `stream` drives
//! it, and neither side names the other.
//!
//! A run is split between two threads. The reader thread owns a [`WindowReader`]: it
//! skips what a resumed state already holds, then cuts the file into windows at the
//! model's safe boundaries and tokenizes them. The compute thread hands each window to
//! [`StreamModel::feed`], which may take it in several pieces so that checkpoints and
//! `--max-tokens` land on exact token counts where the model can stop anywhere.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::context_file::ContextFile;
use crate::error::{Error, Result};
use crate::state::{Source, State};

/// A model the scheduler can stream a file through.
///
/// Everything here is called once per window or once per run, never per token, and
/// the scheduler is generic over it, so the trait costs no virtual call on the hot path.
pub trait StreamModel {
    /// A window on its way from the reader thread to [`feed`](Self::feed).
    type Window: Window + Send;
    /// Cuts and tokenizes windows on the reader thread.
    type Reader: WindowReader<Window = Self::Window> + Send;
    /// What a run reports.
    type Summary;

    /// Prepares a run of `file` (checks a resumed state against it, forgets the
    /// position of a state that is not resumed) and returns the reader that cuts it.
    fn start(&mut self, file: &ContextFile, options: &StreamOptions) -> Result<Self::Reader>;

    /// Feeds the next tokens of `window`, at most `limit` where the model can stop
    /// inside a window (a model that cannot takes the whole window: its windows end
    /// where its states may be saved). Leaves the state and its stream position at the
    /// end of what it fed.
    fn feed(
        &mut self,
        file: &ContextFile,
        window: &mut Self::Window,
        limit: u64,
        observer: &mut dyn Observer,
    ) -> Result<Fed>;

    /// Saves the state with its stream position, so a run can `--resume` from it.
    fn save(&mut self, path: &Path) -> Result<()>;

    /// The most bytes a file [`save`](Self::save) writes: checked against the free
    /// space of the output's file system before a run, so a full disk is found before
    /// the work rather than at the last save.
    fn saved_bytes(&self) -> u64;

    /// After the last window: writes what is still buffered; the tokens that adds.
    fn finish(&mut self) -> Result<u64>;

    /// The run's summary from what the scheduler counted.
    fn summary(&self, file: &ContextFile, run: RunCounts) -> Self::Summary;
}

/// What one call of [`StreamModel::feed`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fed {
    /// Tokens fed by this call.
    pub tokens: u64,
    /// Whether the window is used up.
    pub done: bool,
}

/// A window's place in the file.
pub trait Window {
    /// The bytes of the file the window holds (for [`Observer::window`]).
    fn span(&self) -> Range<usize>;
}

/// The reader thread's side of a model: cuts windows and tokenizes them.
pub trait WindowReader {
    /// The windows it cuts.
    type Window;

    /// Before the first window: skips the tokens a resumed state has consumed,
    /// checking that they are the ones the state recorded.
    fn skip(&mut self, file: &ContextFile) -> Result<()>;

    /// The next window, reusing `buffer` (a window the compute side is done with) where
    /// given; `None` at the end of the file or of the token budget.
    fn next(
        &mut self,
        file: &ContextFile,
        buffer: Option<Self::Window>,
    ) -> Result<Option<Self::Window>>;
}

/// How to stream a context: window sizes, token budget, resume, checkpoints, digest,
/// vocabulary.
#[derive(Clone, Debug)]
pub struct StreamOptions {
    /// Tokens per window, rounded up to a multiple of the chunk size so that every
    /// window size gives bit-identical results. (For the memory model: writes sent to
    /// the backend at a time; for a language model, set on the session instead.)
    pub window_tokens: usize,
    /// For models that read text themselves (the memory model, language models): bytes
    /// per window, extended to the model's next safe cut.
    pub window_bytes: usize,
    /// Stop after this many tokens of this run (the memory model finishes the line).
    pub max_tokens: Option<u64>,
    /// Skip the tokens the state has already consumed (continue an interrupted run).
    pub resume: bool,
    /// Save the state to `checkpoint_path` every this many tokens, so an interrupted
    /// run can resume: at the end of the window where the count is reached, or exactly
    /// there for a model that can stop inside a window (a language model). The state at the end of the run is the caller's
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
    /// Chosen by measurement (docs/command-line.md): smaller windows keep the buffers in cache,
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

/// Watches a run: each window's bytes, progress for displays, outputs for whoever
/// wants the reads.
pub trait Observer {
    /// Each window's bytes, before the model sees them (a format check, say); an error
    /// stops the run.
    fn window(&mut self, _bytes: &[u8]) -> Result<()> {
        Ok(())
    }
    /// After each window.
    fn progress(&mut self, _progress: Progress) {}
    /// The reads `o: [T, H, V]` of each window, in order (models that read as they
    /// stream: random features).
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

/// What the scheduler counted in a run, the same for every model: the model turns it
/// into its summary.
#[derive(Clone, Debug)]
pub struct RunCounts {
    /// Tokens fed by this run.
    pub tokens: u64,
    /// Windows received from the reader.
    pub windows: u64,
    /// Seconds inside [`StreamModel::feed`] and [`StreamModel::finish`]; the rest was
    /// waiting for the reader, checkpoints and progress.
    pub compute_seconds: f64,
    /// Checkpoints written.
    pub checkpoints: u64,
    /// Wall-clock seconds of the whole run, taken when the run ended.
    pub wall_seconds: f64,
    /// Peak resident memory of the process when the run ended.
    pub peak_host_bytes: Option<u64>,
}

impl RunCounts {
    /// `tokens / wall_seconds`.
    pub fn tokens_per_second(&self) -> f64 {
        self.tokens as f64 / self.wall_seconds.max(1e-9)
    }
}

/// What a run of a built-in model did: tokens, times, sizes, and what the model measured.
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
    /// measuring; the rest was waiting for the reader and checkpoints.
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

impl StreamSummary {
    /// The summary of a run of `file` that left `state`, with what every model reports
    /// alike; the model's own measures (cosine, writes, digest) are `None` and the
    /// forward time is the compute time.
    pub fn finish(
        file: &ContextFile,
        model: String,
        backend: String,
        state: &State,
        skipped_tokens: u64,
        window_tokens: usize,
        run: RunCounts,
    ) -> StreamSummary {
        StreamSummary {
            file: file.path().to_path_buf(),
            format: file.format().name().into(),
            model,
            backend,
            tokens: run.tokens,
            skipped_tokens,
            state_tokens: state.tokens_seen(),
            windows: run.windows,
            window_tokens,
            wall_seconds: run.wall_seconds,
            tokens_per_second: run.tokens_per_second(),
            compute_seconds: run.compute_seconds,
            forward_seconds: run.compute_seconds,
            state_bytes: state.size_bytes(),
            peak_host_bytes: run.peak_host_bytes,
            peak_device_bytes: None,
            next_token_cosine: None,
            writes: None,
            capacity: None,
            output_digest: None,
            checkpoints: run.checkpoints,
        }
    }
}

/// The error for a resumed state whose recorded context differs from `path`'s bytes.
pub fn not_this_context(path: &Path, recorded: Source, here: Source) -> Error {
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

/// Peak resident set size of this process (Linux's VmHWM), if the OS reports it.
pub fn peak_resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
