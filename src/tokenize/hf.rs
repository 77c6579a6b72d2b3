//! A model directory's `tokenizer.json`, through Hugging Face's `tokenizers` crate
//! (pure Rust: its regex engine is fancy-regex, not Oniguruma's C code).
//!
//! The file is input like any other: its JSON is bounded before the crate builds
//! anything ([`super::hf_limits`]), settings that would change what the engine reads
//! (`truncation`, `padding`) are refused, the crate's panics become errors with
//! nothing printed ([`super::quiet`]), the tokenizer is tried at load on test texts
//! it must not lose ([`ModelTokenizer::parse`]), and every encoding is held to
//! [`TOKENS_PER_BYTE`].

use std::path::{Path, PathBuf};

use tokenizers::PostProcessor;

use crate::error::{Error, Result};

use super::{hf_limits, quiet};

/// Tokens one byte of text may become, besides what the post-processor adds to every
/// text. Byte-level and byte-fallback tokenizers make at most one token per byte of
/// normalized text, and real normalizers grow text at most about 11 times (NFKC):
/// more is a tokenizer that multiplies its input.
pub const TOKENS_PER_BYTE: usize = 16;

/// Every printable ASCII character, in words, with white space between: a tokenizer
/// must give all of them back.
const ASCII_PROBE: &str = "Probe: The quick brown fox, 0123456789 ABCDEFGHIJKLMNOPQRSTUVWXYZ \
     abcdefghijklmnopqrstuvwxyz !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~\tand\nlines.";
/// Letters and signs beyond ASCII: a tokenizer may normalize them or give its unknown
/// token, but must not drop them.
const UNICODE_PROBE: &str = "Grüße, ünïcödé: 漢字 — naïve café ½ € ﬁ";

/// A model's tokenizer, checked against the model's vocabulary.
pub struct ModelTokenizer {
    inner: tokenizers::Tokenizer,
    /// The file (for errors found while encoding).
    path: PathBuf,
    /// Tokens the post-processor adds to every text (`<s>`).
    overhead: usize,
    /// The model's embedding rows: every id must be below.
    vocab_size: usize,
    /// FNV-1a of the file's bytes: part of the model's fingerprint.
    digest: u64,
}

impl ModelTokenizer {
    /// Reads `path`; fails if it is not a tokenizer, can produce ids at or above
    /// `vocab_size` (the model's embedding rows), changes what the engine reads, loses
    /// text or exceeds the bounds of [`super::hf_limits`].
    pub fn load(path: &Path, vocab_size: usize) -> Result<Self> {
        let text = crate::input_file::read_bounded_string(
            path,
            "tokenizer.json",
            crate::input_file::TOKENIZER_JSON_MAX,
        )?;
        let mut tokenizer = Self::parse(&text, vocab_size).map_err(|problem| Error::File {
            path: path.to_path_buf(),
            problem,
        })?;
        tokenizer.path = path.to_path_buf();
        Ok(tokenizer)
    }

    /// Parses the text of a `tokenizer.json`.
    pub fn parse(text: &str, vocab_size: usize) -> std::result::Result<Self, String> {
        let json: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        hf_limits::check(&json, vocab_size)?;
        drop(json);
        let inner = quiet::catch(|| text.parse::<tokenizers::Tokenizer>())
            .ok_or("not a tokenizer.json this engine can read (its parser failed)")?
            .map_err(|e| format!("not a valid tokenizer.json: {e}"))?;
        let size = inner.get_vocab_size(true);
        if size > vocab_size {
            return Err(format!(
                "the tokenizer has {size} tokens, more than the model's vocab_size of {vocab_size}"
            ));
        }
        // Ids need not be dense: an added token may claim any.
        if let Some((token, id)) = inner
            .get_vocab(true)
            .into_iter()
            .find(|&(_, id)| id as usize >= vocab_size)
        {
            let token: String = token.chars().take(40).collect();
            return Err(format!(
                "token {token:?} has id {id}, beyond the model's vocab_size of {vocab_size}"
            ));
        }
        let overhead = inner
            .get_post_processor()
            .map_or(0, |p| p.added_tokens(false));
        if overhead > hf_limits::MAX_ITEMS {
            return Err(format!(
                "the post-processor adds {overhead} tokens to every text, more than {}",
                hf_limits::MAX_ITEMS
            ));
        }
        let tokenizer = ModelTokenizer {
            inner,
            path: PathBuf::from("tokenizer.json"),
            overhead,
            vocab_size,
            digest: crate::hash::fnv1a(text.as_bytes()),
        };
        tokenizer.probe()?;
        Ok(tokenizer)
    }

