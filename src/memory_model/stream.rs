//! Streaming a file into the model, through the scheduler's text path
//! ([`crate::stream::text_memory`]): the file is mapped and read once, the pages behind
//! the writer are given back, so resident memory is the state plus fixed buffers
//! however long the file.

use std::path::Path;

use super::MemoryModel;
use crate::error::Result;
use crate::stream::scheduler::{Quiet, StreamOptions};
use crate::stream::text_memory::stream_text_into_memory;
use crate::stream::{ContextFile, Format};

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
