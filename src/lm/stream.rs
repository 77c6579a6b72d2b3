//! Streaming a text file of any length through a language model: a reader thread cuts
//! the file into windows at line starts, checks and tokenizes them with the model's
//! tokenizer, while the compute side runs the previous window through the model and
//! scores every next token (perplexity). Nothing is kept for the whole file: memory is
//! the model, one window of text and tokens, and one prefill window's activations.
//!
//! Windows end after a single `\n` that an ASCII character other than white space
//! follows (see [`cut`]).
//! A byte-level BPE tokenizer (the fla models' kind) splits text at white space
//! before merging, so such a cut never changes the tokens: the file's tokens are the
//! same for every window size, and a state saved anywhere can be resumed exactly.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Instant;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::stream::scheduler::peak_resident_bytes;
use crate::stream::{ContextFile, Observer, Progress};

use super::session::{Logits, ModelSession};
use super::state_file::{save_model_state, SourcePosition};

/// How a file is streamed through a model.
#[derive(Clone, Debug)]
pub struct LmStreamOptions {
    /// Bytes of text the reader tokenizes at a time (extended to a line start). The
    /// tokenizer's working memory is about 250 bytes per byte of text, so this sets the
    /// reader's peak memory (256 KiB: about 64 MiB).
    pub window_bytes: usize,
    /// Stop after this many tokens of this run.
    pub max_tokens: Option<u64>,
    /// Continue where the loaded state stopped in this file (checked by checksum).
    pub resume: bool,
    /// Save the state every this many tokens (rounded up to the prefill window).
    pub checkpoint_every: Option<u64>,
    /// Where checkpoints go.
    pub checkpoint_path: Option<PathBuf>,
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
            window_bytes: 256 << 10,
            max_tokens: None,
            resume: false,
            checkpoint_every: None,
            checkpoint_path: None,
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

/// A window of text on its way from the reader: its place in the file, the checksum
/// of the file before it, and its tokens.
struct Piece {
    start: usize,
    end: usize,
    crc_end: u32,
    ids: Vec<u32>,
}

/// Streams `file` through `session`. `position` is where the loaded state stands
/// (zero for a new sequence); it is updated as the run goes.
pub fn stream_text(
    file: &ContextFile,
    session: &mut ModelSession<'_>,
    position: &mut SourcePosition,
    options: &LmStreamOptions,
    observer: &mut dyn Observer,
) -> Result<LmStreamSummary> {
    let started = Instant::now();
    let model = session.model();
    let tokenizer = model.require_tokenizer()?;
    let bytes = file.bytes();
    let path = file.path().to_path_buf();
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
            path: options.loaded_from.clone().unwrap_or_default(),
            problem: format!(
                "it has read {checked} bytes of its text, but {} has only {}: it was made from another file",
                path.display(),
                bytes.len()
            ),
        });
    }
    let mut crc = crc32fast::Hasher::new();
    if checked > 0 {
        crc.update(&bytes[..checked]);
        if crc.clone().finalize() != position.crc32 {
            return Err(Error::StateFile {
                path: options.loaded_from.clone().unwrap_or_default(),
                problem: format!(
                    "made from another text: the first {checked} bytes it read differ from those of {} \
                     (checksum {:08x} there, {:08x} in the state); resume it with the file it was made from",
                    path.display(),
                    crc.clone().finalize(),
                    position.crc32
                ),
            });
        }
        // The reader's running checksum starts at its first window.
        crc = crc32fast::Hasher::new();
        crc.update(&bytes[..start]);
    }
    let budget = options.max_tokens.unwrap_or(u64::MAX);
    let window_bytes = options.window_bytes.max(1);
    let prefill = session.window();
    let checkpoint_every = options.checkpoint_every.map(|n| n.max(1));
    let mut skip = if options.resume {
        position.tokens_past
    } else {
        0
    };
    let skipped_tokens = if options.resume { session.tokens() } else { 0 };

    let mut tokens = 0u64;
    let mut windows = 0u64;
    let mut compute = 0.0f64;
    let mut checkpoints = 0u64;
    let mut since_checkpoint = 0u64;
    let mut segments = Vec::new();
    let mut seg = (0.0f64, 0u64, position.nll_tokens);
    let mut nll = Vec::new();
    let (tx, rx) = mpsc::sync_channel::<Result<Piece>>(2);

    std::thread::scope(|scope| -> Result<()> {
        let path_r = path.clone();
        scope.spawn(move || {
            let mut offset = start;
            let mut crc = crc;
            // A state saved inside a window resumes with exactly that window.
            let mut forced_end = first_end;
            while offset < bytes.len() {
                let end = forced_end
                    .take()
                    .unwrap_or_else(|| cut(bytes, offset, window_bytes));
                let text = match std::str::from_utf8(&bytes[offset..end]) {
                    Ok(t) => t,
                    Err(e) => {
                        let _ = tx.send(Err(Error::File {
                            path: path_r.clone(),
                            problem: format!(
                                "invalid UTF-8 at byte {}: a language model reads text",
                                offset + e.valid_up_to()
                            ),
                        }));
                        return;
                    }
                };
                crc.update(&bytes[offset..end]);
                let piece = tokenizer.encode(text, offset == 0).map(|ids| Piece {
                    start: offset,
                    end,
                    crc_end: crc.clone().finalize(),
                    ids,
                });
                file.release_before(offset);
                let failed = piece.is_err();
                if tx.send(piece).is_err() || failed {
                    return;
                }
                offset = end;
            }
        });
        for piece in rx.iter() {
            let piece = piece?;
            windows += 1;
            let t0 = Instant::now();
            let mut at = skip.min(piece.ids.len() as u64) as usize;
            skip -= at as u64;
            while at < piece.ids.len() && tokens < budget {
                let mut n = (piece.ids.len() - at).min(prefill);
                n = n.min((budget - tokens).min(usize::MAX as u64) as usize);
                if let Some(every) = checkpoint_every {
                    n = n.min((every - since_checkpoint.min(every)).max(1) as usize);
                }
                let ids = &piece.ids[at..at + n];
                if options.perplexity {
                    nll.clear();
                    // The first token's score comes from the state alone (the last
                    // hidden vector), so a resumed run computes it exactly as an
                    // uninterrupted one does (`feed_scored`; on a GPU there).
                    session.feed_scored(ids, &mut nll)?;
                    for &x in &nll {
                        position.nll_sum += x;
                        position.nll_tokens += 1;
                        seg.0 += x;
                        seg.1 += 1;
                        if options.segment_tokens.is_some_and(|s| seg.1 >= s) {
                            segments.push(segment(seg));
                            seg = (0.0, 0, position.nll_tokens);
                        }
                    }
                } else {
                    session.feed(ids, Logits::None)?;
                }
                at += n;
                tokens += n as u64;
                since_checkpoint += n as u64;
                position.bytes = piece.end as u64;
                position.crc32 = piece.crc_end;
                let done = at == piece.ids.len();
                position.window_start = if done { piece.end } else { piece.start } as u64;
                position.tokens_past = if done { 0 } else { at as u64 };
                if let (Some(every), Some(cp)) = (checkpoint_every, &options.checkpoint_path) {
                    if since_checkpoint >= every {
                        let state = session.snapshot()?;
                        save_model_state(cp, model, &state, position)?;
                        checkpoints += 1;
                        since_checkpoint = 0;
                    }
                }
            }
            compute += t0.elapsed().as_secs_f64();
            let seconds = started.elapsed().as_secs_f64();
            let of_file = piece.end as f64 / bytes.len().max(1) as f64;
            let of_budget = options
                .max_tokens
                .map_or(0.0, |m| tokens as f64 / m.max(1) as f64);
            observer.progress(Progress {
                tokens,
                seconds,
                fraction: of_file.max(of_budget).min(1.0),
            });
            if tokens >= budget {
                break;
            }
        }
        drop(rx);
        Ok(())
    })?;
    if options.segment_tokens.is_some() && seg.1 > 0 {
        segments.push(segment(seg));
    }
    let wall = started.elapsed().as_secs_f64();
    let mean_nll = (position.nll_tokens > 0).then(|| position.nll_sum / position.nll_tokens as f64);
    Ok(LmStreamSummary {
        file: path,
        model: model.name().to_string(),
        backend: model.backend().name(),
        tokens,
        skipped_tokens,
        state_tokens: session.tokens(),
        bytes: position.bytes,
        windows,
        wall_seconds: wall,
        tokens_per_second: tokens as f64 / wall.max(1e-9),
        compute_seconds: compute,
        state_bytes: model.state_bytes(),
        peak_host_bytes: peak_resident_bytes(),
        predicted_tokens: position.nll_tokens,
        mean_nll,
        perplexity: mean_nll.map(f64::exp),
        segments,
        checkpoints,
    })
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
/// other than white space, after a line that ends in one line break. Within twice the target without one: before a space that
/// follows a letter or digit and precedes a letter (`foo| bar`), which byte-level BPE
/// also never merges across. A text with neither within eight times the target is cut
/// at a character boundary there (the one place its tokens may differ from the whole
/// file's), so a window's memory stays bounded whatever the text.
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
