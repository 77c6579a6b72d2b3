//! The one place that streams a file into the model: read once, sequentially, into one
//! reused buffer of fixed size, so resident memory is the state plus that buffer however
//! long the file (a memory map would leave every page it touched resident). When the
//! scheduler of `ltm-engine run` lands, this is the loop to replace with it.

use std::io::Read;
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
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut writer = model.writer(window_tokens);
    let mut buf = vec![0u8; window_bytes.max(1)];
    let mut bytes = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(path, e)),
        };
        bytes += n as u64;
        inspect(&buf[..n])?;
        writer.feed(model, &buf[..n])?;
    }
    writer.finish(model)?;
    Ok(StreamStats {
        bytes,
        tokens: writer.tokens(),
        writes: writer.writes(),
        seconds: start.elapsed().as_secs_f64(),
    })
}
