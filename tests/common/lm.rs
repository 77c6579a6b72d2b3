//! The language-model fixtures (tests/fixtures/README.md) and flash-linear-attention's
//! outputs on them, shared by the language-model tests.

use std::path::PathBuf;

use safetensors::SafeTensors;

/// `tests/fixtures/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A fixture's `reference.safetensors`: flash-linear-attention's outputs.
pub struct Reference {
    bytes: Vec<u8>,
}

impl Reference {
    /// The reference outputs of fixture `model`.
    pub fn load(model: &str) -> Self {
        Reference {
            bytes: std::fs::read(fixture(model).join("reference.safetensors")).unwrap(),
        }
    }

    /// An f32 tensor.
    pub fn f32(&self, name: &str) -> Vec<f32> {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(name).unwrap_or_else(|_| panic!("{name} missing"));
        assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
        t.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    /// An i64 tensor of token ids.
    pub fn ids(&self, name: &str) -> Vec<u32> {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(name).unwrap_or_else(|_| panic!("{name} missing"));
        t.data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32)
            .collect()
    }
}

/// An f32 tensor of fixture `name`'s reference outputs.
pub fn reference_f32(name: &str, tensor: &str) -> Vec<f32> {
    Reference::load(name).f32(tensor)
}

/// Token ids of fixture `name`'s reference outputs.
pub fn reference_ids(name: &str, tensor: &str) -> Vec<u32> {
    Reference::load(name).ids(tensor)
}

/// `max |got − want| / max |want|`; NaN anywhere fails.
pub fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "lengths differ");
    let scale = want.iter().fold(0.0f64, |m, &x| m.max((x as f64).abs()));
    let mut worst = 0.0f64;
    for (&g, &w) in got.iter().zip(want) {
        assert!(g.is_finite(), "non-finite output {g}");
        worst = worst.max((g as f64 - w as f64).abs());
    }
    worst / scale.max(1e-30)
}
