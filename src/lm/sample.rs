//! Choosing the next token from logits: greedy, or sampled with temperature, top-k
//! and top-p from a seeded generator, so a run can be repeated exactly.

use crate::error::{Error, Result};
use crate::hash::SplitMix64;

/// SplitMix64's increment: its state after `n` draws is `seed + n·γ`.
const SPLITMIX64_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// How to pick each generated token.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampling {
    /// 0 means greedy (the most likely token; the first of equals).
    pub temperature: f32,
    /// Keep only the `k` most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the most likely tokens whose probabilities sum to at least `p` (1: all).
    pub top_p: f32,
    /// Seed of the generator.
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

impl Sampling {
    /// Fails on values that mean nothing (negative temperature, `top_p` outside
    /// (0, 1]), naming the option.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(Error::Config(format!(
                "--temperature must be a finite number ≥ 0, found {}",
                self.temperature
            )));
        }
        if self.temperature > 0.0 && !(1.0 / self.temperature).is_finite() {
            return Err(Error::Config(format!(
                "--temperature {} is too small to divide by in f32 (use 0 for greedy picks)",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::Config(format!(
                "--top-p must be in (0, 1], found {}",
                self.top_p
            )));
        }
        Ok(())
    }
}

/// A sampler with its generator's position.
///
/// Every non-greedy pick consumes exactly one draw of the generator, whatever the row
/// (even one of NaNs only), and a greedy pick none: the device sampler
/// (`ltm_lm_sample`) takes draw number [`Sampler::draws`] for its row, so a generation
/// may pick on the device, on the host, or continue from [`Sampler::at`] after a
/// checkpoint, and draw the same numbers.
pub struct Sampler {
    config: Sampling,
    rng: SplitMix64,
    draws: u64,
    scratch: Vec<(f32, u32)>,
}

impl Sampler {
    /// A sampler for `config` (validated).
    pub fn new(config: Sampling) -> Result<Self> {
        Self::at(config, 0)
    }

    /// A sampler for `config` whose generator has already made `draws` draws: the
    /// state to continue a generation (`draws` from [`Sampler::draws`] of the earlier
    /// sampler). SplitMix64's state after `n` draws is `seed + n·γ`, so this is O(1).
    pub fn at(config: Sampling, draws: u64) -> Result<Self> {
        config.validate()?;
        let rng = SplitMix64::new(
            config
                .seed
                .wrapping_add(draws.wrapping_mul(SPLITMIX64_GAMMA)),
        );
        Ok(Sampler {
            config,
            rng,
            draws,
            scratch: Vec::new(),
        })
    }

    /// The settings.
    pub fn config(&self) -> &Sampling {
        &self.config
    }

    /// Whether picks are greedy (temperature 0 or top-k 1): no draws, the first
    /// largest logit.
    pub fn is_greedy(&self) -> bool {
        self.config.temperature == 0.0 || self.config.top_k == 1
    }

    /// Draws the generator has made: the index of the next draw.
    pub fn draws(&self) -> u64 {
        self.draws
    }

    /// Counts a draw made elsewhere (by the device sampler, with index
    /// [`Sampler::draws`]) and moves the generator past it, as [`Sampler::pick`] would
    /// have. Greedy samplers draw nothing, so this does nothing for them.
    pub fn skip_draw(&mut self) {
        if !self.is_greedy() {
            self.draw();
        }
    }

    fn draw(&mut self) -> u64 {
        self.draws += 1;
        self.rng.next_u64()
    }

