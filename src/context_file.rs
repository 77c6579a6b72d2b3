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
    /// The name `--format` takes: `text`, `bytes` or `u32`.
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
    /// Kept open to see its length change (a file cut short while it is read).
    file: File,
    /// Registered with the SIGBUS guard for as long as the map lives.
    guard: Option<shrink_guard::Slot>,
    map: Mmap,
    format: Format,
    /// Bytes before this offset have been handed back to the kernel.
    released: AtomicUsize,
}

impl ContextFile {
    /// Opens `path`; `format` `None` infers it from the extension, or from whether
    /// the start of the file is valid UTF-8.
    pub fn open(path: impl AsRef<Path>, format: Option<Format>) -> Result<Self> {
        let path = path.as_ref();
        let (file, meta) = crate::input_file::open_regular(path)?;
        let len = meta.len();
        let bad = |problem: String| Error::File {
            path: path.to_path_buf(),
            problem,
        };
        if len == 0 {
            return Err(bad("the context file is empty".into()));
        }
        // SAFETY: read-only map. A file cut short under it would make a read past the
        // new end a SIGBUS; the guard registered below turns that into zeros read, and
        // `check_intact` into an error naming the file.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let guard = shrink_guard::register(map.as_ptr() as usize, map.len());
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
            file,
            guard,
            map,
            format,
            released: AtomicUsize::new(0),
        })
    }

    /// The path the file was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The format given or inferred at open.
    pub fn format(&self) -> Format {
        self.format
    }
    /// The whole file, mapped; pages are read in on first touch.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }
    /// Size of the file in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }
    /// Never true for an opened file (empty files are refused); here for `len`'s sake.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Fails if the file has become shorter than when it was opened: what was read
    /// since may be zeros in place of the bytes that are gone. Called after each
    /// window is read, before anything read from it is kept.
    pub fn check_intact(&self) -> Result<()> {
        let now = self
            .file
            .metadata()
            .map_err(|e| Error::io(&self.path, e))?
            .len();
        if now < self.map.len() as u64 {
            return Err(Error::File {
                path: self.path.clone(),
                problem: format!(
                    "the file shrank from {} to {now} bytes while it was read",
                    self.map.len()
                ),
            });
        }
        Ok(())
    }

    /// Fails at the first byte of `from..` that is not UTF-8, naming its offset: one
    /// pass at the speed of reading the file, so a bad byte deep in a long text is found
    /// before the hours of computing that would reach it. The pages read are given back
    /// as it goes, so resident memory does not grow with the file.
    pub fn check_utf8(&self, from: usize) -> Result<()> {
        const STEP: usize = 8 << 20;
        let bytes = &self.map[..];
        let mut at = from.min(bytes.len());
        // Back to a character start, so a resumed offset inside none is not blamed.
        while at > 0 && at < bytes.len() && (bytes[at] as i8) < -0x40 {
            at -= 1;
        }
        while at < bytes.len() {
            let end = at.saturating_add(STEP).min(bytes.len());
            let next = match std::str::from_utf8(&bytes[at..end]) {
                Ok(_) => end,
                // A character cut by the step's end: it starts the next step.
                Err(e) if e.error_len().is_none() && end < bytes.len() => at + e.valid_up_to(),
                Err(e) => {
                    return Err(Error::File {
                        path: self.path.clone(),
                        problem: format!(
                            "invalid UTF-8 at byte {} (found before streaming; text must be \
                             UTF-8 throughout: --model random-features --format bytes reads any file)",
                            at + e.valid_up_to()
                        ),
                    })
                }
            };
            let (start, stop) = (at / 4096 * 4096, next / 4096 * 4096);
            if stop > start {
                // SAFETY: the range lies inside the read-only file mapping; DONTNEED only
                // drops clean page-cache references, which a later read faults in again.
                unsafe {
                    let _ = self.map.unchecked_advise_range(
                        UncheckedAdvice::DontNeed,
                        start,
                        stop - start,
                    );
                }
            }
            at = next;
        }
        Ok(())
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

impl Drop for ContextFile {
    fn drop(&mut self) {
        if let Some(slot) = self.guard.take() {
            shrink_guard::unregister(slot);
        }
    }
}

/// A SIGBUS handler for mapped context files: a read past the end of a file that was
/// cut short under its map faults; for an address inside a registered map, the handler
/// maps zero pages over the rest of it and the read goes on (zeros), so the process
/// lives to report the shrunken file (`check_intact`). Faults elsewhere get the default
/// action. Costs nothing per read, unlike copying the file through a buffer.
mod shrink_guard {
    use std::sync::atomic::{AtomicUsize, Ordering};

    const SLOTS: usize = 64;
    #[allow(clippy::declare_interior_mutable_const)]
    const EMPTY: AtomicUsize = AtomicUsize::new(0);
    /// Start and length of each registered map; a start of 0 is a free slot.
    static STARTS: [AtomicUsize; SLOTS] = [EMPTY; SLOTS];
    static LENS: [AtomicUsize; SLOTS] = [EMPTY; SLOTS];

    pub struct Slot(usize);

    /// Registers `[start, start + len)`; `None` where the guard cannot be installed
    /// or every slot is taken (the map then works unguarded, as before).
    pub fn register(start: usize, len: usize) -> Option<Slot> {
        if start == 0 || len == 0 || !install() {
            return None;
        }
        for i in 0..SLOTS {
            // The length first: a handler that sees the start also sees its length.
            if STARTS[i].load(Ordering::Acquire) == 0 {
                LENS[i].store(len, Ordering::Release);
                if STARTS[i]
                    .compare_exchange(0, start, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return Some(Slot(i));
                }
            }
        }
        None
    }

    pub fn unregister(slot: Slot) {
        STARTS[slot.0].store(0, Ordering::Release);
    }

    #[cfg(target_os = "linux")]
    fn install() -> bool {
        static INSTALLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *INSTALLED.get_or_init(|| {
            // SAFETY: a zeroed sigaction with our handler, SA_SIGINFO for the fault
            // address; installed once, before any registered map is read.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = handler as *const () as usize;
                action.sa_flags = libc::SA_SIGINFO;
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()) == 0
            }
        })
    }

    #[cfg(not(target_os = "linux"))]
    fn install() -> bool {
        false
    }

    #[cfg(target_os = "linux")]
    extern "C" fn handler(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
        // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers. Only
        // atomics, sysconf and mmap are used here, all safe in a signal handler.
        unsafe {
            let addr = (*info).si_addr() as usize;
            let page = libc::sysconf(libc::_SC_PAGESIZE).max(1) as usize;
            for i in 0..SLOTS {
                let start = STARTS[i].load(Ordering::Acquire);
                let len = LENS[i].load(Ordering::Acquire);
                if start != 0 && addr >= start && addr < start + len {
                    let from = addr / page * page;
                    let r = libc::mmap(
                        from as *mut libc::c_void,
                        start + len - from,
                        libc::PROT_READ,
                        libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    );
                    if r != libc::MAP_FAILED {
                        return;
                    }
                }
            }
            // Not a guarded map: the default action, taken when the access faults again.
            libc::signal(libc::SIGBUS, libc::SIG_DFL);
        }
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
