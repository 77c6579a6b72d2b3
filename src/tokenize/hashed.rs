//! The random-feature model's rule: the bytes of a context file as a stream of 64-bit
//! token ids.
//!
//! The built-in text tokenizer needs no vocabulary file: it splits UTF-8 text into
//! words (runs of letters and digits), single punctuation or symbol characters, and
//! single line breaks (other white space only separates), and names each token by the
//! FNV-1a hash of its bytes. A model sees the same id wherever the same word occurs.

use crate::context_file::{ContextFile, Format};
use crate::error::{Error, Result};

/// Reads tokens from a context file in order, a buffer at a time.
pub struct Tokenizer {
    format: Format,
    /// Byte offset of the next unread byte.
    offset: usize,
    /// Tokens produced so far.
    tokens: u64,
    vocab_size: u64,
}

impl Tokenizer {
    /// `vocab_size` bounds the ids of `u32` and `bytes` files (text ids are hashes).
    pub fn new(file: &ContextFile, vocab_size: u64) -> Self {
        Tokenizer {
            format: file.format(),
            offset: 0,
            tokens: 0,
            vocab_size,
        }
    }

    /// Byte offset in the file of the next unread byte.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Tokens produced so far.
    pub fn tokens_read(&self) -> u64 {
        self.tokens
    }

    /// Appends up to `max` tokens to `out`; fewer only at the end of the file.
    pub fn fill(&mut self, file: &ContextFile, out: &mut Vec<u64>, max: usize) -> Result<usize> {
        let bytes = file.bytes();
        let before = out.len();
        match self.format {
            Format::Bytes => {
                let end = (self.offset + max).min(bytes.len());
                for (i, &b) in bytes[self.offset..end].iter().enumerate() {
                    if b as u64 >= self.vocab_size {
                        return Err(out_of_range(
                            file,
                            self.tokens + i as u64,
                            self.offset + i,
                            b as u64,
                            self.vocab_size,
                        ));
                    }
                }
                out.extend(bytes[self.offset..end].iter().map(|&b| b as u64));
                self.offset = end;
            }
            Format::U32 => {
                let end = (self.offset + 4 * max).min(bytes.len());
                for (i, c) in bytes[self.offset..end].chunks_exact(4).enumerate() {
                    let id = u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as u64;
                    if id >= self.vocab_size {
                        return Err(out_of_range(
                            file,
                            self.tokens + i as u64,
                            self.offset + 4 * i,
                            id,
                            self.vocab_size,
                        ));
                    }
                    out.push(id);
                }
                self.offset = end;
            }
            Format::Text => self.fill_text(file, out, max)?,
        }
        let n = out.len() - before;
        self.tokens += n as u64;
        Ok(n)
    }

    fn fill_text(&mut self, file: &ContextFile, out: &mut Vec<u64>, max: usize) -> Result<()> {
        self.offset = hash_words(file.bytes(), self.offset, out, max).map_err(|i| Error::File {
            path: file.path().to_path_buf(),
            problem: format!("invalid UTF-8 at byte {i} (use --format bytes for binary files)"),
        })?;
        Ok(())
    }
}

/// Appends the ids of up to `max` tokens of the text `bytes[from..]` to `out`; the
/// offset after the last byte read, or the offset of invalid UTF-8.
#[inline]
pub fn hash_words(
    bytes: &[u8],
    from: usize,
    out: &mut Vec<u64>,
    max: usize,
) -> std::result::Result<usize, usize> {
    let target = out.len() + max;
    let mut i = from;
    while i < bytes.len() && out.len() < target {
        let (ch, len) = decode_char(bytes, i).ok_or(i)?;
        if ch.is_alphanumeric() {
            let start = i;
            i += len;
            while i < bytes.len() {
                match decode_char(bytes, i) {
                    Some((c, l)) if c.is_alphanumeric() => i += l,
                    _ => break,
                }
            }
            out.push(fnv1a(&bytes[start..i]));
        } else {
            if ch == '\n' || !ch.is_whitespace() {
                out.push(fnv1a(&bytes[i..i + len]));
            }
            i += len;
        }
    }
    Ok(i)
}

fn out_of_range(file: &ContextFile, token: u64, byte: usize, id: u64, vocab: u64) -> Error {
    Error::File {
        path: file.path().to_path_buf(),
        problem: format!(
            "token {token} (byte offset {byte}) has id {id}, out of range for a vocabulary of {vocab}"
        ),
    }
}

/// The character starting at byte `i`, and its length; `None` if it is not valid UTF-8.
#[inline]
fn decode_char(bytes: &[u8], i: usize) -> Option<(char, usize)> {
    let b = bytes[i];
    if b < 0x80 {
        return Some((b as char, 1));
    }
    let len = match b {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => return None,
    };
    let s = std::str::from_utf8(bytes.get(i..i + len)?).ok()?;
    s.chars().next().map(|c| (c, len))
}

/// Token ids are 64-bit FNV-1a hashes of the token's bytes: stable across platforms and
/// releases, so ids never change.
pub use crate::hash::fnv1a;

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tokens_of(text: &[u8], format: Option<Format>, piece: usize) -> Result<Vec<u64>> {
        let mut f = tempfile::Builder::new().suffix(".txt").tempfile().unwrap();
        f.write_all(text).unwrap();
        let file = ContextFile::open(f.path(), format)?;
        let mut tok = Tokenizer::new(&file, 1 << 32);
        let mut out = Vec::new();
        while tok.fill(&file, &mut out, piece)? > 0 {}
        assert_eq!(tok.tokens_read(), out.len() as u64);
        Ok(out)
    }

    #[test]
    fn words_punctuation_and_line_breaks() {
        let got = tokens_of("Grüße, world  42!\nnext".as_bytes(), None, 1000).unwrap();
        let want: Vec<u64> = ["Grüße", ",", "world", "42", "!", "\n", "next"]
            .iter()
            .map(|t| fnv1a(t.as_bytes()))
            .collect();
        assert_eq!(got, want);
        // Any fill size gives the same tokens.
        assert_eq!(
            tokens_of("Grüße, world  42!\nnext".as_bytes(), None, 1).unwrap(),
            want
        );
    }

    #[test]
    fn bytes_and_u32_formats() {
        assert_eq!(
            tokens_of(b"\x00\xffA", Some(Format::Bytes), 2).unwrap(),
            vec![0, 255, 65]
        );
        let ids: Vec<u8> = [7u32, 1 << 31]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        assert_eq!(
            tokens_of(&ids, Some(Format::U32), 1).unwrap(),
            vec![7, 1 << 31]
        );
    }

    #[test]
    fn invalid_utf8_names_the_byte() {
        let err = tokens_of(b"ok \xc3\x28 no", Some(Format::Text), 100).unwrap_err();
        assert!(err.to_string().contains("invalid UTF-8 at byte 3"), "{err}");
    }
}
