//! The `kernel` job: one forward over tensors read from a safetensors file, written to
//! another, timed apart from the file I/O.

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::backend::{backend_for, Device};
use crate::bench::timing::median;
use crate::error::Result;
use crate::safetensors_io::{read_kernel_inputs, write_kernel_outputs};

/// What a `kernel` run did and how fast.
#[derive(Clone, Debug, Serialize)]
pub struct KernelReport {
    /// The backend that ran the forward.
    pub backend: String,
    /// Sequences (`B`).
    pub batch: usize,
    /// Tokens per sequence (`T`).
    pub tokens: usize,
    /// Heads (`H`).
    pub heads: usize,
    /// Key dimension (`K`).
    pub key_dim: usize,
    /// Value dimension (`V`).
    pub value_dim: usize,
    /// Tokens per chunk of the chunked algorithm.
    pub chunk_size: usize,
    /// The read scale used (given, or `1/sqrt(K)`).
    pub scale: f32,
    /// Element types of `q, k, v, beta, g` as stored in the file.
    pub input_dtypes: [String; 5],
    /// Median seconds of the forward alone (without reading or writing files) over
    /// the timed runs, each from the initial state after one untimed warm-up run.
    pub forward_seconds: f64,
    /// Seconds of each timed forward, in run order.
    pub forward_seconds_all: Vec<f64>,
    /// Tokens of all sequences per second of forward.
    pub tokens_per_second: f64,
    /// Seconds to read and convert the input file.
    pub read_seconds: f64,
    /// Seconds to write the output file.
    pub write_seconds: f64,
}

/// Most timed runs `--repeats` asks for: enough for any median, and a bound on the
/// time list it allocates.
pub const MAX_REPEATS: usize = 100_000;

/// The `kernel` job: reads `q, k, v, beta, g` (and `initial_state`) from `input`, runs the
/// forward `repeats` times on `device` after a warm-up, and writes `o` and `final_state` as
/// f32 to `output`.
pub fn run_kernel_file(
    input: impl AsRef<Path>,
    output: impl AsRef<Path>,
    chunk_size: usize,
    scale: Option<f32>,
    device: Device,
    repeats: usize,
) -> Result<KernelReport> {
    let input = input.as_ref();
    let output = output.as_ref();
    if repeats > MAX_REPEATS {
        return Err(crate::error::Error::Config(format!(
            "--repeats {repeats}: at most {MAX_REPEATS} timed runs"
        )));
    }
    let t_read = Instant::now();
    let kin = read_kernel_inputs(input, chunk_size, scale)?;
    let read_seconds = t_read.elapsed().as_secs_f64();
    let backend = backend_for(device)?;
    let inputs = kin.forward_inputs();
    // Poisoned, so an element the backend failed to write cannot pass for a result;
    // writing it also faults the pages in before the clock starts.
    let mut o = crate::limits::try_filled(
        "the output `o` [B, T, H, V]",
        inputs.output_len(&kin.config),
        f32::NAN,
    )?;
    let mut state = kin.state();
    let mut times = Vec::with_capacity(repeats);
    for run in 0..=repeats.max(1) {
        state = kin.state();
        let t_fwd = Instant::now();
        backend.forward_into(&kin.config, &inputs, &mut state, &mut o)?;
        if run > 0 {
            times.push(t_fwd.elapsed().as_secs_f64());
        }
    }
    let forward_seconds = median(&times);
    let t_write = Instant::now();
    write_kernel_outputs(output, kin.batch, kin.tokens, &o, &state)?;
    let write_seconds = t_write.elapsed().as_secs_f64();
    let dt = |d: crate::tensor::Data<'_>| d.dtype().to_string();
    Ok(KernelReport {
        backend: backend.name(),
        batch: kin.batch,
        tokens: kin.tokens,
        heads: kin.config.heads,
        key_dim: kin.config.key_dim,
        value_dim: kin.config.value_dim,
        chunk_size: kin.config.chunk_size,
        scale: kin.config.effective_scale(),
        input_dtypes: [
            dt(inputs.q),
            dt(inputs.k),
            dt(inputs.v),
            dt(inputs.beta),
            dt(inputs.g),
        ],
        forward_seconds,
        forward_seconds_all: times,
        tokens_per_second: (kin.batch * kin.tokens) as f64 / forward_seconds.max(1e-12),
        read_seconds,
        write_seconds,
    })
}
