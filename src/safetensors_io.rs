//! Reading kernel inputs from and writing outputs to safetensors files, in the layout
//! of flash-linear-attention's gated delta rule, so that other implementations can
//! cross-check this one.

use std::path::Path;

use half::{bf16, f16};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use crate::atomic_file::write_bytes_atomically;
use crate::config::MemoryConfig;
use crate::error::{Error, Result};
use crate::inputs::ForwardInputs;
use crate::state::State;
use crate::tensor::{shape_string, Data};

/// Values of one tensor, in the element type it was stored with.
#[derive(Clone, Debug)]
pub enum OwnedData {
    /// Stored as f32.
    F32(Vec<f32>),
    /// Stored as IEEE half precision.
    F16(Vec<f16>),
    /// Stored as bfloat16.
    BF16(Vec<bf16>),
}

impl OwnedData {
    /// A view of the values for [`ForwardInputs`], without converting them.
    pub fn as_data(&self) -> Data<'_> {
        match self {
            OwnedData::F32(v) => Data::F32(v),
            OwnedData::F16(v) => Data::F16(v),
            OwnedData::BF16(v) => Data::BF16(v),
        }
    }
}

/// The tensors of a kernel input file, checked against each other.
#[derive(Debug)]
pub struct KernelInputs {
    /// The memory's shape, read off the tensors, with the chunk size and scale asked for.
    pub config: MemoryConfig,
    /// Sequences (`B`).
    pub batch: usize,
    /// Tokens per sequence (`T`).
    pub tokens: usize,
    /// Queries, `[B, T, H, K]`.
    pub q: OwnedData,
    /// Keys, `[B, T, H, K]`.
    pub k: OwnedData,
    /// Values, `[B, T, H, V]`.
    pub v: OwnedData,
    /// Write strengths, `[B, T, H]`.
    pub beta: OwnedData,
    /// Log-decays, `[B, T, H]`.
    pub g: OwnedData,
    /// The state before the first token, `[B, H, K, V]` f32; zeros when absent.
    pub initial_state: Option<State>,
}

impl KernelInputs {
    /// The inputs as views for a backend's forward.
    pub fn forward_inputs(&self) -> ForwardInputs<'_> {
        ForwardInputs {
            batch: self.batch,
            tokens: self.tokens,
            q: self.q.as_data(),
            k: self.k.as_data(),
            v: self.v.as_data(),
            beta: self.beta.as_data(),
            g: self.g.as_data(),
        }
    }

    /// The initial state, or zeros when the file had none.
    pub fn state(&self) -> State {
        self.initial_state
            .clone()
            .unwrap_or_else(|| State::zeros(&self.config, self.batch))
    }
}

/// Reads `q, k [B,T,H,K]`, `v [B,T,H,V]`, `beta, g [B,T,H]` and an optional
/// `initial_state [B,H,K,V]` from `path`. Shapes are checked against `q` and each
/// other; errors name the tensor and the shapes expected and found.
pub fn read_kernel_inputs(
    path: &Path,
    chunk_size: usize,
    scale: Option<f32>,
) -> Result<KernelInputs> {
    let (file, _) = crate::input_file::open_regular(path)?;
    // SAFETY: the map is read-only and dropped before this function returns; a file
    // changed underneath by another process can at worst give wrong numbers.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    let st = SafeTensors::deserialize(&map).map_err(|e| Error::File {
        path: path.to_path_buf(),
        problem: format!("not a valid safetensors file: {e}"),
    })?;
    check_unique_names(path, &map)?;
    check_names(path, st.names())?;
    let get = |name: &str| -> Result<TensorView<'_>> {
        st.tensor(name).map_err(|_| Error::MissingTensor {
            tensor: name.into(),
            path: path.to_path_buf(),
        })
    };
    let q = get("q")?;
    let &[b, t, h, kd] = q.shape() else {
        return Err(rank_error("q", "[B, T, H, K]", q.shape()));
    };
    let v = get("v")?;
    let vd = match v.shape() {
        &[vb, vt, vh, vd] if (vb, vt, vh) == (b, t, h) => vd,
        other => return Err(shape_error("v", &format!("[{b}, {t}, {h}, V]"), other)),
    };
    let k = get("k")?;
    expect_shape("k", &k, &[b, t, h, kd])?;
    let beta = get("beta")?;
    expect_shape("beta", &beta, &[b, t, h])?;
    let g = get("g")?;
    expect_shape("g", &g, &[b, t, h])?;

    let mut config = MemoryConfig::new(h, kd, vd).with_chunk_size(chunk_size);
    config.scale = scale;
    config.validate()?;
    // Without an `initial_state` the run starts from zeros of a size the header alone
    // decides (a file with T = 0 holds no data at all): check it before anything is
    // allocated.
    let state_what =
        format!("the state [B, H, K, V] = [{b}, {h}, {kd}, {vd}] (from tensors `q` and `v`)");
    let state_bytes = [b, h, kd, vd, 4]
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64));
    crate::limits::check_alloc(&state_what, state_bytes)?;
    let initial_state = match st.tensor("initial_state") {
        Ok(s) => {
            expect_shape("initial_state", &s, &[b, h, kd, vd])?;
            let values = match to_owned("initial_state", &s)? {
                OwnedData::F32(v) => v,
                OwnedData::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
                OwnedData::BF16(v) => v.iter().map(|x| x.to_f32()).collect(),
            };
            Some(State::from_values(&config, b, values)?)
        }
        Err(_) => None,
    };
    Ok(KernelInputs {
        config,
        batch: b,
        tokens: t,
        q: to_owned("q", &q)?,
        k: to_owned("k", &k)?,
        v: to_owned("v", &v)?,
        beta: to_owned("beta", &beta)?,
        g: to_owned("g", &g)?,
        initial_state,
    })
}

