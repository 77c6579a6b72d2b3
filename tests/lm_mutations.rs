//! Seeded mutation tests of every file a model directory brings: config.json,
//! tokenizer.json, model.safetensors (header and data) and model state files. Each
//! mutant must give a result or an error, never a panic, an abort or a signal, and
//! the process runs under a 6 GiB address-space limit, so a size read from a mutant
//! and allocated unchecked fails the test. Fixed seeds: the same mutants every run.
//! tokenizer.json also gets structural mutants (parts known to make the tokenizers
//! crate hang, abort or blow up, values of odd types and sizes, keys removed or
//! written twice, deep nesting), each loaded and used within a time limit.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ltm_engine::lm::config::GdnConfig;
use ltm_engine::lm::state_file::{load_model_state, save_model_state, SourcePosition};
use ltm_engine::lm::tokenizer::ModelTokenizer;
use ltm_engine::lm::weights::WeightFiles;
use ltm_engine::lm::{LanguageModel, Logits};
use ltm_engine::Device;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

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

fn tokenizer_json() -> Value {
    let text = std::fs::read_to_string(fixture("gdn-gva/tokenizer.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// `v` is refused at load, quickly, with an error that contains `names`.
fn refused_quickly(v: &Value, names: &str) {
    let start = Instant::now();
    let result = ModelTokenizer::parse(&v.to_string(), 4096);
    let took = start.elapsed();
    let e = result.err().expect("a hostile tokenizer was accepted");
    assert!(e.contains(names), "{e}");
    assert!(took < Duration::from_secs(2), "took {took:?}: {e}");
}

#[test]
fn a_huge_added_token_is_refused() {
    limit_memory();
    let mut v = tokenizer_json();
    v["added_tokens"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": 4000,
        "content": "x".repeat(1 << 20), "single_word": false, "lstrip": false, "rstrip": false,
        "normalized": false, "special": false}));
    refused_quickly(&v, "`added_tokens[3].content` is a string of 1048576 bytes");
}

#[test]
fn a_normalizer_that_multiplies_text_is_refused() {
    limit_memory();
    let mut v = tokenizer_json();
    v["normalizer"] =
        json!({"type": "Replace", "pattern": {"String": "a"}, "content": "a".repeat(1000)});
    refused_quickly(&v, "`normalizer` can turn one byte of text into 1000 bytes");
    // Each small, but multiplied along a sequence.
    let step = json!({"type": "Replace", "pattern": {"Regex": "a"}, "content": "aaa"});
    v["normalizer"] = json!({"type": "Sequence", "normalizers": vec![step; 8]});
    refused_quickly(&v, "into 65536 bytes");
}

#[test]
fn a_template_of_a_million_ids_is_refused() {
    limit_memory();
    let mut v = tokenizer_json();
    v["post_processor"]["special_tokens"]["<s>"] =
        json!({"id": "<s>", "ids": vec![1; 1 << 20], "tokens": vec!["<s>"; 1 << 20]});
    refused_quickly(
        &v,
        "`post_processor.special_tokens.<s>.ids` has 1048576 elements",
    );
}

#[test]
fn a_charsmap_declaring_an_8_gb_trie_is_refused() {
    limit_memory();
    let mut v = tokenizer_json();
    v["normalizer"] = json!({"type": "Precompiled", "precompiled_charsmap": "/P///w=="});
    refused_quickly(&v, "declares a trie of 1073741823 units");
}

#[test]
fn a_charsmap_whose_trie_points_outside_is_refused() {
    limit_memory();
    let mut v = tokenizer_json();
    v["normalizer"] = json!({"type": "Precompiled", "precompiled_charsmap": "BAAAAP////8="});
    refused_quickly(&v, "its trie points outside the table");
}

#[test]
fn a_huge_regex_and_deep_nesting_are_refused() {
    limit_memory();
    let mut v = tokenizer_json();
    v["pre_tokenizer"] = json!({"type": "Split", "pattern": {"Regex": "(a|b)".repeat(500)},
        "behavior": "Isolated", "invert": false});
    refused_quickly(
        &v,
        "`pre_tokenizer.pattern.Regex` is a string of 2500 bytes",
    );
    // Deeper than serde_json's limit, and deeper than the engine's, which is lower.
    for (depth, names) in [(100, "recursion limit"), (40, "nested more than 24 deep")] {
        let mut n = json!({"type": "Lowercase"});
        for _ in 0..depth {
            n = json!({"type": "Sequence", "normalizers": [n]});
        }
        v = tokenizer_json();
        v["normalizer"] = n;
        refused_quickly(&v, names);
    }
}

#[test]
fn encoding_more_than_16_tokens_a_byte_is_refused() {
    limit_memory();
    // 60 bytes of control characters (one token each) for every snowman: a growth of
    // 20, under the load's bound of 64, but 20 tokens a byte. The probes have no
    // snowman, so it loads; the first text with one is refused.
    let controls: String = (1u8..32)
        .filter(|b| !b"\t\n\x0b\x0c\r".contains(b))
        .map(char::from)
        .cycle()
        .take(60)
        .collect();
    let mut v = tokenizer_json();
    v["normalizer"] = json!({"type": "Replace", "pattern": {"String": "☃"}, "content": controls});
    let t = ModelTokenizer::parse(&v.to_string(), 4096).unwrap();
    assert!(t.encode("a snowman", true).is_ok());
    let e = t.encode("☃☃☃", true).unwrap_err().to_string();
    assert!(
        e.contains("more than 16 a byte") && e.contains("tokenizer.json"),
        "{e}"
    );
}

fn pick<T: Copy>(rng: &mut StdRng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

const NUMBERS: [f64; 6] = [
    -1.0,
    0.5,
    4294967296.0,
    1.8446744073709552e19,
    1e300,
    -1e300,
];

/// A value of `kind` that a tokenizer part does not expect, or a limit of its range.
fn odd_value(rng: &mut StdRng) -> Value {
    match rng.random_range(0..14) {
        0 => Value::Null,
        1 => json!(true),
        2 => json!(""),
        3 => json!([]),
        4 => json!({}),
        5 => json!(0),
        6 => json!(u32::MAX),
        7 => json!(u64::MAX),
        8 => json!(i64::MIN),
        9 => json!(NUMBERS[rng.random_range(0..NUMBERS.len())]),
        10 => json!("\u{0}\u{FFFF}é漢"),
        11 => json!("x".repeat([2, 1024, 1025, 5000][rng.random_range(0..4)])),
        12 => json!({"type": "Sequence"}),
        _ => json!([1, "a", null]),
    }
}

const REGEXES: [&str; 12] = [
    "",
    "a",
    ".",
    "a*",
    "(a*)*b",
    "(?=a)",
    "\\b",
    "(x+x+)+y",
    "[",
    "(?<=a)b",
    ".{0,1000}",
    "\\p{L}+|\\s+",
];

fn sized(rng: &mut StdRng) -> usize {
    // The megabyte parts have tests of their own: here they are rare, for speed.
    if rng.random_bool(0.02) {
        return 1 << 20;
    }
    pick(
        rng,
        &[0, 1, 3, 64, 256, 257, 1000, 1024, 1025, 5000, 100_000],
    )
}

fn random_text(rng: &mut StdRng) -> String {
    let n = sized(rng);
    ["a", "▁", " ", "\u{0}"][rng.random_range(0..4)].repeat(n)
}

fn replace(rng: &mut StdRng) -> Value {
    let pattern = if rng.random_bool(0.5) {
        json!({"String": pick(rng, &["a", "", " ", "ab"])})
    } else {
        json!({"Regex": REGEXES[rng.random_range(0..REGEXES.len())]})
    };
    json!({"type": "Replace", "pattern": pattern, "content": random_text(rng)})
}

fn charsmap(rng: &mut StdRng) -> String {
    use std::fmt::Write;
    let n = rng.random_range(0..64);
    let mut bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
    if n >= 4 && rng.random_bool(0.5) {
        // A plausible size, so the trie itself gets looked at.
        let size = 4 * rng.random_range(0..(n as u32 / 4).max(1));
        bytes[..4].copy_from_slice(&size.to_le_bytes());
    }
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in bytes.chunks(3) {
        let n = c.iter().fold(0u32, |n, &b| n << 8 | b as u32) << (8 * (3 - c.len()));
        for i in 0..4 {
            let ch = if i <= c.len() {
                A[(n >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            };
            s.write_char(ch).unwrap();
        }
    }
    s
}

/// One of the parts that make the crate hang, abort or blow up, or that change what
/// the engine reads, put in its place with random sizes.
fn hostile(v: &mut Value, rng: &mut StdRng) {
    // An earlier edit may have changed what holds the parts.
    if !v.is_object() {
        return;
    }
    for part in ["model", "post_processor"] {
        if !v[part].is_object() {
            v[part] = json!({});
        }
    }
    if !v["added_tokens"].is_array() {
        v["added_tokens"] = json!([]);
    }
    match rng.random_range(0..14) {
        0 => {
            v["added_tokens"]
                .as_array_mut()
                .unwrap()
                .push(json!({"id": rng.random_range(0..5000),
            "content": random_text(rng), "single_word": rng.random_bool(0.5), "lstrip": false,
            "rstrip": false, "normalized": rng.random_bool(0.5), "special": rng.random_bool(0.5)}))
        }
        1 => v["normalizer"] = replace(rng),
        2 => {
            let n = rng.random_range(1..12);
            v["normalizer"] = json!({"type": "Sequence", "normalizers": (0..n).map(|_| replace(rng)).collect::<Vec<_>>()});
        }
        3 => v["normalizer"] = json!({"type": "Prepend", "prepend": random_text(rng)}),
        4 => {
            v["normalizer"] = json!({"type": "Precompiled", "precompiled_charsmap": charsmap(rng)})
        }
        5 => {
            let n = sized(rng);
            let m = if rng.random_bool(0.8) { n } else { sized(rng) };
            v["post_processor"]["special_tokens"]["<s>"] = json!({"id": "<s>", "ids": vec![rng.random_range(0..5000); n], "tokens": vec!["<s>"; m]});
        }
        6 => {
            let piece = json!({"SpecialToken": {"id": "<s>", "type_id": 0}});
            v["post_processor"]["single"] = json!(vec![piece; sized(rng).min(5000)]);
        }
        7 => {
            v["truncation"] = json!({"direction": "Right", "max_length": rng.random_range(0..3000),
            "strategy": "LongestFirst", "stride": rng.random_range(0..10)})
        }
        8 => {
            v["padding"] = json!({"strategy": {"Fixed": rng.random_range(0..3000)}, "direction": "Right",
            "pad_to_multiple_of": null, "pad_id": rng.random_range(0..5000), "pad_type_id": 0, "pad_token": "<unk>"})
        }
        9 => {
            v["pre_tokenizer"] =
                json!({"type": "FixedLength", "length": pick(rng, &[0u64, 1, u64::MAX])})
        }
        10 => {
            v["pre_tokenizer"] = json!({"type": "Split",
            "pattern": {"Regex": REGEXES[rng.random_range(0..REGEXES.len())]},
            "behavior": pick(rng, &["Removed", "Isolated", "MergedWithPrevious", "Contiguous"]),
            "invert": rng.random_bool(0.5)})
        }
        11 => {
            v["decoder"] =
                json!({"type": "Strip", "content": " ", "start": sized(rng), "stop": u64::MAX})
        }
        12 => {
            let m = &mut v["model"];
            match rng.random_range(0..5) {
                0 => m["dropout"] = json!([0.0, 1.0, 2.0, -1.0][rng.random_range(0..4)]),
                1 => m["unk_token"] = json!(random_text(rng)),
                2 => m["byte_fallback"] = json!(true),
                3 => m["end_of_word_suffix"] = json!(random_text(rng)),
                _ => {
                    m["type"] = json!(["WordPiece", "Unigram", "WordLevel"][rng.random_range(0..3)])
                }
            }
        }
        _ => {
            v["normalizer"] =
                json!({"type": pick(rng, &["NFKC", "Lowercase", "BertNormalizer", "Nmt"])})
        }
    }
}

/// JSON pointers of every value, with the vocabulary and the merges represented by
/// their first few entries.
fn pointers(v: &Value, at: &str, out: &mut Vec<String>) {
    out.push(at.to_string());
    let bulk = at == "/model/vocab" || at == "/model/merges";
    match v {
        Value::Object(m) => {
            for (k, c) in m.iter().take(if bulk { 8 } else { usize::MAX }) {
                let k = k.replace('~', "~0").replace('/', "~1");
                pointers(c, &format!("{at}/{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate().take(if bulk { 8 } else { usize::MAX }) {
                pointers(c, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// `v` as JSON text, with the object at `dup` (if any) holding its first key twice,
/// the first time with `extra` as its value.
fn write_json(v: &Value, at: &str, dup: &str, extra: &Value, out: &mut String) {
    if !dup.starts_with(at) {
        out.push_str(&v.to_string());
        return;
    }
    match v {
        Value::Object(m) => {
            out.push('{');
            if at == dup {
                if let Some(k) = m.keys().next() {
                    out.push_str(&format!("{}:{extra},", Value::from(k.as_str())));
                }
            }
            for (i, (k, c)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(k.as_str()).to_string());
                out.push(':');
                let esc = k.replace('~', "~0").replace('/', "~1");
                write_json(c, &format!("{at}/{esc}"), dup, extra, out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, c) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(c, &format!("{at}/{i}"), dup, extra, out);
            }
            out.push(']');
        }
        _ => out.push_str(&v.to_string()),
    }
}

/// One structural mutant of the tokenizer's JSON, as text: hostile parts, values at
/// type limits or of the wrong type, keys removed or written twice, deep nesting.
fn structural(good: &Value, rng: &mut StdRng) -> String {
    let mut v = good.clone();
    let mut dup = None;
    for _ in 0..rng.random_range(1..=3) {
        let mut all = Vec::new();
        pointers(&v, "", &mut all);
        let at = all[rng.random_range(0..all.len())].clone();
        match rng.random_range(0..6) {
            0 | 1 => hostile(&mut v, rng),
            2 => *v.pointer_mut(&at).unwrap() = odd_value(rng),
            3 => {
                let (parent, key) = at.rsplit_once('/').unwrap_or(("", ""));
                match v.pointer_mut(parent) {
                    Some(Value::Object(m)) => {
                        m.remove(&key.replace("~1", "/").replace("~0", "~"));
                    }
                    Some(Value::Array(a)) if !a.is_empty() => {
                        a.remove(key.parse::<usize>().unwrap_or(0).min(a.len() - 1));
                    }
                    _ => {}
                }
            }
            4 => {
                let target = v.pointer_mut(&at).unwrap();
                let mut n = target.take();
                for _ in 0..rng.random_range(1..200) {
                    n = match rng.random_range(0..3) {
                        0 => json!([n]),
                        1 => json!({"a": n}),
                        _ => json!({"type": "Sequence", "normalizers": [n]}),
                    };
                }
                *target = n;
            }
            _ => {
                if v.pointer(&at).is_some_and(Value::is_object) {
                    dup = Some((at, odd_value(rng)));
                }
            }
        }
    }
    match dup {
        Some((at, extra)) if v.pointer(&at).is_some_and(Value::is_object) => {
            let mut out = String::new();
            write_json(&v, "", &at, &extra, &mut out);
            out
        }
        _ => v.to_string(),
    }
}

/// The fixture's tokenizer cut to its first 640 ids (every byte, the specials and the
/// first merges): the same parts, parsed eight times faster, so the mutants stay quick.
fn small_tokenizer_json() -> Value {
    let mut v = tokenizer_json();
    let vocab = v["model"]["vocab"].as_object_mut().unwrap();
    vocab.retain(|_, id| id.as_u64().unwrap() < 640);
    let kept: std::collections::HashSet<String> = vocab.keys().cloned().collect();
    v["model"]["merges"].as_array_mut().unwrap().retain(|m| {
        let (a, b) = (m[0].as_str().unwrap(), m[1].as_str().unwrap());
        kept.contains(a) && kept.contains(b) && kept.contains(&format!("{a}{b}"))
    });
    v
}

#[test]
fn tokenizer_json_structural_mutants() {
    limit_memory();
    let good = small_tokenizer_json();
    assert!(ModelTokenizer::parse(&good.to_string(), 4096).is_ok());
    let mut rng = StdRng::seed_from_u64(0x5747);
    let (mut ok, mut refused) = (0, 0);
    let mut slowest = (Duration::ZERO, String::new());
    let start = Instant::now();
    for i in 0..MUTANTS {
        let text = structural(&good, &mut rng);
        let t0 = Instant::now();
        match ModelTokenizer::parse(&text, 4096) {
            Ok(t) => {
                ok += 1;
                if let Ok(ids) = t.encode("Hello, wörld!\n\tx = 42", true) {
                    assert!(ids.iter().all(|&id| id < 4096) && ids.len() <= 16 * 24 + 256);
                    let _ = t.decode(&ids);
                }
            }
            Err(e) => {
                assert!(!e.is_empty());
                refused += 1;
            }
        }
        let took = t0.elapsed();
        if took > slowest.0 {
            slowest = (took, format!("mutant {i} ({} bytes)", text.len()));
        }
    }
    eprintln!(
        "tokenizer.json structural: {MUTANTS} mutants in {:?}, {refused} refused, {ok} accepted, slowest {:?} ({})",
        start.elapsed(),
        slowest.0,
        slowest.1
    );
    assert!(slowest.0 < Duration::from_secs(2), "{slowest:?}");
    assert!(refused > MUTANTS / 4 && ok > MUTANTS / 20);
}
