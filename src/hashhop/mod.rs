//! HashHop, the long-context benchmark published with LTM-2-mini: shuffled pairs of
//! random hashes, and queries that follow chains of one or more hops. [`generate()`]
//! writes problems in the format of Magic's generator; [`eval()`] measures the built-in
//! memory model on them (and on files made by Magic's own generator).

pub mod eval;
pub mod files;
pub mod generate;

pub use eval::{eval, Answer, EvalOptions, EvalReport, HopRecall};
pub use files::{read_targets, Target};
pub use generate::{generate, GenerateOptions, Generated};
