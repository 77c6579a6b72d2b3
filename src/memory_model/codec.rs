//! Values: a word's bytes written straight into the value vector, and read back exactly.
//!
//! A value has [`POSITIONS`] segments of [`SEGMENT`] dimensions: one per character of
//! the word (up to [`MAX_CHARS`]) and one check symbol. Each segment holds one of 64
//! symbols — the 63 word bytes `0-9 A-Z _ a-z` and END — as a codeword of the
//! biorthogonal code of length 32 (the rows of a 32 × 32 Hadamard matrix and their
//! negatives). Distinct codewords are orthogonal or opposite, the best separation 64
//! symbols can have in 32 dimensions, and decoding a segment is one fast Walsh–Hadamard
//! transform followed by an argmax: a fixed alphabet, never a vocabulary.
//!
//! Per position the symbol-to-codeword assignment is a seeded permutation and every
//! dimension has a seeded random sign, so that values of different words look like
//! independent random ±1 vectors to each other (the noise a read picks up from other
//! keys is then unstructured).
//!
//! The check symbol is a hash of the 16 character symbols. When the plain decode fails
//! the check, the decoder tries the runner-up symbol at each of the least certain
//! positions and keeps the first candidate that passes: most failures near capacity are
//! one character whose codeword lost narrowly, and this repairs them (list decoding).

use super::mix::{hash_bytes, mix64, SplitMix64};

/// Longest word piece a value holds (the word rule's, which cuts longer words into
/// pieces).
pub use crate::tokenize::words::{is_word_byte, MAX_CHARS};
/// Character positions plus the check symbol.
pub const POSITIONS: usize = MAX_CHARS + 1;
/// Dimensions per position (the biorthogonal code's length).
pub const SEGMENT: usize = 32;
/// Dimensions of a value: `POSITIONS × SEGMENT`.
pub const VALUE_DIM: usize = POSITIONS * SEGMENT;

const SYMBOLS: usize = 2 * SEGMENT;
const END: u8 = 0;
/// Positions whose runner-up the list decoder tries when the check fails.
const LIST_TRIES: usize = 4;

/// Symbol of a word byte: 1..=63 in byte order; 0 is END.
fn symbol_of(b: u8) -> u8 {
    debug_assert!(is_word_byte(b));
    match b {
        b'0'..=b'9' => 1 + (b - b'0'),
        b'A'..=b'Z' => 11 + (b - b'A'),
        b'_' => 37,
        _ => 38 + (b - b'a'),
    }
}

fn byte_of(symbol: u8) -> u8 {
    match symbol {
        1..=10 => b'0' + symbol - 1,
        11..=36 => b'A' + symbol - 11,
        37 => b'_',
        _ => b'a' + symbol - 38,
    }
}

/// What a read decoded to.
#[derive(Clone, Debug, PartialEq)]
pub struct Decoded {
    /// The word, up to the first END.
    pub text: String,
    /// The check symbol agreed (directly or after repairing one position).
    pub verified: bool,
    /// The smallest gap between the best and the runner-up codeword score over all
    /// positions, relative to the mean best score: near 0 is a guess, near 1 is clean.
    pub confidence: f32,
}

/// The fixed code of one model seed.
#[derive(Clone, Debug)]
pub struct ValueCodec {
    seed: u64,
    /// Per position: symbol → codeword index (0..64; ≥ 32 is a negated row).
    codeword: [[u8; SYMBOLS]; POSITIONS],
    /// Per position: codeword index → symbol.
    symbol: [[u8; SYMBOLS]; POSITIONS],
    /// ±1 per dimension.
    sign: Vec<f32>,
}