    /// The next token for `logits` (`[vocab]`). NaN logits are never chosen.
    pub fn pick(&mut self, logits: &[f32]) -> u32 {
        if self.is_greedy() {
            return argmax(logits);
        }
        let inv_t = 1.0 / self.config.temperature;
        let s = &mut self.scratch;
        s.clear();
        s.extend(
            logits
                .iter()
                .enumerate()
                .filter(|(_, x)| !x.is_nan())
                .map(|(i, &x)| (x * inv_t, i as u32)),
        );
        if s.is_empty() {
            // Drawn all the same: the device sampler takes one draw per row.
            self.draw();
            return 0;
        }
        s.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        if self.config.top_k > 0 {
            s.truncate(self.config.top_k);
        }
        let max = s[0].0;
        if !max.is_finite() {
            // logits/T overflowed (a tiny temperature), or nothing is above −inf: every
            // exp(y − max) would be NaN and the walk would pick the last candidate. The
            // limit of a vanishing temperature is greedy; the draw is made all the same
            // (the device sampler counts one per row).
            self.draw();
            return argmax(logits);
        }
        let mut total = 0.0f64;
        for e in s.iter_mut() {
            let p = ((e.0 - max) as f64).exp();
            e.0 = p as f32;
            total += p;
        }
        if self.config.top_p < 1.0 {
            let mut cum = 0.0f64;
            let mut keep = s.len();
            for (i, e) in s.iter().enumerate() {
                cum += e.0 as f64 / total;
                if cum >= self.config.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            s.truncate(keep);
            total = s.iter().map(|e| e.0 as f64).sum();
        }
        // The fields, not `self.draw()`: `s` borrows the scratch buffer.
        self.draws += 1;
        let u = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * total;
        let mut cum = 0.0f64;
        for e in s.iter() {
            cum += e.0 as f64;
            if u < cum {
                return e.1;
            }
        }
        s[s.len() - 1].1
    }
}

/// Index of the largest value, the first of equals; NaN never wins.
pub fn argmax(x: &[f32]) -> u32 {
    let mut best = (f32::NEG_INFINITY, 0u32);
    for (i, &v) in x.iter().enumerate() {
        if v > best.0 {
            best = (v, i as u32);
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_temperature_that_overflows_the_logits_picks_greedily() {
        // 5/1e-38 overflows to +inf: every exp(y − max) was NaN and the least likely
        // token came out.
        let logits = [1.0, 5.0, 3.0, f32::NAN, -2.0];
        for (t, top_k, top_p) in [(1e-38, 0, 1.0), (1e-38, 3, 0.5), (1e-30, 0, 1.0)] {
            let mut s = Sampler::new(Sampling {
                temperature: t,
                top_k,
                top_p,
                seed: 3,
            })
            .unwrap();
            for n in 1..=20 {
                assert_eq!(s.pick(&logits), 1, "T={t} top-k {top_k} top-p {top_p}");
                assert_eq!(s.draws(), n, "one draw a pick, as on the device");
            }
        }
        // Logits that are +inf themselves: the first of them, never a NaN's index.
        let mut s = Sampler::new(Sampling {
            temperature: 0.7,
            ..Sampling::default()
        })
        .unwrap();
        assert_eq!(s.pick(&[0.0, f32::INFINITY, f32::NAN, f32::INFINITY]), 1);
        assert_eq!(s.pick(&[f32::NEG_INFINITY, f32::NEG_INFINITY]), 0);
        // A temperature whose reciprocal is not finite is refused by name.
        let e = Sampler::new(Sampling {
            temperature: 1e-45,
            ..Sampling::default()
        })
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("--temperature"), "{e}");
    }

    #[test]
    fn greedy_top_k_top_p_and_seed() {
        let logits = [1.0, 3.0, f32::NAN, 2.0, 3.0];
        assert_eq!(argmax(&logits), 1);
        let mut greedy = Sampler::new(Sampling::default()).unwrap();
        assert_eq!(greedy.pick(&logits), 1);
        // top-k 2 keeps the two 3.0s only.
        let mut s = Sampler::new(Sampling {
            temperature: 1.0,
            top_k: 2,
            top_p: 1.0,
            seed: 7,
        })
        .unwrap();
        let picks: Vec<u32> = (0..200).map(|_| s.pick(&logits)).collect();
        assert!(picks.iter().all(|&p| p == 1 || p == 4));
        assert!(picks.contains(&1) && picks.contains(&4));
        // A tiny top-p keeps only the most likely token.
        let mut s = Sampler::new(Sampling {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.01,
            seed: 7,
        })
        .unwrap();
        assert!((0..50).all(|_| s.pick(&[0.0, 5.0, 1.0]) == 1));
        // The same seed gives the same draws.
        let cfg = Sampling {
            temperature: 0.8,
            top_k: 0,
            top_p: 0.9,
            seed: 3,
        };
        let (mut a, mut b) = (
            Sampler::new(cfg.clone()).unwrap(),
            Sampler::new(cfg).unwrap(),
        );
        let l: Vec<f32> = (0..50).map(|i| (i as f32 * 0.7).sin()).collect();
        for _ in 0..20 {
            assert_eq!(a.pick(&l), b.pick(&l));
        }
        assert!(Sampler::new(Sampling {
            temperature: -1.0,
            ..Sampling::default()
        })
        .is_err());
        assert!(Sampler::new(Sampling {
            top_p: 0.0,
            ..Sampling::default()
        })
        .is_err());
    }

    #[test]
    fn draws_are_counted_skipped_and_resumed() {
        let cfg = Sampling {
            temperature: 0.9,
            top_k: 7,
            top_p: 0.95,
            seed: 42,
        };
        let rows: Vec<Vec<f32>> = (0..12)
            .map(|r| {
                (0..40)
                    .map(|i| ((i * (r + 3)) as f32 * 0.37).cos())
                    .collect()
            })
            .collect();
        let mut cpu = Sampler::new(cfg.clone()).unwrap();
        let all: Vec<u32> = rows.iter().map(|r| cpu.pick(r)).collect();
        assert_eq!(cpu.draws(), rows.len() as u64);

        // Draws made elsewhere (the device sampler's) and skipped here leave the
        // generator where the host's own picks would have: the rest agree.
        let mut mixed = Sampler::new(cfg.clone()).unwrap();
        for _ in 0..5 {
            mixed.skip_draw();
        }
        assert_eq!(mixed.draws(), 5);
        let rest: Vec<u32> = rows[5..].iter().map(|r| mixed.pick(r)).collect();
        assert_eq!(rest, all[5..]);

        // A sampler made at a draw count (after a checkpoint) continues the same way.
        let mut resumed = Sampler::at(cfg.clone(), 8).unwrap();
        let rest: Vec<u32> = rows[8..].iter().map(|r| resumed.pick(r)).collect();
        assert_eq!(rest, all[8..]);
        assert_eq!(resumed.draws(), rows.len() as u64);

        // A row of NaNs only gives id 0 and still takes its draw (one per row, as on
        // the device).
        let mut nan = Sampler::new(cfg.clone()).unwrap();
        assert_eq!(nan.pick(&[f32::NAN; 4]), 0);
        assert_eq!(nan.draws(), 1);
        assert_eq!(nan.pick(&rows[1]), all[1]);

        // Greedy picks draw nothing, and skipping is a no-op for them.
        let mut greedy = Sampler::new(Sampling {
            top_k: 1,
            ..cfg.clone()
        })
        .unwrap();
        assert!(greedy.is_greedy());
        greedy.pick(&rows[0]);
        greedy.skip_draw();
        assert_eq!(greedy.draws(), 0);
        assert!(!Sampler::new(cfg).unwrap().is_greedy());
    }
}
