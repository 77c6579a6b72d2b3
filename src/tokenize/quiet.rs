//! Panics of the tokenizers crate, caught and turned into errors. The default panic
//! hook would first print their text (a line of a dependency's source) on stderr,
//! before the error the user is meant to read, so a hook installed once for the whole
//! process stays quiet while the panicking thread is inside [`catch`], and passes
//! every other panic to the hook that was there before. The flag is per thread: the
//! stream tokenizes on its reader thread while other threads may panic for real.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

static INSTALL: Once = Once::new();

/// Runs `f`; `None` if it panicked, with nothing printed.
pub(crate) fn catch<T>(f: impl FnOnce() -> T) -> Option<T> {
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // A thread being torn down has no flag left: it is not in `catch`.
            if !QUIET.try_with(Cell::get).unwrap_or(false) {
                previous(info);
            }
        }));
    });
    let outer = QUIET.with(|q| q.replace(true));
    // The caller reports the panic as an error; what the tokenizer keeps between
    // calls is read-only but for a cache of words, which it tolerates losing.
    let result = catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(outer));
    result.ok()
}
