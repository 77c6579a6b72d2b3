//! Saving a sequence's whole state (every layer) and where it stands in the text it
//! was read from, so a long context is read once and continued, queried or resumed.
//!
//! Layout (little-endian): magic `LTMLMST1`; format version `u32`; model fingerprint
//! `u64`; layers, value heads, `K`, `V`, conv values per layer, hidden size (`u32`
//! each); tokens `u64`; whether the last hidden vector is present `u32`; the source
//! position: bytes read `u64`, CRC-32 of those bytes `u32`, start of the window the
//! state stands in `u64`, tokens of that window fed `u64`, NLL sum `f64`, NLL tokens `u64`; CRC-32 of all of the above `u32`. Then the payload (per layer the
//! memory `[HV, K, V]` then the conv cache, then the last hidden vector), f32, and its
//! CRC-32 `u32`. The header is checked field by field before anything is allocated, and
//! the payload is read into place with a running checksum (no second copy in memory).

use std::io::{BufReader, Read, Write};
use std::path::Path;

use crate::atomic_file::write_atomically;
use crate::error::{Error, Result};
use crate::state::State;

use super::model::LanguageModel;
use super::state::{LayerState, ModelState};

const MAGIC: &[u8; 8] = b"LTMLMST1";
/// Version of the layout above.
pub const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 8 + 6 * 4 + 8 + 4 + 8 + 4 + 8 + 8 + 8 + 8 + 4;

/// Most tokens a state may have fed: far beyond any text, low enough that a session's
/// counts add up without overflow and print exactly as JSON numbers.
const MAX_TOKENS: u64 = 1 << 53;

/// Where a state stands in the text it was read from: what `--resume` checks and
/// continues, and the running perplexity tally.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SourcePosition {
    /// Bytes of the source read: up to the end of the window in which the state
    /// stands (all of them fed, or `tokens_past` tokens of the window from
    /// `window_start` fed).
    pub bytes: u64,
    /// CRC-32 of those bytes: a resumed run must be reading the same text.
    pub crc32: u32,
    /// Start of the window in which the state stands (`bytes` when it stands at a
    /// window's end).
    pub window_start: u64,
    /// Tokens of the window from `window_start` already fed (0 at a window's end).
    pub tokens_past: u64,
    /// Sum of the negative log-likelihoods (nats) of the tokens predicted so far.
    pub nll_sum: f64,
    /// Tokens predicted so far (in that sum).
    pub nll_tokens: u64,
}

/// The most bytes of a file [`save_model_state`] writes for a state of `model` (a
/// state without its last hidden vector takes that much less).
pub fn file_bytes(model: &LanguageModel) -> u64 {
    HEADER_LEN as u64 + model.state_bytes() as u64 + 4
}

/// Saves `state` of `model` atomically: an earlier file at `path` stays whole until
/// the new one is complete.
pub fn save_model_state(
    path: impl AsRef<Path>,
    model: &LanguageModel,
    state: &ModelState,
    position: &SourcePosition,
) -> Result<()> {
    let path = path.as_ref();
    state.check_matches(model)?;
    let header = header_bytes(model, state, position);
    write_atomically(path, |w| {
        w.write_all(&header)?;
        let mut crc = crc32fast::Hasher::new();
        let mut put = |values: &[f32]| -> std::io::Result<()> {
            for chunk in values.chunks(1 << 16) {
                let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
                crc.update(&bytes);
                w.write_all(&bytes)?;
            }
            Ok(())
        };
        for layer in &state.layers {
            put(layer.memory.values())?;
            put(&layer.conv)?;
        }
        if let Some(h) = &state.last_hidden {
            put(h)?;
        }
        w.write_all(&crc.finalize().to_le_bytes())
    })
}

fn header_bytes(model: &LanguageModel, state: &ModelState, p: &SourcePosition) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LEN);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    h.extend_from_slice(&model.fingerprint().to_le_bytes());
    for v in shape_fields(model) {
        h.extend_from_slice(&v.to_le_bytes());
    }
    h.extend_from_slice(&state.tokens.to_le_bytes());
    h.extend_from_slice(&(state.last_hidden.is_some() as u32).to_le_bytes());
    h.extend_from_slice(&p.bytes.to_le_bytes());
    h.extend_from_slice(&p.crc32.to_le_bytes());
    h.extend_from_slice(&p.window_start.to_le_bytes());
    h.extend_from_slice(&p.tokens_past.to_le_bytes());
    h.extend_from_slice(&p.nll_sum.to_le_bytes());
    h.extend_from_slice(&p.nll_tokens.to_le_bytes());
    let crc = crc32fast::hash(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(h.len(), HEADER_LEN);
    h
}

