//! Scaling exponents: `time ≈ c · n^p`, fitted by least squares on `(ln n, ln time)`.

use serde::Serialize;

/// A fitted power law and how well it fits.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PowerFit {
    /// `p` in `c · n^p`.
    pub exponent: f64,
    /// `c` in `c · n^p`.
    pub coefficient: f64,
    /// Coefficient of determination in log-log space (1 is a perfect line).
    pub r_squared: f64,
    /// The smallest `n` of the points fitted.
    pub from: f64,
    /// The largest `n` of the points fitted.
    pub to: f64,
    /// Points the fit used.
    pub points: usize,
}

impl PowerFit {
    /// `c · n^p`.
    pub fn predict(&self, n: f64) -> f64 {
        self.coefficient * n.powf(self.exponent)
    }
}

/// Fits `y ≈ c · x^p` to the points with positive, finite coordinates. `None` with
/// fewer than two such points or when every `x` is the same.
pub fn fit_power_law(points: &[(f64, f64)]) -> Option<PowerFit> {
    let used: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite() && *x > 0.0 && *y > 0.0)
        .collect();
    let logs: Vec<(f64, f64)> = used.iter().map(|(x, y)| (x.ln(), y.ln())).collect();
    let n = logs.len() as f64;
    if logs.len() < 2 {
        return None;
    }
    let mx = logs.iter().map(|p| p.0).sum::<f64>() / n;
    let my = logs.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = logs.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = logs.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let syy: f64 = logs.iter().map(|p| (p.1 - my).powi(2)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let exponent = sxy / sxx;
    let intercept = my - exponent * mx;
    let residual: f64 = logs
        .iter()
        .map(|p| (p.1 - intercept - exponent * p.0).powi(2))
        .sum();
    // A flat series (y constant up to rounding) has nothing to explain: a perfect fit.
    let r_squared = if syy > 1e-20 {
        1.0 - residual / syy
    } else {
        1.0
    };
    let xs = used.iter().map(|p| p.0);
    Some(PowerFit {
        exponent,
        coefficient: intercept.exp(),
        r_squared,
        from: xs.clone().fold(f64::INFINITY, f64::min),
        to: xs.fold(0.0, f64::max),
        points: logs.len(),
    })
}

/// Where two power laws cross: the `n` at which `a.predict(n) == b.predict(n)`, if
/// their exponents differ.
pub fn crossover(a: &PowerFit, b: &PowerFit) -> Option<f64> {
    let dp = b.exponent - a.exponent;
    if dp.abs() < 1e-9 {
        return None;
    }
    let n = (a.coefficient / b.coefficient).powf(1.0 / dp);
    n.is_finite().then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_known_exponents() {
        for (c, p) in [(3e-9, 1.0), (2.5e-11, 2.0), (7.0, 0.0), (0.1, 1.37)] {
            let pts: Vec<(f64, f64)> = (8..20)
                .map(|k| {
                    let n = (1u64 << k) as f64;
                    (n, c * n.powf(p))
                })
                .collect();
            let fit = fit_power_law(&pts).unwrap();
            assert!((fit.exponent - p).abs() < 1e-9, "{} vs {p}", fit.exponent);
            assert!((fit.coefficient / c - 1.0).abs() < 1e-6);
            assert!(fit.r_squared > 1.0 - 1e-12, "{c} {p}: R² {}", fit.r_squared);
            assert_eq!((fit.from, fit.to, fit.points), (256.0, 524_288.0, 12));
            let n = 1e8;
            assert!((fit.predict(n) / (c * n.powf(p)) - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn noise_moves_the_exponent_little_and_lowers_r_squared() {
        // ±10% multiplicative noise, deterministic.
        let noise = [1.1, 0.9, 1.05, 0.95, 1.0, 1.08, 0.92, 1.02, 0.98, 1.1];
        let pts: Vec<(f64, f64)> = noise
            .iter()
            .enumerate()
            .map(|(k, f)| {
                let n = (1024u64 << k) as f64;
                (n, 1e-10 * n * n * f)
            })
            .collect();
        let fit = fit_power_law(&pts).unwrap();
        assert!((fit.exponent - 2.0).abs() < 0.03, "{}", fit.exponent);
        assert!(fit.r_squared < 1.0 && fit.r_squared > 0.99);
    }

    #[test]
    fn too_few_or_degenerate_points_give_none() {
        assert!(fit_power_law(&[]).is_none());
        assert!(fit_power_law(&[(10.0, 1.0)]).is_none());
        assert!(fit_power_law(&[(10.0, 1.0), (10.0, 2.0)]).is_none());
        // Non-positive and non-finite points are ignored, not fitted.
        assert!(fit_power_law(&[(10.0, 1.0), (0.0, 1.0), (20.0, f64::NAN)]).is_none());
    }

    #[test]
    fn crossover_of_linear_and_quadratic() {
        let linear = fit_power_law(&[(1.0, 1e-6), (2.0, 2e-6)]).unwrap();
        let quadratic = fit_power_law(&[(1.0, 1e-9), (2.0, 4e-9)]).unwrap();
        let n = crossover(&linear, &quadratic).unwrap();
        assert!((n / 1000.0 - 1.0).abs() < 1e-9, "{n}");
        assert!(crossover(&linear, &linear).is_none());
    }
}
