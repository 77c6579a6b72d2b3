//! The built-in memory model: training-free, deterministic for a seed, nothing to
//! download. It writes every word of a text into the fixed-size state under a sparse
//! hashed key of the words before it in its line, and answers "which word followed
//! this line prefix?" by one read of the state, decoded to the exact word.
//!
//! - tokens: [`tokenizer`] (words of `0-9 A-Z a-z _`, at most 16 bytes a piece);
//! - keys: [`keys`] (hash of up to `context` preceding words of the line → one head,
//!   `active` rows, weights ±1/√active);
//! - values: [`codec`] (the word's bytes as biorthogonal codewords plus a check symbol);
//! - memory: the gated delta rule with sparse keys ([`crate::backend::sparse`]), g = 0.
//!
//! Nothing else is kept: everything the model knows about the text is in the state,
//! whose size is `heads × rows × VALUE_DIM × 4` bytes, chosen with
//! [`ModelConfig::with_state_bytes`].

pub mod capacity;
pub mod codec;
pub mod keys;
pub mod mix;
pub mod streamed;

/// The memory model's word rule (it lives with the other rules in `crate::tokenize`).
pub use crate::tokenize::words as tokenizer;
pub use streamed::{model_name, MemoryStream};

use rayon::prelude::*;

use crate::backend::sparse::{SparseBackend, SparseKeys, SparseWrites};
use crate::backend::{sparse_backend_for, Device};
use crate::config::MemoryConfig;
use crate::error::{Error, Result};
use crate::state::State;
use codec::{Decoded, ValueCodec, VALUE_DIM};
use keys::{KeySpace, LineContext, MAX_CONTEXT};
use mix::hash_bytes;
use tokenizer::{Token, Tokenizer};

/// Most rows a key may have.
pub const MAX_ACTIVE: usize = 64;

/// The model's settings. Every field goes into the state's fingerprint.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// Heads of the state; each key lives in one head, heads are written in parallel.
    pub heads: usize,
    /// Rows per head (the state's `K`).
    pub rows: usize,
    /// Rows per key (`s`).
    pub active: usize,
    /// Words of line context a key is made of.
    pub context: usize,
    /// Write strength β of every word.
    pub beta: f32,
    /// Seed of the hashes, the key rows and the value code; part of the state's
    /// fingerprint.
    pub seed: u64,
}

impl ModelConfig {
    /// What `--state-bytes` defaults to: 256 MiB.
    pub const DEFAULT_STATE_BYTES: u64 = 256 << 20;
    /// Heads unless set otherwise.
    pub const DEFAULT_HEADS: usize = 2;
    /// Rows per key (`s`) unless set otherwise: see the table of `s` in docs/memory-model.md.
    pub const DEFAULT_ACTIVE: usize = 16;
    /// Words of line context per key unless set otherwise.
    pub const DEFAULT_CONTEXT: usize = 2;
    /// Write strength unless set otherwise: chosen by the capacity measurements (docs/memory-model.md).
    pub const DEFAULT_BETA: f32 = 0.25;
    /// Seed unless set otherwise (`ltm-mem` in ASCII).
    pub const DEFAULT_SEED: u64 = 0x006c_746d_2d6d_656d;

    /// Bytes of one row: `VALUE_DIM` f32 values.
    pub const ROW_BYTES: u64 = VALUE_DIM as u64 * 4;

    /// The default model with as many rows as fit in `bytes` of state.
    pub fn with_state_bytes(bytes: u64) -> Result<Self> {
        Self::with_state_bytes_and_heads(bytes, Self::DEFAULT_HEADS)
    }

    /// The default model with `heads` heads sharing `bytes` of state.
    pub fn with_state_bytes_and_heads(bytes: u64, heads: usize) -> Result<Self> {
        if heads == 0 {
            return Err(Error::Config(
                "the memory model needs at least 1 head".into(),
            ));
        }
        let rows = bytes / (heads as u64 * Self::ROW_BYTES);
        let config = ModelConfig {
            heads,
            rows: rows as usize,
            active: Self::DEFAULT_ACTIVE,
            context: Self::DEFAULT_CONTEXT,
            beta: Self::DEFAULT_BETA,
            seed: Self::DEFAULT_SEED,
        };
        if rows < config.active as u64 || rows > u32::MAX as u64 {
            return Err(Error::Config(format!(
                "--state-bytes {bytes}: the memory model needs between {} and {} bytes \
                 ({} heads of {} active rows of {} bytes at least; at most 2^32 rows a head)",
                heads as u64 * config.active as u64 * Self::ROW_BYTES,
                heads as u64 * u32::MAX as u64 * Self::ROW_BYTES,
                heads,
                config.active,
                Self::ROW_BYTES
            )));
        }
        Ok(config)
    }

