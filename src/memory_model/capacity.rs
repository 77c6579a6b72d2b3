//! The capacity formula of docs/memory-model.md ("Capacity"): the recall expected of `N` pairs
//! written into `R` rows at write strength β. `run` reports it beside the pairs it
//! wrote, so a state too small for its file says so instead of answering garbage.

use super::codec::{POSITIONS, SEGMENT};
use super::ModelConfig;

/// Standard normal upper tail.
fn q(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// erfc by Numerical Recipes' Chebyshev fit (relative error < 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.26551223
            + t * (1.00002368
                + t * (0.37409196
                    + t * (0.09678418
                        + t * (-0.18628806
                            + t * (0.27886807
                                + t * (-1.13520398
                                    + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
            .exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// Expected recall of N pairs in R rows with write strength β (see docs/memory-model.md).
pub fn recall(n: f64, r: f64, beta: f64) -> f64 {
    let steps = 400;
    let e_inf = beta / (2.0 - beta);
    let energy = |j: f64| e_inf * (1.0 - (-beta * (2.0 - beta) * j / r).exp());
    let mut total = 0.0;
    for k in 0..steps {
        // Pair written at i; `later` pairs come after it.
        let i = (k as f64 + 0.5) / steps as f64 * n;
        let later = n - i;
        let decay = (-beta * later / r).exp();
        // Mean of 1 + E(j) over the later writes, by the midpoint.
        let later_var = beta * beta * later / r * (1.0 + energy(i + later / 2.0));
        let earlier_var = (1.0 - beta).powi(2) * energy(i) * decay * decay;
        let z = (SEGMENT as f64 / 2.0).sqrt() * beta * decay
            / (later_var + earlier_var).max(1e-300).sqrt();
        let p = (62.0 * q(z)).min(1.0);
        let m = POSITIONS as f64;
        // Correct with no wrong position, or one repaired by the check symbol.
        total += (1.0 - p).powf(m) + m * p * (1.0 - p).powf(m - 1.0);
    }
    total / steps as f64
}

/// Pairs per row at which the formula predicts about 97% recall: the load docs/memory-model.md
/// calls the capacity.
pub const FULL_LOAD: f64 = 1.0;

/// Bytes of state (whole MiB) that hold `pairs` at [`FULL_LOAD`] for the default
/// heads: what `--state-bytes` should be for a file that wrote that many.
pub fn state_bytes_to_hold(pairs: u64) -> u64 {
    let rows = (pairs as f64 / FULL_LOAD).ceil() as u64;
    let bytes = rows.saturating_mul(ModelConfig::ROW_BYTES);
    bytes.div_ceil(1 << 20).max(1).saturating_mul(1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_formula_matches_the_readme_table() {
        // N / R → the "formula" column of docs/memory-model.md.
        for (load, want) in [(0.5, 1.0), (1.0, 0.971), (2.0, 0.403), (4.0, 0.138)] {
            let got = recall(load * 100_000.0, 100_000.0, 0.25);
            assert!((got - want).abs() < 0.01, "N/R = {load}: {got} vs {want}");
        }
        assert_eq!(state_bytes_to_hold(1), 1 << 20);
        assert_eq!(state_bytes_to_hold(1_000_000), 2076 << 20);
    }
}
