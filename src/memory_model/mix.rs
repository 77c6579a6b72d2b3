//! The memory model's seeded word hash. The generic pieces (SplitMix64, its finaliser,
//! FNV-1a) live in [`crate::hash`]; they are re-exported here for existing callers.

pub use crate::hash::{mix64, SplitMix64};
use crate::hash::{Fnv1a, FNV_OFFSET};

/// A seeded 64-bit hash of a byte string (FNV-1a from a seeded basis, folded through
/// [`mix64`] with the length).
pub fn hash_bytes(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = Fnv1a::with_basis(FNV_OFFSET ^ mix64(seed));
    h.write(bytes);
    mix64(h.finish() ^ (bytes.len() as u64).rotate_left(32))
}
