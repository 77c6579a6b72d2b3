//! Guards for sizes that come from outside (file headers, options): a size is computed
//! with checked arithmetic and compared with the memory this machine has before
//! anything is allocated, so a hostile or mistaken input gets an error instead of an
//! abort. (Input files themselves are guarded by `input_file`.)

use crate::error::{Error, Result};
use crate::meminfo::MemInfo;

/// Allocations below this are not worth a read of `/proc/meminfo`.
const CHECK_FROM_BYTES: u64 = 64 << 20;

/// Fails unless `bytes` (`None`: the size overflowed) can be allocated now: it must fit
/// in the memory the kernel reports as available, so the process is refused up front
/// rather than killed by the OOM killer halfway through a run. `what` names the option
/// or tensor the size came from.
pub fn check_alloc(what: &str, bytes: Option<u64>) -> Result<u64> {
    let too_large = |problem: String| Error::TooLarge {
        what: what.to_string(),
        bytes,
        problem,
    };
    let Some(bytes) = bytes else {
        return Err(too_large("more than this machine can address".into()));
    };
    if bytes > isize::MAX as u64 {
        return Err(too_large("more than this machine can address".into()));
    }
    if bytes >= CHECK_FROM_BYTES {
        if let Some(info) = MemInfo::read() {
            if bytes > info.available_bytes {
                return Err(too_large(format!(
                    "but only {} bytes of memory are available ({} in all)",
                    info.available_bytes, info.total_bytes
                )));
            }
        }
    }
    Ok(bytes)
}

/// `n` f32 zeros, or an error naming `what`; the pages are the kernel's zero pages
/// until written, so a large state costs memory only where it is used.
pub fn try_zeroed_f32(what: &str, n: usize) -> Result<Vec<f32>> {
    let bytes = (n as u64).checked_mul(4);
    check_alloc(what, bytes)?;
    if n == 0 {
        return Ok(Vec::new());
    }
    let layout = std::alloc::Layout::array::<f32>(n).map_err(|_| Error::TooLarge {
        what: what.to_string(),
        bytes,
        problem: "more than this machine can address".into(),
    })?;
    // SAFETY: the layout has a non-zero size; a null pointer is handled below.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) } as *mut f32;
    if ptr.is_null() {
        return Err(Error::TooLarge {
            what: what.to_string(),
            bytes,
            problem: "the allocation failed".into(),
        });
    }
    // SAFETY: allocated by the global allocator with the layout of `n` f32s, all
    // initialised (zero bits are 0.0).
    Ok(unsafe { Vec::from_raw_parts(ptr, n, n) })
}

/// `n` copies of `value`, or an error naming `what`.
pub fn try_filled<T: Clone>(what: &str, n: usize, value: T) -> Result<Vec<T>> {
    let bytes = (n as u64).checked_mul(std::mem::size_of::<T>() as u64);
    check_alloc(what, bytes)?;
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| Error::TooLarge {
        what: what.to_string(),
        bytes,
        problem: "the allocation failed".into(),
    })?;
    v.resize(n, value);
    Ok(v)
}

/// Most characters of an input quoted back in a message: the rest is counted, not
/// shown, so a megabyte of bad input gives a line of error.
pub const QUOTE_CHARS: usize = 64;

/// `s` as quoted in messages: whole when short, else its start and its length.
pub fn cut(s: &str) -> String {
    match s.char_indices().nth(QUOTE_CHARS) {
        None => s.to_string(),
        Some((at, _)) => format!("{}… ({} bytes in all)", &s[..at], s.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_that_overflow_or_exceed_memory_are_refused() {
        assert!(check_alloc("x", None).is_err());
        assert!(check_alloc("x", Some(u64::MAX)).is_err());
        let e = check_alloc("--state-bytes", Some(1 << 50)).unwrap_err();
        assert!(e.to_string().contains("--state-bytes"), "{e}");
        assert!(e.to_string().contains("1125899906842624"), "{e}");
        assert_eq!(check_alloc("x", Some(1024)).unwrap(), 1024);
        assert_eq!(try_zeroed_f32("x", 3).unwrap(), vec![0.0; 3]);
        assert!(try_zeroed_f32("x", usize::MAX / 2).is_err());
        assert!(try_filled("x", usize::MAX / 8, 0u64).is_err());
    }

    #[test]
    fn long_quotes_are_cut() {
        assert_eq!(cut("abc"), "abc");
        let long = "é".repeat(10_000);
        let shown = cut(&long);
        assert!(shown.len() < 200, "{shown}");
        assert!(shown.contains("20000 bytes"), "{shown}");
    }
}
