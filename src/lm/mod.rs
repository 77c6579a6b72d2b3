//! Trained language models: Gated DeltaNet checkpoints in the Hugging Face layout that
//! flash-linear-attention publishes, run layer by layer with one memory session per
//! layer, fixed memory whatever the length of the context.
//!
//! ```no_run
//! use ltm_engine::lm::{LanguageModel, Logits, Sampler, Sampling};
//! use ltm_engine::Device;
//!
//! let model = LanguageModel::load("path/to/gdn-model", Device::Auto)?;
//! let tokenizer = model.require_tokenizer()?;
//! let mut session = model.session()?;
//! session.feed(&tokenizer.encode("A long document…", true)?, Logits::None)?;
//! let saved = session.snapshot()?;                       // restore with model.resume(saved)
//! let mut sampler = Sampler::new(Sampling::default())?;  // greedy
//! let ids = session.generate(&tokenizer.encode(" Question: …", false)?, 20, &mut sampler)?;
//! println!("{}", tokenizer.decode(&ids)?);
//! # Ok::<(), ltm_engine::Error>(())
//! ```

pub mod block;
pub mod config;
mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod desc;
pub mod forward;
pub mod kernels;
pub mod linear;
pub mod matrices;
pub mod model;
pub mod ops;
pub mod pick;
mod placement;
pub mod readers;
mod runner;
pub mod sample;
pub mod session;
pub mod state;
pub mod state_file;
pub mod stream;
pub mod trace;

/// A model directory's tokenizer (it lives with the other rules in `crate::tokenize`).
pub use crate::tokenize::hf as tokenizer;
pub mod weights;

pub use crate::tokenize::hf::ModelTokenizer;
pub use config::{GateActivation, GdnConfig};
pub use desc::ModelDesc;
pub use model::LanguageModel;
pub use pick::PickPath;
pub use sample::{Sampler, Sampling};
pub use session::{Logits, ModelSession};
pub use state::{LayerState, ModelState};
