//! Typed errors of the library; the CLI turns them into messages.

use std::path::PathBuf;

/// Every failure the library reports. Messages name the tensor, file or field at fault
/// and what was expected versus found, so the CLI can print them as they are.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A shape, size or option out of range; the message names it.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A tensor or buffer of the wrong shape or length.
    #[error("tensor `{tensor}`: expected shape {expected}, found {found}")]
    Shape {
        /// The tensor's name, e.g. `q` or `o`.
        tensor: String,
        /// The shape the other inputs call for, e.g. `[1, 64, 4, 64]`.
        expected: String,
        /// What was given.
        found: String,
    },

    /// A tensor stored in an element type other than f32, f16 or bf16.
    #[error("tensor `{tensor}`: unsupported dtype {found} (expected one of f32, f16, bf16)")]
    DType {
        /// The tensor's name.
        tensor: String,
        /// Its element type as the file names it.
        found: String,
    },

    /// A required tensor absent from a safetensors file.
    #[error("tensor `{tensor}` is missing from {path}")]
    MissingTensor {
        /// The tensor's name.
        tensor: String,
        /// The file it should be in.
        path: PathBuf,
    },

    /// An input file that cannot be used as it is (empty, malformed, bad UTF-8, …).
    #[error("{path}: {problem}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong, with a line, token or byte offset where one helps.
        problem: String,
    },

    /// The operating system refused a read, write, map or rename.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder the operation was on.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// A state file that is truncated, corrupted, of another format version or of
    /// another model or configuration.
    #[error("state file {path}: {problem}")]
    StateFile {
        /// The state file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },

    /// A state of another shape, or not of the context it is resumed on.
    #[error("state does not match: {0}")]
    StateMismatch(String),

    /// A query the memory model cannot make a key of (its prefix has no word).
    #[error("query: {0}")]
    Query(String),

    /// A device that is missing or cannot run the request, with what to do about it.
    #[error("device: {0}")]
    Device(String),

    /// A size from a file header or an option that cannot be allocated: it overflowed
    /// (`bytes` is `None`) or exceeds the memory available.
    #[error("{what}: {} asked for, {problem}", show_bytes(*.bytes))]
    TooLarge {
        /// The option, tensor or header field that asked.
        what: String,
        /// The bytes asked for; `None` when the size overflowed.
        bytes: Option<u64>,
        /// Why it cannot be had (e.g. more than the memory available).
        problem: String,
    },

    /// Tensors in an input file that nothing reads: most likely a misspelt name, which
    /// would otherwise silently run without the tensor it meant.
    #[error("{path}: unknown tensors {names} (expected {expected})")]
    UnknownTensors {
        /// The input file.
        path: PathBuf,
        /// The tensors nothing reads, comma-separated.
        names: String,
        /// The tensors the job reads.
        expected: String,
    },

    /// An output another run is writing now (it holds the output's lock file).
    #[error("another ltm-engine run{} is writing {}", .pid.map_or(String::new(), |p| format!(" (pid {p})")), .path.display())]
    Busy {
        /// The output.
        path: PathBuf,
        /// The process holding the lock, where its lock file names it.
        pid: Option<u32>,
    },

    /// A CUDA driver call, copy or kernel launch that failed on a device that exists.
    #[error("CUDA {op}: {detail}")]
    Cuda {
        /// The call or kernel, e.g. `launch scan`.
        op: String,
        /// The driver's message, or what a check on the host found.
        detail: String,
        /// The driver's or cuBLAS's own error, kept for callers that inspect it
        /// (`None` where a check on the host failed).
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl Error {
    /// A CUDA call `op` that failed with the driver's (or cuBLAS's) `source`.
    #[cfg_attr(not(any(feature = "cuda", test)), allow(dead_code))]
    pub(crate) fn cuda(
        op: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Cuda {
            op: op.into(),
            detail: source.to_string(),
            source: Some(Box::new(source)),
        }
    }

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

/// The library's result type: [`Error`] unless said otherwise.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cuda_error_keeps_the_callees_error_as_its_source() {
        // The driver's own error type formats itself through the driver library, which
        // a machine without a GPU lacks: any error type shows the same.
        let e = Error::cuda("launching scan", std::io::Error::other("out of memory"));
        assert_eq!(e.to_string(), "CUDA launching scan: out of memory");
        let source = std::error::Error::source(&e).expect("a source");
        let io = source
            .downcast_ref::<std::io::Error>()
            .expect("the callee's error");
        assert_eq!(io.to_string(), "out of memory");
    }
}
