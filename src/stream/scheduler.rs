//! The scheduler: a reader thread cuts and tokenizes window i+1 while window i is
//! computed on all cores; a fixed set of windows circulates between them, so memory
//! is the same for a thousand tokens or a hundred million. It drives any
//! [`StreamModel`]: the random-feature model (`stream::random_features`), the built-in
//! memory model, a trained language model. Checkpoints, the token budget, progress and
//! the counts of the summary are kept here, once for all of them.

use std::path::Path;
use std::sync::mpsc;
use std::time::Instant;

use crate::context_file::{ContextFile, Format};
use crate::error::{Error, Result};
use crate::state::State;
use crate::streamable::{
    peak_resident_bytes, Observer, Progress, RunCounts, StreamModel, StreamOptions, StreamSummary,
    Window, WindowReader,
};

/// Windows in circulation: one computing, one being filled, one spare so the reader
/// never waits for the hand-back.
pub(crate) const WINDOW_BUFFERS: usize = 3;

/// Streams `file` through `model`. Returns when the file (or `max_tokens`) is done;
/// the final state is the caller's to save.
pub fn stream<M: StreamModel>(
    file: &ContextFile,
    model: &mut M,
    options: &StreamOptions,
    observer: &mut dyn Observer,
) -> Result<M::Summary> {
    let mut checkpoints = Checkpoints::new(options)?;
    let started = Instant::now();
    // A bad byte deep in a text would otherwise stop the run only when reached; with a
    // token budget the run may never get there, so only the stream's own check applies.
    if file.format() == Format::Text && options.max_tokens.is_none() {
        file.check_utf8(0)?;
    }
    let mut reader = model.start(file, options)?;
    let budget = options.max_tokens.unwrap_or(u64::MAX);
    let file_len = file.len().max(1) as f64;

    let (full_tx, full_rx) = mpsc::sync_channel::<Result<M::Window>>(WINDOW_BUFFERS);
    let (free_tx, free_rx) = mpsc::channel::<M::Window>();
    let (mut tokens, mut windows) = (0u64, 0u64);
    let mut compute = 0.0f64;

    std::thread::scope(|scope| -> Result<()> {
        // The reader owns its ends of both channels: when it finishes, `full_rx` ends.
        let reader = scope.spawn(move || {
            let sent = (|| -> Result<()> {
                reader.skip(file)?;
                file.check_intact()?;
                let mut made = 0;
                loop {
                    let buffer = if made < WINDOW_BUFFERS {
                        made += 1;
                        None
                    } else {
                        match free_rx.recv() {
                            Ok(w) => Some(w),
                            Err(_) => return Ok(()),
                        }
                    };
                    let next = reader.next(file, buffer)?;
                    // What the reader took from the map may be zeros if the file
                    // shrank meanwhile: checked here once for every model.
                    file.check_intact()?;
                    match next {
                        Some(w) => {
                            if full_tx.send(Ok(w)).is_err() {
                                return Ok(());
                            }
                        }
                        None => return Ok(()),
                    }
                }
            })();
            if let Err(e) = sent {
                let _ = full_tx.send(Err(e));
            }
        });
        let result = (|| -> Result<()> {
            for window in full_rx.iter() {
                let mut window = window?;
                windows += 1;
                observer.window(&file.bytes()[window.span()])?;
                while tokens < budget {
                    let limit = (budget - tokens).min(checkpoints.room());
                    let t0 = Instant::now();
                    let fed = model.feed(file, &mut window, limit, observer)?;
                    compute += t0.elapsed().as_secs_f64();
                    // Some models read the window's text again as they compute.
                    file.check_intact()?;
                    tokens += fed.tokens;
                    checkpoints.advance(fed.tokens, |path| model.save(path))?;
                    if fed.done {
                        break;
                    }
                }
                let end = window.span().end;
                let _ = free_tx.send(window);
                observer.progress(Progress {
                    tokens,
                    seconds: started.elapsed().as_secs_f64(),
                    fraction: done_fraction(end as f64 / file_len, tokens, options.max_tokens),
                });
                if tokens >= budget {
                    break;
                }
            }
            let t0 = Instant::now();
            tokens += model.finish()?;
            compute += t0.elapsed().as_secs_f64();
            file.check_intact()?;
            Ok(())
        })();
        // Unblocks the reader if computing stopped early: it may wait to send a window
        // or to get a buffer back.
        drop(full_rx);
        drop(free_tx);
        reader.join().expect("reader thread panicked");
        result
    })?;

    let wall = started.elapsed().as_secs_f64();
    let run = RunCounts {
        tokens,
        windows,
        compute_seconds: compute,
        checkpoints: checkpoints.written,
        wall_seconds: wall,
        peak_host_bytes: peak_resident_bytes(),
    };
    Ok(model.summary(file, run))
}

