//! Synthetic contexts for benchmarks and long runs: deterministic text with the
//! statistics of prose (a Zipf-like vocabulary) and repeated passages to recall.

use std::io::{BufWriter, Write};
use std::path::Path;

use crate::error::{Error, Result};

/// Writes about `tokens` tokens of the built-in text tokenizer to `path`: words from a
/// vocabulary of 50,000 made-up words, drawn Zipf-like, 5–24 words and a full stop per
/// line; every 10th line repeats one of the last 1,000 lines.
pub fn write_text_context(path: impl AsRef<Path>, tokens: u64, seed: u64) -> Result<u64> {
    let path = path.as_ref();
    let io = |e| Error::io(path, e);
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let syllables = [
        "ka", "lo", "mi", "ne", "ru", "ta", "vo", "shi", "ze", "po", "an", "el",
    ];
    let vocab: Vec<String> = (0..50_000u64)
        .map(|i| {
            let mut w = String::new();
            let mut x = i + 7;
            while x > 0 {
                w.push_str(syllables[(x % 12) as usize]);
                x /= 12;
            }
            w
        })
        .collect();
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path).map_err(io)?);
    let mut recent: Vec<String> = Vec::with_capacity(1000);
    let (mut written, mut line_no) = (0u64, 0u64);
    while written < tokens {
        let line = if line_no % 10 == 9 && !recent.is_empty() {
            recent[(next() % recent.len() as u64) as usize].clone()
        } else {
            let len = 5 + next() % 20;
            let words: Vec<&str> = (0..len)
                .map(|_| {
                    let u = (next() >> 11) as f64 / (1u64 << 53) as f64;
                    let rank = ((vocab.len() as f64).powf(u) as usize).saturating_sub(1);
                    vocab[rank].as_str()
                })
                .collect();
            words.join(" ") + "."
        };
        // Each word, the full stop and the line break are one token each.
        written += line.split(' ').count() as u64 + 2;
        writeln!(out, "{line}").map_err(io)?;
        if recent.len() == 1000 {
            recent[(line_no % 1000) as usize] = line;
        } else {
            recent.push(line);
        }
        line_no += 1;
    }
    out.flush().map_err(io)?;
    Ok(written)
}
