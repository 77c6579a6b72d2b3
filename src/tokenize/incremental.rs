//! Text of generated ids as they come, at a constant cost per id: decoding the whole
//! continuation again after every id costs time that grows with its square.

use crate::error::Result;
use crate::tokenize::hf::ModelTokenizer;

/// Ids kept before the ones not yet shown: enough for a decoder's context (a space
/// dropped at the start of a text, a character split over byte tokens).
const CONTEXT_IDS: usize = 8;

/// Turns ids into text piece by piece. Each new id is decoded together with a few ids
/// before it, and only what that adds to their own text is new; a piece that ends in
/// an unfinished character waits for the next id. The pieces joined are the text of
/// all the ids as one decode gives it, for decoders that concatenate (byte-level BPE,
/// word pieces, metaspace after the first word).
pub struct IncrementalText<'t> {
    tokenizer: &'t ModelTokenizer,
    ids: Vec<u32>,
    /// `ids[..shown]` are behind the text handed out; `ids[context..shown]` decode to
    /// the text the next piece is compared with.
    context: usize,
    shown: usize,
}

impl<'t> IncrementalText<'t> {
    /// Nothing shown yet; the text of ids pushed through `tokenizer`.
    pub fn new(tokenizer: &'t ModelTokenizer) -> Self {
        IncrementalText {
            tokenizer,
            ids: Vec::new(),
            context: 0,
            shown: 0,
        }
    }

    /// The text `id` adds, or an empty string while a character is unfinished.
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.ids.push(id);
        let before = self.tokenizer.decode(&self.ids[self.context..self.shown])?;
        let now = self.tokenizer.decode(&self.ids[self.context..])?;
        let fresh = match now.get(before.len()..) {
            Some(tail) if now.starts_with(&before) && !tail.ends_with('\u{FFFD}') => {
                tail.to_string()
            }
            _ => return Ok(String::new()),
        };
        self.shown = self.ids.len();
        self.context = self.shown.saturating_sub(CONTEXT_IDS);
        if self.context > 4 * CONTEXT_IDS {
            self.ids.drain(..self.context);
            self.shown -= self.context;
            self.context = 0;
        }
        Ok(fresh)
    }

    /// What is left unshown at the end (an unfinished character as the decoder
    /// renders it).
    pub fn finish(&mut self) -> Result<String> {
        let before = self.tokenizer.decode(&self.ids[self.context..self.shown])?;
        let now = self.tokenizer.decode(&self.ids[self.context..])?;
        self.shown = self.ids.len();
        Ok(now.get(before.len()..).unwrap_or_default().to_string())
    }
}
