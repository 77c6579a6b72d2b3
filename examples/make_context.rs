//! Writes a synthetic text context of about N tokens for `ltm-engine run`:
//! words drawn from a Zipf-like vocabulary of 50,000 made-up words, one sentence per
//! line, with every 10th line repeating one of the last 1,000 lines, so the memory has
//! something to recall. Deterministic for a seed.
//!
//! `cargo run --release --example make_context -- OUT.txt TOKENS [SEED]`

use std::io::{BufWriter, Write};

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: make_context OUT.txt TOKENS [SEED]");
        std::process::exit(2);
    }
    let tokens: u64 = args[2].parse().expect("TOKENS must be a whole number");
    let seed: u64 = args
        .get(3)
        .map_or(1, |s| s.parse().expect("SEED must be a whole number"));
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
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(&args[1])?);
    let mut recent: Vec<String> = Vec::with_capacity(1000);
    let mut written = 0u64;
    let mut line_no = 0u64;
    while written < tokens {
        let line = if line_no % 10 == 9 && !recent.is_empty() {
            recent[(next() % recent.len() as u64) as usize].clone()
        } else {
            let len = 5 + next() % 20;
            let mut words = Vec::with_capacity(len as usize);
            for _ in 0..len {
                // Zipf-like: small ranks far more often.
                let u = (next() >> 11) as f64 / (1u64 << 53) as f64;
                let rank = ((vocab.len() as f64).powf(u) as usize).saturating_sub(1);
                words.push(vocab[rank].as_str());
            }
            words.join(" ") + "."
        };
        // Words, the full stop and the line break are tokens of the built-in tokenizer.
        written += line.split(' ').count() as u64 + 2;
        writeln!(out, "{line}")?;
        if recent.len() == 1000 {
            recent[(line_no % 1000) as usize] = line;
        } else {
            recent.push(line);
        }
        line_no += 1;
    }
    out.flush()
}
