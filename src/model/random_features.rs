//! The `random-features` model (`run --model random-features`): the engine's dense
//! forward over fixed random features, no weights to load, deterministic for a seed.
//!
//! Token `t` is written under a key made from the two tokens before it, with a value
//! that is a code of token `t` itself; the query at `t` is the key the *next* token
//! will be written under. So the read `o_t` recalls what followed the same two tokens
//! the last time they occurred: a next-token memory whose quality is measured by the
//! cosine between `o_t` and the next token's value code.

use crate::config::MemoryConfig;
use crate::hash::{mix64, Fnv1a, SplitMix64};
use crate::model::Model;
use crate::vec_math::dot;

/// Rows of each random table; a feature sums two rows chosen by a hash, so distinct
/// features number about `ROWS² · 2` per head.
const ROWS: usize = 1024;

/// The `random-features` model: keys from a hash of the two tokens before each token,
/// values a code of the token, both sums of rows of fixed random tables.
pub struct RandomFeatureModel {
    config: MemoryConfig,
    seed: u64,
    beta: f32,
    log_decay: f32,
    /// `[H, ROWS, K]`: rows for keys and queries.
    key_table: Vec<f32>,
    /// `[H, ROWS, V]`: rows for value codes.
    value_table: Vec<f32>,
}

impl RandomFeatureModel {
    /// The configuration of `ltm-engine run --model random-features`: 4 heads,
    /// K = V = 64 (β = 0.5 and no decay are the model's own).
    pub fn default_config() -> MemoryConfig {
        MemoryConfig::new(4, 64, 64)
    }

