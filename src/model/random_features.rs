//! The default model until the built-in memory model lands: fixed random features,
//! no weights to load, deterministic for a seed.
//!
//! Token `t` is written under a key made from the two tokens before it, with a value
//! that is a code of token `t` itself; the query at `t` is the key the *next* token
//! will be written under. So the read `o_t` recalls what followed the same two tokens
//! the last time they occurred: a next-token memory whose quality is measured by the
//! cosine between `o_t` and the next token's value code.

use crate::backend::cpu::Isa;
use crate::config::{Fnv64, MemoryConfig};
use crate::model::{FeaturesMut, Model};
use crate::vec_math::dot;

/// Rows of each random table; a feature sums two rows chosen by a hash, so distinct
/// features number about `ROWS² · 2` per head.
const ROWS: usize = 1024;

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
    /// The configuration `ltm-engine run` uses by default: 4 heads, K = V = 64,
    /// β = 0.5, no decay.
    pub fn default_config() -> MemoryConfig {
        MemoryConfig::new(4, 64, 64)
    }

    pub fn new(config: MemoryConfig, seed: u64) -> Self {
        let mut rng = SplitMix(seed ^ 0x005E_ED0F_FEA7);
        // Unit rows scaled by 1/√2: the sum or difference of two of them has a norm
        // within a few percent of 1 (their cosine is about ±1/√dim), so features need
        // no normalisation of their own.
        let mut table = |dim: usize| -> Vec<f32> {
            let mut t: Vec<f32> = (0..config.heads * ROWS * dim)
                .map(|_| rng.normal())
                .collect();
            for row in t.chunks_exact_mut(dim) {
                let scale = std::f32::consts::FRAC_1_SQRT_2 / dot(row, row).sqrt().max(1e-12);
                row.iter_mut().for_each(|x| *x *= scale);
            }
            t
        };
        let key_table = table(config.key_dim);
        let value_table = table(config.value_dim);
        RandomFeatureModel {
            config,
            seed,
            beta: 0.5,
            log_decay: 0.0,
            key_table,
            value_table,
        }
    }

    /// A vector of norm ≈ 1 for `hash` in head `h`: two table rows, added or subtracted.
    #[inline(always)]
    fn feature(table: &[f32], dim: usize, h: usize, hash: u64, out: &mut [f32]) {
        let mixed = mix(hash ^ (h as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
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

    #[inline(always)]
    fn featurize_impl(&self, prefix: &[u64], window: &[u64], out: FeaturesMut<'_>) {
        let cfg = &self.config;
        let (heads, kd, vd) = (cfg.heads, cfg.key_dim, cfg.value_dim);
        assert_eq!(
            out.tokens(cfg),
            window.len(),
            "feature buffers sized for the window"
        );
        // Token at absolute position i of prefix ++ window; before the context, 0.
        let p = prefix.len();
        let at = |i: isize| -> u64 {
            if i < 0 {
                0
            } else if (i as usize) < p {
                prefix[i as usize]
            } else {
                window[i as usize - p]
            }
        };
        let row_k = heads * kd;
        for t in 0..window.len() {
            let i = (p + t) as isize;
            let read_key = pair_hash(at(i - 1), at(i));
            let token = at(i);
            // The key token t is written under is the query of token t - 1.
            if t == 0 {
                let write_key = pair_hash(at(i - 2), at(i - 1));
                for h in 0..heads {
                    Self::feature(
                        &self.key_table,
                        kd,
                        h,
                        write_key,
                        &mut out.k[h * kd..][..kd],
                    );
                }
            } else {
                let prev = &out.q[(t - 1) * row_k..t * row_k];
                out.k[t * row_k..(t + 1) * row_k].copy_from_slice(prev);
            }
            for h in 0..heads {
                let row = t * heads + h;
                Self::feature(
                    &self.key_table,
                    kd,
                    h,
                    read_key,
                    &mut out.q[row * kd..][..kd],
                );
                Self::feature(
                    &self.value_table,
                    vd,
                    h,
                    token,
                    &mut out.v[row * vd..][..vd],
                );
            }
        }
        out.beta.fill(self.beta);
        out.g.fill(self.log_decay);
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

    fn fingerprint(&self) -> u64 {
        let mut h = Fnv64::new();
        h.write(b"random-features/v1");
        h.write(&self.config.fingerprint().to_le_bytes());
        h.write(&self.seed.to_le_bytes());
        h.write(&self.beta.to_bits().to_le_bytes());
        h.write(&self.log_decay.to_bits().to_le_bytes());
        h.finish()
    }

    fn context_len(&self) -> usize {
        2
    }

    fn vocab_size(&self) -> u64 {
        1 << 32
    }

    fn featurize(&self, prefix: &[u64], window: &[u64], out: FeaturesMut<'_>) {
        #[cfg(target_arch = "x86_64")]
        if Isa::detect() == Isa::Avx512 {
            // SAFETY: the CPU reported AVX-512F.
            return unsafe { self.featurize_avx512(prefix, window, out) };
        }
        self.featurize_impl(prefix, window, out)
    }
}

impl RandomFeatureModel {
    /// The same code compiled for AVX-512: the row sums vectorise 16 wide.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn featurize_avx512(&self, prefix: &[u64], window: &[u64], out: FeaturesMut<'_>) {
        self.featurize_impl(prefix, window, out)
    }
}

fn pair_hash(a: u64, b: u64) -> u64 {
    mix(a.wrapping_mul(0xA24B_AED4_963E_E407) ^ b.rotate_left(29))
}

/// A 64-bit finaliser (splitmix64's): every input bit moves every output bit.
#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Deterministic table generator; the tables must be the same on every machine.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }
    /// Approximately standard normal: the sum of four uniforms, rescaled.
    fn normal(&mut self) -> f32 {
        let u: f32 = (0..4)
            .map(|_| (self.next() >> 40) as f32 / (1u64 << 24) as f32)
            .sum();
        (u - 2.0) * (3.0f32).sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{featurize_parallel, Features};

    /// Features of one token computed on their own, the obvious way.
    fn single(m: &RandomFeatureModel, before2: u64, before1: u64, token: u64) -> Features {
        let c = &m.config;
        let mut f = Features::default();
        f.resize(c, 1);
        for h in 0..c.heads {
            let (k, v) = (c.key_dim, c.value_dim);
            RandomFeatureModel::feature(
                &m.key_table,
                k,
                h,
                pair_hash(before2, before1),
                &mut f.k[h * k..][..k],
            );
            RandomFeatureModel::feature(
                &m.key_table,
                k,
                h,
                pair_hash(before1, token),
                &mut f.q[h * k..][..k],
            );
            RandomFeatureModel::feature(&m.value_table, v, h, token, &mut f.v[h * v..][..v]);
        }
        f
    }

    #[test]
    fn windows_and_prefixes_give_the_per_token_features() {
        let m = RandomFeatureModel::new(MemoryConfig::new(2, 16, 8), 7);
        let tokens: Vec<u64> = (0..40).map(|i| (i * 7919 % 13) as u64).collect();
        let mut whole = Features::default();
        whole.resize(&m.config, tokens.len());
        m.featurize(&[], &tokens, whole.as_mut());
        let mut part = Features::default();
        part.resize(&m.config, tokens.len() - 17);
        m.featurize(&tokens[15..17], &tokens[17..], part.as_mut());
        // Cut in pieces on all cores: the same.
        let long: Vec<u64> = (0..3000).map(|i| (i * 31 % 97) as u64).collect();
        let (mut one, mut par) = (Features::default(), Features::default());
        one.resize(&m.config, long.len());
        m.featurize(&[5, 6], &long, one.as_mut());
        featurize_parallel(&m, &[5, 6], &long, &mut par);
        assert_eq!((one.q, one.k, one.v), (par.q, par.k, par.v));
        let (hk, hv) = (2 * 16, 2 * 8);
        for t in 0..tokens.len() {
            let at = |i: isize| if i < 0 { 0 } else { tokens[i as usize] };
            let one = single(&m, at(t as isize - 2), at(t as isize - 1), tokens[t]);
            assert_eq!(&whole.k[t * hk..][..hk], &one.k[..], "key of token {t}");
            assert_eq!(&whole.q[t * hk..][..hk], &one.q[..], "query of token {t}");
            assert_eq!(&whole.v[t * hv..][..hv], &one.v[..], "value of token {t}");
            if t >= 17 {
                let s = t - 17;
                assert_eq!(
                    &part.k[s * hk..][..hk],
                    &one.k[..],
                    "key of token {t} after a prefix"
                );
                assert_eq!(&part.q[s * hk..][..hk], &one.q[..]);
            }
        }
        for row in whole.k.chunks_exact(16).chain(whole.v.chunks_exact(8)) {
            let norm = dot(row, row).sqrt();
            assert!(
                (0.5..1.5).contains(&norm),
                "features have norm about 1, found {norm}"
            );
        }
        assert!(whole.beta.iter().all(|&b| b == 0.5) && whole.g.iter().all(|&g| g == 0.0));
    }
}
