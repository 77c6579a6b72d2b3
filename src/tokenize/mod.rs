//! Every rule by which a model cuts its context into tokens, in one place. A token is
//! what every count of a run means (`--max-tokens`, `--checkpoint-every`, the skip of
//! `--resume`, tokens/s, `tokens` in summaries): for each model, one unit of *its*
//! rule, counted the same way by the reader, the model and the state file.
//!
//! - [`words`], the built-in memory model's rule: word pieces of `0-9 A-Z a-z _` (at
//!   most 16 bytes each) plus one token per other byte that is neither white space nor
//!   a line break (punctuation and each byte of a non-ASCII character, counted but
//!   never written). Line breaks end a key's context but are not counted.
//! - [`hashed`], the random-feature model's rule for text: words of Unicode letters
//!   and digits, one token per other character that is not white space, and one per
//!   line break; ids are FNV-1a hashes. Bytes and u32 files: one token per byte or per
//!   id.
//! - [`hf`], a language model's own `tokenizer.json` (byte-level BPE for fla's models):
//!   one token per vocabulary id, `<s>` included at the start of a sequence;
//!   [`incremental`] turns generated ids back into text as they come.
//!
//! The two built-in rules stay two: the memory model's is fingerprinted into its state
//! files (its keys are made of its words, and a state is resumed by counting them), so
//! it must not change, and making the random-feature model use it would change every
//! id it feeds, and so its outputs and states, for any text with a non-ASCII letter,
//! punctuation or a line break. [`Policy`] names the three, with one way to count.

mod charsmap;
pub mod hashed;
pub mod hf;
pub mod hf_limits;
pub mod incremental;
mod quiet;
pub mod words;

use crate::error::{Error, Result};

/// One of the rules, to count the tokens of a text the way a model does.
#[derive(Clone, Copy)]
pub enum Policy<'a> {
    /// The memory model's rule ([`words`]).
    WordPieces,
    /// The random-feature model's rule for text ([`hashed`]).
    HashedWords,
    /// A language model's tokenizer ([`hf`]); `true` when the text starts a sequence.
    Model(&'a hf::ModelTokenizer, bool),
}

impl Policy<'_> {
    /// Tokens of `text` under this rule, as a run over a file holding exactly `text`
    /// counts them.
    pub fn count(&self, text: &str) -> Result<u64> {
        match *self {
            Policy::WordPieces => {
                let mut t = words::Tokenizer::new();
                t.feed(text.as_bytes(), |_| {});
                t.finish(|_| {});
                Ok(t.tokens())
            }
            Policy::HashedWords => {
                let mut ids = Vec::new();
                hashed::hash_words(text.as_bytes(), 0, &mut ids, text.len())
                    .map_err(|i| Error::Query(format!("invalid UTF-8 at byte {i}")))?;
                Ok(ids.len() as u64)
            }
            Policy::Model(tokenizer, start) => Ok(tokenizer.encode(text, start)?.len() as u64),
        }
    }

    /// What one token is under this rule, in a few words.
    pub fn token(&self) -> &'static str {
        match self {
            Policy::WordPieces => {
                "a word piece of 0-9 A-Z a-z _ (at most 16 bytes), or one byte that is neither \
                 white space nor a line break"
            }
            Policy::HashedWords => {
                "a word of Unicode letters and digits, one other character that is not white \
                 space, or a line break"
            }
            Policy::Model(..) => "one id of the model's tokenizer (BPE)",
        }
    }
}
