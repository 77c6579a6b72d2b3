//! State files: the whole memory of a context, saved so that a long context is read
//! once and queried many times.
//!
//! Layout (little-endian): magic `LTMSTATE`, format version `u32`, configuration
//! fingerprint `u64`, `B, H, K, V` as `u32`, tokens seen `u64`, the source (tokens of
//! the context file `u64`, bytes of it they end at `u64`, CRC-32 of those bytes `u32`),
//! payload bytes `u64`, CRC-32 `u32` of every byte before it and of the payload; then
//! the payload, the f32 values `[B, H, K, V]`. Files are written atomically.
//!
//! Version 2 added the source; version 1 files are refused with a message saying so.

use std::io::{Read, Write};
use std::path::Path;

use crate::atomic_file::write_atomically;
use crate::config::MemoryConfig;
use crate::error::{Error, Result};
use crate::state::{Source, State, MAX_TOKENS};

const MAGIC: &[u8; 8] = b"LTMSTATE";
/// Version of the state file layout this build writes and reads; other versions are
/// refused.
pub const FORMAT_VERSION: u32 = 2;
/// Bytes of the header, checksum included.
pub const HEADER_LEN: usize = 8 + 4 + 8 + 4 * 4 + 8 + (8 + 8 + 4) + 8 + 4;

/// The bytes of the file [`save_state`] writes for `state`.
pub fn file_bytes(state: &State) -> u64 {
    HEADER_LEN as u64 + 4 * state.values().len() as u64
}

/// Saves `state` to `path` with the fingerprint of `config`; the previous file, if
/// any, stays intact until the new one is complete.
/// A model's digest in [`MemoryConfig::model`] is part of that fingerprint.
pub fn save_state(path: impl AsRef<Path>, config: &MemoryConfig, state: &State) -> Result<()> {
    let path = path.as_ref();
    state.check_matches(config, state.batch())?;
    let payload: &[u8] = bytemuck::cast_slice(state.values());
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    header.extend_from_slice(&config.fingerprint().to_le_bytes());
    for d in state.dims() {
        let d = u32::try_from(d).map_err(|_| {
            Error::StateMismatch(format!(
                "a state file holds dimensions below 2^32, this state is {:?}",
                state.dims()
            ))
        })?;
        header.extend_from_slice(&d.to_le_bytes());
    }
    header.extend_from_slice(&state.tokens_seen().to_le_bytes());
    let source = state.source();
    header.extend_from_slice(&source.tokens.to_le_bytes());
    header.extend_from_slice(&source.bytes.to_le_bytes());
    header.extend_from_slice(&source.crc32.to_le_bytes());
    header.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header);
    crc.update(payload);
    header.extend_from_slice(&crc.finalize().to_le_bytes());
    debug_assert_eq!(header.len(), HEADER_LEN);
    write_atomically(path, |w| {
        w.write_all(&header)?;
        write_f32_le(w, state.values())
    })
}

