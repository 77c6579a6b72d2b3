//! The built-in memory model as a [`StreamModel`]: the reader thread cuts the mapped
//! file into windows that end at line breaks, counts their tokens and faults their
//! pages in, while the compute side writes the previous window into the memory. A
//! state saved at a window's end is the state of the text up to a line break (the
//! keys of a word depend on the words before it in its line), which is what makes
//! checkpoints and `--resume` exact; so this model takes whole windows, and
//! `--max-tokens` ends at the end of the line where the count is reached.

use std::ops::Range;
use std::path::Path;

use crate::context_file::ContextFile;
use crate::error::{Error, Result};
use crate::state::{Source, MAX_TOKENS};
use crate::state_file::save_state;
use crate::streamable::{
    not_this_context, Capacity, Fed, Observer, RunCounts, StreamModel, StreamOptions,
    StreamSummary, Window, WindowReader,
};
use crate::tokenize::words::Tokenizer;

use super::{MemoryModel, StreamWriter};

/// A memory model with a writer, ready to stream text into it.
pub struct MemoryStream<'a> {
    model: &'a mut MemoryModel,
    writer: StreamWriter,
    batch_writes: usize,
    /// Tokens in the state before this run.
    before: u64,
    /// Tokens skipped because a resumed state held them.
    skip: u64,
    /// Tokens written by this run so far, at the last window's end.
    tokens: u64,
}

impl MemoryModel {
    /// This model ready to stream text, sending writes to the backend `batch_writes`
    /// at a time (its buffers are fixed at that size, checked against memory first).
    pub fn streamer(&mut self, batch_writes: usize) -> Result<MemoryStream<'_>> {
        let c = self.config();
        let per_write = (c.heads * (c.active * 8 + super::codec::VALUE_DIM * 4 + 4)) as u64;
        let options = StreamOptions {
            window_tokens: batch_writes,
            ..StreamOptions::default()
        };
        options.checked_window(1, per_write)?;
        Ok(MemoryStream {
            writer: self.writer(batch_writes),
            batch_writes,
            before: 0,
            skip: 0,
            tokens: 0,
            model: self,
        })
    }
}

/// A window of text: bytes `start..end`, whole lines (a line longer than a window is a
/// window of its own).
pub struct Span {
    start: usize,
    end: usize,
    /// CRC-32 of the file's bytes up to `end`.
    crc: u32,
}

impl Window for Span {
    fn span(&self) -> Range<usize> {
        self.start..self.end
    }
}

impl StreamModel for MemoryStream<'_> {
    type Window = Span;
    type Reader = LineReader;
    type Summary = StreamSummary;

    fn start(&mut self, _file: &ContextFile, options: &StreamOptions) -> Result<LineReader> {
        let source = self.model.state().source();
        self.skip = if options.resume { source.tokens } else { 0 };
        // A loaded state's count goes on, resumed or not (as with random features), so
        // the count is what the state holds.
        self.before = self.model.state().tokens_seen();
        self.tokens = 0;
        if !options.resume {
            self.model.set_source(Source::default());
        }
        Ok(LineReader {
            counter: Tokenizer::new(),
            crc: crc32fast::Hasher::new(),
            pos: 0,
            window_bytes: options.window_bytes.max(1),
            resume: options.resume.then_some(source),
            budget: options.max_tokens.unwrap_or(u64::MAX),
            sent: 0,
        })
    }

    fn feed(
        &mut self,
        file: &ContextFile,
        span: &mut Span,
        _limit: u64,
        _observer: &mut dyn Observer,
    ) -> Result<Fed> {
        let text = &file.bytes()[span.start..span.end];
        self.writer.feed(self.model, text)?;
        self.writer.flush(self.model)?;
        let done = self.writer.tokens();
        let window_tokens = done - self.tokens;
        self.tokens = done;
        self.model
            .set_tokens_seen(total_tokens(self.before, self.tokens)?);
        self.model.set_source(Source {
            tokens: self.skip + self.tokens,
            bytes: span.end as u64,
            crc32: span.crc,
        });
        file.release_before(span.start);
        Ok(Fed {
            tokens: window_tokens,
            done: true,
        })
    }

    fn save(&mut self, path: &Path) -> Result<()> {
        save_state(path, self.model.memory_config(), self.model.state())
    }

    fn saved_bytes(&self) -> u64 {
        crate::state_file::file_bytes(self.model.state())
    }

    fn finish(&mut self) -> Result<u64> {
        self.writer.finish(self.model)?;
        let tail = self.writer.tokens() - self.tokens;
        self.tokens = self.writer.tokens();
        self.model
            .set_tokens_seen(total_tokens(self.before, self.tokens)?);
        if tail > 0 {
            let mut source = self.model.state().source();
            source.tokens = self.skip + self.tokens;
            self.model.set_source(source);
        }
        Ok(tail)
    }

    fn summary(&self, file: &ContextFile, run: RunCounts) -> StreamSummary {
        let (name, backend) = (model_name(self.model), self.model.backend_name());
        let writes = self.writer.writes();
        StreamSummary {
            format: "text".into(),
            writes: Some(writes),
            capacity: Some(capacity(self.model, writes)),
            ..StreamSummary::finish(
                file,
                name,
                backend,
                self.model.state(),
                self.skip,
                self.batch_writes,
                run,
            )
        }
    }
}