/// Streams the text file `path` through `model` in windows of about `window_bytes`,
/// calling `inspect` on each window's bytes first (e.g. to check a file format as it
/// goes by): the path for library callers (HashHop's eval). The file is mapped and read
/// once and the pages behind the model are given back, so resident memory is the state
/// plus fixed buffers however long the file.
pub fn stream_file<M: StreamModel<Summary = StreamSummary>>(
    model: &mut M,
    path: impl AsRef<Path>,
    window_bytes: usize,
    inspect: impl FnMut(&[u8]) -> Result<()>,
) -> Result<StreamStats> {
    let file = ContextFile::open(path.as_ref(), Some(Format::Text))?;
    let options = StreamOptions {
        window_bytes,
        ..StreamOptions::default()
    };
    let summary = stream(&file, model, &options, &mut Inspect(inspect))?;
    Ok(StreamStats {
        bytes: file.len() as u64,
        tokens: summary.tokens,
        writes: summary.writes.unwrap_or(0),
        seconds: summary.wall_seconds,
    })
}

/// An observer that only looks at each window's bytes.
struct Inspect<F>(F);

impl<F: FnMut(&[u8]) -> Result<()>> Observer for Inspect<F> {
    fn window(&mut self, bytes: &[u8]) -> Result<()> {
        (self.0)(bytes)
    }
}

/// What streaming a file did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct StreamStats {
    /// Size of the file streamed, in bytes.
    pub bytes: u64,
    /// Tokens of the model's tokenizer.
    pub tokens: u64,
    /// Words written into the memory (key–value pairs; memory model).
    pub writes: u64,
    /// Wall-clock seconds of the whole stream.
    pub seconds: f64,
}

/// Periodic saves of the state during a run, every `checkpoint_every` tokens, at the
/// end of a window or, for a model that can stop inside one, exactly there.
struct Checkpoints<'a> {
    every: u64,
    path: Option<&'a Path>,
    since: u64,
    written: u64,
}

impl<'a> Checkpoints<'a> {
    fn new(options: &'a StreamOptions) -> Result<Self> {
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

    /// Tokens until the next checkpoint is due (at least 1).
    fn room(&self) -> u64 {
        match self.path {
            Some(_) => (self.every - self.since.min(self.every)).max(1),
            None => u64::MAX,
        }
    }

    /// After `tokens` more: saves with `save` once `every` tokens have passed since the
    /// last save.
    fn advance(&mut self, tokens: u64, save: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
        self.since += tokens;
        if let Some(path) = self.path.filter(|_| self.since >= self.every) {
            save(path)?;
            self.written += 1;
            self.since = 0;
        }
        Ok(())
    }
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

/// Share of the run done: of the file, or of `--max-tokens` when that ends it sooner.
fn done_fraction(of_file: f64, tokens: u64, max_tokens: Option<u64>) -> f64 {
    let of_budget = max_tokens.map_or(0.0, |m| tokens as f64 / m.max(1) as f64);
    of_file.max(of_budget).min(1.0)
}