impl ValueCodec {
    /// The code of `seed`: its per-position permutations and per-dimension signs are drawn
    /// from it, so the same seed always gives the same codewords.
    pub fn new(seed: u64) -> Self {
        let mut rng = SplitMix64::new(mix64(seed ^ 0x7661_6c75_6573));
        let mut codeword = [[0u8; SYMBOLS]; POSITIONS];
        let mut symbol = [[0u8; SYMBOLS]; POSITIONS];
        for p in 0..POSITIONS {
            let mut perm: Vec<u8> = (0..SYMBOLS as u8).collect();
            rng.shuffle(&mut perm);
            for (s, &c) in perm.iter().enumerate() {
                codeword[p][s] = c;
                symbol[p][c as usize] = s as u8;
            }
        }
        let sign = (0..VALUE_DIM)
            .map(|_| if rng.next_u64() & 1 == 0 { 1.0 } else { -1.0 })
            .collect();
        ValueCodec {
            seed,
            codeword,
            symbol,
            sign,
        }
    }

    /// Writes the value of `word` (at most [`MAX_CHARS`] word bytes) into `out`
    /// (`VALUE_DIM` values, each ±1).
    pub fn encode(&self, word: &[u8], out: &mut [f32]) {
        assert!(
            word.len() <= MAX_CHARS,
            "word piece longer than {MAX_CHARS}"
        );
        assert_eq!(out.len(), VALUE_DIM);
        let mut symbols = [END; POSITIONS];
        for (s, &b) in symbols.iter_mut().zip(word) {
            *s = symbol_of(b);
        }
        symbols[MAX_CHARS] = self.check(&symbols);
        for (p, &s) in symbols.iter().enumerate() {
            let c = self.codeword[p][s as usize] as usize;
            let (row, neg) = (c % SEGMENT, c >= SEGMENT);
            let seg = &mut out[p * SEGMENT..(p + 1) * SEGMENT];
            for (i, x) in seg.iter_mut().enumerate() {
                let h = if (row & i).count_ones() % 2 == 0 {
                    1.0
                } else {
                    -1.0
                };
                let h = if neg { -h } else { h };
                *x = h * self.sign[p * SEGMENT + i];
            }
        }
    }

    /// Decodes a read (`VALUE_DIM` values); the scale of the read does not matter.
    pub fn decode(&self, value: &[f32]) -> Decoded {
        self.decode_with(value, true)
    }

    /// [`Self::decode`], optionally without the list decoder (to measure what it adds).
    pub fn decode_with(&self, value: &[f32], list_decoding: bool) -> Decoded {
        assert_eq!(value.len(), VALUE_DIM);
        let mut best = [END; POSITIONS];
        let mut runner_up = [END; POSITIONS];
        let mut margin = [0f32; POSITIONS];
        let mut best_sum = 0f32;
        for p in 0..POSITIONS {
            let mut z = [0f32; SEGMENT];
            for (i, zi) in z.iter_mut().enumerate() {
                *zi = value[p * SEGMENT + i] * self.sign[p * SEGMENT + i];
            }
            walsh_hadamard(&mut z);
            // Codeword c scores z[c] (c < 32) or −z[c − 32].
            let (mut b1, mut s1, mut b2, mut s2) =
                (0usize, f32::NEG_INFINITY, 0usize, f32::NEG_INFINITY);
            for (j, &zj) in z.iter().enumerate() {
                let (c, score) = if zj >= 0.0 {
                    (j, zj)
                } else {
                    (j + SEGMENT, -zj)
                };
                if score > s1 {
                    (b2, s2) = (b1, s1);
                    (b1, s1) = (c, score);
                } else if score > s2 {
                    (b2, s2) = (c, score);
                }
            }
            // NaN scores compare false everywhere: treat the position as unknown.
            if !s1.is_finite() {
                s1 = 0.0;
                s2 = 0.0;
            }
            best[p] = self.symbol[p][b1];
            runner_up[p] = self.symbol[p][b2];
            margin[p] = s1 - s2.max(0.0);
            best_sum += s1;
        }
        let mean_best = best_sum / POSITIONS as f32;
        let confidence = if mean_best > 0.0 {
            margin.iter().cloned().fold(f32::INFINITY, f32::min) / mean_best
        } else {
            0.0
        };
        // A read of rows nothing was written to is all zeros: every position "decodes"
        // to its first symbol, and the check passes by chance one time in 64.
        let written = mean_best > 0.0;
        let mut verified = written && self.check(&best) == best[MAX_CHARS];
        let mut chosen = best;
        if written && !verified && list_decoding {
            let mut order: Vec<usize> = (0..POSITIONS).collect();
            order.sort_by(|&a, &b| margin[a].total_cmp(&margin[b]));
            for &p in order.iter().take(LIST_TRIES) {
                let mut candidate = best;
                candidate[p] = runner_up[p];
                if self.check(&candidate) == candidate[MAX_CHARS] {
                    chosen = candidate;
                    verified = true;
                    break;
                }
            }
        }
        let text: String = chosen[..MAX_CHARS]
            .iter()
            .take_while(|&&s| s != END)
            .map(|&s| byte_of(s) as char)
            .collect();
        Decoded {
            text,
            verified,
            confidence,
        }
    }

