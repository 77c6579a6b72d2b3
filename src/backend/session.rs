//! A memory opened on a backend: the state lives where the backend computes, and the
//! caller feeds it windows and reads what it returns. A multi-layer model holds one
//! session per layer.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::MemoryConfig;
use crate::error::Result;
use crate::inputs::{ForwardInputs, InputRows};
use crate::state::State;

use super::Backend;

/// One memory (a batch of sequences' states) held by a backend between calls.
pub trait MemorySession: Send {
    /// The memory's shape.
    fn config(&self) -> &MemoryConfig;
    /// Tokens written into each sequence so far.
    fn tokens_seen(&self) -> u64;
    /// Streams a window through the memory (chunked form): reads `o: [B, T, H, V]`
    /// into `out`, state updated in place.
    fn feed(&mut self, rows: &dyn InputRows, out: &mut [f32]) -> Result<()>;
    /// The same for a few tokens at a time (generation): token by token through the
    /// recurrence. Agrees with [`MemorySession::feed`] within f32 rounding.
    fn decode(&mut self, inputs: &ForwardInputs<'_>, out: &mut [f32]) -> Result<()>;
    /// A copy of the state on the host (for checkpoints); the session goes on.
    fn snapshot(&self) -> Result<State>;
    /// Ends the session and hands its state back on the host.
    fn into_state(self: Box<Self>) -> Result<State>;
}

/// Counts host copies of whole states made by sessions (snapshots and hand-backs), so
/// a test can show that streaming copies a state only when asked to.
static STATE_COPIES: AtomicU64 = AtomicU64::new(0);

/// Whole-state copies to the host made by sessions since the process started.
pub fn state_copies() -> u64 {
    STATE_COPIES.load(Ordering::Relaxed)
}

pub(crate) fn count_state_copy() {
    STATE_COPIES.fetch_add(1, Ordering::Relaxed);
}

/// A session whose state lives in host memory: any backend whose `forward_rows`
/// works on a host [`State`] (the CPU's).
pub struct HostSession<'a> {
    backend: &'a dyn Backend,
    config: MemoryConfig,
    state: State,
}

impl<'a> HostSession<'a> {
    /// Opens `state` (checked against `config`) on `backend`.
    pub fn new(backend: &'a dyn Backend, config: &MemoryConfig, state: State) -> Result<Self> {
        config.validate()?;
        state.check_matches(config, state.batch())?;
        Ok(HostSession {
            backend,
            config: config.clone(),
            state,
        })
    }
}

impl MemorySession for HostSession<'_> {
    fn config(&self) -> &MemoryConfig {
        &self.config
    }

    fn tokens_seen(&self) -> u64 {
        self.state.tokens_seen()
    }

    fn feed(&mut self, rows: &dyn InputRows, out: &mut [f32]) -> Result<()> {
        self.backend
            .forward_rows(&self.config, rows, &mut self.state, out)
    }

    fn decode(&mut self, inputs: &ForwardInputs<'_>, out: &mut [f32]) -> Result<()> {
        self.backend
            .decode_into(&self.config, inputs, &mut self.state, out)
    }

    fn snapshot(&self) -> Result<State> {
        count_state_copy();
        // O(1): the clone shares the values until the session writes again.
        Ok(self.state.clone())
    }

    fn into_state(self: Box<Self>) -> Result<State> {
        count_state_copy();
        Ok(self.state)
    }
}
