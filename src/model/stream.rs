//! The one place that streams a file into the model: memory-mapped, read once,
//! sequentially, in windows of fixed size. (When the scheduler of `ltm-engine run`
//! lands, this is the loop to replace with it.)

use std::path::Path;
use std::time::Instant;

use super::MemoryModel;
use crate::error::{Error, Result};

/// What streaming a file did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct StreamStats {
    pub bytes: u64,
    /// Tokens of the built-in tokenizer (word pieces and punctuation).
    pub tokens: u64,
    /// Words written into the memory (key–value pairs).
    pub writes: u64,
    pub seconds: f64,
}

/// Streams `path` through `model` in windows of `window_bytes`, calling `inspect` on
/// each window first (e.g. to check a file format as it goes by). Writes are sent to
/// the backend `window_tokens` at a time.
pub fn stream_file(
    model: &mut MemoryModel,
    path: &Path,
    window_bytes: usize,
    window_tokens: usize,
    mut inspect: impl FnMut(&[u8]) -> Result<()>,
) -> Result<StreamStats> {
    let start = Instant::now();
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut writer = model.writer(window_tokens);
    if len > 0 {
        // SAFETY: the map is read-only and private to this call; a file truncated by
        // another process meanwhile is outside what this tool guards against.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        #[cfg(unix)]
        let _ = map.advise(memmap2::Advice::Sequential);
        for window in map.chunks(window_bytes.max(1)) {
            inspect(window)?;
            writer.feed(model, window)?;
        }
    }
    writer.finish(model)?;
    Ok(StreamStats {
        bytes: len,
        tokens: writer.tokens(),
        writes: writer.writes(),
        seconds: start.elapsed().as_secs_f64(),
    })
}
