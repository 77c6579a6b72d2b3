//! Where a generation chooses each next token. On a CUDA device the logits row is
//! already in device memory: when the device sampler takes the sampler's settings
//! (greedy, or top-k up to [`super::kernels::SAMPLE_KMAX`]) it picks there and one `u32` comes back;
//! otherwise (no device, or top-k 0, i.e. the whole vocabulary, or larger) the row is
//! copied to the host and [`super::Sampler::pick`] chooses. Both make the same choice
//! and consume the same draws (see [`super::Sampler`]).

use super::kernels::samples_on_device;
use super::sample::Sampler;

/// How one next token is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PickPath {
    /// The logits row comes to the host and `Sampler::pick` chooses.
    Host,
    /// `ltm_lm_argmax` on the device; the id comes back, no draw.
    DeviceGreedy,
    /// `ltm_lm_sample` on the device with draw number `Sampler::draws`; the id comes
    /// back and the host sampler skips that draw.
    DeviceSampled,
}

/// The path for `sampler`'s next pick, with the model on a device or not.
pub fn pick_path(on_device: bool, sampler: &Sampler) -> PickPath {
    if !on_device || !samples_on_device(sampler.config()) {
        PickPath::Host
    } else if sampler.is_greedy() {
        PickPath::DeviceGreedy
    } else {
        PickPath::DeviceSampled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lm::kernels::SAMPLE_KMAX;
    use crate::lm::Sampling;

    fn sampler(temperature: f32, top_k: usize, top_p: f32) -> Sampler {
        Sampler::new(Sampling {
            temperature,
            top_k,
            top_p,
            seed: 9,
        })
        .unwrap()
    }

    #[test]
    fn settings_choose_their_path() {
        use PickPath::*;
        let cases = [
            // (temperature, top_k, top_p, on a device, off one)
            (0.0, 0, 1.0, DeviceGreedy),
            (0.0, 5000, 0.5, DeviceGreedy),
            (0.8, 1, 0.9, DeviceGreedy),
            (0.8, 2, 1.0, DeviceSampled),
            (1.3, 40, 0.9, DeviceSampled),
            (1.0, SAMPLE_KMAX, 1.0, DeviceSampled),
            (1.0, SAMPLE_KMAX + 1, 1.0, Host),
            (1.0, 0, 0.9, Host),
            (0.7, 0, 1.0, Host),
        ];
        for (t, k, p, want) in cases {
            let s = sampler(t, k, p);
            assert_eq!(pick_path(true, &s), want, "t={t} top_k={k} top_p={p}");
            assert_eq!(pick_path(false, &s), Host, "without a device, t={t} k={k}");
        }
    }
}