    /// The model for `config` with tables drawn from `seed` (the same on every machine).
    pub fn new(config: MemoryConfig, seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed ^ 0x005E_ED0F_FEA7);
        // Unit rows scaled by 1/√2: the sum or difference of two of them has a norm
        // within a few percent of 1 (their cosine is about ±1/√dim), so features need
        // no normalisation of their own.
        let mut table = |dim: usize| -> Vec<f32> {
            let mut t: Vec<f32> = (0..config.heads * ROWS * dim)
                .map(|_| normal(&mut rng))
                .collect();
            for row in t.chunks_exact_mut(dim) {
                let scale = std::f32::consts::FRAC_1_SQRT_2 / dot(row, row).sqrt().max(1e-12);
                row.iter_mut().for_each(|x| *x *= scale);
            }
            t
        };
        let key_table = table(config.key_dim);
        let value_table = table(config.value_dim);
        let (beta, log_decay) = (0.5f32, 0.0f32);
        // Seed and gates change what a state means: they go into its fingerprint.
        let mut digest = Fnv1a::new();
        digest.write(b"random-features/v1");
        digest.write(&seed.to_le_bytes());
        digest.write(&beta.to_bits().to_le_bytes());
        digest.write(&log_decay.to_bits().to_le_bytes());
        RandomFeatureModel {
            config: config.with_model(digest.finish()),
            seed,
            beta,
            log_decay,
            key_table,
            value_table,
        }
    }

    /// A vector of norm ≈ 1 for `hash` in head `h`: two table rows, added or subtracted.
    #[inline(always)]
    fn feature(table: &[f32], dim: usize, h: usize, hash: u64, out: &mut [f32]) {
        let mixed = mix64(hash ^ (h as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let a = (mixed as usize) % ROWS;
        let b = ((mixed >> 20) as usize) % ROWS;
        let sign = if mixed >> 63 == 1 { -1.0 } else { 1.0 };
        let base = h * ROWS * dim;
        let (ra, rb) = (
            &table[base + a * dim..][..dim],
            &table[base + b * dim..][..dim],
        );
        for ((o, &x), &y) in out.iter_mut().zip(ra).zip(rb) {
            *o = x + sign * y;
        }
    }
}

impl Model for RandomFeatureModel {
    fn name(&self) -> String {
        format!(
            "random-features (H={}, K={}, V={}, seed {})",
            self.config.heads, self.config.key_dim, self.config.value_dim, self.seed
        )
    }

    fn memory_config(&self) -> &MemoryConfig {
        &self.config
    }

    fn context_len(&self) -> usize {
        2
    }

    fn vocab_size(&self) -> u64 {
        1 << 32
    }

    fn token_features(
        &self,
        tokens: &[u64],
        t: usize,
        h: usize,
        q: &mut [f32],
        k: &mut [f32],
        v: &mut [f32],
    ) -> (f32, f32) {
        let at = |i: usize| {
            if i <= t && i < tokens.len() {
                tokens[i]
            } else {
                0
            }
        };
        // t - 1 and t - 2 wrap to huge indices before the context, which read as 0.
        let (before2, before1) = (at(t.wrapping_sub(2)), at(t.wrapping_sub(1)));
        let (kd, vd) = (self.config.key_dim, self.config.value_dim);
        Self::feature(&self.key_table, kd, h, pair_hash(before2, before1), k);
        Self::feature(&self.key_table, kd, h, pair_hash(before1, tokens[t]), q);
        Self::feature(&self.value_table, vd, h, tokens[t], v);
        (self.beta, self.log_decay)
    }
}

fn pair_hash(a: u64, b: u64) -> u64 {
    mix64(a.wrapping_mul(0xA24B_AED4_963E_E407) ^ b.rotate_left(29))
}

/// Approximately standard normal: the sum of four uniforms, rescaled.
fn normal(rng: &mut SplitMix64) -> f32 {
    let u: f32 = (0..4)
        .map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
        .sum();
    (u - 2.0) * (3.0f32).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::materialize;

    fn features(m: &RandomFeatureModel, tokens: &[u64], t: usize, h: usize) -> [Vec<f32>; 3] {
        let c = &m.config;
        let (mut q, mut k, mut v) = (
            vec![0.0; c.key_dim],
            vec![0.0; c.key_dim],
            vec![0.0; c.value_dim],
        );
        assert_eq!(
            m.token_features(tokens, t, h, &mut q, &mut k, &mut v),
            (0.5, 0.0)
        );
        [q, k, v]
    }

    #[test]
    fn features_depend_only_on_the_token_and_two_before() {
        let m = RandomFeatureModel::new(MemoryConfig::new(2, 16, 8), 7);
        let tokens: Vec<u64> = (0..40).map(|i| (i * 7919 % 13) as u64).collect();
        for t in 2..tokens.len() {
            for h in 0..2 {
                let full = features(&m, &tokens, t, h);
                assert_eq!(
                    full,
                    features(&m, &tokens[t - 2..], 2, h),
                    "token {t} head {h}"
                );
                let [q_prev, _, _] = features(&m, &tokens, t - 1, h);
                assert_eq!(
                    full[1], q_prev,
                    "token t is written under the key read at t - 1"
                );
                for row in &full {
                    let norm = dot(row, row).sqrt();
                    assert!(
                        (0.5..1.5).contains(&norm),
                        "features have norm about 1, found {norm}"
                    );
                }
            }
        }
        // Before the context everything reads as token 0.
        let start = features(&m, &tokens, 0, 1);
        assert_eq!(start, features(&m, &[0, 0, tokens[0]], 2, 1));
        // Heads differ.
        assert_ne!(
            features(&m, &tokens, 5, 0)[0],
            features(&m, &tokens, 5, 1)[0]
        );
    }

    #[test]
    fn materialised_features_match_token_features() {
        let m = RandomFeatureModel::new(MemoryConfig::new(3, 16, 24), 1);
        let tokens: Vec<u64> = (0..700).map(|i| (i * 31 % 97) as u64).collect();
        let f = materialize(&m, &tokens[..5], &tokens[5..]);
        assert_eq!(f.tokens, 695);
        for t in [0, 1, 350, 694] {
            for h in 0..3 {
                let [q, k, v] = features(&m, &tokens, t + 5, h);
                let row = t * 3 + h;
                assert_eq!(&f.q[row * 16..][..16], &q[..]);
                assert_eq!(&f.k[row * 16..][..16], &k[..]);
                assert_eq!(&f.v[row * 24..][..24], &v[..]);
            }
        }
    }
}
