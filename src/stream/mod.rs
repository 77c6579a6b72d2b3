//! Streaming a context of any length through the memory, window by window.

pub mod context_file;
pub mod scheduler;
pub mod text_memory;
pub mod tokenizer;

pub use context_file::{ContextFile, Format};
pub use scheduler::{
    check_resume, stream_context, Capacity, Observer, Progress, Quiet, StreamOptions, StreamSummary,
};
pub use text_memory::{stream_file, StreamStats};
pub use tokenizer::Tokenizer;
