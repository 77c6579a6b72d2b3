//! The memory model's word rule: needs no download and keeps no vocabulary. It is
//! fingerprinted into the memory model's state files (the keys are made of its words),
//! so it must never change.
//!
//! A *word* is a maximal run of `0-9 A-Z a-z _`; words longer than [`MAX_CHARS`] are
//! cut into pieces of at most that many bytes, each its own token. A newline ends the
//! line. Every other byte (spaces, punctuation, bytes of non-ASCII characters) only
//! separates words: the memory stores words, and punctuation is counted as a token
//! but never written (its write strength is 0).
//!
//! It is streaming: `feed` may split the text anywhere, even inside a word, and the
//! tokens come out the same as for the whole text at once.

/// Longest word piece: the memory model's values hold at most this many characters,
/// and the rule cuts longer words into pieces of this many.
pub const MAX_CHARS: usize = 16;

/// Whether a byte belongs to words (and so can be stored in a value).
#[inline]
pub fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// What the tokenizer reports.
#[derive(Debug, PartialEq, Eq)]
pub enum Token<'a> {
    /// A word or word piece (1..=MAX_CHARS word bytes).
    Word(&'a [u8]),
    /// End of a line: the context for keys starts afresh.
    Newline,
}

/// Cuts text into [`Token`]s, carrying a word across calls so any cut of the text gives the
/// same tokens.
#[derive(Clone, Debug, Default)]
pub struct Tokenizer {
    piece: [u8; MAX_CHARS],
    len: usize,
    /// Word pieces emitted so far.
    pub words: u64,
    /// Punctuation bytes seen so far (not stored, but tokens of the text).
    pub punctuation: u64,
}

impl Tokenizer {
    /// A tokenizer at the start of a text.
    pub fn new() -> Self {
        Self::default()
    }

    /// Tokens of the text so far: word pieces and punctuation bytes.
    pub fn tokens(&self) -> u64 {
        self.words + self.punctuation
    }

    /// Tokenizes the next part of the text.
    pub fn feed(&mut self, bytes: &[u8], mut emit: impl FnMut(Token<'_>)) {
        for &b in bytes {
            if is_word_byte(b) {
                if self.len == MAX_CHARS {
                    self.flush(&mut emit);
                }
                self.piece[self.len] = b;
                self.len += 1;
                continue;
            }
            self.flush(&mut emit);
            if b == b'\n' {
                emit(Token::Newline);
            } else if !b.is_ascii_whitespace() {
                self.punctuation += 1;
            }
        }
    }

    /// Ends the text: emits the word in progress, if any.
    pub fn finish(&mut self, mut emit: impl FnMut(Token<'_>)) {
        self.flush(&mut emit);
    }

    fn flush(&mut self, emit: &mut impl FnMut(Token<'_>)) {
        if self.len > 0 {
            self.words += 1;
            emit(Token::Word(&self.piece[..self.len]));
            self.len = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(parts: &[&[u8]]) -> (Vec<String>, u64) {
        let mut t = Tokenizer::new();
        let mut out = Vec::new();
        let mut push = |tok: Token<'_>| {
            out.push(match tok {
                Token::Word(w) => String::from_utf8(w.to_vec()).unwrap(),
                Token::Newline => "\\n".into(),
            })
        };
        for p in parts {
            t.feed(p, &mut push);
        }
        t.finish(&mut push);
        (out, t.tokens())
    }

    #[test]
    fn words_punctuation_and_lines() {
        let (toks, n) = tokens(&[b"abc = 'DEF_9'\nx, y\xc3\xa9z"]);
        assert_eq!(toks, ["abc", "DEF_9", "\\n", "x", "y", "z"]);
        // 5 words + `=`, two quotes, `,` and the two bytes of é.
        assert_eq!(n, 5 + 6);
    }

    #[test]
    fn long_words_are_cut_into_pieces() {
        let (toks, _) = tokens(&[b"aaaaaaaaaaaaaaaabbbbbbbbbbbbbbbbcc"]);
        assert_eq!(toks, ["aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb", "cc"]);
    }

    #[test]
    fn splitting_the_text_anywhere_gives_the_same_tokens() {
        let text: &[u8] = b"KEYkeyKEYkeyKEYk = 'VALvalVALvalVALv'\nab = cd\n";
        let whole = tokens(&[text]);
        for cut in 0..=text.len() {
            assert_eq!(tokens(&[&text[..cut], &text[cut..]]), whole, "cut at {cut}");
        }
    }
}
