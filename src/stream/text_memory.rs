//! The scheduler's path for the built-in memory model, which reads text itself: a
//! reader thread cuts the mapped file into windows that end at line breaks, counts
//! their tokens and faults their pages in, while the compute side writes the previous
//! window into the memory. A state saved at a window's end is the state of the text up
//! to a line break, which is what makes checkpoints and `--resume` exact.
//!
//! [`stream_file`] is the same path for library callers (HashHop's eval): the file is
//! mapped and read once and the pages behind the writer are given back, so resident
//! memory is the state plus fixed buffers however long the file. It lives here, not in
//! `memory_model`, so that `memory_model` does not depend on `stream`.

use std::path::Path;
use std::sync::mpsc;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::memory_model::tokenizer::Tokenizer;
use crate::memory_model::MemoryModel;
use crate::state::{Source, MAX_TOKENS};
use crate::state_file::save_state;
use crate::stream::context_file::{ContextFile, Format};
use crate::stream::scheduler::{
    done_fraction, not_this_context, Capacity, Checkpoints, Observer, Progress, Quiet, RunCounts,
    StreamOptions, StreamSummary,
};

/// A window of text: bytes `start..end`, whole lines (a line longer than a window is a
/// window of its own).
struct Span {
    start: usize,
    end: usize,
    /// CRC-32 of the file's bytes up to `end`.
    crc: u32,
}

/// Streams `file` into `model`, calling `inspect` on each window's bytes first (a
/// format check, say). With `options.resume`, skips the tokens the model's state holds.
pub fn stream_text_into_memory(
    file: &ContextFile,
    model: &mut MemoryModel,
    options: &StreamOptions,
    observer: &mut dyn Observer,
    inspect: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<StreamSummary> {
    let mut checkpoints = Checkpoints::new(options)?;
    let started = Instant::now();
    let source = model.state().source();
    let skip = if options.resume { source.tokens } else { 0 };
    // Tokens in the state before this run: a loaded state's count goes on, resumed or
    // not (the random-feature path does the same), so the count is what the state holds.
    let before = model.state().tokens_seen();
    if !options.resume {
        model.set_source(Source::default());
    }
    let budget = options.max_tokens.unwrap_or(u64::MAX);
    let window_bytes = options.window_bytes.max(1);
    let c = model.config();
    let per_write =
        (c.heads * (c.active * 8 + crate::memory_model::codec::VALUE_DIM * 4 + 4)) as u64;
    options.checked_window(1, per_write)?;
    let mut writer = model.writer(options.window_tokens);
    let (tx, rx) = mpsc::sync_channel::<Result<Span>>(2);
    let bytes = file.bytes();
    let (mut tokens, mut windows) = (0u64, 0u64);
    let mut compute = 0.0f64;

    std::thread::scope(|scope| -> Result<()> {
        let resume = options.resume.then_some(source);
        let reader = scope.spawn(move || cut_windows(file, window_bytes, resume, budget, &tx));
        let result = (|| -> Result<()> {
            for span in rx.iter() {
                let span = span?;
                let t0 = Instant::now();
                let text = &bytes[span.start..span.end];
                inspect(text)?;
                writer.feed(model, text)?;
                windows += 1;
                writer.flush(model)?;
                // The window was read from the map: if the file shrank meanwhile, some
                // of it may have been zeros, and nothing of it may be kept.
                file.check_intact()?;
                let done = writer.tokens();
                let window_tokens = done - tokens;
                tokens = done;
                model.set_tokens_seen(total_tokens(before, tokens)?);
                model.set_source(Source {
                    tokens: skip + tokens,
                    bytes: span.end as u64,
                    crc32: span.crc,
                });
                checkpoints.advance(window_tokens, |path| {
                    save_state(path, model.memory_config(), model.state())
                })?;
                compute += t0.elapsed().as_secs_f64();
                file.release_before(span.start);
                observer.progress(Progress {
                    tokens,
                    seconds: started.elapsed().as_secs_f64(),
                    fraction: done_fraction(
                        span.end as f64 / bytes.len() as f64,
                        tokens,
                        options.max_tokens,
                    ),
                });
            }
            writer.finish(model)?;
            let tail = writer.tokens() - tokens;
            tokens = writer.tokens();
            model.set_tokens_seen(total_tokens(before, tokens)?);
            if tail > 0 {
                let mut source = model.state().source();
                source.tokens = skip + tokens;
                model.set_source(source);
            }
            Ok(())
        })();
        drop(rx);
        let read = reader.join().expect("reader thread panicked");
        result.and(read)
    })?;
    let counts = RunCounts {
        tokens,
        skipped_tokens: skip,
        windows,
        window_tokens: options.window_tokens,
        compute_seconds: compute,
        checkpoints: checkpoints.written,
    };
    let (name, backend) = (model_name(model), model.backend_name());
    Ok(StreamSummary {
        format: "text".into(),
        writes: Some(writer.writes()),
        capacity: Some(capacity(model, writer.writes())),
        ..StreamSummary::finish(file, name, backend, model.state(), started, counts)
    })
}

fn capacity(model: &MemoryModel, pairs: u64) -> Capacity {
    use crate::memory_model::capacity::{recall, state_bytes_to_hold, FULL_LOAD};
    let c = model.config();
    let rows = c.heads as u64 * c.rows as u64;
    let load = pairs as f64 / rows as f64;
    Capacity {
        rows,
        pairs,
        load,
        predicted_recall: if pairs == 0 {
            1.0
        } else {
            recall(pairs as f64, rows as f64, c.beta as f64)
        },
        over_capacity: load > FULL_LOAD,
        state_bytes_to_hold: state_bytes_to_hold(pairs),
    }
}

fn total_tokens(before: u64, tokens: u64) -> Result<u64> {
    before
        .checked_add(tokens)
        .filter(|&t| t <= MAX_TOKENS)
        .ok_or_else(|| {
            Error::StateMismatch(format!(
                "the loaded state had seen {before} tokens; {tokens} more pass the limit of {MAX_TOKENS}"
            ))
        })
}

/// The memory model's description in summaries: heads, rows, rows per key, β.
pub fn model_name(model: &MemoryModel) -> String {
    let c = model.config();
    format!(
        "memory (sparse keys: {} heads × {} rows, {} active, β = {})",
        c.heads, c.rows, c.active, c.beta
    )
}

/// What streaming a file did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct StreamStats {
    /// Size of the file streamed, in bytes.
    pub bytes: u64,
    /// Tokens of the built-in tokenizer (word pieces and punctuation).
    pub tokens: u64,
    /// Words written into the memory (key–value pairs).
    pub writes: u64,
    /// Wall-clock seconds of the whole stream.
    pub seconds: f64,
}

