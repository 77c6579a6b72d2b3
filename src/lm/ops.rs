//! The element-wise and per-row pieces of a Gated DeltaNet layer, each as
//! flash-linear-attention 0.6.0 computes it (`SEMANTICS.md` of the test fixtures):
//! norms with eps inside the square root, the causal short convolution with its cache,
//! the gates.

use rayon::prelude::*;

/// Rows per parallel task: below this, threads cost more than they save.
const ROWS_PER_TASK: usize = 16;

use crate::backend::cpu::exp::exp;

/// `x · sigmoid(x)`, with the engine's branch-free `exp` so loops of it vectorise.
#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// `1 / (1 + e^-x)`.
#[inline]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// `log(1 + e^x)`, and `x` itself above 20 (fla's threshold).
#[inline]
pub fn softplus(x: f32) -> f32 {
    if x > 20.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

/// `y[t] = x[t] / sqrt(mean(x[t]²) + eps) · w` for each row `t` of width `w.len()`.
pub fn rms_norm_rows(x: &[f32], w: &[f32], eps: f32, y: &mut [f32]) {
    let d = w.len();
    y.par_chunks_mut(d)
        .zip(x.par_chunks(d))
        .with_min_len(ROWS_PER_TASK)
        .for_each(|(y, x)| rms_norm(x, w, eps, y));
}

/// One row of [`rms_norm_rows`].
#[inline]
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, y: &mut [f32]) {
    let mean = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let r = 1.0 / (mean + eps).sqrt();
    for ((y, x), w) in y.iter_mut().zip(x).zip(w) {
        *y = x * r * w;
    }
}

/// `x / sqrt(sum(x²) + 1e-6)` in place (fla's l2-norm: a sum, eps inside the root).
#[inline]
pub fn l2_normalize(x: &mut [f32]) {
    let r = 1.0 / (x.iter().map(|v| v * v).sum::<f32>() + 1e-6).sqrt();
    x.iter_mut().for_each(|v| *v *= r);
}

/// The causal depthwise convolution over the first `channels` columns of `input`
/// (`[T, stride]` row-major), followed by SiLU, into `out: [T, channels]`.
///
/// `cache: [channels, W]` holds the `W` inputs before the window, oldest first (fla's
/// conv cache; zeros before the sequence starts); on return it holds the window's last
/// `W` inputs (older ones from the cache when the window is shorter than `W`).
/// `taps: [W, channels]`, oldest tap first (the checkpoint's `[channels, 1, W]`
/// transposed, so the loops over channels run along memory and vectorise). `ext` is
/// scratch: the `W - 1` cached inputs and the window, `[W - 1 + T, channels]`.
#[allow(clippy::too_many_arguments)]
pub fn short_conv(
    input: &[f32],
    stride: usize,
    tokens: usize,
    taps: &[f32],
    cache: &mut [f32],
    width: usize,
    ext: &mut Vec<f32>,
    out: &mut [f32],
) {
    let channels = taps.len() / width;
    let lead = width - 1;
    ext.clear();
    ext.resize((lead + tokens) * channels, 0.0);
    for s in 0..lead {
        let row = &mut ext[s * channels..(s + 1) * channels];
        for (c, x) in row.iter_mut().enumerate() {
            *x = cache[c * width + 1 + s];
        }
    }
    ext[lead * channels..]
        .par_chunks_mut(channels)
        .zip(input.par_chunks(stride))
        .with_min_len(ROWS_PER_TASK)
        .for_each(|(e, x)| e.copy_from_slice(&x[..channels]));
    let ext_ro: &[f32] = ext;
    out[..tokens * channels]
        .par_chunks_mut(channels)
        .enumerate()
        .with_min_len(ROWS_PER_TASK)
        .for_each(|(t, row)| {
            row.fill(0.0);
            for j in 0..width {
                let src = &ext_ro[(t + j) * channels..(t + j + 1) * channels];
                let tap = &taps[j * channels..(j + 1) * channels];
                for ((o, x), w) in row.iter_mut().zip(src).zip(tap) {
                    *o += w * x;
                }
            }
            for o in row.iter_mut() {
                *o = silu(*o);
            }
        });
    // The new cache: the last W inputs. `ext` holds all but the oldest cached one, so
    // only an empty window (which keeps the cache as it is) reaches before it.
    let rows = lead + tokens;
    for c in 0..channels {
        for i in 0..width {
            let r = rows as isize - width as isize + i as isize;
            if r >= 0 {
                cache[c * width + i] = ext_ro[r as usize * channels + c];
            }
        }
    }
}

