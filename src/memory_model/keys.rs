//! Keys: a hash of the words before a word in its line picks one head and `s` distinct
//! rows of it, each with weight ±1/√s (a sparse key of unit norm, Kanerva-style).
//!
//! A word is written under the key of its context — the up to `context` words before
//! it in the same line — so `A = B` stores `B` under key(`A`), and a query for `A`
//! reads key(`A`). The first word of a line has no context and is not written: a key
//! shared by every line would only ever hold the last line's first word.

use super::mix::{hash_bytes, mix64, SplitMix64};

/// Longest context the model supports (words before the written one).
pub const MAX_CONTEXT: usize = 4;

/// Where keys land: `heads × rows` rows of the state, `active` of them per key.
#[derive(Clone, Debug)]
pub struct KeySpace {
    /// Seed of the word and context hashes.
    pub seed: u64,
    /// Heads of the state; a key lives in one.
    pub heads: usize,
    /// Rows per head (`K`).
    pub rows: usize,
    /// Distinct rows per key (`s`), each weighted ±1/√s.
    pub active: usize,
}

impl KeySpace {
    /// The hash of one word.
    #[inline]
    pub fn word_hash(&self, word: &[u8]) -> u64 {
        hash_bytes(self.seed, word)
    }

    /// Fills `rows` and `weights` (each `active` long) for a context hash and returns
    /// the head. Rows are distinct, so the key has unit norm.
    pub fn address(&self, context: u64, rows: &mut [u32], weights: &mut [f32]) -> usize {
        let mut rng = SplitMix64::new(context);
        let head = rng.below(self.heads as u64) as usize;
        let weight = 1.0 / (self.active as f32).sqrt();
        let mut i = 0;
        while i < self.active {
            let x = rng.next_u64();
            let r = ((x >> 1) % self.rows as u64) as u32;
            // Rows must differ (a repeat would double a weight); `active ≤ rows` is
            // checked by the model's configuration, so this ends.
            if rows[..i].contains(&r) {
                continue;
            }
            rows[i] = r;
            weights[i] = if x & 1 == 0 { weight } else { -weight };
            i += 1;
        }
        head
    }
}

/// The words before the next one in the current line (the last `len` of them).
#[derive(Clone, Debug)]
pub struct LineContext {
    words: [u64; MAX_CONTEXT],
    seen: usize,
    len: usize,
}

impl LineContext {
    /// An empty context that keeps the last `len` words (1 to [`MAX_CONTEXT`]).
    pub fn new(len: usize) -> Self {
        assert!((1..=MAX_CONTEXT).contains(&len));
        LineContext {
            words: [0; MAX_CONTEXT],
            seen: 0,
            len,
        }
    }

    /// Hash of the current context, or `None` at the start of a line.
    pub fn key(&self, seed: u64) -> Option<u64> {
        let n = self.seen.min(self.len);
        if n == 0 {
            return None;
        }
        let mut h = mix64(seed ^ 0x6b65_7973 ^ n as u64);
        for i in 0..n {
            // Oldest to newest, so the order of the words matters.
            let w = self.words[(self.seen - n + i) % MAX_CONTEXT];
            h = mix64(h ^ w);
        }
        Some(h)
    }

    /// Adds a word (its hash) after the ones already in the line.
    pub fn push(&mut self, word_hash: u64) {
        self.words[self.seen % MAX_CONTEXT] = word_hash;
        self.seen += 1;
    }

    /// Starts a new line: the next word has no context.
    pub fn new_line(&mut self) {
        self.seen = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_distinct_rows_and_unit_norm() {
        let space = KeySpace {
            seed: 1,
            heads: 3,
            rows: 10,
            active: 8,
        };
        let (mut rows, mut w) = ([0u32; 8], [0f32; 8]);
        for c in 0..500u64 {
            let head = space.address(mix64(c), &mut rows, &mut w);
            assert!(head < 3);
            let mut sorted = rows;
            sorted.sort();
            assert!(sorted.windows(2).all(|p| p[0] != p[1]), "{rows:?}");
            assert!(rows.iter().all(|&r| r < 10));
            let norm: f32 = w.iter().map(|x| x * x).sum();
            assert!((norm - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn context_is_the_last_words_of_the_line_in_order() {
        let (a, b, c) = (11, 22, 33);
        let mut ctx = LineContext::new(2);
        assert_eq!(ctx.key(5), None);
        ctx.push(a);
        let key_a = ctx.key(5);
        ctx.push(b);
        let key_ab = ctx.key(5);
        ctx.push(c);
        let key_bc = ctx.key(5);
        assert!(key_a.is_some() && key_ab != key_a && key_bc != key_ab);
        let mut other = LineContext::new(2);
        other.push(b);
        other.push(a);
        assert_ne!(other.key(5), key_ab, "order must matter");
        other.new_line();
        other.push(a);
        assert_eq!(other.key(5), key_a);
        assert_ne!(other.key(6), key_a, "the seed must matter");
    }
}