/// Streams `path` through `model` in windows of about `window_bytes` (whole lines),
/// calling `inspect` on each window first (e.g. to check a file format as it goes by).
/// Writes are sent to the backend `window_tokens` at a time.
pub fn stream_file(
    model: &mut MemoryModel,
    path: impl AsRef<Path>,
    window_bytes: usize,
    window_tokens: usize,
    mut inspect: impl FnMut(&[u8]) -> Result<()>,
) -> Result<StreamStats> {
    let path = path.as_ref();
    let file = ContextFile::open(path, Some(Format::Text))?;
    let options = StreamOptions {
        window_bytes,
        window_tokens,
        ..StreamOptions::default()
    };
    let summary = stream_text_into_memory(&file, model, &options, &mut Quiet, &mut inspect)?;
    Ok(StreamStats {
        bytes: file.len() as u64,
        tokens: summary.tokens,
        writes: summary.writes.unwrap_or(0),
        seconds: summary.wall_seconds,
    })
}

/// The reader thread: skips `skip` tokens (which must end at a line break), then sends
/// windows of about `window_bytes` cut after their last line break, until the file or
/// `budget` tokens end. Faults each window's pages in before sending it.
fn cut_windows(
    file: &ContextFile,
    window_bytes: usize,
    resume: Option<Source>,
    budget: u64,
    tx: &mpsc::SyncSender<Result<Span>>,
) -> Result<()> {
    let skip = resume.map_or(0, |s| s.tokens);
    let bytes = file.bytes();
    let mut counter = Tokenizer::new();
    let mut crc = crc32fast::Hasher::new();
    let mut pos = 0usize;
    if skip > 0 {
        while counter.tokens() < skip && pos < bytes.len() {
            let end = line_end(bytes, pos);
            counter.feed(&bytes[pos..end], |_| {});
            pos = end;
        }
        counter.finish(|_| {});
        if counter.tokens() != skip {
            let problem = format!(
                "the loaded state holds {skip} tokens, but {} has {} tokens up to the end of the line \
                 where that count is passed (or in all): it is not a state of this file",
                file.path().display(),
                counter.tokens()
            );
            let _ = tx.send(Err(Error::StateMismatch(problem)));
            return Ok(());
        }
        crc.update(&bytes[..pos]);
        file.release_before(pos);
    }
    if let Some(source) = resume {
        let here = Source {
            tokens: skip,
            bytes: pos as u64,
            crc32: crc.clone().finalize(),
        };
        if here != source {
            let _ = tx.send(Err(not_this_context(file.path(), source, here)));
            return Ok(());
        }
    }
    let mut sent = 0u64;
    while pos < bytes.len() && sent < budget {
        let limit = (pos + window_bytes).min(bytes.len());
        let mut end = pos;
        // Whole lines while they fit in the window and the budget.
        while end < limit || end == pos {
            let next = line_end(bytes, end);
            if next > limit && end > pos {
                break;
            }
            counter.feed(&bytes[end..next], |_| {});
            end = next;
            if counter.tokens() - skip >= budget {
                break;
            }
        }
        if end == bytes.len() {
            counter.finish(|_| {});
        }
        // Whole lines: a character never straddles two windows, so each is checked alone.
        if let Err(e) = std::str::from_utf8(&bytes[pos..end]) {
            let _ = tx.send(Err(Error::File {
                path: file.path().to_path_buf(),
                problem: format!(
                    "invalid UTF-8 at byte {} (the memory model reads text; \
                     --model random-features --format bytes reads any file)",
                    pos + e.valid_up_to()
                ),
            }));
            return Ok(());
        }
        crc.update(&bytes[pos..end]);
        file.fault_in(pos..end);
        if let Err(e) = file.check_intact() {
            let _ = tx.send(Err(e));
            return Ok(());
        }
        sent = counter.tokens() - skip;
        let span = Span {
            start: pos,
            end,
            crc: crc.clone().finalize(),
        };
        if tx.send(Ok(span)).is_err() {
            return Ok(());
        }
        pos = end;
    }
    Ok(())
}

/// The end of the line starting at `pos`: just past its `\n`, or the end of the file.
fn line_end(bytes: &[u8], pos: usize) -> usize {
    match bytes[pos..].iter().position(|&b| b == b'\n') {
        Some(i) => pos + i + 1,
        None => bytes.len(),
    }
}
