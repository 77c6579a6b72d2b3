//! HashHop evaluation: stream the prompt through the memory model once, then answer
//! every query by following hops through the memory alone, and score exact matches.

use std::path::Path;
use std::time::Instant;

use super::files::{read_targets, PromptChecker, Target};
use crate::backend::Device;
use crate::error::{Error, Result};
use crate::memory_model::{MemoryModel, ModelConfig};
use crate::stream::stream_file;

/// How to run a HashHop evaluation: the model, where it runs, how the prompt is streamed.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// The memory model the prompt is written into (state size, keys, β).
    pub model: ModelConfig,
    /// Where the memory runs.
    pub device: Device,
    /// Hops per query for targets without chain of thought; `None` reads it off the
    /// prompt (pairs ÷ quoted pairs, as Magic's generator makes every chain that long).
    pub hops: Option<usize>,
    /// Bytes of prompt per streaming window.
    pub window_bytes: usize,
    /// Writes buffered per call to the backend.
    pub window_tokens: usize,
    /// Score only the first this many queries (targets sorted by query hash, so a
    /// random sample); `None` scores all.
    pub max_queries: Option<usize>,
}

impl EvalOptions {
    /// Prompt bytes per streaming window unless set otherwise (1 MiB).
    pub const DEFAULT_WINDOW_BYTES: usize = 1 << 20;
    /// Writes per call to the backend unless set otherwise.
    pub const DEFAULT_WINDOW_TOKENS: usize = 1 << 12;

    /// Defaults around `model`: `auto` device, hops read off the prompt, every query
    /// scored.
    pub fn new(model: ModelConfig) -> Self {
        EvalOptions {
            model,
            device: Device::Auto,
            hops: None,
            window_bytes: Self::DEFAULT_WINDOW_BYTES,
            window_tokens: Self::DEFAULT_WINDOW_TOKENS,
            max_queries: None,
        }
    }
}

/// Recall of the queries that take a given number of hops.
#[derive(Clone, Debug, serde::Serialize)]
pub struct HopRecall {
    /// Hops these queries take.
    pub hops: usize,
    /// Queries with this many hops.
    pub queries: usize,
    /// Of those, answered exactly right.
    pub correct: usize,
    /// `correct / queries`.
    pub recall: f64,
}

/// One query's answer as the memory gave it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Answer {
    /// The query hash, as in `targets.json`.
    pub query: String,
    /// The word read at each hop.
    pub chain: Vec<String>,
    /// Whether the chain equals the expected answer exactly (every hop, with chain of
    /// thought).
    pub correct: bool,
}

/// What a HashHop evaluation found: recall overall and per hop count, sizes and times.
#[derive(Clone, Debug, serde::Serialize)]
pub struct EvalReport {
    /// Queries scored.
    pub queries: usize,
    /// Queries answered exactly right.
    pub correct: usize,
    /// Exact-match recall over all queries.
    pub recall: f64,
    /// Recall per hop count, fewest hops first.
    pub by_hops: Vec<HopRecall>,
    /// Share of single reads whose check symbol agreed.
    pub verified_reads: f64,
    /// Size of the prompt file in bytes.
    pub prompt_bytes: u64,
    /// Magic's nominal size: prompt characters ÷ 3.
    pub nominal_tokens: u64,
    /// Tokens of the built-in tokenizer (words and punctuation).
    pub tokens: u64,
    /// `KEY = VALUE` lines, each one pair written to the memory.
    pub pairs: u64,
    /// Key–value pairs written into the memory (words with a context before them).
    pub writes: u64,
    /// Wall-clock seconds to stream the prompt into the memory.
    pub stream_seconds: f64,
    /// Tokens of the built-in tokenizer per second of streaming.
    pub tokens_per_second: f64,
    /// Magic's nominal tokens per second of streaming.
    pub nominal_tokens_per_second: f64,
    /// Wall-clock seconds to answer every query (all hops).
    pub query_seconds: f64,
    /// Size of the memory's state in bytes.
    pub state_bytes: u64,
    /// Heads of the memory.
    pub heads: usize,
    /// Rows per head (`K`).
    pub rows_per_head: usize,
    /// Rows each key touches (`s`).
    pub active_rows: usize,
    /// Values per row (`V`): the width of a word's code.
    pub value_dim: usize,
    /// Write strength of every pair.
    pub beta: f32,
    /// The sparse backend's description.
    pub backend: String,
    /// Every query's answer, in target order (left out of the JSON report).
    #[serde(skip)]
    pub answers: Vec<Answer>,
}

