//! HashHop problems in the format of Magic's generator (`MultiHopEval.make_one`):
//!
//! - `prompt.txt`: one pair per line, `KEY = VALUE`, the last level of every chain
//!   quoted (`KEY = 'VALUE'`), lines shuffled, joined by `\n` with no newline after the
//!   last; hashes are 16 random letters of `a-z A-Z`;
//! - `targets.json`: one JSON object mapping each query hash `H1` to its answer: `H_last`,
//!   or with chain of thought the whole chain `"H2 = H3 = … = H_last"`.
//!
//! Sizes follow Magic's arithmetic: `3 × tokens` characters of problem, at
//! `(2 × 16 + 3) × hops` characters per chain, so `ceil(3 × tokens / (35 × hops))` chains
//! of `hops` lines each (lines are 36 bytes, 38 when quoted, with their newline; the
//! file comes out about 3% over `3 × tokens` bytes, as Magic's does). Magic's targets
//! list every chain; ours list the first `queries` (its completion asks that many).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::atomic_file::write_atomically;
use crate::error::{Error, Result};
use crate::memory_model::mix::{mix64, SplitMix64};

/// Characters of a hash, as in Magic's default `hash_pair_str_length`.
pub const HASH_LEN: usize = 16;
/// Characters per token Magic assumes when sizing a problem.
pub const CHARS_PER_TOKEN: u64 = 3;

/// What to generate: size, hops, queries, chain of thought, seed.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// Problem size in (nominal) tokens: `3 × tokens` characters.
    pub tokens: u64,
    /// Hops per chain: a chain of `hops` pairs leads from a query to its answer.
    pub hops: usize,
    /// Queries written to `targets.json` (at most the number of chains).
    pub queries: usize,
    /// Chain of thought: targets give the whole chain.
    pub cot: bool,
    /// Seed of every random choice: the same seed gives the same files.
    pub seed: u64,
}

/// What [`generate`] wrote.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Generated {
    /// Path of `prompt.txt`.
    pub prompt: PathBuf,
    /// Path of `targets.json`.
    pub targets: PathBuf,
    /// Chains in the prompt.
    pub chains: u64,
    /// `KEY = VALUE` lines in the prompt.
    pub lines: u64,
    /// Size of `prompt.txt` in bytes.
    pub prompt_bytes: u64,
    /// Queries in `targets.json`.
    pub queries: usize,
}

/// Number of chains Magic's generator makes for a problem of `tokens` tokens.
pub fn chains_for(tokens: u64, hops: usize) -> u64 {
    let chars = tokens * CHARS_PER_TOKEN;
    let per_chain = (2 * HASH_LEN as u64 + 3) * hops as u64;
    chars.div_ceil(per_chain)
}

/// Writes `prompt.txt` and `targets.json` into `out_dir` (created if missing). The
/// same options and seed always give the same files.
pub fn generate(options: &GenerateOptions, out_dir: impl AsRef<Path>) -> Result<Generated> {
    let out_dir = out_dir.as_ref();
    let GenerateOptions {
        tokens,
        hops,
        queries,
        cot,
        seed,
    } = *options;
    if hops == 0 {
        return Err(Error::Config("--hops must be at least 1".into()));
    }
    let chains = chains_for(tokens, hops);
    if chains == 0 {
        return Err(Error::Config("--tokens must be at least 1".into()));
    }
    if queries == 0 || queries as u64 > chains {
        return Err(Error::Config(format!(
            "--queries must be between 1 and the number of chains ({chains} for {tokens} tokens \
             and {hops} hops), found {queries}"
        )));
    }
    if chains * hops as u64 > u32::MAX as u64 {
        return Err(Error::Config(format!(
            "{tokens} tokens make more than 2^32 lines; generate smaller problems"
        )));
    }
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let n = chains as usize;
    let mut rng = SplitMix64::new(mix64(seed ^ 0x0068_6173_6868_6f70));
    // levels[l][c]: hash at level l of chain c; line (l, c) is `levels[l][c] = levels[l+1][c]`.
    let levels: Vec<Vec<[u8; HASH_LEN]>> = (0..=hops)
        .map(|_| (0..n).map(|_| random_hash(&mut rng)).collect())
        .collect();
    let mut order: Vec<u32> = (0..(hops * n) as u32).collect();
    rng.shuffle(&mut order);

    let prompt = out_dir.join("prompt.txt");
    let mut prompt_bytes = 0u64;
    write_atomically(&prompt, |w| {
        for (i, &line) in order.iter().enumerate() {
            let (l, c) = (line as usize / n, line as usize % n);
            if i > 0 {
                w.write_all(b"\n")?;
                prompt_bytes += 1;
            }
            let quote: &[u8] = if l == hops - 1 { b"'" } else { b"" };
            for part in [&levels[l][c][..], b" = ", quote, &levels[l + 1][c], quote] {
                w.write_all(part)?;
                prompt_bytes += part.len() as u64;
            }
        }
        Ok(())
    })?;

    let targets = out_dir.join("targets.json");
    write_atomically(&targets, |w| {
        w.write_all(b"{")?;
        for (c, query) in levels[0].iter().enumerate().take(queries) {
            let answer: Vec<&str> = if cot {
                levels[1..].iter().map(|level| as_str(&level[c])).collect()
            } else {
                vec![as_str(&levels[hops][c])]
            };
            let sep = if c > 0 { ", " } else { "" };
            write!(w, "{sep}\"{}\": \"{}\"", as_str(query), answer.join(" = "))?;
        }
        w.write_all(b"}\n")
    })?;
    Ok(Generated {
        prompt,
        targets,
        chains,
        lines: chains * hops as u64,
        prompt_bytes,
        queries,
    })
}

fn random_hash(rng: &mut SplitMix64) -> [u8; HASH_LEN] {
    const ALPHABET: &[u8; 52] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut h = [0u8; HASH_LEN];
    for b in &mut h {
        *b = ALPHABET[rng.below(52) as usize];
    }
    h
}

fn as_str(h: &[u8; HASH_LEN]) -> &str {
    std::str::from_utf8(h).expect("hashes are ASCII letters")
}
