//! Seeded mutation tests of every file a model directory brings: config.json,
//! tokenizer.json, model.safetensors (header and data) and model state files. Each
//! mutant must give a result or an error, never a panic, an abort or a signal, and
//! the process runs under a 6 GiB address-space limit, so a size read from a mutant
//! and allocated unchecked fails the test. Fixed seeds: the same mutants every run.

use std::path::PathBuf;

use ltm_engine::lm::config::GdnConfig;
use ltm_engine::lm::state_file::{load_model_state, save_model_state, SourcePosition};
use ltm_engine::lm::tokenizer::ModelTokenizer;
use ltm_engine::lm::weights::WeightFiles;
use ltm_engine::lm::{LanguageModel, Logits};
use ltm_engine::Device;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const MUTANTS: usize = 2000;

fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

fn limit_memory() {
    let limit = 6u64 << 30;
    let rl = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: setrlimit with a valid struct only lowers this process's own limit.
    unsafe {
        libc::setrlimit(libc::RLIMIT_AS, &rl);
    }
}

/// One random edit: flip a bit, set a byte, delete, duplicate or insert a run, or
/// truncate; `focus` bytes at the front get most of the edits (the headers).
fn mutate(good: &[u8], focus: usize, rng: &mut StdRng) -> Vec<u8> {
    let mut b = good.to_vec();
    let edits = rng.random_range(1..=3);
    for _ in 0..edits {
        if b.is_empty() {
            break;
        }
        let span = if rng.random_bool(0.85) {
            focus.min(b.len())
        } else {
            b.len()
        };
        let at = rng.random_range(0..span);
        match rng.random_range(0..7) {
            0 => b[at] ^= 1 << rng.random_range(0..8),
            1 => b[at] = rng.random(),
            2 => {
                let end = (at + rng.random_range(1..16)).min(b.len());
                b.drain(at..end);
            }
            3 => {
                let end = (at + rng.random_range(1..16)).min(b.len());
                let run = b[at..end].to_vec();
                b.splice(at..at, run);
            }
            4 => {
                let n = rng.random_range(1..8);
                let ins: Vec<u8> = (0..n)
                    .map(|_| b"0123456789-.e\"{}[],: "[rng.random_range(0..21)])
                    .collect();
                b.splice(at..at, ins);
            }
            5 => b.truncate(at),
            _ => {
                // A digit run replaced by a huge or negative number.
                let s = [
                    b"99999999999999999999".as_slice(),
                    b"-1",
                    b"4294967296",
                    b"1e300",
                    b"0",
                ][rng.random_range(0..5)];
                b.splice(at..(at + 1).min(b.len()), s.iter().copied());
            }
        }
    }
    b
}

#[test]
fn config_json_mutants() {
    limit_memory();
    let good = std::fs::read(fixture("gdn-gva/config.json")).unwrap();
    let original = GdnConfig::parse(std::str::from_utf8(&good).unwrap()).unwrap();
    let weights = WeightFiles::open(&fixture("gdn-gva")).unwrap();
    let mut rng = StdRng::seed_from_u64(0xC0F1);
    let (mut accepted, mut refused, mut loaded) = (0, 0, 0);
    for _ in 0..MUTANTS {
        let bytes = mutate(&good, good.len(), &mut rng);
        let text = String::from_utf8_lossy(&bytes);
        match GdnConfig::parse(&text) {
            Err(msg) => {
                assert!(!msg.is_empty());
                refused += 1;
            }
            Ok(c) => {
                accepted += 1;
                // A config the weights load under has the original's shapes.
                if weights.load(&c).is_ok() {
                    loaded += 1;
                    assert_eq!(
                        (
                            c.hidden_size,
                            c.layers,
                            c.heads,
                            c.value_heads,
                            c.head_dim,
                            c.value_dim
                        ),
                        (
                            original.hidden_size,
                            original.layers,
                            original.heads,
                            original.value_heads,
                            original.head_dim,
                            original.value_dim
                        )
                    );
                }
            }
        }
    }
    eprintln!("config.json: {MUTANTS} mutants, {refused} refused, {accepted} parsed, {loaded} loaded the weights");
    assert!(refused > MUTANTS / 2 && accepted > 0);
}

#[test]
fn tokenizer_json_mutants() {
    limit_memory();
    let good = std::fs::read(fixture("gdn-gva/tokenizer.json")).unwrap();
    let mut rng = StdRng::seed_from_u64(0x70C3);
    let (mut ok, mut refused) = (0, 0);
    // The front holds the special tokens, normalizer, pre-tokenizer and
    // post-processor; the rest is the vocabulary and the merges.
    for _ in 0..MUTANTS {
        let bytes = mutate(&good, 3000, &mut rng);
        match ModelTokenizer::parse(&String::from_utf8_lossy(&bytes), 4096) {
            Ok(t) => {
                ok += 1;
                for id in t
                    .encode("Hello, wörld!\n\tx = 42", true)
                    .unwrap_or_default()
                {
                    assert!(id < 4096);
                }
            }
            Err(_) => refused += 1,
        }
    }
    eprintln!("tokenizer.json: {MUTANTS} mutants, {refused} refused, {ok} accepted");
    assert!(refused > 0 && ok > 0);
}

#[test]
fn safetensors_mutants() {
    limit_memory();
    let good = std::fs::read(fixture("gdn-gva/model.safetensors")).unwrap();
    let header = 8 + u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let config = GdnConfig::load(&fixture("gdn-gva/config.json")).unwrap();
    let mut rng = StdRng::seed_from_u64(0x5AFE);
    let (mut ok, mut refused) = (0, 0);
    for _ in 0..MUTANTS {
        let bytes = mutate(&good, header, &mut rng);
        let result = WeightFiles::from_bytes("model.safetensors".into(), bytes)
            .and_then(|w| w.load(&config));
        match result {
            Ok((w, _)) => {
                ok += 1;
                assert_eq!(w.layers.len(), config.layers);
            }
            Err(_) => refused += 1,
        }
    }
    eprintln!("model.safetensors: {MUTANTS} mutants, {refused} refused, {ok} loaded");
    assert!(refused > MUTANTS / 2);
}

#[test]
fn model_state_file_mutants() {
    limit_memory();
    let model = LanguageModel::load(fixture("gdn-gva"), Device::Cpu).unwrap();
    let mut s = model.session().unwrap();
    s.feed(&[1, 40, 41, 900], Logits::None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.state");
    let pos = SourcePosition {
        bytes: 9,
        crc32: 1,
        window_start: 9,
        tokens_past: 0,
        nll_sum: 1.0,
        nll_tokens: 3,
    };
    save_model_state(&path, &model, &s.snapshot().unwrap(), &pos).unwrap();
    let good = std::fs::read(&path).unwrap();
    let mut rng = StdRng::seed_from_u64(0x57A7);
    let mut refused = 0;
    for _ in 0..MUTANTS {
        let bytes = mutate(&good, 120, &mut rng);
        if bytes == good {
            continue;
        }
        std::fs::write(&path, &bytes).unwrap();
        assert!(
            load_model_state(&path, &model).is_err(),
            "a damaged state file was accepted"
        );
        refused += 1;
    }
    eprintln!("model state files: {refused} mutants, all refused");
}
