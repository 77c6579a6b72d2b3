//! Streaming a context of any length through a model, window by window: one
//! scheduler ([`scheduler::stream`]) for every [`StreamModel`](crate::streamable::StreamModel).
//! The random-feature model's implementation is here; the memory model's is in
//! `memory_model`, a language model's in `lm`.

pub mod random_features;
pub mod scheduler;

pub use crate::context_file::{self, ContextFile, Format};
pub use crate::streamable::{
    Capacity, Observer, Progress, Quiet, StreamModel, StreamOptions, StreamSummary,
};
pub use crate::tokenize::hashed::Tokenizer;
pub use random_features::{stream_context, RandomFeatureStream};
pub use scheduler::{check_resume, stream, stream_file, StreamStats};
