//! A model directory's `tokenizer.json`, through Hugging Face's `tokenizers` crate
//! (pure Rust: its regex engine is fancy-regex, not Oniguruma's C code).

use std::path::Path;

use crate::error::{Error, Result};

/// A model's tokenizer, checked against the model's vocabulary.
pub struct ModelTokenizer {
    inner: tokenizers::Tokenizer,
}

impl ModelTokenizer {
    /// Reads `path`; fails if it is not a tokenizer or can produce ids at or above
    /// `vocab_size` (the model's embedding rows).
    pub fn load(path: &Path, vocab_size: usize) -> Result<Self> {
        let text = crate::input_file::read_bounded_string(
            path,
            "tokenizer.json",
            crate::input_file::TOKENIZER_JSON_MAX,
        )?;
        Self::parse(&text, vocab_size).map_err(|problem| Error::File {
            path: path.to_path_buf(),
            problem,
        })
    }

    /// Parses the text of a `tokenizer.json`.
    pub fn parse(text: &str, vocab_size: usize) -> std::result::Result<Self, String> {
        // A malformed file must give an error, whatever the parser does with it.
        let parsed =
            std::panic::catch_unwind(|| text.parse::<tokenizers::Tokenizer>()).map_err(|_| {
                "not a tokenizer.json this engine can read (its parser failed)".to_string()
            })?;
        let inner = parsed.map_err(|e| format!("not a valid tokenizer.json: {e}"))?;
        let size = inner.get_vocab_size(true);
        if size > vocab_size {
            return Err(format!(
                "the tokenizer has {size} tokens, more than the model's vocab_size of {vocab_size}"
            ));
        }
        let tokenizer = ModelTokenizer { inner };
        // The parser accepts some files whose parts then fail when used: try them
        // now, so such a file is refused at load rather than in the middle of a run.
        let probe = "Probe: ASCII, digits 0123, ünïcödé, 漢字, tabs\t and\nlines.";
        let ids = tokenizer
            .encode(probe, true)
            .map_err(|e| format!("the tokenizer fails on a test text: {e}"))?;
        tokenizer
            .decode(&ids)
            .map_err(|e| format!("the tokenizer fails to decode: {e}"))?;
        Ok(tokenizer)
    }

    /// Token ids of `text`; `add_special` adds what the tokenizer's post-processor adds
    /// (for fla's models, `<s>` in front), as at the start of a sequence.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let encoding = std::panic::catch_unwind(|| self.inner.encode(text, add_special))
            .map_err(|_| {
                Error::Query("tokenizer: failed on this text (its parser panicked)".into())
            })?
            .map_err(|e| Error::Query(format!("tokenizer: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The text of `ids`, special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        std::panic::catch_unwind(|| self.inner.decode(ids, true))
            .map_err(|_| Error::Query("tokenizer: failed to decode (its decoder panicked)".into()))?
            .map_err(|e| Error::Query(format!("tokenizer: {e}")))
    }

    /// Tokens in the tokenizer's vocabulary, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
