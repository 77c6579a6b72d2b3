//! A context file, memory-mapped and read once from start to end.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};

use memmap2::{Advice, Mmap, UncheckedAdvice};

use crate::error::{Error, Result};

/// How the bytes of a context file become tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// UTF-8 text, split by the built-in word tokenizer.
    Text,
    /// Every byte is a token (ids 0–255).
    Bytes,
    /// Pre-tokenized: little-endian u32 token ids.
    U32,
}

impl FromStr for Format {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "text" => Ok(Format::Text),
            "bytes" => Ok(Format::Bytes),
            "u32" => Ok(Format::U32),
            _ => Err(Error::Config(format!(
                "unknown format `{s}` (expected text, bytes or u32)"
            ))),
        }
    }
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Bytes => "bytes",
            Format::U32 => "u32",
        }
    }

    /// The format an extension makes obvious, if any.
    pub fn from_extension(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "txt" | "md" | "text" | "json" | "csv" | "tsv" | "jsonl" | "html" | "xml" | "rs"
            | "py" | "c" | "h" | "cpp" | "log" => Some(Format::Text),
            "u32" | "tok" | "tokens" => Some(Format::U32),
            "bin" | "dat" | "raw" => Some(Format::Bytes),
            _ => None,
        }
    }
}

/// An open, validated, memory-mapped context file.
pub struct ContextFile {
    path: PathBuf,
    map: Mmap,
    format: Format,
    /// Bytes before this offset have been handed back to the kernel.
    released: AtomicUsize,
}

impl ContextFile {
    /// Opens `path`; `format` `None` infers it from the extension, or from whether
    /// the start of the file is valid UTF-8.
    pub fn open(path: &Path, format: Option<Format>) -> Result<Self> {
        crate::limits::regular_file(path)?;
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let bad = |problem: String| Error::File {
            path: path.to_path_buf(),
            problem,
        };
        if len == 0 {
            return Err(bad("the context file is empty".into()));
        }
        // SAFETY: read-only map; the engine assumes nobody truncates the file while it
        // streams (a truncation would be a SIGBUS, as with any mapped reader).
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let _ = map.advise(Advice::Sequential);
        let format = format
            .or_else(|| Format::from_extension(path))
            .unwrap_or_else(|| sniff(&map));
        if format == Format::U32 && len % 4 != 0 {
            return Err(bad(format!(
                "a u32 token file must have a length that is a multiple of 4 bytes, found {len} bytes \
                 ({} trailing)",
                len % 4
            )));
        }
        Ok(ContextFile {
            path: path.to_path_buf(),
            map,
            format,
            released: AtomicUsize::new(0),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn format(&self) -> Format {
        self.format
    }
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Gives the pages before `offset` back to the kernel: they are never read again,
    /// and keeping them would make resident memory grow with the file.
    pub fn release_before(&self, offset: usize) {
        const PAGE: usize = 4096;
        let end = offset / PAGE * PAGE;
        let start = self.released.fetch_max(end, Ordering::Relaxed);
        if end > start {
            // SAFETY: the range lies inside the read-only file mapping and is never
            // accessed again; DONTNEED on it only drops clean page-cache references.
            unsafe {
                let _ =
                    self.map
                        .unchecked_advise_range(UncheckedAdvice::DontNeed, start, end - start);
            }
        }
    }

    /// Touches one byte per page of `range`, so the kernel reads it from disk now, on
    /// the calling thread, rather than when the compute side gets to it.
    pub fn fault_in(&self, range: std::ops::Range<usize>) {
        let mut sum = 0u8;
        for i in range.step_by(4096) {
            sum = sum.wrapping_add(self.map[i]);
        }
        std::hint::black_box(sum);
    }
}

fn sniff(bytes: &[u8]) -> Format {
    let head = &bytes[..bytes.len().min(1 << 16)];
    match std::str::from_utf8(head) {
        Ok(_) => Format::Text,
        // A multi-byte character cut at the end of the sample is still text.
        Err(e) if e.error_len().is_none() => Format::Text,
        Err(_) => Format::Bytes,
    }
}
