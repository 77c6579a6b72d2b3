//! A language model as a [`StreamModel`]: the reader thread cuts the file into
//! windows at BPE-safe boundaries, checks and tokenizes them with the model's
//! tokenizer, while the compute side runs the previous window through the model in
//! prefill pieces and scores every next token (perplexity). Nothing is kept for the
//! whole file: memory is the model, one window of text and tokens, and one prefill
//! window's activations. The scheduler (`crate::stream`) runs it.
//!
//! Windows end after a single `\n` that an ASCII character other than white space
//! follows (see [`cut`]).
//! A byte-level BPE tokenizer (the fla models' kind) splits text at white space
//! before merging, so such a cut never changes the tokens: the file's tokens are the
//! same for every window size. The state and its position ([`SourcePosition`]) can be
//! saved after any token, so checkpoints and `--max-tokens` are exact to the token and
//! a state saved anywhere can be resumed exactly.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::context_file::ContextFile;
use crate::error::{Error, Result};
use crate::stream::stream;
use crate::streamable::{
    Fed, Observer, RunCounts, StreamModel, StreamOptions, Window, WindowReader,
};
use crate::tokenize::hf::ModelTokenizer;

use super::session::{Logits, ModelSession};
use super::state_file::{save_model_state, SourcePosition};

/// Bytes of text the reader tokenizes at a time by default (extended to a line start).
/// The tokenizer's working memory is about 250 bytes per byte of text, so this sets the
/// reader's peak memory (256 KiB: about 64 MiB).
pub const DEFAULT_WINDOW_BYTES: usize = 256 << 10;

/// What only a language model's stream has: scoring and where its state came from.
#[derive(Clone, Debug)]
pub struct LmStreamOptions {
    /// The state file the session was loaded from, for messages.
    pub loaded_from: Option<PathBuf>,
    /// Score each next token (the output head at every position); off is faster.
    pub perplexity: bool,
    /// Also report the perplexity of every this many predicted tokens.
    pub segment_tokens: Option<u64>,
}

impl Default for LmStreamOptions {
    fn default() -> Self {
        LmStreamOptions {
            loaded_from: None,
            perplexity: true,
            segment_tokens: None,
        }
    }
}

/// The perplexity of one segment of the stream.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Segment {
    /// Index (in the file's tokens) of the first token predicted in this segment.
    pub first_token: u64,
    /// Tokens predicted in it.
    pub tokens: u64,
    /// Mean negative log-likelihood, nats.
    pub mean_nll: f64,
    /// `exp(mean_nll)`.
    pub perplexity: f64,
}

/// What a stream did.
#[derive(Clone, Debug, Serialize)]
pub struct LmStreamSummary {
    /// The file streamed.
    pub file: PathBuf,
    /// The model.
    pub model: String,
    /// Where the layers' memories ran.
    pub backend: String,
    /// Tokens fed by this run.
    pub tokens: u64,
    /// Tokens of the file skipped because the loaded state held them (`--resume`).
    pub skipped_tokens: u64,
    /// Tokens in the state after the run.
    pub state_tokens: u64,
    /// Bytes of the file consumed, in all runs of a resumed chain.
    pub bytes: u64,
    /// Windows of text read.
    pub windows: u64,
    /// Wall-clock seconds.
    pub wall_seconds: f64,
    /// Tokens of this run per wall-clock second.
    pub tokens_per_second: f64,
    /// Seconds in the model (the rest: waiting for the reader, checkpoints).
    pub compute_seconds: f64,
    /// Bytes of the sequence's state (all layers), fixed.
    pub state_bytes: usize,
    /// Peak resident memory of the process.
    pub peak_host_bytes: Option<u64>,
    /// Tokens predicted (scored) so far, in all runs of a resumed chain.
    pub predicted_tokens: u64,
    /// Mean negative log-likelihood of each next token, nats.
    pub mean_nll: Option<f64>,
    /// `exp(mean_nll)`.
    pub perplexity: Option<f64>,
    /// Per-segment perplexities (`segment_tokens`), this run's.
    pub segments: Vec<Segment>,
    /// Checkpoints written.
    pub checkpoints: u64,
}

/// Streams `file` through `session`. `position` is where the loaded state stands
/// (zero for a new sequence); it is updated as the run goes. `options.window_bytes`
/// sets the reader's windows ([`DEFAULT_WINDOW_BYTES`] is a good size); the prefill
/// window is the session's.
pub fn stream_text(
    file: &ContextFile,
    session: &mut ModelSession<'_>,
    position: &mut SourcePosition,
    options: &StreamOptions,
    lm: &LmStreamOptions,
    observer: &mut dyn Observer,
) -> Result<LmStreamSummary> {
    let mut streamed = LmStream::new(session, position, lm.clone());
    stream(file, &mut streamed, options, observer)
}