/// Numerically stable `log Σ exp(x)`: the sum in f32 lanes the compiler vectorises
/// (with the engine's branch-free `exp`, relative error < 1e-6), folded in f64.
pub fn log_sum_exp(x: &[f32]) -> f64 {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return max as f64;
    }
    let mut lanes = [0.0f32; 16];
    let chunks = x.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l += exp(v - max);
        }
    }
    let mut sum: f64 = lanes.iter().map(|&l| l as f64).sum();
    sum += tail.iter().map(|&v| ((v - max) as f64).exp()).sum::<f64>();
    max as f64 + sum.ln()
}

/// The negative log-likelihood (nats) of `next[t]` under each row `t` of `logits`
/// (`[T, vocab]`), on all cores.
pub fn next_token_nll(logits: &[f32], vocab: usize, next: &[u32], out: &mut Vec<f64>) {
    out.clear();
    out.par_extend(
        logits
            .par_chunks(vocab)
            .zip(next.par_iter())
            .map(|(row, &id)| log_sum_exp(row) - row[id as usize] as f64),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_in_pieces_equals_one_call_and_keeps_the_last_inputs() {
        let (width, channels, tokens) = (4, 3, 9);
        let taps: Vec<f32> = (0..channels * width)
            .map(|i| 0.1 * i as f32 - 0.4)
            .collect();
        let input: Vec<f32> = (0..tokens * channels)
            .map(|i| (i as f32 * 0.37).sin())
            .collect();
        let mut cache = vec![0.0; channels * width];
        let mut whole = vec![0.0; tokens * channels];
        let mut ext = Vec::new();
        short_conv(
            &input, channels, tokens, &taps, &mut cache, width, &mut ext, &mut whole,
        );
        let whole_cache = cache.clone();
        // The cache holds the last W inputs, newest last.
        for c in 0..channels {
            for i in 0..width {
                assert_eq!(
                    whole_cache[c * width + i],
                    input[(tokens - width + i) * channels + c]
                );
            }
        }
        let mut cache = vec![0.0; channels * width];
        let mut pieces = vec![0.0; tokens * channels];
        let mut start = 0;
        for len in [2, 1, 5, 1] {
            short_conv(
                &input[start * channels..],
                channels,
                len,
                &taps,
                &mut cache,
                width,
                &mut ext,
                &mut pieces[start * channels..(start + len) * channels],
            );
            start += len;
        }
        assert_eq!(whole, pieces);
        assert_eq!(whole_cache, cache);
        // First output: only the newest tap sees a real input.
        let want = silu(taps[(width - 1) * channels] * input[0]);
        assert!((whole[0] - want).abs() < 1e-7);
    }

    #[test]
    fn softplus_and_norms() {
        assert!((softplus(0.0) - 2f32.ln()).abs() < 1e-7);
        assert_eq!(softplus(30.0), 30.0);
        let mut v = [3.0f32, 4.0];
        l2_normalize(&mut v);
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
        let mut y = [0.0f32; 2];
        rms_norm(&[3.0, 4.0], &[1.0, 2.0], 0.0, &mut y);
        let r = (12.5f32).sqrt();
        assert!((y[0] - 3.0 / r).abs() < 1e-6 && (y[1] - 8.0 / r).abs() < 1e-6);
        assert!((log_sum_exp(&[0.0, 0.0]) - 2f64.ln()).abs() < 1e-12);
    }
}