/// Writes `o [B,T,H,V]` and `final_state [B,H,K,V]` as f32, atomically.
pub fn write_kernel_outputs(
    path: &Path,
    batch: usize,
    tokens: usize,
    o: &[f32],
    state: &State,
) -> Result<()> {
    let [b, h, _, vd] = state.dims();
    assert_eq!(b, batch);
    let o_shape = vec![batch, tokens, h, vd];
    let views = [
        (
            "o",
            TensorView::new(Dtype::F32, o_shape, bytemuck::cast_slice(o)),
        ),
        (
            "final_state",
            TensorView::new(
                Dtype::F32,
                state.dims().to_vec(),
                bytemuck::cast_slice(state.values()),
            ),
        ),
    ];
    let mut tensors = Vec::with_capacity(2);
    for (name, view) in views {
        let view = view.map_err(|e| Error::File {
            path: path.to_path_buf(),
            problem: format!("cannot describe tensor `{name}`: {e}"),
        })?;
        tensors.push((name, view));
    }
    let bytes = safetensors::serialize(tensors, None).map_err(|e| Error::File {
        path: path.to_path_buf(),
        problem: format!("cannot serialise outputs: {e}"),
    })?;
    write_bytes_atomically(path, &bytes)
}

/// Refuses a header (of `bytes`, a file the safetensors crate has accepted) that
/// names a tensor twice: the crate keeps one of the two entries silently, and accepts
/// the file when both describe the same bytes.
pub(crate) fn check_unique_names(path: &Path, bytes: &[u8]) -> Result<()> {
    let header = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let text = std::str::from_utf8(&bytes[8..8 + header]).map_err(|e| Error::File {
        path: path.to_path_buf(),
        problem: format!("not a valid safetensors file: {e}"),
    })?;
    crate::strict_json::parse(text)
        .map(drop)
        .map_err(|e| Error::File {
            path: path.to_path_buf(),
            problem: format!("not a valid safetensors file: header: {e}"),
        })
}

/// Every tensor a kernel input file may hold.
const KNOWN_TENSORS: [&str; 6] = ["q", "k", "v", "beta", "g", "initial_state"];

fn check_names(path: &Path, names: Vec<&str>) -> Result<()> {
    let mut unknown: Vec<String> = names
        .into_iter()
        .filter(|n| !KNOWN_TENSORS.contains(n))
        .map(|n| format!("`{}`", crate::limits::cut(n)))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    unknown.sort();
    let total = unknown.len();
    unknown.truncate(16);
    let mut names = unknown.join(", ");
    if total > 16 {
        names.push_str(&format!(" and {} more", total - 16));
    }
    Err(Error::UnknownTensors {
        path: path.to_path_buf(),
        names,
        expected: "q, k, v, beta, g and optionally initial_state".into(),
    })
}

fn to_owned(name: &str, view: &TensorView<'_>) -> Result<OwnedData> {
    let bytes = view.data();
    Ok(match view.dtype() {
        Dtype::F32 => OwnedData::F32(bytemuck::pod_collect_to_vec(bytes)),
        Dtype::F16 => OwnedData::F16(bytemuck::pod_collect_to_vec(bytes)),
        Dtype::BF16 => OwnedData::BF16(bytemuck::pod_collect_to_vec(bytes)),
        other => {
            return Err(Error::DType {
                tensor: name.into(),
                found: other.to_string(),
            })
        }
    })
}

fn expect_shape(name: &str, view: &TensorView<'_>, want: &[usize]) -> Result<()> {
    if view.shape() != want {
        return Err(shape_error(name, &shape_string(want), view.shape()));
    }
    Ok(())
}

fn shape_error(name: &str, expected: &str, found: &[usize]) -> Error {
    Error::Shape {
        tensor: name.into(),
        expected: expected.into(),
        found: shape_string(found),
    }
}

fn rank_error(name: &str, expected: &str, found: &[usize]) -> Error {
    Error::Shape {
        tensor: name.into(),
        expected: format!("rank {} {expected}", expected.matches(',').count() + 1),
        found: format!("rank {} {}", found.len(), shape_string(found)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tensor_named_twice_in_the_header_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.safetensors");
        let one = [0u8; 4];
        let views = ["q", "k", "v", "beta", "g"].map(|n| {
            let shape = if ["q", "k", "v"].contains(&n) {
                vec![1, 1, 1, 1]
            } else {
                vec![1, 1, 1]
            };
            (n, TensorView::new(Dtype::F32, shape, &one).unwrap())
        });
        let good = safetensors::serialize(views, None).unwrap();
        std::fs::write(&path, &good).unwrap();
        assert!(read_kernel_inputs(&path, 64, None).is_ok());
        // `g` again with its own entry: the crate keeps one and reads the file.
        let n = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
        let header = std::str::from_utf8(&good[8..8 + n]).unwrap();
        let value: serde_json::Value = serde_json::from_str(header).unwrap();
        let twice = format!("{{\"g\":{},{}", value["g"], &header[1..]);
        let bytes = [
            &(twice.len() as u64).to_le_bytes(),
            twice.as_bytes(),
            &good[8 + n..],
        ]
        .concat();
        assert!(SafeTensors::deserialize(&bytes).is_ok());
        std::fs::write(&path, &bytes).unwrap();
        let e = read_kernel_inputs(&path, 64, None).unwrap_err().to_string();
        assert!(
            e.contains("\"g\" appears twice") && e.contains("in.safetensors"),
            "{e}"
        );
    }
}