/// A session with its position in the context, ready to stream.
pub struct LmStream<'s, 'm> {
    session: &'s mut ModelSession<'m>,
    position: &'s mut SourcePosition,
    options: LmStreamOptions,
    /// Tokens of the first window a resumed state has fed already.
    skip: u64,
    skipped_tokens: u64,
    segments: Vec<Segment>,
    /// The open segment: NLL sum, tokens, index of its first prediction.
    seg: (f64, u64, u64),
    nll: Vec<f64>,
}

impl<'s, 'm> LmStream<'s, 'm> {
    /// `session`, whose state stands at `position` of its context.
    pub fn new(
        session: &'s mut ModelSession<'m>,
        position: &'s mut SourcePosition,
        options: LmStreamOptions,
    ) -> Self {
        LmStream {
            session,
            position,
            options,
            skip: 0,
            skipped_tokens: 0,
            segments: Vec::new(),
            seg: (0.0, 0, 0),
            nll: Vec::new(),
        }
    }

    fn loaded_from(&self) -> PathBuf {
        self.options.loaded_from.clone().unwrap_or_default()
    }
}

/// A window of text and its tokens.
pub struct Piece {
    start: usize,
    end: usize,
    /// CRC-32 of the file up to `end`.
    crc_end: u32,
    ids: Vec<u32>,
    /// Tokens of `ids` fed so far.
    at: usize,
}

impl Window for Piece {
    fn span(&self) -> Range<usize> {
        self.start..self.end
    }
}