fn capacity(model: &MemoryModel, pairs: u64) -> Capacity {
    use super::capacity::{recall, state_bytes_to_hold, FULL_LOAD};
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

/// The reader thread's side: skips the tokens a resumed state holds (which must end at
/// a line break), then cuts windows of about `window_bytes` after their last line
/// break, until the file or `budget` tokens end. Faults each window's pages in.
pub struct LineReader {
    /// Counts tokens with the model's own rule (the writer's twin on this thread).
    counter: Tokenizer,
    crc: crc32fast::Hasher,
    pos: usize,
    window_bytes: usize,
    resume: Option<Source>,
    budget: u64,
    sent: u64,
}

impl LineReader {
    fn skip_tokens(&self) -> u64 {
        self.resume.map_or(0, |s| s.tokens)
    }
}

impl WindowReader for LineReader {
    type Window = Span;

    fn skip(&mut self, file: &ContextFile) -> Result<()> {
        let Some(source) = self.resume else {
            return Ok(());
        };
        let skip = source.tokens;
        let bytes = file.bytes();
        if skip > 0 {
            while self.counter.tokens() < skip && self.pos < bytes.len() {
                let end = line_end(bytes, self.pos);
                self.counter.feed(&bytes[self.pos..end], |_| {});
                self.pos = end;
            }
            self.counter.finish(|_| {});
            if self.counter.tokens() != skip {
                return Err(Error::StateMismatch(format!(
                    "the loaded state holds {skip} tokens, but {} has {} tokens up to the end of the line \
                     where that count is passed (or in all): it is not a state of this file",
                    file.path().display(),
                    self.counter.tokens()
                )));
            }
            self.crc.update(&bytes[..self.pos]);
            file.release_before(self.pos);
        }
        let here = Source {
            tokens: skip,
            bytes: self.pos as u64,
            crc32: self.crc.clone().finalize(),
        };
        if here != source {
            return Err(not_this_context(file.path(), source, here));
        }
        Ok(())
    }

    fn next(&mut self, file: &ContextFile, _buffer: Option<Span>) -> Result<Option<Span>> {
        let bytes = file.bytes();
        let (skip, pos) = (self.skip_tokens(), self.pos);
        if pos >= bytes.len() || self.sent >= self.budget {
            return Ok(None);
        }
        let limit = (pos + self.window_bytes).min(bytes.len());
        let mut end = pos;
        // Whole lines while they fit in the window and the budget.
        while end < limit || end == pos {
            let next = line_end(bytes, end);
            if next > limit && end > pos {
                break;
            }
            self.counter.feed(&bytes[end..next], |_| {});
            end = next;
            if self.counter.tokens() - skip >= self.budget {
                break;
            }
        }
        if end == bytes.len() {
            self.counter.finish(|_| {});
        }
        // Whole lines: a character never straddles two windows, so each is checked alone.
        if let Err(e) = std::str::from_utf8(&bytes[pos..end]) {
            return Err(Error::File {
                path: file.path().to_path_buf(),
                problem: format!(
                    "invalid UTF-8 at byte {} (the memory model reads text; \
                     --model random-features --format bytes reads any file)",
                    pos + e.valid_up_to()
                ),
            });
        }
        self.crc.update(&bytes[pos..end]);
        file.fault_in(pos..end);
        self.sent = self.counter.tokens() - skip;
        self.pos = end;
        Ok(Some(Span {
            start: pos,
            end,
            crc: self.crc.clone().finalize(),
        }))
    }
}

/// The end of the line starting at `pos`: just past its `\n`, or the end of the file.
fn line_end(bytes: &[u8], pos: usize) -> usize {
    match bytes[pos..].iter().position(|&b| b == b'\n') {
        Some(i) => pos + i + 1,
        None => bytes.len(),
    }
}
