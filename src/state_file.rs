//! State files: the whole memory of a context, saved so that a long context is read
//! once and queried many times.
//!
//! Layout (little-endian): magic `LTMSTATE`, format version `u32`, configuration
//! fingerprint `u64`, `B, H, K, V` as `u32`, tokens seen `u64`, payload bytes `u64`,
//! CRC-32 `u32` of every byte before it and of the payload; then the payload, the f32
//! values `[B, H, K, V]`. Files are written atomically.

use std::io::Write;
use std::path::Path;

use crate::atomic_file::write_atomically;
use crate::config::MemoryConfig;
use crate::error::{Error, Result};
use crate::state::State;

const MAGIC: &[u8; 8] = b"LTMSTATE";
/// Version of the state file layout this build writes and reads; other versions are
/// refused.
pub const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 8 + 4 * 4 + 8 + 8 + 4;

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
        header.extend_from_slice(&(d as u32).to_le_bytes());
    }
    header.extend_from_slice(&state.tokens_seen().to_le_bytes());
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

/// Loads a state saved for `config`, checking magic, version, configuration, length
/// and checksum; each failure names the file and the problem.
pub fn load_state(path: impl AsRef<Path>, config: &MemoryConfig) -> Result<State> {
    let path = path.as_ref();
    let expected = config.fingerprint();
    let bad = |problem: String| Error::StateFile {
        path: path.to_path_buf(),
        problem,
    };
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(bad("not an ltm-engine state file (bad magic)".into()));
    }
    if bytes.len() < HEADER_LEN {
        return Err(bad(format!(
            "truncated: {} bytes, shorter than the {HEADER_LEN}-byte header",
            bytes.len()
        )));
    }
    let mut r = Reader {
        bytes: &bytes,
        at: MAGIC.len(),
    };
    let version = r.u32();
    if version != FORMAT_VERSION {
        return Err(bad(format!(
            "format version {version}, this build reads version {FORMAT_VERSION}"
        )));
    }
    let fingerprint = r.u64();
    let dims = [r.u32(), r.u32(), r.u32(), r.u32()].map(|d| d as usize);
    let tokens_seen = r.u64();
    let payload_len = r.u64();
    let crc_at = r.at;
    let stored_crc = r.u32();
    let expected_payload = dims.iter().product::<usize>() as u64 * 4;
    if payload_len != expected_payload {
        return Err(bad(format!(
            "header says {payload_len} payload bytes, but [B, H, K, V] = {dims:?} needs {expected_payload}"
        )));
    }
    let payload = &bytes[HEADER_LEN..];
    if (payload.len() as u64) != payload_len {
        return Err(bad(format!(
            "truncated or padded: payload is {} bytes, expected {payload_len}",
            payload.len()
        )));
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&bytes[..crc_at]);
    crc.update(payload);
    if crc.finalize() != stored_crc {
        return Err(bad("checksum mismatch: the file is corrupted".into()));
    }
    if fingerprint != expected {
        return Err(bad(format!(
            "written for another configuration (fingerprint {fingerprint:016x}, this one is {:016x}; \
             saved state is [B, H, K, V] = {dims:?}, expected H = {}, K = {}, V = {})",
            expected,
            config.heads,
            config.key_dim,
            config.value_dim
        )));
    }
    let values: Vec<f32> = payload
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let mut state = State::from_values(config, dims[0], values)?;
    state.set_tokens_seen(tokens_seen);
    Ok(state)
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
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let out = self.bytes[self.at..self.at + N]
            .try_into()
            .expect("length checked");
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