/// layers, value heads, K, V, conv values per layer, hidden size.
fn shape_fields(model: &LanguageModel) -> [u32; 6] {
    let c = model.config();
    [
        c.layers as u32,
        c.value_heads as u32,
        c.head_dim as u32,
        c.value_dim as u32,
        ((2 * c.key_width() + c.value_width()) * c.conv_size) as u32,
        c.hidden_size as u32,
    ]
}

/// Loads a state saved for `model`: magic, version, fingerprint, every shape field,
/// the file's length and both checksums are checked; each failure names the file and
/// the problem. Peak memory is the state itself.
pub fn load_model_state(
    path: impl AsRef<Path>,
    model: &LanguageModel,
) -> Result<(ModelState, SourcePosition)> {
    let path = path.as_ref();
    let bad = |problem: String| Error::StateFile {
        path: path.to_path_buf(),
        problem,
    };
    let (file, meta) = crate::input_file::open_regular(path)?;
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut header = [0u8; HEADER_LEN];
    let got = read_up_to(&mut r, &mut header).map_err(|e| Error::io(path, e))?;
    if got < MAGIC.len() || &header[..MAGIC.len()] != MAGIC {
        return Err(bad(
            "not an ltm-engine language-model state file (bad magic)".into(),
        ));
    }
    if got < HEADER_LEN {
        return Err(bad(format!(
            "truncated: {got} bytes, shorter than the {HEADER_LEN}-byte header"
        )));
    }
    let stored = u32::from_le_bytes(header[HEADER_LEN - 4..].try_into().unwrap());
    if crc32fast::hash(&header[..HEADER_LEN - 4]) != stored {
        return Err(bad("header checksum mismatch: the file is corrupted".into()));
    }
    let mut at = MAGIC.len();
    let mut take = |n: usize| {
        let s = &header[at..at + n];
        at += n;
        s
    };
    let version = u32::from_le_bytes(take(4).try_into().unwrap());
    if version != FORMAT_VERSION {
        return Err(bad(format!(
            "format version {version}, this build reads version {FORMAT_VERSION}"
        )));
    }
    let fingerprint = u64::from_le_bytes(take(8).try_into().unwrap());
    let fields: Vec<u32> = (0..6)
        .map(|_| u32::from_le_bytes(take(4).try_into().unwrap()))
        .collect();
    let tokens = u64::from_le_bytes(take(8).try_into().unwrap());
    let has_last = u32::from_le_bytes(take(4).try_into().unwrap());
    let position = SourcePosition {
        bytes: u64::from_le_bytes(take(8).try_into().unwrap()),
        crc32: u32::from_le_bytes(take(4).try_into().unwrap()),
        window_start: u64::from_le_bytes(take(8).try_into().unwrap()),
        tokens_past: u64::from_le_bytes(take(8).try_into().unwrap()),
        nll_sum: f64::from_le_bytes(take(8).try_into().unwrap()),
        nll_tokens: u64::from_le_bytes(take(8).try_into().unwrap()),
    };
    if fingerprint != model.fingerprint() {
        return Err(bad(format!(
            "written by another model, or the same weights with another tokenizer.json \
             (fingerprint {fingerprint:016x}; {} has {:016x}: config, weights or tokenizer \
             differ)",
            model.name(),
            model.fingerprint()
        )));
    }
    let names = [
        "layers",
        "value heads",
        "K",
        "V",
        "conv values per layer",
        "hidden size",
    ];
    for ((name, &found), want) in names.iter().zip(&fields).zip(shape_fields(model)) {
        if found != want {
            return Err(bad(format!("{name} is {found}, this model has {want}")));
        }
    }
    if tokens > MAX_TOKENS {
        return Err(bad(format!(
            "tokens is {tokens}; expected at most {MAX_TOKENS}"
        )));
    }
    if has_last > 1 || (has_last == 1) != (tokens > 0) {
        return Err(bad(format!(
            "inconsistent header: {tokens} tokens but last-hidden flag {has_last}"
        )));
    }
    check_position(&position, tokens).map_err(bad)?;
    let c = model.config();
    let per_layer = model.memory_config().state_len() + fields[4] as usize;
    let values = c.layers * per_layer + if has_last == 1 { c.hidden_size } else { 0 };
    let want_len = HEADER_LEN as u64 + 4 * values as u64 + 4;
    if meta.len() != want_len {
        return Err(bad(format!(
            "{} bytes, expected {want_len} for this model's state (truncated or padded)",
            meta.len()
        )));
    }
    let mut crc = crc32fast::Hasher::new();
    let mut read = |n: usize| -> Result<Vec<f32>> {
        let mut out = vec![0.0f32; n];
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut out);
        r.read_exact(bytes).map_err(|e| Error::io(path, e))?;
        crc.update(bytes);
        if cfg!(target_endian = "big") {
            for v in out.iter_mut() {
                *v = f32::from_bits(u32::from_le(v.to_bits()));
            }
        }
        Ok(out)
    };
    let mut layers = Vec::with_capacity(c.layers);
    for _ in 0..c.layers {
        let memory = read(model.memory_config().state_len())?;
        let conv = read(fields[4] as usize)?;
        let mut memory = State::from_values(model.memory_config(), 1, memory)?;
        memory.set_tokens_seen(tokens);
        layers.push(LayerState { memory, conv });
    }
    let last_hidden = if has_last == 1 {
        Some(read(c.hidden_size)?)
    } else {
        None
    };
    let mut tail = [0u8; 4];
    r.read_exact(&mut tail).map_err(|e| Error::io(path, e))?;
    if crc.finalize() != u32::from_le_bytes(tail) {
        return Err(bad(
            "payload checksum mismatch: the file is corrupted".into()
        ));
    }
    // A checksum proves the bytes are those written, not that they are numbers: a
    // state that went non-finite (or a crafted one) would turn every later output
    // into NaN without a word.
    for (l, layer) in layers.iter().enumerate() {
        let values = layer.memory.values().iter().chain(&layer.conv);
        if let Some(i) = values.into_iter().position(|v| !v.is_finite()) {
            return Err(bad(format!(
                "non-finite value at layer {l}, element {i} (of its memory, then its conv cache)"
            )));
        }
    }
    if let Some(i) = last_hidden
        .as_ref()
        .and_then(|h| h.iter().position(|v| !v.is_finite()))
    {
        return Err(bad(format!(
            "non-finite value in the last hidden vector, element {i}"
        )));
    }
    let state = ModelState {
        model: fingerprint,
        layers,
        last_hidden,
        tokens,
    };
    Ok((state, position))
}

