//! Capacity of the built-in memory model: writes N random `KEY = VALUE` pairs (16-letter
//! hashes, as HashHop's) into states of several sizes, reads back a sample spread over
//! the write order, and prints recall overall, for the oldest and the newest tenth of
//! the pairs, beside the prediction of the capacity formula (docs/memory-model.md, "Capacity").
//!
//! ```sh
//! cargo run --release --example capacity                        # the table of docs/memory-model.md
//! cargo run --release --example capacity -- --mib 8 --load 0.5,1,2 --beta 1,0.3,0.1
//! ```
//!
//! Options: `--mib A,B,…` state sizes, `--load x,y,…` pairs per row of the state
//! (N = load × rows), `--beta …`, `--active …`, `--samples N`, `--seed S` (default:
//! fresh, printed), `--json`.

use std::time::Instant;

use ltm_engine::memory_model::capacity as formula;
use ltm_engine::memory_model::mix::SplitMix64;
use ltm_engine::memory_model::{MemoryModel, ModelConfig};
use ltm_engine::Device;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let list = |name: &str, default: &str| -> Vec<f64> {
        let v = args
            .iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map_or(default, |s| s.as_str());
        v.split(',').map(|x| x.parse().expect("a number")).collect()
    };
    let mibs = list("--mib", "4,16,64,256");
    let loads = list("--load", "0.25,0.5,0.75,1,1.5,2,4");
    let betas = list("--beta", &ModelConfig::DEFAULT_BETA.to_string());
    let actives = list("--active", &ModelConfig::DEFAULT_ACTIVE.to_string());
    let samples = list("--samples", "2000")[0] as usize;
    let json = args.iter().any(|a| a == "--json");
    let seed = args
        .iter()
        .position(|a| a == "--seed")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.parse::<u64>().expect("a seed"))
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("capacity: --seed {seed}");
    if !json {
        println!(
            "| state | rows R | β | s | pairs N | N/R | recall | formula | oldest 10% | newest 10% | verified | write s |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    }
    for &mib in &mibs {
        for &beta in &betas {
            for &active in &actives {
                for &load in &loads {
                    let mut config =
                        ModelConfig::with_state_bytes((mib * (1u64 << 20) as f64) as u64)?;
                    config.beta = beta as f32;
                    config.active = active as usize;
                    let rows = (config.heads * config.rows) as f64;
                    let pairs = (load * rows).round() as usize;
                    let m = measure(&config, pairs, samples, seed)?;
                    let predicted = formula::recall(pairs as f64, rows, beta);
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({"state_mib": mib, "rows": rows, "beta": beta,
                                "active": active, "pairs": pairs, "load": load,
                                "recall": m.recall, "formula": predicted, "oldest": m.oldest,
                                "newest": m.newest, "verified": m.verified, "write_seconds": m.seconds})
                        );
                    } else {
                        println!(
                            "| {mib} MiB | {rows} | {beta} | {active} | {pairs} | {load} | {:.1}% | {:.1}% | {:.1}% | {:.1}% | {:.1}% | {:.2} |",
                            100.0 * m.recall,
                            100.0 * predicted,
                            100.0 * m.oldest,
                            100.0 * m.newest,
                            100.0 * m.verified,
                            m.seconds
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

struct Measured {
    recall: f64,
    oldest: f64,
    newest: f64,
    verified: f64,
    seconds: f64,
}

fn hash(rng: &mut SplitMix64) -> [u8; 16] {
    const A: &[u8; 52] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut h = [0u8; 16];
    h.iter_mut().for_each(|b| *b = A[rng.below(52) as usize]);
    h
}

fn measure(
    config: &ModelConfig,
    pairs: usize,
    samples: usize,
    seed: u64,
) -> Result<Measured, Box<dyn std::error::Error>> {
    let mut model = MemoryModel::new(config.clone(), Device::Cpu)?;
    let mut writer = model.writer(1 << 14);
    let mut rng = SplitMix64::new(seed ^ pairs as u64);
    let every = (pairs / samples.min(pairs).max(1)).max(1);
    let mut sampled: Vec<(usize, [u8; 16], [u8; 16])> = Vec::new();
    let mut text = Vec::with_capacity(1 << 20);
    let start = Instant::now();
    for i in 0..pairs {
        let (k, v) = (hash(&mut rng), hash(&mut rng));
        if i % every == every / 2 {
            sampled.push((i, k, v));
        }
        text.extend_from_slice(&k);
        text.extend_from_slice(b" = ");
        text.extend_from_slice(&v);
        text.push(b'\n');
        if text.len() >= 1 << 20 {
            writer.feed(&mut model, &text)?;
            text.clear();
        }
    }
    writer.feed(&mut model, &text)?;
    writer.finish(&mut model)?;
    let seconds = start.elapsed().as_secs_f64();
    let prefixes: Vec<String> = sampled
        .iter()
        .map(|(_, k, _)| String::from_utf8(k.to_vec()).unwrap())
        .collect();
    let refs: Vec<&str> = prefixes.iter().map(|s| s.as_str()).collect();
    let got = model.next_words(&refs)?;
    let (mut ok, mut old, mut old_n, mut new, mut new_n, mut verified) = (0, 0, 0, 0, 0, 0);
    for ((i, _, v), d) in sampled.iter().zip(&got) {
        let hit = d.text.as_bytes() == v;
        ok += hit as usize;
        verified += d.verified as usize;
        if *i < pairs / 10 {
            old += hit as usize;
            old_n += 1;
        }
        if *i >= pairs - pairs / 10 {
            new += hit as usize;
            new_n += 1;
        }
    }
    let n = sampled.len().max(1) as f64;
    Ok(Measured {
        recall: ok as f64 / n,
        oldest: old as f64 / old_n.max(1) as f64,
        newest: new as f64 / new_n.max(1) as f64,
        verified: verified as f64 / n,
        seconds,
    })
}