    /// Bytes of the state this configuration makes.
    pub fn state_bytes(&self) -> u64 {
        (self.heads as u64)
            .saturating_mul(self.rows as u64)
            .saturating_mul(Self::ROW_BYTES)
    }

    /// Checks heads, rows, rows per key, context length and β against what the model
    /// supports.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(format!("memory model: {m}")));
        if self.heads == 0 || !(1..=MAX_ACTIVE).contains(&self.active) {
            return bad(format!(
                "heads must be at least 1 and active rows 1..={MAX_ACTIVE}, found {} and {}",
                self.heads, self.active
            ));
        }
        if self.rows < self.active || self.rows > u32::MAX as usize {
            return bad(format!(
                "rows per head must be between active ({}) and 2^32 − 1, found {}",
                self.active, self.rows
            ));
        }
        if !(1..=MAX_CONTEXT).contains(&self.context) {
            return bad(format!(
                "context must be 1..={MAX_CONTEXT} words, found {}",
                self.context
            ));
        }
        if !(self.beta > 0.0 && self.beta <= 1.0) {
            return bad(format!("beta must be in (0, 1], found {}", self.beta));
        }
        Ok(())
    }

    /// The memory this model runs on: `[1, heads, rows, VALUE_DIM]`, reads unscaled,
    /// fingerprinted with everything that decides what a state means.
    pub fn memory_config(&self) -> MemoryConfig {
        let mut tag = Vec::new();
        tag.extend_from_slice(b"ltm-engine/memory-model/v1");
        for x in [self.seed, self.active as u64, self.context as u64] {
            tag.extend_from_slice(&x.to_le_bytes());
        }
        tag.extend_from_slice(&self.beta.to_bits().to_le_bytes());
        MemoryConfig::new(self.heads, self.rows, VALUE_DIM)
            .with_scale(1.0)
            .with_model(hash_bytes(0, &tag))
    }

    fn key_space(&self) -> KeySpace {
        KeySpace {
            seed: self.seed,
            heads: self.heads,
            rows: self.rows,
            active: self.active,
        }
    }
}

/// Fails unless `prefix` can be asked ([`MemoryModel::next_words`]): its last line
/// must hold a word to make a key of. Needs no model, so a command can check its
/// queries before a long stream rather than lose them after it.
pub fn check_query(prefix: &str) -> Result<()> {
    let line = prefix.rsplit('\n').next().unwrap_or("");
    let mut tok = Tokenizer::new();
    let mut words = 0usize;
    let mut count = |t: Token<'_>| words += matches!(t, Token::Word(_)) as usize;
    tok.feed(line.as_bytes(), &mut count);
    tok.finish(&mut count);
    if words == 0 {
        return Err(no_key(prefix));
    }
    Ok(())
}

fn no_key(prefix: &str) -> Error {
    Error::Query(format!(
        "`{}` has no word to make a key of (words are runs of 0-9 A-Z a-z _ in its last line)",
        crate::limits::cut(prefix)
    ))
}

/// The model with its state.
pub struct MemoryModel {
    config: ModelConfig,
    memory: MemoryConfig,
    keys: KeySpace,
    codec: ValueCodec,
    backend: Box<dyn SparseBackend>,
    state: State,
}

impl MemoryModel {
    /// An empty memory on `device`.
    pub fn new(config: ModelConfig, device: Device) -> Result<Self> {
        config.validate()?;
        let what = format!(
            "the memory model's state (--state-bytes {})",
            config.state_bytes()
        );
        let mut state = State::try_zeros(&config.memory_config(), 1, &what)?;
        advise_huge_pages(state.values_mut());
        Self::with_state(config, device, state)
    }