    /// Tries the tokenizer on the probes, so a file whose parts fail when used, or
    /// that loses text, is refused at load rather than read wrong for a whole run.
    ///
    /// "Losing text" has two tests, each blind to what normalizers may legitimately
    /// do. The ASCII probe must decode to itself compared without white space (word
    /// piece decoders and `Strip` change it) and case (uncased models): an empty
    /// vocabulary, a missing byte, a normalizer that deletes or rewrites letters, an
    /// ASCII character read as the unknown token, all fail it. Beyond ASCII a
    /// tokenizer may normalize (NFKC, accents stripped) or give its unknown token, so
    /// there every character other than white space must only be covered by some
    /// token's offsets: one that no token stands for was dropped silently.
    fn probe(&self) -> std::result::Result<(), String> {
        let fails = |(e, _)| format!("the tokenizer fails on a test text: {e}");
        let unreadable = |e| format!("the tokenizer fails to decode a test text: {e}");
        let ids = self.try_encode(ASCII_PROBE, true).map_err(fails)?;
        let back = self.try_decode(ids.get_ids()).map_err(unreadable)?;
        let canon = |s: &str| -> String {
            s.chars()
                .filter(|c| !c.is_whitespace())
                .flat_map(char::to_lowercase)
                .collect()
        };
        if canon(&back) != canon(ASCII_PROBE) {
            let shown: String = back.chars().take(160).collect();
            return Err(format!(
                "the tokenizer loses text: {ASCII_PROBE:?} comes back as {shown:?} (compared \
                 without white space and case)"
            ));
        }
        let encoding = self.try_encode(UNICODE_PROBE, false).map_err(fails)?;
        let mut covered = vec![false; UNICODE_PROBE.len()];
        for (&(start, end), &special) in encoding
            .get_offsets()
            .iter()
            .zip(encoding.get_special_tokens_mask())
        {
            if special == 0 {
                for c in covered.iter_mut().take(end).skip(start) {
                    *c = true;
                }
            }
        }
        for (at, ch) in UNICODE_PROBE.char_indices() {
            if !ch.is_whitespace() && !covered[at..at + ch.len_utf8()].contains(&true) {
                return Err(format!(
                    "the tokenizer drops text: no token stands for {ch:?} in the test text \
                     {UNICODE_PROBE:?}"
                ));
            }
        }
        self.try_decode(encoding.get_ids()).map_err(unreadable)?;
        Ok(())
    }

    /// The crate's encoding of `text`, its panics caught and its length held to
    /// [`TOKENS_PER_BYTE`]; the error says what went wrong, and whether the file is
    /// to blame (`true`) rather than the text.
    fn try_encode(
        &self,
        text: &str,
        add_special: bool,
    ) -> std::result::Result<tokenizers::Encoding, (String, bool)> {
        let encoding = quiet::catch(|| self.inner.encode(text, add_special))
            .ok_or(("it panicked on the text".to_string(), false))?
            .map_err(|e| (e.to_string(), false))?;
        let most = TOKENS_PER_BYTE
            .saturating_mul(text.len())
            .saturating_add(self.overhead);
        if encoding.len() > most {
            return Err((
                format!(
                    "the tokenizer made {} tokens of {} bytes of text, more than \
                     {TOKENS_PER_BYTE} a byte: it multiplies its input",
                    encoding.len(),
                    text.len()
                ),
                true,
            ));
        }
        // The post-processor's ids are only seen here.
        if let Some(id) = encoding
            .get_ids()
            .iter()
            .find(|&&id| id as usize >= self.vocab_size)
        {
            return Err((
                format!(
                    "the tokenizer gave id {id}, beyond the model's vocab_size of {}",
                    self.vocab_size
                ),
                true,
            ));
        }
        Ok(encoding)
    }

    /// Token ids of `text`; `add_special` adds what the tokenizer's post-processor adds
    /// (for fla's models, `<s>` in front), as at the start of a sequence.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        match self.try_encode(text, add_special) {
            Ok(encoding) => Ok(encoding.get_ids().to_vec()),
            Err((problem, true)) => Err(Error::File {
                path: self.path.clone(),
                problem,
            }),
            Err((problem, false)) => Err(Error::Query(format!("tokenizer: {problem}"))),
        }
    }

    /// The text of `ids`, special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.try_decode(ids)
            .map_err(|e| Error::Query(format!("tokenizer: {e}")))
    }

    fn try_decode(&self, ids: &[u32]) -> std::result::Result<String, String> {
        quiet::catch(|| self.inner.decode(ids, true))
            .ok_or("its decoder panicked")?
            .map_err(|e| e.to_string())
    }

    /// Tokens in the tokenizer's vocabulary, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// A digest of the file's bytes, which the model's fingerprint includes: a state
    /// was fed ids of this tokenizer, which mean other text under another.
    pub fn digest(&self) -> u64 {
        self.digest
    }
}