impl<'m> StreamModel for LmStream<'_, 'm> {
    type Window = Piece;
    type Reader = TextReader<'m>;
    type Summary = LmStreamSummary;

    fn start(&mut self, file: &ContextFile, options: &StreamOptions) -> Result<TextReader<'m>> {
        let model = self.session.model();
        let tokenizer = model.require_tokenizer()?;
        check_reader_memory(model, self.session.window(), options.window_bytes)?;
        let bytes = file.bytes();
        let loaded_from = self.loaded_from();
        let position = &mut *self.position;
        if !options.resume {
            *position = SourcePosition::default();
        }
        let (start, first_end) = if position.tokens_past > 0 {
            (
                position.window_start as usize,
                Some(position.bytes as usize),
            )
        } else {
            (position.bytes as usize, None)
        };
        let checked = position.bytes as usize;
        if checked > bytes.len() {
            return Err(Error::StateFile {
                path: loaded_from.clone(),
                problem: format!(
                    "it has read {checked} bytes of its text, but {} has only {}: it was made from another file",
                    file.path().display(),
                    bytes.len()
                ),
            });
        }
        let mut crc = crc32fast::Hasher::new();
        if checked > 0 {
            crc.update(&bytes[..checked]);
            if crc.clone().finalize() != position.crc32 {
                return Err(Error::StateFile {
                    path: loaded_from.clone(),
                    problem: format!(
                        "made from another text: the first {checked} bytes it read differ from those of {} \
                         (checksum {:08x} there, {:08x} in the state); resume it with the file it was made from",
                        file.path().display(),
                        crc.clone().finalize(),
                        position.crc32
                    ),
                });
            }
            // The reader's running checksum starts at its first window.
            crc = crc32fast::Hasher::new();
            crc.update(&bytes[..start]);
        }
        self.skip = if options.resume {
            position.tokens_past
        } else {
            0
        };
        self.skipped_tokens = if options.resume {
            self.session.tokens()
        } else {
            0
        };
        self.segments.clear();
        self.seg = (0.0, 0, position.nll_tokens);
        Ok(TextReader {
            tokenizer,
            offset: start,
            crc,
            forced_end: first_end,
            window_bytes: options.window_bytes.max(1),
        })
    }

    fn feed(
        &mut self,
        _file: &ContextFile,
        piece: &mut Piece,
        limit: u64,
        _observer: &mut dyn Observer,
    ) -> Result<Fed> {
        let len = piece.ids.len();
        // A saved state stands strictly inside this window (a state at a window's end
        // records 0): more tokens than the window holds would silently skip text.
        if self.skip > 0 && self.skip >= (len - piece.at) as u64 {
            return Err(Error::StateFile {
                path: self.loaded_from(),
                problem: format!(
                    "it stands {} tokens into the window of bytes {}..{}, which holds only {len} \
                     tokens: its position is damaged",
                    self.skip, piece.start, piece.end
                ),
            });
        }
        let skipped = self.skip.min((len - piece.at) as u64) as usize;
        piece.at += skipped;
        self.skip -= skipped as u64;
        if piece.at == len {
            return Ok(Fed {
                tokens: 0,
                done: true,
            });
        }
        let at = piece.at;
        // Prefill windows end on multiples of the window counted in the state's tokens,
        // not from where this run or this piece began: a run stopped on such a multiple
        // and resumed computes the same windows as one run, so its state is the same bit
        // for bit (elsewhere, within f32 rounding: the products group other rows).
        let window = self.session.window() as u64;
        let to_grid = window - self.session.tokens() % window;
        let n = (len - at).min(to_grid.min(limit) as usize);
        let ids = &piece.ids[at..at + n];
        let position = &mut *self.position;
        if self.options.perplexity {
            self.nll.clear();
            // The first token's score comes from the state alone (the last hidden
            // vector), so a resumed run computes it exactly as an uninterrupted one does;
            // on a GPU the head and the log-softmax run there and only the scores come back.
            self.session.feed_scored(ids, &mut self.nll)?;
            // A NaN or infinite score would make the perplexity null in the summary:
            // finite weights and states can still overflow, and that is an error.
            if let Some(i) = self.nll.iter().position(|x| !x.is_finite()) {
                return Err(Error::Config(format!(
                    "the model scored token {} of the stream as {}: its logits are not finite \
                     (the weights or the state overflow f32), so no perplexity can be given",
                    position.nll_tokens + i as u64,
                    -self.nll[i]
                )));
            }
            let seg = &mut self.seg;
            for &x in &self.nll {
                position.nll_sum += x;
                position.nll_tokens += 1;
                seg.0 += x;
                seg.1 += 1;
                if self.options.segment_tokens.is_some_and(|s| seg.1 >= s) {
                    self.segments.push(segment(*seg));
                    *seg = (0.0, 0, position.nll_tokens);
                }
            }
        } else {
            self.session.feed(ids, Logits::None)?;
        }
        piece.at += n;
        position.bytes = piece.end as u64;
        position.crc32 = piece.crc_end;
        let done = piece.at == len;
        position.window_start = if done { piece.end } else { piece.start } as u64;
        position.tokens_past = if done { 0 } else { piece.at as u64 };
        Ok(Fed {
            tokens: n as u64,
            done,
        })
    }

    fn save(&mut self, path: &Path) -> Result<()> {
        let state = self.session.snapshot()?;
        save_model_state(path, self.session.model(), &state, self.position)
    }

    fn saved_bytes(&self) -> u64 {
        super::state_file::file_bytes(self.session.model())
    }

    fn finish(&mut self) -> Result<u64> {
        let p = &*self.position;
        if p.nll_tokens > 0 && !(p.nll_sum / p.nll_tokens as f64).exp().is_finite() {
            return Err(Error::Config(format!(
                "a mean NLL of {} nats over {} tokens has no finite perplexity (e^x past f64)",
                p.nll_sum / p.nll_tokens as f64,
                p.nll_tokens
            )));
        }
        if self.options.segment_tokens.is_some() && self.seg.1 > 0 {
            self.segments.push(segment(self.seg));
            self.seg = (0.0, 0, self.position.nll_tokens);
        }
        Ok(0)
    }

    fn summary(&self, file: &ContextFile, run: RunCounts) -> LmStreamSummary {
        let model = self.session.model();
        let position = &*self.position;
        let mean_nll =
            (position.nll_tokens > 0).then(|| position.nll_sum / position.nll_tokens as f64);
        LmStreamSummary {
            file: file.path().to_path_buf(),
            model: model.name().to_string(),
            backend: model.backend().name(),
            tokens: run.tokens,
            skipped_tokens: self.skipped_tokens,
            state_tokens: self.session.tokens(),
            bytes: position.bytes,
            windows: run.windows,
            wall_seconds: run.wall_seconds,
            tokens_per_second: run.tokens_per_second(),
            compute_seconds: run.compute_seconds,
            state_bytes: model.state_bytes(),
            peak_host_bytes: run.peak_host_bytes,
            predicted_tokens: position.nll_tokens,
            mean_nll,
            perplexity: mean_nll.map(f64::exp),
            segments: self.segments.clone(),
            checkpoints: run.checkpoints,
        }
    }
}

/// The reader thread's side: cuts windows at BPE-safe places and tokenizes them. A
/// resumed state that stands inside a window gets exactly that window again (its
/// tokens are skipped on the compute side), so nothing is skipped here.
pub struct TextReader<'m> {
    tokenizer: &'m ModelTokenizer,
    offset: usize,
    crc: crc32fast::Hasher,
    forced_end: Option<usize>,
    window_bytes: usize,
}