/// Every field of the position against its range and the others; the message names
/// the field, its value and what it must be.
fn check_position(p: &SourcePosition, tokens: u64) -> std::result::Result<(), String> {
    if !(p.nll_sum.is_finite() && p.nll_sum >= 0.0) {
        return Err(format!(
            "NLL sum is {:?}; expected a finite number from 0",
            p.nll_sum
        ));
    }
    if p.nll_tokens > tokens {
        return Err(format!(
            "NLL tokens is {}; expected at most the {tokens} tokens fed",
            p.nll_tokens
        ));
    }
    if p.nll_tokens == 0 && p.nll_sum != 0.0 {
        return Err(format!(
            "NLL sum is {:?} over 0 tokens; expected 0",
            p.nll_sum
        ));
    }
    if p.window_start > p.bytes {
        return Err(format!(
            "window start is {}; expected at most the {} bytes read",
            p.window_start, p.bytes
        ));
    }
    // Tokens past a window's start: the state stands inside the window [start,
    // bytes), which is read again on --resume, and at most all the tokens fed.
    if p.tokens_past > tokens {
        return Err(format!(
            "tokens past the window start is {}; expected at most the {tokens} tokens fed",
            p.tokens_past
        ));
    }
    if (p.tokens_past == 0) != (p.window_start == p.bytes) {
        return Err(format!(
            "tokens past the window start is {} with a window of bytes {}..{}; expected 0 \
             exactly when the window is empty",
            p.tokens_past, p.window_start, p.bytes
        ));
    }
    Ok(())
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}
