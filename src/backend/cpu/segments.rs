//! CPU twin of the GPU's two-level segment scan (`kernels/scan.cu`): the window is cut
//! into segments of whole 64-token chunks exactly as the CUDA launch plan cuts it
//! (`backend/cuda/plan.rs`), then
//!
//! 1. `ltm_segment_maps`: each segment but the last as an affine map of the state it
//!    starts from, `S_end = M S_start + B`, found by running the segment on the augmented
//!    state `[I | 0]` with values `[0 | v]` (the recurrence is linear in the state and
//!    the values together, so the augmented state ends as `[M | B]`);
//! 2. `ltm_segment_combine`: `S_start(g + 1) = M_g S_start(g) + B_g` in f32, products
//!    fused and summed in the kernel's order;
//! 3. `ltm_scan`: every segment again from its start, with outputs.
//!
//! Steps 1 and 3 use the CPU forward, so this checks the decomposition and the segment
//! arithmetic, not the kernels' inner loops (the emulator does that). Not a fast path:
//! the maps cost `(K + V) / V` forwards.

use super::CpuBackend;
use crate::backend::split::segment_split;
use crate::backend::Backend;
use crate::config::MemoryConfig;
use crate::error::Result;
use crate::inputs::ForwardInputs;
use crate::state::State;

const CHUNK: usize = 64;

/// Tokens `t0..t1` of every sequence of a `[B, T, H, dim]` tensor, as f32.
fn slice_tokens(
    data: crate::tensor::Data<'_>,
    batch: usize,
    tokens: usize,
    row: usize,
    t0: usize,
    t1: usize,
) -> Vec<f32> {
    let mut out = vec![0.0f32; batch * (t1 - t0) * row];
    for b in 0..batch {
        let dst = &mut out[b * (t1 - t0) * row..(b + 1) * (t1 - t0) * row];
        data.read_scaled((b * tokens + t0) * row, dst, 1.0);
    }
    out
}

/// The inputs of tokens `t0..t1` as f32 tensors: q, k, v, β, g.
struct Slice {
    tokens: usize,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    beta: Vec<f32>,
    g: Vec<f32>,
}

impl Slice {
    fn new(config: &MemoryConfig, inputs: &ForwardInputs<'_>, t0: usize, t1: usize) -> Self {
        let (b, t, h) = (inputs.batch, inputs.tokens, config.heads);
        Slice {
            tokens: t1 - t0,
            q: slice_tokens(inputs.q, b, t, h * config.key_dim, t0, t1),
            k: slice_tokens(inputs.k, b, t, h * config.key_dim, t0, t1),
            v: slice_tokens(inputs.v, b, t, h * config.value_dim, t0, t1),
            beta: slice_tokens(inputs.beta, b, t, h, t0, t1),
            g: slice_tokens(inputs.g, b, t, h, t0, t1),
        }
    }

    fn inputs<'a>(&'a self, batch: usize, v: &'a [f32]) -> ForwardInputs<'a> {
        ForwardInputs {
            batch,
            tokens: self.tokens,
            q: (&self.q[..]).into(),
            k: (&self.k[..]).into(),
            v: v.into(),
            beta: (&self.beta[..]).into(),
            g: (&self.g[..]).into(),
        }
    }
}

/// `[M | B]` (`[B, H, K, K + V]`) of one segment: twin of `ltm_segment_maps`.
fn segment_map(
    cpu: &CpuBackend,
    config: &MemoryConfig,
    batch: usize,
    s: &Slice,
) -> Result<Vec<f32>> {
    let (h, k, v) = (config.heads, config.key_dim, config.value_dim);
    let w = k + v;
    let aug = MemoryConfig {
        value_dim: w,
        ..config.clone()
    };
    let mut v_aug = vec![0.0f32; batch * s.tokens * h * w];
    for (row, dst) in v_aug.chunks_exact_mut(w).enumerate() {
        dst[k..].copy_from_slice(&s.v[row * v..(row + 1) * v]);
    }
    let mut start = vec![0.0f32; batch * h * k * w];
    for m in start.chunks_exact_mut(k * w) {
        for i in 0..k {
            m[i * w + i] = 1.0;
        }
    }
    let mut state = State::from_values(&aug, batch, start)?;
    cpu.forward(&aug, &s.inputs(batch, &v_aug), &mut state)?;
    Ok(state.values().to_vec())
}