/// Loads a state saved for `config`, checking magic, version, every header field,
/// length, checksum and configuration; each failure names the file and the problem.
/// The values are read straight into the state, so a load needs the state's size in
/// memory, not twice it.
pub fn load_state(path: impl AsRef<Path>, config: &MemoryConfig) -> Result<State> {
    let path = path.as_ref();
    let bad = |problem: String| Error::StateFile {
        path: path.to_path_buf(),
        problem,
    };
    let io = |e: std::io::Error| Error::io(path, e);
    let (mut file, meta) = crate::input_file::open_regular(path)?;
    let file_len = meta.len();
    let mut header = [0u8; HEADER_LEN];
    let head_len = (file_len as usize).min(HEADER_LEN);
    file.read_exact(&mut header[..head_len]).map_err(io)?;
    if head_len < MAGIC.len() || &header[..MAGIC.len()] != MAGIC {
        return Err(bad("not an ltm-engine state file (bad magic)".into()));
    }
    if head_len >= MAGIC.len() + 4 {
        let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
        if version != FORMAT_VERSION {
            let older = if version < FORMAT_VERSION {
                " (an older format, without the identity of its context file: stream the context again)"
            } else {
                ""
            };
            return Err(bad(format!(
                "format version {version}, this build reads version {FORMAT_VERSION}{older}"
            )));
        }
    }
    if head_len < HEADER_LEN {
        return Err(bad(format!(
            "truncated: {file_len} bytes, shorter than the {HEADER_LEN}-byte header"
        )));
    }
    let h = parse_header(&header).map_err(bad)?;
    let payload_len = file_len - HEADER_LEN as u64;
    if payload_len != h.payload_len {
        return Err(bad(format!(
            "truncated or padded: payload is {payload_len} bytes, expected {}",
            h.payload_len
        )));
    }
    let n = (h.payload_len / 4) as usize;
    let what = format!(
        "state file {} ([B, H, K, V] = {:?})",
        path.display(),
        h.dims
    );
    let mut values = crate::limits::try_zeroed_f32(&what, n)?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header[..HEADER_LEN - 4]);
    // Read in slices so the checksum runs over bytes still in cache.
    for part in values.chunks_mut(1 << 20) {
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(part);
        file.read_exact(bytes).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                bad("truncated while reading: the file shrank".into())
            } else {
                io(e)
            }
        })?;
        crc.update(bytes);
    }
    if crc.finalize() != h.crc {
        return Err(bad("checksum mismatch: the file is corrupted".into()));
    }
    if cfg!(target_endian = "big") {
        for v in values.iter_mut() {
            *v = f32::from_bits(u32::from_le(v.to_bits()));
        }
    }
    let expected = config.fingerprint();
    if h.fingerprint != expected {
        return Err(bad(format!(
            "written for another configuration (fingerprint {:016x}, this one is {expected:016x}; \
             saved state is [B, H, K, V] = {:?}, expected H = {}, K = {}, V = {})",
            h.fingerprint, h.dims, config.heads, config.key_dim, config.value_dim
        )));
    }
    let want = [config.heads, config.key_dim, config.value_dim];
    for ((name, found), want) in ["H", "K", "V"].iter().zip(&h.dims[1..]).zip(want) {
        if *found as usize != want {
            return Err(bad(format!(
                "header says {name} = {found}, this configuration has {name} = {want} \
                 ([B, H, K, V] = {:?})",
                h.dims
            )));
        }
    }
    let mut state = State::from_values(config, h.dims[0] as usize, values)?;
    state.set_tokens_seen(h.tokens_seen);
    state.set_source(h.source);
    Ok(state)
}

/// The fields of a header, each checked on its own.
struct Header {
    fingerprint: u64,
    dims: [u32; 4],
    tokens_seen: u64,
    source: Source,
    payload_len: u64,
    crc: u32,
}

fn parse_header(bytes: &[u8; HEADER_LEN]) -> std::result::Result<Header, String> {
    let mut r = Reader { bytes, at: 12 };
    let fingerprint = r.u64();
    let dims = [r.u32(), r.u32(), r.u32(), r.u32()];
    let tokens_seen = r.u64();
    let source = Source {
        tokens: r.u64(),
        bytes: r.u64(),
        crc32: r.u32(),
    };
    let payload_len = r.u64();
    let crc = r.u32();
    debug_assert_eq!(r.at, HEADER_LEN);
    if let Some(i) = dims.iter().position(|&d| d == 0) {
        return Err(format!(
            "header says {} = 0 ([B, H, K, V] = {dims:?}); every dimension is at least 1",
            ["B", "H", "K", "V"][i]
        ));
    }
    let expected_payload = dims
        .iter()
        .try_fold(4u64, |acc, &d| acc.checked_mul(d as u64));
    if expected_payload != Some(payload_len) {
        return Err(format!(
            "header says {payload_len} payload bytes, but [B, H, K, V] = {dims:?} needs {}",
            expected_payload.map_or("more than 2^64".into(), |b| b.to_string())
        ));
    }
    if tokens_seen > MAX_TOKENS {
        return Err(format!(
            "header says {tokens_seen} tokens seen, more than the limit of {MAX_TOKENS}"
        ));
    }
    if source.tokens > tokens_seen {
        return Err(format!(
            "header says {} tokens of its context file, more than the {tokens_seen} tokens seen",
            source.tokens
        ));
    }
    if source.bytes == 0 && (source.tokens != 0 || source.crc32 != 0) {
        return Err(format!(
            "header says {} tokens and checksum {:08x} of no bytes of its context file",
            source.tokens, source.crc32
        ));
    }
    Ok(Header {
        fingerprint,
        dims,
        tokens_seen,
        source,
        payload_len,
        crc,
    })
}

fn write_f32_le(w: &mut impl Write, values: &[f32]) -> std::io::Result<()> {
    if cfg!(target_endian = "little") {
        return w.write_all(bytemuck::cast_slice(values));
    }
    for v in values {
        w.write_all(&v.to_le_bytes())?;
    }
    Ok(())
}

struct Reader<'a> {
    bytes: &'a [u8; HEADER_LEN],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&self.bytes[self.at..self.at + N]);
        self.at += N;
        out
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
}