impl WindowReader for TextReader<'_> {
    type Window = Piece;

    fn skip(&mut self, _file: &ContextFile) -> Result<()> {
        Ok(())
    }

    fn next(&mut self, file: &ContextFile, _buffer: Option<Piece>) -> Result<Option<Piece>> {
        let bytes = file.bytes();
        let offset = self.offset;
        if offset >= bytes.len() {
            return Ok(None);
        }
        let end = self
            .forced_end
            .take()
            .unwrap_or_else(|| cut(bytes, offset, self.window_bytes));
        let text = std::str::from_utf8(&bytes[offset..end]).map_err(|e| Error::File {
            path: file.path().to_path_buf(),
            problem: format!(
                "invalid UTF-8 at byte {}: a language model reads text",
                offset + e.valid_up_to()
            ),
        })?;
        self.crc.update(&bytes[offset..end]);
        let ids = self.tokenizer.encode(text, offset == 0);
        file.release_before(offset);
        self.offset = end;
        Ok(Some(Piece {
            start: offset,
            end,
            crc_end: self.crc.clone().finalize(),
            ids: ids?,
            at: 0,
        }))
    }
}

/// Working memory of the `tokenizers` crate per byte of text it encodes (measured: about
/// 250 on text without white space, less on prose), with room to spare.
const TOKENIZER_BYTES_PER_BYTE: u64 = 320;

/// Fails, naming the option, unless the reader's windows and a prefill window fit in the
/// memory available now: a window of text ends at most 8× `window_bytes` on ([`cut`]),
/// the tokenizer works on it whole, and the scheduler keeps that many windows of ids.
/// Checked before the run, where running out would abort it midway.
fn check_reader_memory(
    model: &super::LanguageModel,
    window_tokens: usize,
    window_bytes: usize,
) -> Result<()> {
    use crate::limits::check_alloc;
    let text = (window_bytes as u64).checked_mul(8);
    let per_byte = TOKENIZER_BYTES_PER_BYTE + 4 * crate::stream::scheduler::WINDOW_BUFFERS as u64;
    let reader = check_alloc("--window-bytes", text.and_then(|t| t.checked_mul(per_byte)))?;
    let prefill = check_alloc("--window-tokens", model.window_bytes(window_tokens))?;
    check_alloc(
        "--window-bytes and --window-tokens together",
        reader.checked_add(prefill),
    )?;
    Ok(())
}

fn segment((sum, n, first): (f64, u64, u64)) -> Segment {
    let mean = sum / n.max(1) as f64;
    Segment {
        first_token: first + 1,
        tokens: n,
        mean_nll: mean,
        perplexity: mean.exp(),
    }
}

/// End of the window that starts at `offset`, at least `target` bytes on (or the end
/// of the file). Preferred: the start of a line that begins with an ASCII character
/// other than white space, after a line that ends in one line break. Within twice the
/// target without one: before a space that follows a letter or digit and precedes a
/// letter (`foo| bar`), which byte-level BPE also never merges across. A text with
/// neither within eight times the target is cut at a character boundary there (the one
/// place its tokens may differ from the whole file's), so a window's memory stays
/// bounded whatever the text.
pub fn cut(bytes: &[u8], offset: usize, target: usize) -> usize {
    let len = bytes.len();
    let from = offset.saturating_add(target.max(1)).min(len);
    if from == len {
        return len;
    }
    // A single line break: after a run of white space the pre-tokenizer's
    // `\s+(?!\S)` would group the run differently at the end of a window.
    let line = |p: usize| {
        p >= 2
            && bytes[p - 1] == b'\n'
            && !bytes[p - 2].is_ascii_whitespace()
            && bytes[p].is_ascii_graphic()
    };
    let word = |p: usize| {
        bytes[p] == b' '
            && bytes[p - 1].is_ascii_alphanumeric()
            && bytes.get(p + 1).is_some_and(u8::is_ascii_alphabetic)
    };
    let soft = offset.saturating_add(target.saturating_mul(2)).min(len);
    let hard = offset.saturating_add(target.saturating_mul(8)).min(len);
    if let Some(p) = (from..soft).find(|&p| line(p)) {
        return p;
    }
    if let Some(p) = (from..hard).find(|&p| word(p) || line(p)) {
        return p;
    }
    if hard == len {
        return len;
    }
    (offset + 1..=hard)
        .rev()
        .find(|&p| (bytes[p] as i8) >= -0x40)
        .unwrap_or(hard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_at_line_starts_then_words_then_characters() {
        let text = b"alpha beta\n  indented\ngamma\n";
        assert_eq!(cut(text, 0, 12), 11 + 11); // "gamma" starts the first clean line
        assert_eq!(cut(text, 0, 3), 5); // no line start soon: before " beta"
        let no_lines = b"one two three four five six";
        assert_eq!(&no_lines[cut(no_lines, 0, 5)..][..4], b" thr".as_slice());
        let blob = "\u{e9}".repeat(100);
        let p = cut(blob.as_bytes(), 0, 3);
        assert!(p <= 24 && blob.is_char_boundary(p));
        assert_eq!(cut(b"short", 0, 100), 5);
    }
}
