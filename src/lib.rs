//! # ltm-engine
//!
//! Streams very long contexts through a memory of fixed size — the gated delta rule
//! (Gated DeltaNet) — and reads from it. Each token is written into the columns of a
//! per-head matrix `S` (`K × V`) addressed by its key: the memory forgets by a gate,
//! writes only what it does not already hold for that key, and is read with a query.
//! The state never grows with the context.
//!
//! ```
//! use ltm_engine::{Backend, CpuBackend, ForwardInputs, MemoryConfig, State};
//!
//! let config = MemoryConfig::new(2, 16, 16); // 2 heads, K = V = 16
//! let (batch, tokens) = (1, 100);
//! let n = batch * tokens * config.heads;
//! let q = vec![0.1f32; n * 16];
//! let k = vec![0.25f32; n * 16];
//! let v = vec![1.0f32; n * 16];
//! let beta = vec![0.5f32; n];
//! let g = vec![-0.01f32; n];
//! let inputs = ForwardInputs {
//!     batch, tokens,
//!     q: (&q).into(), k: (&k).into(), v: (&v).into(), beta: (&beta).into(), g: (&g).into(),
//! };
//! let backend = CpuBackend::new();
//! let mut state = State::zeros(&config, batch);
//! let o = backend.forward(&config, &inputs, &mut state)?; // [B, T, H, V]
//! assert_eq!(o.len(), n * 16);
//! assert_eq!(state.tokens_seen(), 100);
//! # Ok::<(), ltm_engine::Error>(())
//! ```
//!
//! Feeding a sequence in pieces, carrying the state between calls, gives the same
//! outputs and state as one call over the whole sequence.

#![warn(missing_docs)]

#[macro_use]
mod macros;

pub mod atomic_file;
pub mod backend;
pub mod baseline;
pub mod bench;
pub mod config;
pub mod context_file;
pub mod error;
pub mod hash;
pub mod hashhop;
pub mod input_file;
pub mod inputs;
pub mod kernel_file;
pub mod limits;
pub mod lm;
pub mod meminfo;
pub mod memory_model;
pub mod model;
pub mod output_path;
pub mod reference;
pub mod safetensors_io;
pub mod state;
pub mod state_file;
pub mod stream;
pub mod streamable;
pub mod strict_json;
pub mod synthetic;
pub mod tensor;
pub mod tokenize;
pub mod vec_math;

pub use backend::cpu::CpuBackend;
pub use backend::{backend_for, Backend, Device};
pub use config::MemoryConfig;
pub use error::{Error, Result};
pub use inputs::ForwardInputs;
pub use state::{Source, State};
pub use tensor::{DType, Data};

/// The README's Rust snippets, compiled and run as doctests so that they keep up with
/// the API they show.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The Rust snippets of the pages under `docs/`, doctests like the README's.
#[cfg(doctest)]
#[doc = include_str!("../docs/library.md")]
#[doc = include_str!("../docs/language-models.md")]
#[doc = include_str!("../docs/memory-model.md")]
#[doc = include_str!("../docs/benchmarks.md")]
pub struct DocsDoctests;