    /// A model continuing from `state` (e.g. loaded from a state file).
    pub fn with_state(config: ModelConfig, device: Device, state: State) -> Result<Self> {
        config.validate()?;
        let memory = config.memory_config();
        state.check_matches(&memory, 1)?;
        Ok(MemoryModel {
            keys: config.key_space(),
            codec: ValueCodec::new(config.seed),
            backend: sparse_backend_for(device)?,
            memory,
            config,
            state,
        })
    }

    /// The model's configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }
    /// The configuration state files are saved and loaded with.
    pub fn memory_config(&self) -> &MemoryConfig {
        &self.memory
    }
    /// The state: every word written so far, `[1, H, K, V]`.
    pub fn state(&self) -> &State {
        &self.state
    }
    /// Records how many tokens of its context the state holds (state files carry it).
    pub fn set_tokens_seen(&mut self, tokens: u64) {
        self.state.set_tokens_seen(tokens);
    }
    /// Records which bytes of which context the state holds (state files carry it).
    pub fn set_source(&mut self, source: crate::state::Source) {
        self.state.set_source(source);
    }
    /// The state, for saving or handing on.
    pub fn into_state(self) -> State {
        self.state
    }
    /// The sparse backend's description, e.g. `cpu (avx512, 2 threads)`.
    pub fn backend_name(&self) -> String {
        self.backend.sparse_name()
    }

    /// A writer that streams text into this model, buffering up to `batch_writes`
    /// writes between calls to the backend (its buffers are fixed at that size).
    pub fn writer(&self, batch_writes: usize) -> StreamWriter {
        let batch = batch_writes.max(1);
        let (h, s) = (self.config.heads, self.config.active);
        StreamWriter {
            tokenizer: Tokenizer::new(),
            sink: Sink {
                context: LineContext::new(self.config.context),
                batch,
                len: 0,
                rows: vec![0; batch * h * s],
                weights: vec![0.0; batch * h * s],
                values: vec![0.0; batch * h * VALUE_DIM],
                beta: vec![0.0; batch * h],
                writes: 0,
                error: None,
            },
        }
    }

    /// For each line prefix, the word the memory holds as following it (punctuation
    /// in the prefix is ignored, as when writing). Reads are batched and parallel.
    pub fn next_words(&self, prefixes: &[&str]) -> Result<Vec<Decoded>> {
        let (h, s, v) = (self.config.heads, self.config.active, VALUE_DIM);
        let n = prefixes.len();
        let mut rows = vec![0u32; n * h * s];
        let mut weights = vec![0.0f32; n * h * s];
        let mut heads = vec![0usize; n];
        for (i, prefix) in prefixes.iter().enumerate() {
            let line = prefix.rsplit('\n').next().unwrap_or("");
            let mut ctx = LineContext::new(self.config.context);
            let mut tok = Tokenizer::new();
            let mut push = |t: Token<'_>| {
                if let Token::Word(w) = t {
                    ctx.push(self.keys.word_hash(w));
                }
            };
            tok.feed(line.as_bytes(), &mut push);
            tok.finish(&mut push);
            let key = ctx.key(self.config.seed).ok_or_else(|| no_key(prefix))?;
            let mut r = [0u32; MAX_ACTIVE];
            let mut w = [0f32; MAX_ACTIVE];
            let head = self.keys.address(key, &mut r[..s], &mut w[..s]);
            let at = (i * h + head) * s;
            rows[at..at + s].copy_from_slice(&r[..s]);
            weights[at..at + s].copy_from_slice(&w[..s]);
            heads[i] = head;
        }
        let queries = SparseKeys {
            batch: 1,
            tokens: n,
            active: s,
            rows: &rows,
            weights: &weights,
        };
        let mut out = vec![0.0f32; n * h * v];
        self.backend
            .sparse_read_into(&self.memory, &queries, &self.state, &mut out)?;
        Ok((0..n)
            .into_par_iter()
            .map(|i| {
                let at = (i * h + heads[i]) * v;
                self.codec.decode(&out[at..at + v])
            })
            .collect())
    }

    /// The value code (for experiments that decode reads themselves).
    pub fn codec(&self) -> &ValueCodec {
        &self.codec
    }
}