/// Runs a HashHop evaluation of the built-in memory model.
pub fn eval(
    prompt: impl AsRef<Path>,
    targets_path: impl AsRef<Path>,
    options: &EvalOptions,
) -> Result<EvalReport> {
    let prompt = prompt.as_ref();
    let targets_path = targets_path.as_ref();
    if options.max_queries == Some(0) {
        return Err(Error::Config(
            "--max-queries must be at least 1 (leave it out to score every query)".into(),
        ));
    }
    crate::input_file::regular_file(prompt)?;
    let mut targets = read_targets(targets_path)?;
    if let Some(n) = options.max_queries {
        targets.truncate(n);
    }
    let mut model = MemoryModel::new(options.model.clone(), options.device)?;
    let mut checker = PromptChecker::new(prompt, &targets);
    let stats = stream_file(
        &mut model.streamer(options.window_tokens)?,
        prompt,
        options.window_bytes,
        |window| checker.feed(window),
    )?;
    checker.finish()?;
    if checker.pairs == 0 {
        return Err(Error::File {
            path: prompt.to_path_buf(),
            problem: "no `KEY = VALUE` lines".into(),
        });
    }
    checker.check_targets(&targets, targets_path)?;
    let hops = hops_per_query(&targets, options.hops, checker.hops(), prompt, &checker)?;

    let start = Instant::now();
    let (answers, verified) = follow(&model, &targets, &hops)?;
    let query_seconds = start.elapsed().as_secs_f64();

    let correct = answers.iter().filter(|a| a.correct).count();
    let mut by_hops: Vec<HopRecall> = Vec::new();
    for (a, &h) in answers.iter().zip(&hops) {
        let i = match by_hops.iter().position(|r| r.hops == h) {
            Some(i) => i,
            None => {
                by_hops.push(HopRecall {
                    hops: h,
                    queries: 0,
                    correct: 0,
                    recall: 0.0,
                });
                by_hops.len() - 1
            }
        };
        by_hops[i].queries += 1;
        by_hops[i].correct += a.correct as usize;
    }
    by_hops.sort_by_key(|r| r.hops);
    for r in &mut by_hops {
        r.recall = r.correct as f64 / r.queries as f64;
    }
    let reads: usize = hops.iter().sum();
    let nominal_tokens = stats.bytes / super::generate::CHARS_PER_TOKEN;
    let config = model.config();
    Ok(EvalReport {
        queries: targets.len(),
        correct,
        recall: correct as f64 / targets.len() as f64,
        by_hops,
        verified_reads: verified as f64 / reads.max(1) as f64,
        prompt_bytes: stats.bytes,
        nominal_tokens,
        tokens: stats.tokens,
        pairs: checker.pairs,
        writes: stats.writes,
        stream_seconds: stats.seconds,
        tokens_per_second: stats.tokens as f64 / stats.seconds,
        nominal_tokens_per_second: nominal_tokens as f64 / stats.seconds,
        query_seconds,
        state_bytes: model.state().size_bytes() as u64,
        heads: config.heads,
        rows_per_head: config.rows,
        active_rows: config.active,
        value_dim: model.memory_config().value_dim,
        beta: config.beta,
        backend: model.backend_name(),
        answers,
    })
}

/// Hops each query takes: the length of its chain with chain of thought; otherwise
/// `--hops`, or the prompt's own hop count.
fn hops_per_query(
    targets: &[Target],
    given: Option<usize>,
    inferred: Option<usize>,
    prompt: &Path,
    checker: &PromptChecker,
) -> Result<Vec<usize>> {
    if targets.iter().any(|t| t.chain.len() > 1) {
        return Ok(targets.iter().map(|t| t.chain.len()).collect());
    }
    let hops = given.or(inferred).ok_or_else(|| Error::File {
        path: prompt.to_path_buf(),
        problem: format!(
            "cannot tell the number of hops: {} pairs of which {} quoted is not a whole number \
             of chains; pass --hops",
            checker.pairs, checker.quoted
        ),
    })?;
    if hops == 0 {
        return Err(Error::Config("--hops must be at least 1".into()));
    }
    // Each hop is a batch of reads: an unbounded count would cost time for nothing,
    // since a chain cannot be longer than the pairs it is made of.
    if hops as u64 > checker.pairs {
        return Err(Error::Config(format!(
            "--hops {hops}: the prompt has {} pairs, so no chain has more than {} hops",
            checker.pairs, checker.pairs
        )));
    }
    Ok(vec![hops; targets.len()])
}

/// Queries read from the memory per call.
const READ_BATCH: usize = 4096;

/// Follows every query hop by hop, each hop one batched read of the memory. Returns
/// the answers and how many reads passed their check symbol.
fn follow(model: &MemoryModel, targets: &[Target], hops: &[usize]) -> Result<(Vec<Answer>, usize)> {
    let mut chains: Vec<Vec<String>> = vec![Vec::new(); targets.len()];
    let max_hops = hops.iter().copied().max().unwrap_or(0);
    let mut verified = 0;
    for step in 0..max_hops {
        let active: Vec<usize> = (0..targets.len()).filter(|&i| hops[i] > step).collect();
        let prefixes: Vec<&str> = active
            .iter()
            .map(|&i| {
                chains[i]
                    .last()
                    .map_or(targets[i].query.as_str(), |s| s.as_str())
            })
            .collect();
        // A hop that decoded to nothing has no word to continue from: that query is
        // already wrong, so read its query again rather than fail the batch.
        let prefixes: Vec<&str> = prefixes
            .iter()
            .zip(&active)
            .map(|(p, &i)| {
                if p.is_empty() {
                    targets[i].query.as_str()
                } else {
                    p
                }
            })
            .collect();
        // Batches bound the read buffer (`batch × heads × VALUE_DIM` floats) however
        // many queries the targets hold (Magic's list every chain).
        let mut read = Vec::with_capacity(prefixes.len());
        for batch in prefixes.chunks(READ_BATCH) {
            read.extend(model.next_words(batch)?);
        }
        for (&i, d) in active.iter().zip(read) {
            verified += d.verified as usize;
            chains[i].push(d.text);
        }
    }
    let answers = targets
        .iter()
        .zip(chains)
        .map(|(t, chain)| {
            let correct = if t.chain.len() > 1 {
                chain == t.chain
            } else {
                chain.last() == t.chain.last()
            };
            Answer {
                query: t.query.clone(),
                chain,
                correct,
            }
        })
        .collect();
    Ok((answers, verified))
}