/// Segment start states `[G, B, H, K, V]` from the window's state and the maps of the
/// first `G − 1` segments: twin of `ltm_segment_combine` (f32, `acc = B; acc += M·S`
/// over the key index in order, each step one fused multiply-add as nvcc emits it).
fn combine(state: &[f32], maps: &[Vec<f32>], rows: usize, k: usize, v: usize) -> Vec<Vec<f32>> {
    let w = k + v;
    let mut starts = vec![state.to_vec()];
    for map in maps {
        let prev = starts.last().expect("starts with the window's state");
        let mut next = vec![0.0f32; rows * k * v];
        for bh in 0..rows {
            let m = &map[bh * k * w..(bh + 1) * k * w];
            let s = &prev[bh * k * v..(bh + 1) * k * v];
            for row in 0..k {
                for col in 0..v {
                    let mut acc = m[row * w + k + col];
                    for j in 0..k {
                        acc = m[row * w + j].mul_add(s[j * v + col], acc);
                    }
                    next[bh * k * v + row * v + col] = acc;
                }
            }
        }
        starts.push(next);
    }
    starts
}

impl CpuBackend {
    /// The forward as the GPU's segment scan computes it, one window of all of
    /// `inputs` cut into (at most) `segments` segments of whole 64-token chunks:
    /// segment maps, their combination into start states, then every segment from its
    /// start. Agrees with [`Backend::forward`] within f32 rounding; for tests of the
    /// segment scan's arithmetic without a GPU.
    pub fn forward_segmented(
        &self,
        config: &MemoryConfig,
        inputs: &ForwardInputs<'_>,
        state: &mut State,
        segments: usize,
    ) -> Result<Vec<f32>> {
        inputs.validate(config)?;
        state.check_matches(config, inputs.batch)?;
        let (b, t, h, k, v) = (
            inputs.batch,
            inputs.tokens,
            config.heads,
            config.key_dim,
            config.value_dim,
        );
        let nc = t.div_ceil(CHUNK);
        let (per_seg, g) = segment_split(nc, segments, segments.max(1));
        let bounds: Vec<(usize, usize)> = (0..g)
            .map(|i| (i * per_seg * CHUNK, ((i + 1) * per_seg * CHUNK).min(t)))
            .collect();
        let slices: Vec<Slice> = bounds
            .iter()
            .map(|&(t0, t1)| Slice::new(config, inputs, t0, t1))
            .collect();
        let maps = slices
            .iter()
            .take(g.saturating_sub(1))
            .map(|s| segment_map(self, config, b, s))
            .collect::<Result<Vec<_>>>()?;
        let starts = combine(state.values(), &maps, b * h, k, v);
        let mut out = vec![0.0f32; inputs.output_len(config)];
        let row = h * v;
        for ((s, start), &(t0, t1)) in slices.iter().zip(&starts).zip(&bounds) {
            let mut seg_state = State::from_values(config, b, start.clone())?;
            let o = self.forward(config, &s.inputs(b, &s.v), &mut seg_state)?;
            for bi in 0..b {
                out[(bi * t + t0) * row..(bi * t + t1) * row]
                    .copy_from_slice(&o[bi * (t1 - t0) * row..(bi + 1) * (t1 - t0) * row]);
            }
            if t1 == t {
                state.values_mut().copy_from_slice(seg_state.values());
            }
        }
        state.set_tokens_seen(state.tokens_seen() + t as u64);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::recurrent_forward;

    /// Inputs of one pseudo-random draw: unit keys and queries, β in
    /// `beta_lo..beta_hi`, log-decays `g` in `g_lo..0`.
    fn inputs(
        (b, t, h, k, v): (usize, usize, usize, usize, usize),
        beta: (f32, f32),
        g_lo: f32,
        seed: u64,
    ) -> [Vec<f32>; 5] {
        let mut x = seed;
        let mut next = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 40) as f32) / (1u64 << 24) as f32
        };
        let mut unit = |n: usize| {
            let mut out = Vec::with_capacity(b * t * h * n);
            for _ in 0..b * t * h {
                let row: Vec<f32> = (0..n).map(|_| next() - 0.5).collect();
                let norm = row.iter().map(|a| a * a).sum::<f32>().sqrt();
                out.extend(row.iter().map(|a| a / norm));
            }
            out
        };
        let q = unit(k);
        let kk = unit(k);
        let mut next2 = {
            let mut y = seed ^ 0x9e37_79b9_7f4a_7c15;
            move || {
                y = y
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((y >> 40) as f32) / (1u64 << 24) as f32
            }
        };
        let vv: Vec<f32> = (0..b * t * h * v).map(|_| 2.0 * next2() - 1.0).collect();
        let bt: Vec<f32> = (0..b * t * h)
            .map(|_| beta.0 + (beta.1 - beta.0) * next2())
            .collect();
        let g: Vec<f32> = (0..b * t * h).map(|_| g_lo * next2()).collect();
        [q, kk, vv, bt, g]
    }

    fn max_rel(got: &[f32], want: &[f64]) -> f64 {
        let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let err = got
            .iter()
            .zip(want)
            .fold(0.0f64, |m, (a, b)| m.max((*a as f64 - b).abs()));
        err / scale.max(1e-30)
    }

    /// Every segment count, against the float64 recurrence, with no decay and small
    /// writes so the state carried into a segment still matters at its end: a combine
    /// that dropped `M·S` (or a wrong segment boundary) would be off by O(1).
    #[test]
    fn segment_scan_matches_the_float64_recurrence() {
        let (b, h, k, v, t) = (1, 2, 16, 12, 1000);
        let config = MemoryConfig::new(h, k, v);
        for (beta, g_lo) in [((0.02, 0.2), 0.0), ((0.2, 1.0), -0.1)] {
            let [q, kk, vv, bt, g] = inputs((b, t, h, k, v), beta, g_lo, 7);
            let inputs = ForwardInputs {
                batch: b,
                tokens: t,
                q: (&q).into(),
                k: (&kk).into(),
                v: (&vv).into(),
                beta: (&bt).into(),
                g: (&g).into(),
            };
            let s0: Vec<f32> = (0..b * h * k * v)
                .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
                .collect();
            let mut ref_state: Vec<f64> = s0.iter().map(|&x| x as f64).collect();
            let want = recurrent_forward(&config, &inputs, &mut ref_state).unwrap();
            let cpu = CpuBackend::new();
            for segments in [1, 2, 4, 16] {
                let mut state = State::from_values(&config, b, s0.clone()).unwrap();
                let out = cpu
                    .forward_segmented(&config, &inputs, &mut state, segments)
                    .unwrap();
                let (eo, es) = (max_rel(&out, &want), max_rel(state.values(), &ref_state));
                assert!(eo < 1e-4 && es < 1e-4, "G={segments}: {eo:e} {es:e}");
            }
            if g_lo < 0.0 {
                continue; // decay forgets the state anyway: nothing to show below
            }
            // Without M·S the starts forget the window's state: far off.
            let starts_without_state = {
                let slices = Slice::new(&config, &inputs, 0, 256);
                let map = segment_map(&cpu, &config, b, &slices).unwrap();
                let mut zero_m = map.clone();
                for m in zero_m.chunks_exact_mut(k * (k + v)) {
                    for row in 0..k {
                        m[row * (k + v)..row * (k + v) + k].fill(0.0);
                    }
                }
                let good = combine(&s0, std::slice::from_ref(&map), b * h, k, v);
                let bad = combine(&s0, &[zero_m], b * h, k, v);
                let diff = good[1]
                    .iter()
                    .zip(&bad[1])
                    .fold(0.0f32, |m, (a, c)| m.max((a - c).abs()));
                let size = good[1].iter().fold(0.0f32, |m, a| m.max(a.abs()));
                diff / size
            };
            assert!(starts_without_state > 0.05, "{starts_without_state}");
        }
    }

    /// The same segmented forward agrees with the CPU's own plain forward.
    #[test]
    fn segment_scan_matches_the_plain_forward() {
        let (b, h, k, v, t) = (1, 3, 16, 40, 300);
        let config = MemoryConfig::new(h, k, v);
        let [q, kk, vv, bt, g] = inputs((b, t, h, k, v), (0.1, 0.9), -0.05, 3);
        let inputs = ForwardInputs {
            batch: b,
            tokens: t,
            q: (&q).into(),
            k: (&kk).into(),
            v: (&vv).into(),
            beta: (&bt).into(),
            g: (&g).into(),
        };
        let cpu = CpuBackend::new();
        let mut plain = State::zeros(&config, b);
        let want = cpu.forward(&config, &inputs, &mut plain).unwrap();
        let want64: Vec<f64> = want.iter().map(|&x| x as f64).collect();
        let plain64: Vec<f64> = plain.values().iter().map(|&x| x as f64).collect();
        for segments in [1, 2, 3, 5] {
            let mut state = State::zeros(&config, b);
            let out = cpu
                .forward_segmented(&config, &inputs, &mut state, segments)
                .unwrap();
            if segments == 1 {
                assert_eq!(out, want, "one segment is the plain forward, bit for bit");
            }
            assert!(max_rel(&out, &want64) < 1e-5, "G={segments}");
            assert!(max_rel(state.values(), &plain64) < 1e-5, "G={segments}");
            assert_eq!(state.tokens_seen(), t as u64);
        }
    }
}
