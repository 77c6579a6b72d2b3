//! Typed errors of the library; the CLI turns them into messages.

use std::path::PathBuf;

/// Every failure the library reports. Messages name the tensor, file or field at fault
/// and what was expected versus found, so the CLI can print them as they are.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),

    #[error("tensor `{tensor}`: expected shape {expected}, found {found}")]
    Shape {
        tensor: String,
        expected: String,
        found: String,
    },

    #[error("tensor `{tensor}`: unsupported dtype {found} (expected one of f32, f16, bf16)")]
    DType { tensor: String, found: String },

    #[error("tensor `{tensor}` is missing from {path}")]
    MissingTensor { tensor: String, path: PathBuf },

    #[error("{path}: {problem}")]
    File { path: PathBuf, problem: String },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("state file {path}: {problem}")]
    StateFile { path: PathBuf, problem: String },

    #[error("state does not match: {0}")]
    StateMismatch(String),

    #[error("query: {0}")]
    Query(String),

    #[error("device: {0}")]
    Device(String),

    /// A size from a file header or an option that cannot be allocated: it overflowed
    /// (`bytes` is `None`) or exceeds the memory available.
    #[error("{what}: {} asked for, {problem}", show_bytes(*.bytes))]
    TooLarge {
        what: String,
        bytes: Option<u64>,
        problem: String,
    },

    /// Tensors in an input file that nothing reads: most likely a misspelt name, which
    /// would otherwise silently run without the tensor it meant.
    #[error("{path}: unknown tensors {names} (expected {expected})")]
    UnknownTensors {
        path: PathBuf,
        names: String,
        expected: String,
    },

    /// A CUDA driver call, copy or kernel launch that failed on a device that exists.
    #[error("CUDA {op}: {detail}")]
    Cuda { op: String, detail: String },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

fn show_bytes(bytes: Option<u64>) -> String {
    match bytes {
        Some(b) => format!("{b} bytes"),
        None => "more than 2^64 bytes".into(),
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