    /// The check symbol of 16 character symbols (0..64).
    fn check(&self, symbols: &[u8; POSITIONS]) -> u8 {
        (hash_bytes(self.seed ^ 0x636865636b, &symbols[..MAX_CHARS]) % SYMBOLS as u64) as u8
    }
}

/// In-place fast Walsh–Hadamard transform of 32 values: `z_j = Σ_i (−1)^{popcount(i&j)} y_i`.
fn walsh_hadamard(z: &mut [f32; SEGMENT]) {
    let mut h = 1;
    while h < SEGMENT {
        for i in (0..SEGMENT).step_by(2 * h) {
            for j in i..i + h {
                let (a, b) = (z[j], z[j + h]);
                z[j] = a + b;
                z[j + h] = a - b;
            }
        }
        h *= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_byte_round_trips() {
        let all: Vec<u8> = (0..=255u8).filter(|&b| is_word_byte(b)).collect();
        assert_eq!(all.len(), 63);
        for &b in &all {
            assert_eq!(byte_of(symbol_of(b)), b);
        }
        let codec = ValueCodec::new(7);
        let mut v = vec![0.0; VALUE_DIM];
        for piece in all.chunks(MAX_CHARS).chain([&b""[..], b"a", b"Zz_09"]) {
            codec.encode(piece, &mut v);
            assert!(v.iter().all(|&x| x == 1.0 || x == -1.0));
            let d = codec.decode(&v);
            assert_eq!(d.text.as_bytes(), piece);
            assert!(d.verified);
            assert!(d.confidence > 0.99, "{}", d.confidence);
        }
    }

    #[test]
    fn one_flipped_position_is_repaired_by_the_check() {
        let codec = ValueCodec::new(11);
        let mut v = vec![0.0; VALUE_DIM];
        codec.encode(b"HashHopHashHopAb", &mut v);
        // Overwrite position 5 with another symbol's codeword at 60% strength: the
        // plain decode gets it wrong, the check catches it, the runner-up repairs it.
        let mut other = vec![0.0; VALUE_DIM];
        codec.encode(b"HashHXpHashHopAb", &mut other);
        for i in 5 * SEGMENT..6 * SEGMENT {
            v[i] = 0.4 * v[i] + 0.6 * other[i];
        }
        assert_eq!(codec.decode_with(&v, false).text, "HashHXpHashHopAb");
        let d = codec.decode(&v);
        assert_eq!(d.text, "HashHopHashHopAb");
        assert!(d.verified);
    }

    #[test]
    fn noise_is_not_verified_often() {
        let codec = ValueCodec::new(3);
        let mut rng = SplitMix64::new(99);
        let mut verified = 0;
        for _ in 0..2000 {
            let v: Vec<f32> = (0..VALUE_DIM)
                .map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
                .collect();
            let d = codec.decode_with(&v, false);
            verified += d.verified as usize;
            assert!(d.confidence < 0.9);
        }
        // One in 64 by chance: expect ~31 of 2000.
        assert!(verified < 80, "{verified} random reads passed the check");
    }
}