/// Asks Linux to back a large, not yet touched state with huge pages: writes land on
/// random rows, and with 4 KiB pages nearly every row of a multi-GiB state is also a TLB
/// miss. A hint only; nothing changes where it is refused or on other systems.
fn advise_huge_pages(values: &mut [f32]) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = values.as_mut_ptr() as usize;
        let end = start + std::mem::size_of_val(values);
        let (a, b) = (start.next_multiple_of(HUGE), end / HUGE * HUGE);
        if b > a {
            // SAFETY: [a, b) lies inside `values`, which this function borrows mutably;
            // MADV_HUGEPAGE changes how pages are backed, never their contents.
            unsafe { libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = values;
}

/// Streams text into a [`MemoryModel`] with fixed buffers.
pub struct StreamWriter {
    tokenizer: Tokenizer,
    sink: Sink,
}

impl StreamWriter {
    /// Tokenizes `bytes` and writes its words; the text may be cut anywhere between
    /// calls.
    pub fn feed(&mut self, model: &mut MemoryModel, bytes: &[u8]) -> Result<()> {
        let sink = &mut self.sink;
        self.tokenizer.feed(bytes, |t| sink.push(model, t));
        sink.take_error()
    }

    /// Writes whatever is buffered, so the state holds every word fed so far; at a
    /// line end that is a state of the text up to there.
    pub fn flush(&mut self, model: &mut MemoryModel) -> Result<()> {
        self.sink.take_error()?;
        self.sink.flush(model)
    }

    /// Ends the text and writes whatever is buffered.
    pub fn finish(&mut self, model: &mut MemoryModel) -> Result<()> {
        let sink = &mut self.sink;
        self.tokenizer.finish(|t| sink.push(model, t));
        sink.take_error()?;
        sink.flush(model)
    }

    /// Tokens of the text so far (word pieces and punctuation).
    pub fn tokens(&self) -> u64 {
        self.tokenizer.tokens()
    }
    /// Words written into the memory so far (each is one key–value pair).
    pub fn writes(&self) -> u64 {
        self.sink.writes
    }
}

/// A batch of buffered writes, `[1, batch, heads, *]`: what one call to the backend
/// writes (a "window" is a piece of the context; a window's words may take several
/// batches).
struct Sink {
    context: LineContext,
    batch: usize,
    len: usize,
    rows: Vec<u32>,
    weights: Vec<f32>,
    values: Vec<f32>,
    beta: Vec<f32>,
    writes: u64,
    error: Option<Error>,
}

impl Sink {
    fn push(&mut self, model: &mut MemoryModel, token: Token<'_>) {
        if self.error.is_some() {
            return;
        }
        let word = match token {
            Token::Newline => return self.context.new_line(),
            Token::Word(w) => w,
        };
        if let Some(key) = self.context.key(model.config.seed) {
            let (h, s) = (model.config.heads, model.config.active);
            let slot = self.len * h;
            self.beta[slot..slot + h].fill(0.0);
            let mut r = [0u32; MAX_ACTIVE];
            let mut w = [0f32; MAX_ACTIVE];
            let head = model.keys.address(key, &mut r[..s], &mut w[..s]);
            let at = (slot + head) * s;
            self.rows[at..at + s].copy_from_slice(&r[..s]);
            self.weights[at..at + s].copy_from_slice(&w[..s]);
            let at = (slot + head) * VALUE_DIM;
            model
                .codec
                .encode(word, &mut self.values[at..at + VALUE_DIM]);
            self.beta[slot + head] = model.config.beta;
            self.len += 1;
            self.writes += 1;
            if self.len == self.batch {
                if let Err(e) = self.flush(model) {
                    self.error = Some(e);
                }
            }
        }
        self.context.push(model.keys.word_hash(word));
    }

    fn flush(&mut self, model: &mut MemoryModel) -> Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        let (h, s) = (model.config.heads, model.config.active);
        let n = self.len;
        let writes = SparseWrites {
            keys: SparseKeys {
                batch: 1,
                tokens: n,
                active: s,
                rows: &self.rows[..n * h * s],
                weights: &self.weights[..n * h * s],
            },
            v: (&self.values[..n * h * VALUE_DIM]).into(),
            beta: (&self.beta[..n * h]).into(),
        };
        model
            .backend
            .sparse_write(&model.memory, &writes, &mut model.state)?;
        self.len = 0;
        Ok(())
    }

    fn take_error(&mut self) -> Result<()> {
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
